"""simplejwt tokens bound to a ``UserSession``.

Every token carries the session id under ``SESSION_ID_CLAIM`` and never expires after the
session does: ``exp`` is capped at ``session.expire_at`` when the session has one. The server
checks the session on every request anyway; the cap only keeps clients from holding tokens that
look valid for longer than the session they belong to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from rest_framework_simplejwt import settings as simplejwt_settings_module
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token

from . import exceptions as errors
from . import sessions
from .conf import session_settings

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from .models import UserSession

TokenT = TypeVar("TokenT", bound=Token)

# What simplejwt lets escape from a validly signed token with claims it cannot read:
# exp=10**30 (OverflowError, or ValueError "year out of range"), a list where a number goes.
UNREADABLE_CLAIMS = (OverflowError, ValueError, TypeError, OSError)


def verified(token_class: type[TokenT], raw: Any) -> TokenT:
    """Return ``token_class(raw)`` (signature, ``exp``, type checked), or raise ``TokenError``.

    Claims out of range or of the wrong type are a ``TokenError`` too, never a 500.
    """
    try:
        return token_class(raw)
    except UNREADABLE_CLAIMS:
        raise TokenError(str(errors.TokenNotValid.default_detail)) from None


def cap_expiry(token: TokenT, session: UserSession) -> TokenT:
    """Return ``token`` with ``exp`` no later than the session's ``expire_at``."""
    if session.expire_at is not None:
        token.payload["exp"] = min(int(token.payload["exp"]), int(session.expire_at.timestamp()))
    return token


def bind_to_session(
    refresh: RefreshToken, session: UserSession, generation: int = 0
) -> RefreshToken:
    """Put the session id (access tokens minted from it copy it) and the refresh generation in
    ``refresh``, and cap its expiry; return it."""
    refresh[session_settings.SESSION_ID_CLAIM] = str(session.pk)
    refresh[session_settings.REFRESH_GENERATION_CLAIM] = generation
    return cap_expiry(refresh, session)


def generation_of(refresh: Token) -> int:
    """Return the refresh generation a token carries (0 for one issued before generations), or
    raise :class:`TokenNotValid` for a claim that is not a whole number."""
    value = refresh.get(session_settings.REFRESH_GENERATION_CLAIM, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
        raise errors.TokenNotValid()
    return value


class PresentedRefreshToken(RefreshToken):
    """A refresh token verified without simplejwt's blacklist lookup.

    ``token/refresh/`` asks the blacklist itself, after the reuse rule: a blacklisted token
    that was retired by rotation is a *reused* one, which ends its session, not a plain 401.
    """

    def verify(self) -> None:
        Token.verify(self)

    def is_blacklisted(self) -> bool:
        """Return True if simplejwt's blacklist app is installed and lists this token."""
        check = getattr(RefreshToken, "check_blacklist", None)
        if check is None:
            return False
        try:
            check(self)
        except TokenError:
            return True
        return False


def refresh_token_for_session(session: UserSession, user: AbstractBaseUser) -> RefreshToken:
    """Return a new refresh token for ``user`` that names ``session``."""
    return bind_to_session(RefreshToken.for_user(user), session)


def simplejwt_settings() -> Any:
    """Return simplejwt's settings as they are now.

    simplejwt rebuilds its ``api_settings`` when ``SIMPLE_JWT`` changes (``override_settings``)
    and rebinds only its own module attribute: reading it at call time sees every change.
    """
    return simplejwt_settings_module.api_settings


def owner_of(token: Token) -> sessions.Owner:
    """Return the user a token names: ``(USER_ID_FIELD, value of USER_ID_CLAIM)``."""
    jwt_settings = simplejwt_settings()
    return jwt_settings.USER_ID_FIELD, token.get(jwt_settings.USER_ID_CLAIM)


def access_token_for_session(refresh: RefreshToken, session: UserSession) -> AccessToken:
    """Return an access token minted from ``refresh`` (it copies the session claim), capped."""
    access = refresh.access_token
    access.payload.pop(session_settings.REFRESH_GENERATION_CLAIM, None)  # the refresh's alone
    cap_expiry(access, session)
    return access
