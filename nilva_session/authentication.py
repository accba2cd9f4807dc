"""DRF authentication classes: thin adapters over :mod:`nilva_session.sessions`.

They parse the ``Authorization`` header and turn :class:`~nilva_session.sessions.SessionRefused`
into DRF's ``AuthenticationFailed`` (401, ``{"detail": ..., "code": ...}``). Every rule about the
session itself lives in ``sessions.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken, Token

from . import guessing, sessions
from .conf import session_settings
from .jwt import UNREADABLE_CLAIMS, owner_check, require_owner
from .models import UserSession

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def refused(error: sessions.SessionRefused) -> exceptions.AuthenticationFailed:
    """Return the DRF exception for a refused session: 401 with ``detail`` and ``code``."""
    return exceptions.AuthenticationFailed({"detail": error.message, "code": error.code})


def invalid_header(message: Any) -> exceptions.AuthenticationFailed:
    """Return the 401 for a malformed ``Authorization`` header, code ``invalid_header``."""
    return exceptions.AuthenticationFailed({"detail": message, "code": "invalid_header"})


class UserSessionDBTokenAuthentication(BaseAuthentication):
    """Opaque token bound to a ``UserSession``: ``Authorization: Token <token>``.

    ``request.user`` is the user and ``request.auth`` the ``UserSession``.
    """

    #: Header keyword; None means the ``AUTH_HEADER_PREFIX`` setting (read per request).
    keyword: str | None = None

    def get_keyword(self) -> str:
        """Return the keyword this class answers to."""
        return self.keyword or session_settings.AUTH_HEADER_PREFIX

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, UserSession] | None:
        """Return ``(user, session)``, None for a header that is not ours, or raise 401."""
        try:
            header = get_authorization_header(request)
        except UnicodeEncodeError:  # text beyond latin-1 (test clients, middleware): not a 500
            header = request.headers["authorization"].encode("utf-8")
        auth = header.split()
        if not auth or auth[0].lower() != self.get_keyword().lower().encode():
            return None
        if len(auth) == 1:
            raise invalid_header(_("Invalid token header. No credentials provided."))
        if len(auth) > 2:
            raise invalid_header(_("Invalid token header. Token string should not contain spaces."))
        try:
            token = auth[1].decode()
        except UnicodeError:
            raise invalid_header(
                _("Invalid token header. Token string should not contain invalid characters.")
            ) from None
        return self.authenticate_credentials(token, request)

    def authenticate_credentials(
        self, key: str, request: Request | None = None
    ) -> tuple[AbstractBaseUser, UserSession]:
        """Return ``(user, session)`` for a raw token, or raise ``AuthenticationFailed``."""
        try:
            return sessions.authenticate_token(key, request, self.check_user_agent)
        except sessions.SessionRefused as error:
            raise refused(error) from None
        except guessing.GuessingThrottled as error:
            raise exceptions.Throttled(wait=error.wait) from None

    def check_user_agent(self, session: UserSession, request: Any) -> None:
        """Apply ``USER_AGENT_CHECK``; override to change the rule. Returns None or raises."""
        sessions.check_user_agent(session, request)

    def authenticate_header(self, request: Request) -> str:
        return self.get_keyword()

    @classmethod
    def create_user_session_from_request(
        cls, user: AbstractBaseUser, request: Any, expire_at: datetime | None = None
    ) -> tuple[UserSession, str]:
        """Open a session for ``user``; return ``(session, raw_token)``. The token is shown once."""
        return sessions.open_session(user, request, expire_at=expire_at)


class UserSessionDBJwtAuthentication(JWTAuthentication):
    """simplejwt access token whose ``SESSION_ID_CLAIM`` names a ``UserSession``.

    simplejwt validates the token first (signature, algorithm, ``exp``, type); then the session
    goes through the same cache and checks as an opaque token. ``request.auth`` is the validated
    token; :func:`nilva_session.sessions.current_session` returns the session.
    """

    # simplejwt annotates these with its AuthUser type variable (AbstractBaseUser or TokenUser,
    # bound by nothing in the signature); ours always return a model user.
    def authenticate(  # type: ignore[override]
        self, request: Request
    ) -> tuple[AbstractBaseUser, Token] | None:
        header = self.get_header(request)
        if header is None:
            return None
        raw_token = self.get_raw_token(header)
        if raw_token is None:
            return None
        validated_token = self.get_validated_token(raw_token)
        self.request = request
        return self.get_user(validated_token), validated_token

    def get_validated_token(self, raw_token: bytes) -> Token:
        """Return the validated token, or raise ``InvalidToken`` (401), never a 500."""
        try:
            return super().get_validated_token(raw_token)
        except UNREADABLE_CLAIMS:  # e.g. exp=10**30 in a validly signed token
            raise InvalidToken(
                {"detail": sessions.INVALID_TOKEN[0], "code": "token_not_valid"}
            ) from None

    def get_header(self, request: Request) -> bytes:
        try:
            return super().get_header(request)
        except UnicodeEncodeError:  # text beyond latin-1 (test clients, middleware): not a 500
            return str(request.META[jwt_settings.AUTH_HEADER_NAME]).encode("utf-8")

    def get_user(self, validated_token: Token) -> AbstractBaseUser:  # type: ignore[override]
        """Return the user of the token's session, or raise ``AuthenticationFailed``."""
        session_id = validated_token.get(session_settings.SESSION_ID_CLAIM)
        if session_id is None:
            raise exceptions.AuthenticationFailed(
                {
                    "detail": _("Token contained no recognizable session id."),
                    "code": "no_session_id",
                }
            )
        try:
            user, _session = sessions.authenticate_session_id(
                session_id,
                getattr(self, "request", None),
                owner_check(validated_token, self.check_user_agent),
            )
            require_owner(validated_token, user)
        except sessions.SessionRefused as error:
            raise refused(error) from None
        if jwt_settings.CHECK_REVOKE_TOKEN:
            super().get_user(validated_token)
        return user

    def check_user_agent(self, session: UserSession, request: Any) -> None:
        """Apply ``USER_AGENT_CHECK``; override to change the rule. Returns None or raises."""
        sessions.check_user_agent(session, request)

    @classmethod
    def create_user_session_from_request(
        cls, user: AbstractBaseUser, request: Any, expire_at: datetime | None = None
    ) -> tuple[UserSession, RefreshToken]:
        """Open a session for ``user``; return ``(session, refresh_token)`` carrying its id."""
        from .jwt import refresh_token_for_session

        session, _token = sessions.open_session(user, request, expire_at=expire_at)
        return session, refresh_token_for_session(session, user)
