"""Authentication classes for `adrf <https://github.com/em1208/adrf>`_ async views.

adrf awaits an ``async def authenticate``; these classes are the DRF ones with that method,
deciding through :mod:`nilva_session.aio` (the warm path on the event loop, the rest in the
sync core). Use them only in adrf views: plain DRF views call ``authenticate`` without awaiting
it, and take the classes of :mod:`nilva_session.authentication`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from rest_framework.request import Request

from . import aio
from .authentication import (
    UserSessionDBJwtAuthentication,
    UserSessionDBTokenAuthentication,
    client_of,
    user_agent_rule,
)
from .conf import session_settings
from .jwt import owner_of, simplejwt_settings

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from rest_framework_simplejwt.tokens import Token

    from .models import UserSession


class AsyncTokenAuthentication(UserSessionDBTokenAuthentication):
    """``Authorization: Token <token>`` for adrf views; ``request.auth`` is the ``UserSession``."""

    async def authenticate(  # type: ignore[override]
        self, request: Request
    ) -> tuple[AbstractBaseUser, UserSession] | None:
        """Return ``(user, session)``, None for a header that is not ours, or raise 401."""
        token = self.token_from(request)
        return None if token is None else await self.aauthenticate_credentials(token, request)

    async def aauthenticate_credentials(
        self, key: str, request: Request | None = None
    ) -> tuple[AbstractBaseUser, UserSession]:
        """Return ``(user, session)`` for a raw token, or raise 401 / 429 (as the sync hook)."""
        client, record_activity = client_of(request)
        return await aio.aauthenticate_token(
            key, client, user_agent_rule(self), record_activity=record_activity
        )


class AsyncJWTAuthentication(UserSessionDBJwtAuthentication):
    """simplejwt access token bound to a session (``Authorization: Bearer``), for adrf views."""

    async def authenticate(  # type: ignore[override]
        self, request: Request
    ) -> tuple[AbstractBaseUser, Token] | None:
        """Return ``(user, validated_token)``, None without a Bearer header, or raise 401."""
        header = self.get_header(request)
        raw_token = None if header is None else self.get_raw_token(header)
        if raw_token is None:
            return None
        validated_token = self.get_validated_token(raw_token)  # signature and claims: no I/O
        user, _session = await self.aauthenticate_session(validated_token, request)
        if simplejwt_settings().CHECK_REVOKE_TOKEN:  # simplejwt's own user query
            await sync_to_async(self.check_revoke_token)(validated_token)
        return user, validated_token

    async def aauthenticate_session(
        self, token: Token, request: Any
    ) -> tuple[AbstractBaseUser, UserSession]:
        """:meth:`authenticate_session` for async code: ``(user, session)``, or raise 401."""
        client, record_activity = client_of(request)
        return await aio.aauthenticate_session_id(
            token.get(session_settings.SESSION_ID_CLAIM),
            client,
            user_agent_rule(self),
            owner=owner_of(token),
            record_activity=record_activity,
        )
