"""simplejwt tokens bound to a ``UserSession``.

Every token carries the session id under ``SESSION_ID_CLAIM`` and never expires after the
session does: ``exp`` is capped at ``session.expire_at`` when the session has one. The server
checks the session on every request anyway; the cap only keeps clients from holding tokens that
look valid for longer than the session they belong to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token

from .conf import session_settings

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from .models import UserSession


def cap_expiry(token: Token, session: UserSession) -> Token:
    """Return ``token`` with ``exp`` no later than the session's ``expire_at``."""
    if session.expire_at is not None:
        token.payload["exp"] = min(int(token.payload["exp"]), int(session.expire_at.timestamp()))
    return token


def refresh_token_for_session(session: UserSession, user: AbstractBaseUser) -> RefreshToken:
    """Return a new refresh token for ``user`` that names ``session``."""
    refresh = RefreshToken.for_user(user)
    refresh[session_settings.SESSION_ID_CLAIM] = str(session.pk)
    cap_expiry(refresh, session)
    return refresh


def access_token_for_session(refresh: RefreshToken, session: UserSession) -> AccessToken:
    """Return an access token minted from ``refresh`` (it copies the session claim), capped."""
    access = refresh.access_token
    cap_expiry(access, session)
    return access
