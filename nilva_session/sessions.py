"""The core: open, authenticate, touch and end sessions.

Every rule about a session (active, expired, user active, user agent, activity) is decided here.
The opaque-token and JWT authentication classes differ only in how they find the session: by
token digest (:func:`authenticate_token`) or by id (:func:`authenticate_session_id`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import cache, clients
from .models import EndReason, UserSession, UserSessionQuerySet
from .signals import session_created, session_revoked, session_suspended
from .conf import session_settings
from .utils import (
    hash_data,
    is_legacy_token,
    is_well_formed_token,
    token_expire_at_generator,
    token_generator,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger("nilva_session.security")

REQUEST_ATTRIBUTE = "nilva_session"
REVOKE_BATCH_SIZE = 1000

UserAgentCheck = Callable[[UserSession, Any], None]


class SessionRefused(Exception):
    """Authentication refused; ``message`` is safe to show, ``code`` is machine-readable."""

    def __init__(self, message: Any, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


INVALID_TOKEN = (_("Invalid token."), "invalid_token")
SESSION_ENDED = (_("This session has ended. Please sign in again."), "session_ended")
SESSION_EXPIRED = (_("This session has expired. Please sign in again."), "session_expired")
USER_INACTIVE = (_("User inactive or deleted."), "user_inactive")
USER_AGENT_CHANGED = (
    _("This session was suspended because the client changed. Please sign in again."),
    "session_suspended",
)


def open_session(
    user: AbstractBaseUser,
    request: HttpRequest | None = None,
    *,
    expire_at: datetime | None = None,
) -> tuple[UserSession, str]:
    """Create a session for ``user``; return ``(session, raw_token)``.

    The raw token exists only in the return value: the row stores its SHA-256 digest.
    ``expire_at=None`` means the configured ``EXPIRE_AT`` (which may itself be None: no expiry).
    """
    token = token_generator()
    now = timezone.now()
    session = UserSession.objects.create(
        user=user,
        key=hash_data(token),
        expire_at=expire_at if expire_at is not None else token_expire_at_generator(),
        last_ip=clients.client_ip(request) if request is not None else None,
        user_agent=clients.user_agent(request) if request is not None else "",
        authenticated_at=now,
    )
    session_created.send(sender=UserSession, session=session, request=request)
    logger.info("session opened: session=%s user=%s", session.pk, session.user_id)
    return session, token


def authenticate_token(
    token: str, request: Any, user_agent_check: UserAgentCheck | None = None
) -> tuple[AbstractBaseUser, UserSession]:
    """Return ``(user, session)`` for a raw opaque token, or raise :class:`SessionRefused`.

    A token of the wrong shape is refused before any cache or database access.
    """
    if not is_well_formed_token(token) and not (
        session_settings.ACCEPT_LEGACY_TOKENS and is_legacy_token(token)
    ):
        raise SessionRefused(*INVALID_TOKEN)
    digest = hash_data(token)
    return _authenticate(cache.token_key(digest), {"key": digest}, request, user_agent_check)


def authenticate_session_id(
    session_id: Any, request: Any, user_agent_check: UserAgentCheck | None = None
) -> tuple[AbstractBaseUser, UserSession]:
    """Return ``(user, session)`` for a session id (from a verified JWT), or raise."""
    try:
        parsed = uuid.UUID(str(session_id))
    except (TypeError, ValueError, AttributeError):
        raise SessionRefused(*INVALID_TOKEN) from None
    return _authenticate(cache.session_key(parsed), {"pk": parsed}, request, user_agent_check)


def _authenticate(
    entry_key: str,
    lookup: dict[str, Any],
    request: Any,
    user_agent_check: UserAgentCheck | None,
) -> tuple[AbstractBaseUser, UserSession]:
    now = timezone.now()
    entry, marker = cache.read(entry_key)
    found = cache.unpack(entry) if entry is not None else None
    if found is not None:
        session, user = found
    else:
        try:
            session = UserSession.objects.select_related("user").get(**lookup)
        except UserSession.DoesNotExist:
            raise SessionRefused(*INVALID_TOKEN) from None
        user = session.user
    check_session(session, user, now)
    (user_agent_check or check_user_agent)(session, request)
    if entry is None:
        cache.fill(entry_key, session, user, now)
    _record_activity(session, entry_key, marker, clients.client_ip(request), now)
    http_request = getattr(request, "_request", request)
    setattr(http_request, REQUEST_ATTRIBUTE, session)
    return user, session


def check_session(session: UserSession, user: AbstractBaseUser, now: datetime) -> None:
    """Raise :class:`SessionRefused` unless the session is active, unexpired and its user active."""
    if not session.is_active:
        raise SessionRefused(*SESSION_ENDED)
    if session.is_expired(now):
        raise SessionRefused(*SESSION_EXPIRED)
    if not getattr(user, "is_active", True):
        raise SessionRefused(*USER_INACTIVE)


def check_user_agent(session: UserSession, request: Any) -> None:
    """Apply ``USER_AGENT_CHECK`` to a request; suspend the session and raise on a real change.

    In ``"family"`` mode a new version of the same browser, OS and device is accepted and
    becomes the stored user agent.
    """
    mode = session_settings.USER_AGENT_CHECK
    current = clients.user_agent(request)
    if mode == "off" or current == session.user_agent:
        return
    if mode == "family" and clients.same_family(session.user_agent, current):
        UserSession.objects.filter(pk=session.pk, is_active=True).update(user_agent=current)
        cache.bar_sessions([(session.pk, session.key)])
        session.user_agent = current
        return
    detail = "User agent changed from {old} to {new}.".format(
        old=clients.summarize_user_agent(session.user_agent),
        new=clients.summarize_user_agent(current),
    )
    suspend(session, EndReason.USER_AGENT_CHANGED, detail, request)
    raise SessionRefused(*USER_AGENT_CHANGED)


def _record_activity(
    session: UserSession, entry_key: str, marker: Any, ip: str | None, now: datetime
) -> None:
    """Write ``last_online``/``last_ip`` at most once per interval (or on an IP change)."""
    interval = session_settings.LAST_ONLINE_UPDATE_INTERVAL
    if marker is not None:
        if marker == (ip or ""):
            return
    elif ip == session.last_ip and now - session.last_online < interval:
        return
    if not cache.mark_activity(entry_key, ip, replace=marker is not None):
        return  # another request of this session is writing the same activity
    UserSession.objects.filter(pk=session.pk, is_active=True).update(last_online=now, last_ip=ip)
    session.last_online, session.last_ip = now, ip


def _end(sessions: UserSessionQuerySet, reason: str, detail: str | None) -> list[tuple[Any, Any]]:
    """End the active sessions of a queryset; return ``(id, user_id)`` of each one ended."""
    rows = list(sessions.filter(is_active=True).values_list("id", "key", "user_id"))
    if not rows:
        return []
    cache.bar_sessions((session_id, digest) for session_id, digest, _ in rows)
    now = timezone.now()
    if detail is None:
        detail = str(EndReason(reason).label) if reason in EndReason.values else reason
    for start in range(0, len(rows), REVOKE_BATCH_SIZE):
        ids = [session_id for session_id, _, _ in rows[start : start + REVOKE_BATCH_SIZE]]
        UserSession.objects.filter(pk__in=ids, is_active=True).update(
            is_active=False, ended_at=now, end_reason=reason, detail=detail
        )
    return [(session_id, user_id) for session_id, _, user_id in rows]


def revoke(
    sessions: Iterable[UserSession] | UserSessionQuerySet,
    reason: str = EndReason.REVOKED,
    detail: str | None = None,
) -> int:
    """End sessions (a queryset or instances); return how many active ones were ended.

    The only way nilva-session ends sessions: views, admin and commands all call it, so the
    cache is always barred and ``session_revoked`` always sent.
    """
    if not isinstance(sessions, UserSessionQuerySet):
        sessions = UserSession.objects.filter(pk__in=[s.pk for s in sessions])
    ended = _end(sessions, reason, detail)
    if ended:
        session_revoked.send(
            sender=UserSession,
            session_ids=[session_id for session_id, _ in ended],
            user_ids=[user_id for _, user_id in ended],
            reason=reason,
        )
        for session_id, user_id in ended:
            logger.info("session ended: session=%s user=%s reason=%s", session_id, user_id, reason)
    return len(ended)


def suspend(session: UserSession, reason: str, detail: str, request: Any = None) -> bool:
    """End one session because a rule failed; return True if it was active."""
    if not revoke([session], reason, detail):
        return False
    session.is_active, session.end_reason, session.detail = False, reason, detail
    session_suspended.send(sender=UserSession, session=session, reason=reason, request=request)
    logger.warning("session suspended: session=%s user=%s reason=%s", session.pk, session.user_id, reason)
    return True


def invalidate_user(user: Any) -> None:
    """Keep every active session of ``user`` out of the cache for ``TOMBSTONE_TTL``.

    Called when a user row changes, so the next request re-reads the user from the database.
    Call it yourself after changing users with ``QuerySet.update()``, which sends no signal.
    """
    cache.bar_sessions(UserSession.objects.for_user(user).active().values_list("id", "key"))


def current_session(request: Any) -> UserSession | None:
    """Return the ``UserSession`` that authenticated ``request`` (token or JWT), or None."""
    if hasattr(request, "_request"):
        getattr(request, "user", None)  # DRF authenticates lazily; make sure it has run
    return getattr(getattr(request, "_request", request), REQUEST_ATTRIBUTE, None)
