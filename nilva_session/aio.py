"""Async entry points: the warm path on the event loop, everything else in the sync core.

``aauthenticate_token`` and ``aauthenticate_session_id`` take and return what their sync
namesakes in :mod:`nilva_session.sessions` do, and decide by the same code:

* The cache is read on the event loop (``Store.aread_session``: redis.asyncio, or no round trip
  at all from a copy the native store keeps true). A usable copy that needs nothing written is
  accepted there, by the pure rules of ``sessions`` (:func:`~nilva_session.sessions.usable_copy`,
  :func:`~nilva_session.sessions.served_from_copy`): a warm request never blocks the loop.
* Anything else (a miss, a refusal, the activity write due once per interval, a project's own
  ``check_user_agent``) runs ``sessions.authenticate_entry``, the one sync path, in a worker
  thread (``sync_to_async``), handed the cache read already made. One thread hop for the whole
  cold path, where Django's async ORM would take one per query; and no second copy of a rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.utils import timezone

from . import cache, guessing, sessions

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from .models import UserSession


async def aauthenticate_token(
    token: str,
    client: sessions.Client,
    user_agent_check: sessions.UserAgentCheck | None = None,
    *,
    record_activity: bool = True,
) -> tuple[AbstractBaseUser, UserSession]:
    """Return ``(user, session)`` for a raw opaque token, or raise ``SessionRefused``.

    :func:`nilva_session.sessions.authenticate_token` for async code.
    """
    entry_key, lookup = sessions.token_lookup(token)
    return await _authenticate(
        entry_key,
        lookup,
        client,
        user_agent_check,
        record_activity=record_activity,
        guard_guessing=True,
    )


async def aauthenticate_session_id(
    session_id: Any,
    client: sessions.Client,
    user_agent_check: sessions.UserAgentCheck | None = None,
    *,
    owner: sessions.Owner | None = None,
    record_activity: bool = True,
) -> tuple[AbstractBaseUser, UserSession]:
    """Return ``(user, session)`` for a session id (from a verified JWT), or raise.

    :func:`nilva_session.sessions.authenticate_session_id` for async code.
    """
    entry_key, lookup = sessions.session_id_lookup(session_id)
    return await _authenticate(
        entry_key,
        lookup,
        client,
        user_agent_check,
        record_activity=record_activity,
        owner=owner,
    )


async def _authenticate(
    entry_key: str,
    lookup: dict[str, Any],
    client: sessions.Client,
    user_agent_check: sessions.UserAgentCheck | None,
    *,
    record_activity: bool,
    guard_guessing: bool = False,
    owner: sessions.Owner | None = None,
) -> tuple[AbstractBaseUser, UserSession]:
    now = timezone.now()
    failures_key = guessing.counter_key(client.ip, now) if guard_guessing else None
    cached = await cache.alookup(entry_key, sessions.decoder(lookup), failures_key)
    if cached is not None:
        found = sessions.usable_copy(cached.found, now, record_activity=record_activity)
        if found is not None and sessions.served_from_copy(
            *found, client, cached.marker, now, user_agent_check, owner, record_activity
        ):
            return sessions.authenticated(client, *found)
    return await sync_to_async(sessions.authenticate_entry)(
        entry_key,
        lookup,
        client,
        user_agent_check,
        record_activity=record_activity,
        guard_guessing=guard_guessing,
        owner=owner,
        read=None if cached is None else (now, cached),
    )
