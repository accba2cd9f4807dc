"""DRF authentication classes: thin adapters over :mod:`nilva_session.sessions`.

They parse the ``Authorization`` header and hand the credential to the core; the core's
refusals (:mod:`nilva_session.exceptions`) are DRF's ``AuthenticationFailed`` already (401,
``{"detail": ..., "code": ...}``). Every rule about the session itself lives in ``sessions.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext_lazy as _
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.tokens import RefreshToken, Token

from . import exceptions as errors
from . import sessions
from .conf import session_settings
from .jwt import UNREADABLE_CLAIMS, owner_of, refresh_token_for_session, simplejwt_settings
from .models import UserSession

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def client_of(request: Any) -> tuple[sessions.Client, bool]:
    """Return the core's input for ``request``: ``(client, record_activity)``.

    Without a request (a hook called from code) the client is ``UNKNOWN``: no user-agent or IP
    rule can be applied, and no activity is written; the database decides idleness.
    """
    if request is None:
        return sessions.UNKNOWN, False
    return sessions.Client.of(request), True


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
        token = self.token_from(request)
        return None if token is None else self.authenticate_credentials(token, request)

    def token_from(self, request: Any) -> str | None:
        """Return the raw token of the ``Authorization`` header, None if the header is not
        ours, or raise 401 for a malformed one."""
        try:
            header = get_authorization_header(request)
        except UnicodeEncodeError:  # text beyond latin-1 (test clients, middleware): not a 500
            header = request.headers["authorization"].encode("utf-8")
        auth = header.split()
        if not auth or auth[0].lower() != self.get_keyword().lower().encode():
            return None
        if len(auth) == 1:
            raise errors.InvalidHeader()
        if len(auth) > 2:
            raise errors.InvalidHeader(
                _("Invalid token header. Token string should not contain spaces.")
            )
        try:
            token = auth[1].decode()
        except UnicodeError:
            raise errors.InvalidHeader(
                _("Invalid token header. Token string should not contain invalid characters.")
            ) from None
        return token

    def authenticate_credentials(
        self, key: str, request: Request | None = None
    ) -> tuple[AbstractBaseUser, UserSession]:
        """Return ``(user, session)`` for a raw token, or raise ``AuthenticationFailed`` (401)
        or ``Throttled`` (429, too many unknown tokens from this client)."""
        client, record_activity = client_of(request)
        return sessions.authenticate_token(
            key, client, user_agent_rule(self), record_activity=record_activity
        )

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

    def authenticate(  # type: ignore[override]  # see get_user
        self, request: Request
    ) -> tuple[AbstractBaseUser, Token] | None:
        """Return ``(user, validated_token)``, None without a Bearer header, or raise 401."""
        self.request = request  # simplejwt's get_user(validated_token) takes no request
        return super().authenticate(request)

    def get_validated_token(self, raw_token: bytes) -> Token:
        """Return the validated token, or raise 401 (``token_not_valid``), never a 500."""
        try:
            return super().get_validated_token(raw_token)
        except UNREADABLE_CLAIMS:  # e.g. exp=10**30 in a validly signed token
            raise errors.TokenNotValid() from None

    def get_header(self, request: Request) -> bytes:
        try:
            return super().get_header(request)
        except UnicodeEncodeError:  # text beyond latin-1 (test clients, middleware): not a 500
            name = simplejwt_settings().AUTH_HEADER_NAME
            return str(request.META[name]).encode("utf-8")

    # simplejwt annotates this with its AuthUser type variable (AbstractBaseUser or TokenUser,
    # bound by nothing in the signature); ours always returns a model user.
    def get_user(self, validated_token: Token) -> AbstractBaseUser:  # type: ignore[override]
        """Return the user of the token's session, or raise ``AuthenticationFailed``."""
        user, _session = self.authenticate_session(validated_token, getattr(self, "request", None))
        self.check_revoke_token(validated_token)
        return user

    def check_revoke_token(self, validated_token: Token) -> None:
        """Apply simplejwt's ``CHECK_REVOKE_TOKEN`` (its own user lookup), when it is on."""
        if simplejwt_settings().CHECK_REVOKE_TOKEN:
            super().get_user(validated_token)

    def authenticate_session(
        self, token: Token, request: Any
    ) -> tuple[AbstractBaseUser, UserSession]:
        """Return ``(user, session)`` named by a verified token, access or refresh, or raise 401.

        The one JWT path: ``get_user`` and ``token/refresh/`` call it. The session is looked
        up by the token's session claim *and* its user claim (another user's session is not
        found), then goes through the same cache and rules as an opaque token.
        """
        client, record_activity = client_of(request)
        return sessions.authenticate_session_id(
            token.get(session_settings.SESSION_ID_CLAIM),
            client,
            user_agent_rule(self),
            owner=owner_of(token),
            record_activity=record_activity,
        )

    def check_user_agent(self, session: UserSession, request: Any) -> None:
        """Apply ``USER_AGENT_CHECK``; override to change the rule. Returns None or raises."""
        sessions.check_user_agent(session, request)

    @classmethod
    def create_user_session_from_request(
        cls, user: AbstractBaseUser, request: Any, expire_at: datetime | None = None
    ) -> tuple[UserSession, RefreshToken]:
        """Open a session for ``user``; return ``(session, refresh_token)`` carrying its id."""
        session, _token = sessions.open_session(user, request, expire_at=expire_at)
        return session, refresh_token_for_session(session, user)


#: The classes' own ``check_user_agent``: the rule of ``sessions``, which the warm path applies
#: itself. An override is called on every request (``sessions.served_from_copy``).
_DEFAULT_RULES = frozenset(
    {
        UserSessionDBTokenAuthentication.check_user_agent,
        UserSessionDBJwtAuthentication.check_user_agent,
    }
)


def user_agent_rule(authentication: Any) -> sessions.UserAgentCheck | None:
    """Return the user-agent hook to pass to the core: None when the class does not override it."""
    if getattr(type(authentication), "check_user_agent", None) in _DEFAULT_RULES:
        return None
    return authentication.check_user_agent  # type: ignore[no-any-return]
