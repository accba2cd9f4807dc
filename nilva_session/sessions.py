"""The core: open, authenticate, touch and end sessions.

Every rule about a session (active, expired, user active, user agent, activity) is decided here.
The opaque-token and JWT authentication classes differ only in how they find the session: by
token digest (:func:`authenticate_token`) or by id (:func:`authenticate_session_id`).
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone, translation

from . import alerts, cache, clients, codec, events, guessing
from . import exceptions as errors
from .conf import session_settings
from .exceptions import SessionRefused
from .models import EndReason, EventKind, UserSession, UserSessionQuerySet
from .signals import (
    new_device_login,
    refresh_token_reused,
    session_created,
    session_revoked,
    session_rotated,
    session_suspended,
)
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


#: ``(user field, value)``: the user a credential says it belongs to (a JWT's user claim).
Owner = tuple[str, Any]


@dataclass(frozen=True)
class Client:
    """What authentication knows of the client presenting a credential.

    ``user_agent`` None means *unknown* (no request: a call from code, not from a client), so
    the user-agent and IP rules cannot be applied; that is said by passing :data:`UNKNOWN`,
    never by leaving an argument out. ``request`` is what the rules' hooks receive and what the
    session is attached to (``current_session``).
    """

    ip: str | None
    user_agent: str | None
    request: Any = None

    @classmethod
    def of(cls, request: Any) -> Client:
        """Return the client of a Django or DRF request."""
        return cls(clients.client_ip(request), clients.user_agent(request), request)

    @property
    def known(self) -> bool:
        return self.user_agent is not None


#: A caller without a request (a management command, a websocket consumer's own code).
UNKNOWN = Client(ip=None, user_agent=None)


def _initial_expiry(now: datetime, expire_at: datetime | None) -> datetime | None:
    expiry = expire_at if expire_at is not None else token_expire_at_generator()
    cap = session_settings.ABSOLUTE_LIFETIME
    if cap is not None and (expiry is None or expiry > now + cap):
        expiry = now + cap
    return expiry


def _make_room(user: AbstractBaseUser) -> None:
    """Apply ``MAX_SESSIONS_PER_USER`` before a login; call inside a transaction.

    The user's row is locked (``SELECT … FOR UPDATE``), so concurrent logins of one user are
    counted one after the other.
    """
    limit = session_settings.MAX_SESSIONS_PER_USER
    if not limit:
        return
    type(user)._base_manager.select_for_update().filter(pk=user.pk).values_list("pk").first()
    # Only live sessions hold a place: an idle or lapsed one is refused on its next request.
    live_sessions = live(UserSession.objects.for_user(user)).order_by("last_online", "created_at")
    ids = list(live_sessions.values_list("pk", flat=True))
    excess = len(ids) - limit + 1
    if excess <= 0:
        return
    if session_settings.SESSION_LIMIT_POLICY == "refuse":
        raise errors.SessionLimitReached()
    revoke(UserSession.objects.filter(pk__in=ids[:excess]), EndReason.REPLACED)


def open_session(
    user: AbstractBaseUser,
    request: HttpRequest | None = None,
    *,
    expire_at: datetime | None = None,
) -> tuple[UserSession, str]:
    """Create a session for ``user``; return ``(session, raw_token)``.

    The raw token exists only in the return value: the row stores its SHA-256 digest.
    ``expire_at=None`` means the configured ``EXPIRE_AT``; either way the expiry is capped at
    ``ABSOLUTE_LIFETIME``. Raises :class:`SessionLimitReached` when ``MAX_SESSIONS_PER_USER``
    is reached under the ``"refuse"`` policy; the least recently used session is ended otherwise.
    """
    token = token_generator()
    now = timezone.now()
    ip = clients.client_ip(request) if request is not None else None
    agent = clients.user_agent(request) if request is not None else ""
    device = alerts.device_digest(agent, ip) if request is not None else ""
    # Only a session limit needs a transaction (for its row lock); a plain login is one INSERT.
    with transaction.atomic() if session_settings.MAX_SESSIONS_PER_USER else nullcontext():
        _make_room(user)
        seen = alerts.seen_before(user, device) if device else None
        session = UserSession.objects.create(
            # django-stubs types the FK as the User model of the settings mypy runs with;
            # whatever AUTH_USER_MODEL is, the user is one of its instances.
            user=cast(Any, user),
            key=hash_data(token),
            expire_at=_initial_expiry(now, expire_at),
            last_ip=ip,
            user_agent=agent,
            authenticated_at=now,
            device_digest=device,
        )
    if device:
        alerts.remember(user, device, now)
    opened = [_event(EventKind.LOGIN, session, at=now)]
    if seen is False:
        opened.append(_event(EventKind.NEW_DEVICE, session, at=now))
    events.emit(opened)
    session_created.send(sender=UserSession, session=session, request=request)
    logger.info("session opened: session=%s user=%s", session.pk, session.user_id)
    if seen is False:
        new_device_login.send(
            sender=UserSession, session=session, request=request, event=opened[-1]
        )
        alerts.email_new_device(session, user, opened[-1], request)
    return session, token


def _event(kind: EventKind, session: UserSession, **fields: Any) -> Any:
    """Return an unsaved event about ``session`` (its user, id, IP and user agent)."""
    return events.new(
        kind,
        user_id=session.user_id,
        session_id=session.pk,
        ip=session.last_ip,
        user_agent=session.user_agent,
        **fields,
    )


def authenticate_token(
    token: str,
    client: Client,
    user_agent_check: UserAgentCheck | None = None,
    *,
    record_activity: bool = True,
) -> tuple[AbstractBaseUser, UserSession]:
    """Return ``(user, session)`` for a raw opaque token, or raise :class:`SessionRefused`.

    A token of the wrong shape is refused before any cache or database access; a client that
    keeps sending unknown tokens is throttled (``INVALID_TOKEN_THROTTLE_RATE``) before the
    database is asked again. ``record_activity`` writes ``last_online`` / ``last_ip`` (at most
    once per interval); without it, idleness is decided from the database.
    """
    entry_key, lookup = token_lookup(token)
    return authenticate_entry(
        entry_key,
        lookup,
        client,
        user_agent_check,
        record_activity=record_activity,
        guard_guessing=True,
    )


def token_lookup(token: str) -> tuple[str, dict[str, Any]]:
    """Return ``(cache key, row lookup)`` of a raw opaque token, or raise :class:`InvalidToken`.

    A token of the wrong shape is refused here, before any cache or database access.
    """
    if not is_well_formed_token(token) and not (
        session_settings.ACCEPT_LEGACY_TOKENS and is_legacy_token(token)
    ):
        raise errors.InvalidToken()
    digest = hash_data(token)
    return cache.token_key(digest), {"key": digest}


def parse_session_id(session_id: Any) -> uuid.UUID:
    """Return the session id a credential names as a UUID, or raise :class:`SessionRefused`."""
    if session_id is None:
        raise errors.NoSessionId()
    if not isinstance(session_id, (str, uuid.UUID)) or len(str(session_id)) > 64:
        raise errors.InvalidToken()
    try:
        return uuid.UUID(str(session_id))
    except ValueError:
        raise errors.InvalidToken() from None


def authenticate_session_id(
    session_id: Any,
    client: Client,
    user_agent_check: UserAgentCheck | None = None,
    *,
    owner: Owner | None = None,
    record_activity: bool = True,
) -> tuple[AbstractBaseUser, UserSession]:
    """Return ``(user, session)`` for a session id (from a verified JWT), or raise.

    ``owner`` is part of the lookup: a session of any other user is not found (refused as an
    unknown credential, before any rule runs, so it is neither suspended nor touched).
    """
    entry_key, lookup = session_id_lookup(session_id)
    return authenticate_entry(
        entry_key,
        lookup,
        client,
        user_agent_check,
        record_activity=record_activity,
        owner=owner,
    )


def session_id_lookup(session_id: Any) -> tuple[str, dict[str, Any]]:
    """Return ``(cache key, row lookup)`` of a session id, or raise (:func:`parse_session_id`)."""
    parsed = parse_session_id(session_id)
    return cache.session_key(parsed), {"pk": parsed}


def owned_by(user: Any, owner: Owner | None) -> bool:
    """Return True if ``user`` is the one ``owner`` names (or no owner is named)."""
    if owner is None:
        return True
    field, value = owner
    return value is not None and str(value) == str(getattr(user, field, None))


def authenticate_entry(
    entry_key: str,
    lookup: dict[str, Any],
    client: Client,
    user_agent_check: UserAgentCheck | None,
    *,
    record_activity: bool,
    guard_guessing: bool = False,
    owner: Owner | None = None,
    read: tuple[datetime, cache.Lookup] | None = None,
) -> tuple[AbstractBaseUser, UserSession]:
    """Return ``(user, session)`` for the session under ``entry_key`` / ``lookup``, or raise.

    The one path of both entry points (and of :mod:`nilva_session.aio`, which passes ``read``:
    ``(now, cache.Lookup)``, the cache read it made already). A usable copy that needs nothing
    written (:func:`served_from_copy`) is the warm path; anything else is decided here, with
    the database.
    """
    now = timezone.now() if read is None else read[0]
    ip = client.ip
    failures_key = guessing.counter_key(ip, now) if guard_guessing else None
    cached = cache.lookup(entry_key, decoder(lookup), failures_key) if read is None else read[1]
    found = usable_copy(cached.found, now, record_activity=record_activity)
    if found is not None and served_from_copy(
        *found, client, cached.marker, now, user_agent_check, owner, record_activity
    ):
        return authenticated(client, *found)
    if found is not None:
        session, user = found
    else:
        guessing.check(cached.counter, now)
        try:
            session = UserSession.objects.select_related("user").get(**lookup)
        except UserSession.DoesNotExist:
            guessing.count(failures_key, now)
            logger.info("authentication refused: unknown credential, ip=%s", ip)
            raise errors.InvalidToken() from None
        user = session.user
    if not owned_by(user, owner):
        logger.info("authentication refused: credential of another user, ip=%s", ip)
        raise errors.InvalidToken()
    try:
        check_session(session, user, now, from_database=found is None)
        if client.known:
            (user_agent_check or check_user_agent)(session, client.request)
            check_ip_binding(session, ip, client.request)
    except SessionRefused as refusal:
        logger.info("authentication refused: session=%s reason=%s", session.pk, refusal.code)
        raise
    if record_activity:
        # Before the fill, so the copy carries the IP this request binds (BIND_IP) and is
        # never made of a session the activity write finds idle.
        _record_activity(session, entry_key, cached.marker, ip, now)
    authenticated(client, session, user)
    if cached.fillable:
        _fill_cache(entry_key, session, user, now)
    return user, session


def decoder(lookup: dict[str, Any]) -> Callable[[Any], Any]:
    """Return the cache entry decoder for a row lookup (entries by digest omit the digest)."""
    digest = lookup.get("key")
    return lambda entry: codec.unpack(entry, digest)


def usable_copy(
    found: tuple[UserSession, AbstractBaseUser] | None, now: datetime, *, record_activity: bool
) -> tuple[UserSession, AbstractBaseUser] | None:
    """Return the cached ``(session, user)`` if a copy may stand in for the row, or None (pure)."""
    if found is None:
        return None
    if session_settings.SLIDING_EXPIRY and found[0].is_expired_at(now):
        return None  # the copy may predate a sliding extension: the database decides
    if not record_activity and session_settings.IDLE_TIMEOUT is not None:
        return None  # idleness is settled by the activity write: without it, the database
    return found


def served_from_copy(
    session: UserSession,
    user: AbstractBaseUser,
    client: Client,
    marker: Any,
    now: datetime,
    user_agent_check: UserAgentCheck | None,
    owner: Owner | None,
    record_activity: bool,
) -> bool:
    """Return True if a cached copy authenticates as it is: every rule holds and nothing is
    to be written (pure; the warm path of the sync and the async entry points alike).

    False is no refusal: the full path decides (and refuses, logs, writes) with the database.
    A project's own user-agent rule (an overridden ``check_user_agent``) always takes it.
    """
    if user_agent_check not in (None, check_user_agent) or not owned_by(user, owner):
        return False
    if refusal_of(session, user, now, from_database=False) is not None:
        return False
    if client.known and not (
        user_agent_unchanged(session, client.user_agent) and ip_binding_holds(session, client.ip)
    ):
        return False
    return not (record_activity and activity_due(session, marker, client.ip, now))


def authenticated(
    client: Client, session: UserSession, user: AbstractBaseUser
) -> tuple[AbstractBaseUser, UserSession]:
    """Attach ``session`` to the client's request (``current_session``); return the pair."""
    if client.request is not None:
        setattr(getattr(client.request, "_request", client.request), REQUEST_ATTRIBUTE, session)
    return user, session


def _fill_cache(
    entry_key: str, session: UserSession, user: AbstractBaseUser, now: datetime
) -> None:
    """Cache the session read from the database at ``now`` under ``entry_key``."""
    # Filed under the token's digest, the entry need not repeat it (see ``codec.unpack``).
    entry = codec.pack(session, user, with_key=entry_key != cache.token_key(session.key))
    cache.fill(entry_key, entry, started=now, expire_at=session.expire_at)


# --- the policy: when a session is live -----------------------------------------------------
# Its forms, side by side: ``lapse`` for one session in Python (authentication), ``lapses_at``
# for when ``lapse`` will refuse it (an open websocket's clock), and ``lapsed_q`` for rows in
# SQL (the listing, the session limit, the admin, cleanup). Table tests (test_sessions.py,
# test_channels.py) hold them to the same verdict on every rule and boundary.


def lapse(
    session: UserSession, now: datetime, *, with_idle: bool = True
) -> type[errors.SessionRefused] | None:
    """Return the refusal for a session whose time has run out at ``now``, or None.

    Past ``expire_at``, or ``ABSOLUTE_LIFETIME`` after its login: expired; unused for longer
    than ``IDLE_TIMEOUT`` (only checked ``with_idle``, i.e. when ``last_online`` is the
    database's): idle. Whether it is active is the row's ``is_active``, checked apart.
    """
    cap, idle = session_settings.ABSOLUTE_LIFETIME, session_settings.IDLE_TIMEOUT
    if session.is_expired_at(now):
        return errors.SessionExpired
    if cap is not None and session.created_at is not None and session.created_at + cap <= now:
        return errors.SessionExpired
    if with_idle and idle is not None and session.last_online < now - idle:
        return errors.SessionIdle
    return None


def lapses_at(session: UserSession) -> datetime | None:
    """Return the first moment at which :func:`lapse` refuses ``session`` as it is now
    (its ``expire_at``, ``ABSOLUTE_LIFETIME`` after login, ``IDLE_TIMEOUT`` after its last
    activity), or None when none applies (pure)."""
    cap, idle = session_settings.ABSOLUTE_LIFETIME, session_settings.IDLE_TIMEOUT
    moments = [] if session.expire_at is None else [session.expire_at]
    if cap is not None and session.created_at is not None:
        moments.append(session.created_at + cap)
    if idle is not None and session.last_online is not None:
        # lapse() refuses once last_online < now - idle: strictly after this moment.
        moments.append(session.last_online + idle + timedelta(microseconds=1))
    return min(moments, default=None)


def lapsed_q(now: datetime) -> Q:
    """Return the condition on rows whose time has run out at ``now`` (see :func:`lapse`)."""
    cap, idle = session_settings.ABSOLUTE_LIFETIME, session_settings.IDLE_TIMEOUT
    condition = Q(expire_at__lte=now)
    if cap is not None:
        condition |= Q(created_at__lte=now - cap)
    if idle is not None:
        condition |= Q(last_online__lt=now - idle)
    return condition


def live(sessions: UserSessionQuerySet, now: datetime | None = None) -> UserSessionQuerySet:
    """Return the sessions of ``sessions`` that would authenticate at ``now`` (user aside)."""
    return sessions.filter(is_active=True).exclude(lapsed_q(now or timezone.now()))


def check_session(
    session: UserSession, user: AbstractBaseUser, now: datetime, from_database: bool = True
) -> None:
    """Raise :class:`SessionRefused` unless the session may authenticate now.

    Active, not lapsed (:func:`lapse`), user active. Idleness is judged only when
    ``last_online`` comes from the database; a cached copy's idleness is decided by the
    conditional activity UPDATE instead.
    """
    refused = refusal_of(session, user, now, from_database=from_database)
    if refused is errors.SessionIdle:
        _end_idle(session, now)
    if refused is not None:
        raise refused()


def refusal_of(
    session: UserSession, user: AbstractBaseUser, now: datetime, *, from_database: bool = True
) -> type[errors.SessionRefused] | None:
    """Return the refusal :func:`check_session` raises for ``session`` at ``now``, or None (pure).

    In order: ended, expired, user inactive, idle (judged only ``from_database``).
    """
    if not session.is_active:
        return errors.SessionEnded
    lapsed = lapse(session, now, with_idle=from_database)
    if lapsed is errors.SessionExpired:
        return lapsed
    if not getattr(user, "is_active", True):
        return errors.UserInactive
    return lapsed


def _end_idle(session: UserSession, now: datetime) -> None:
    """End the session if the database finds it idle (it may have just been used); raise."""
    idle_since = now - session_settings.IDLE_TIMEOUT
    revoke(UserSession.objects.filter(pk=session.pk, last_online__lt=idle_since), EndReason.IDLE)
    raise errors.SessionIdle()


def check_user_agent(session: UserSession, request: Any) -> None:
    """Apply ``USER_AGENT_CHECK`` to a request; suspend the session and raise on a real change.

    In ``"family"`` mode a new version of the same browser, OS and device is accepted and
    becomes the stored user agent.
    """
    current = clients.user_agent(request)
    if user_agent_unchanged(session, current):
        return
    if session_settings.USER_AGENT_CHECK == "family" and clients.same_family(
        session.user_agent, current
    ):
        UserSession.objects.filter(pk=session.pk, is_active=True).update(user_agent=current)
        cache.bar_sessions([(session.pk, session.key)])
        session.user_agent = current
        return
    old = clients.summarize_user_agent(session.user_agent)
    new = clients.summarize_user_agent(current)
    detail = f"User agent changed from {old} to {new}."
    suspend(session, EndReason.USER_AGENT_CHANGED, detail, request)
    raise errors.SessionSuspended()


def check_ip_binding(session: UserSession, ip: str | None, request: Any) -> None:
    """With ``BIND_IP``, suspend a session whose client IP differs from its last one."""
    if ip_binding_holds(session, ip):
        return
    detail = f"Client IP changed from {session.last_ip} to {ip or 'unknown'}."
    suspend(session, EndReason.IP_CHANGED, detail, request)
    raise errors.ClientAddressChanged()


def user_agent_unchanged(session: UserSession, current: str | None) -> bool:
    """Return True if ``USER_AGENT_CHECK`` has nothing to say about ``current`` (pure)."""
    return session_settings.USER_AGENT_CHECK == "off" or current == session.user_agent


def ip_binding_holds(session: UserSession, ip: str | None) -> bool:
    """Return True unless ``BIND_IP`` is on and ``ip`` is not the session's last one (pure)."""
    return not session_settings.BIND_IP or ip == session.last_ip or session.last_ip is None


def _slid_expiry(session: UserSession, now: datetime) -> datetime | None:
    """Return the new ``expire_at`` under ``SLIDING_EXPIRY``, or None to leave it alone."""
    lifetime: timedelta | None = session_settings.EXPIRE_AT
    if not session_settings.SLIDING_EXPIRY or lifetime is None:
        return None
    expiry = now + lifetime
    cap = session_settings.ABSOLUTE_LIFETIME
    if cap is not None and session.created_at is not None:
        expiry = min(expiry, session.created_at + cap)
    return expiry


def _record_activity(
    session: UserSession, entry_key: str, marker: Any, ip: str | None, now: datetime
) -> None:
    """Write activity at most once per interval (or on an IP change) with one UPDATE.

    The UPDATE is ``WHERE id=… AND is_active`` (and, with ``IDLE_TIMEOUT``, ``AND last_online``
    recent enough), so it never revives an ended session; it also slides ``expire_at``.

    With ``IDLE_TIMEOUT`` the marker is claimed as *pending* and confirmed only once the UPDATE
    found the session live: a request that sees no confirmed marker for its IP (another
    request's write is pending, or it lost the race to claim) asks the database whether the
    session is idle. A burst of requests on an idle session is refused as a whole.
    """
    if not activity_due(session, marker, ip, now):
        return
    idle = session_settings.IDLE_TIMEOUT
    still_live = live(UserSession.objects.filter(pk=session.pk), now)
    if not _claim_activity(entry_key, marker, ip, pending=idle is not None):
        # Another request of this session is writing; idleness is still ours to decide.
        if idle is not None and not still_live.exists():
            _end_idle(session, now)
        return
    changes: dict[str, Any] = {"last_online": now, "last_ip": ip}
    expiry = _slid_expiry(session, now)
    if expiry is not None:
        changes["expire_at"] = expiry
    if not still_live.update(**changes):
        if idle is not None:
            _end_idle(session, now)
        return
    if idle is not None:
        cache.mark_activity(entry_key, cache.activity_marker(ip), replace=True)
    session.last_online, session.last_ip = now, ip
    if expiry is not None:
        session.expire_at = expiry


def activity_due(session: UserSession, marker: Any, ip: str | None, now: datetime) -> bool:
    """Return True if a request from ``ip`` at ``now`` has activity to write (pure)."""
    if marker == cache.activity_marker(ip):
        return False  # this IP's activity was written, and found the session live, recently
    interval = session_settings.LAST_ONLINE_UPDATE_INTERVAL
    return not (marker is None and ip == session.last_ip and now - session.last_online < interval)


def _claim_activity(entry_key: str, marker: Any, ip: str | None, *, pending: bool) -> bool:
    """Return True if this request is the one to write the activity (claim the marker)."""
    if cache.is_pending_marker(marker):
        return False
    value = cache.activity_marker(ip, pending=pending)
    # Another IP's marker is replaced (the IP change is written); a missing one is added.
    return cache.mark_activity(entry_key, value, replace=marker is not None)


def _end(
    sessions: UserSessionQuerySet, reason: str, detail: str | None, event_kind: EventKind
) -> list[tuple[Any, Any]]:
    """End the active sessions of a queryset; return ``(id, user_id)`` of each one ended.

    The rows are locked (``SELECT … FOR UPDATE``, in id order so that two revokes never wait
    on each other): of concurrent revokes of one session, exactly one ends it and reports it
    (events, signal); the others find it ended.
    """
    columns = ("id", "key", "user_id", "last_ip", "user_agent")
    given = detail
    if detail is None:
        with translation.override(None):  # stored data: the English label, whatever the request
            detail = str(EndReason(reason).label) if reason in EndReason.values else reason
    with transaction.atomic():
        # Over a subquery: the caller's queryset may be one FOR UPDATE refuses (DISTINCT).
        chosen = UserSession.objects.filter(pk__in=sessions.values("pk"), is_active=True)
        active = chosen.order_by("pk").select_for_update()
        rows = list(active.values_list(*columns))
        if not rows:
            return []
        cache.bar_sessions((session_id, digest) for session_id, digest, *_ in rows)
        now = timezone.now()
        for start in range(0, len(rows), REVOKE_BATCH_SIZE):
            ids = [row[0] for row in rows[start : start + REVOKE_BATCH_SIZE]]
            UserSession.objects.filter(pk__in=ids, is_active=True).update(
                is_active=False, ended_at=now, end_reason=reason, detail=detail
            )
    # After the commit (in autocommit): receivers and logs never hear of an end rolled back.
    data = {"detail": given} if given else {}
    events.emit(
        events.new(
            event_kind,
            user_id=user_id,
            session_id=session_id,
            ip=ip,
            user_agent=agent,
            reason=reason,
            data=data,
            at=now,
        )
        for session_id, _, user_id, ip, agent in rows
    )
    return [(session_id, user_id) for session_id, _, user_id, *_ in rows]


def revoke(
    sessions: Iterable[UserSession] | UserSessionQuerySet,
    reason: str = EndReason.REVOKED,
    detail: str | None = None,
    *,
    event_kind: EventKind = EventKind.REVOKED,
) -> int:
    """End sessions (a queryset or instances); return how many active ones were ended.

    The only way nilva-session ends sessions: views, admin and commands all call it, so the
    cache is always barred, ``session_revoked`` always sent and one event per session emitted
    (``event_kind``: ``revoked``, or the rule's kind when :func:`suspend` calls it).
    """
    if not isinstance(sessions, UserSessionQuerySet):
        sessions = UserSession.objects.filter(pk__in=[s.pk for s in sessions])
    ended = _end(sessions, reason, detail, event_kind)
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


def suspend(
    session: UserSession,
    reason: str,
    detail: str,
    request: Any = None,
    *,
    event_kind: EventKind = EventKind.SUSPENDED,
) -> bool:
    """End one session because a rule failed; return True if it was active."""
    if not revoke([session], reason, detail, event_kind=event_kind):
        return False
    session.is_active, session.end_reason, session.detail = False, reason, detail
    session_suspended.send(sender=UserSession, session=session, reason=reason, request=request)
    logger.warning(
        "session suspended: session=%s user=%s reason=%s", session.pk, session.user_id, reason
    )
    return True


# --- rotation: a new credential for the same session ----------------------------------------


def rotate_token(session: UserSession, request: Any = None) -> str:
    """Give ``session`` a new opaque token and retire its current one; return the new token.

    The old token is refused from the next request on, on every worker (its cache entry is
    barred before this returns). Raises :class:`InvalidToken` if the session's token was
    rotated meanwhile (by a concurrent call) or it has ended.
    """
    token = token_generator()
    digest = hash_data(token)
    rotated = UserSession.objects.filter(pk=session.pk, key=session.key, is_active=True)
    if not rotated.update(key=digest):
        raise errors.InvalidToken()
    cache.bar_sessions([(session.pk, session.key)])
    session.key = digest
    events.emit([_event(EventKind.ROTATED, session, data={"credential": "token"})])
    session_rotated.send(sender=UserSession, session=session, request=request)
    logger.info("session token rotated: session=%s user=%s", session.pk, session.user_id)
    return token


class RefreshVerdict(enum.Enum):
    """What a refresh token's generation says, against its session's (:func:`refresh_verdict`)."""

    CURRENT = "current"  # the session's latest refresh token
    GRACE = "grace"  # the one retired just now (within REFRESH_REUSE_GRACE): accepted
    REUSED = "reused"  # retired earlier: presented again, so someone else holds a copy
    UNKNOWN = "unknown"  # a generation the session never issued


def refresh_verdict(
    presented: int, generation: int, refreshed_at: datetime | None, now: datetime
) -> RefreshVerdict:
    """Return the verdict on a refresh token of generation ``presented`` (pure).

    ``generation`` and ``refreshed_at`` are the session's: its current generation and when it
    was last advanced; ``now`` is when the token was presented. A concurrent refresh may have
    advanced the session after ``now``: that age counts as zero, not as a negative one.
    """
    if presented == generation:
        return RefreshVerdict.CURRENT
    if presented > generation:
        return RefreshVerdict.UNKNOWN
    if presented == generation - 1 and refreshed_at is not None:
        age = max(now - refreshed_at, timedelta(0))
        if age < session_settings.REFRESH_REUSE_GRACE:
            return RefreshVerdict.GRACE
    return RefreshVerdict.REUSED


def refresh_state(session_id: Any) -> tuple[int, datetime | None] | None:
    """Return ``(refresh_generation, refreshed_at)`` of a live session, or None."""
    row = UserSession.objects.filter(pk=session_id, is_active=True)
    state = row.values_list("refresh_generation", "refreshed_at").first()
    return (int(state[0]), state[1]) if state is not None else None


def advance_refresh(
    session: UserSession,
    presented: int,
    request: Any = None,
    *,
    blacklisted: bool = False,
    rotate: bool = True,
) -> int:
    """Judge the refresh token of generation ``presented``; return the generation the answer's
    refresh token carries, or raise.

    With ``rotate`` (simplejwt's ``ROTATE_REFRESH_TOKENS``), one conditional UPDATE (``WHERE
    refresh_generation = presented``) retires it: of concurrent refreshes with one token exactly
    one advances it; the others find the generation it left and are judged by
    :func:`refresh_verdict`. Without ``rotate`` nothing advances, but a token retired while
    rotation was on is still retired. A reused token ends the session (reason
    ``refresh_reused``; ``refresh_token_reused`` sent by the request that ended it) and raises
    :class:`RefreshTokenReused`. ``blacklisted``: simplejwt's blacklist holds the token, so it
    may not advance.
    """
    now = timezone.now()
    live_row = UserSession.objects.filter(pk=session.pk, is_active=True)
    if rotate and not blacklisted:
        advanced = live_row.filter(refresh_generation=presented)
        if advanced.update(refresh_generation=presented + 1, refreshed_at=now):
            return presented + 1
    state = refresh_state(session.pk)
    if state is None:
        raise errors.SessionEnded()
    verdict = refresh_verdict(presented, state[0], state[1], now)
    if verdict is RefreshVerdict.GRACE:
        return state[0]
    if verdict is RefreshVerdict.CURRENT and not rotate and not blacklisted:
        return presented
    if verdict is not RefreshVerdict.REUSED:  # current but blacklisted, or never issued
        raise errors.TokenNotValid()
    detail = f"Refresh token of generation {presented} presented after generation {state[0]}."
    if suspend(
        session, EndReason.REFRESH_REUSED, detail, request, event_kind=EventKind.REFRESH_REUSED
    ):
        refresh_token_reused.send(sender=UserSession, session=session, request=request)
    raise errors.RefreshTokenReused()


def confirm_authentication(session: UserSession) -> None:
    """Record that ``session`` just proved the user's password (``authenticated_at = now``)."""
    now = timezone.now()
    UserSession.objects.filter(pk=session.pk, is_active=True).update(authenticated_at=now)
    cache.bar_sessions([(session.pk, session.key)])  # cached copies carry authenticated_at
    session.authenticated_at = now
    logger.info("session re-authenticated: session=%s user=%s", session.pk, session.user_id)


def invalidate_user(user: Any) -> None:
    """Keep every active session of ``user`` out of the cache for ``TOMBSTONE_TTL``.

    Called when a user row changes, so the next request re-reads the user from the database.
    Call it yourself after changing users with ``QuerySet.update()``, which sends no signal.
    """
    active = UserSession.objects.for_user(user).filter(is_active=True)  # lapsed ones may be cached
    cache.bar_sessions(active.values_list("id", "key"))


def current_session(request: Any) -> UserSession | None:
    """Return the ``UserSession`` that authenticated ``request`` (token or JWT), or None."""
    if hasattr(request, "_request"):
        getattr(request, "user", None)  # DRF authenticates lazily; make sure it has run
    return getattr(getattr(request, "_request", request), REQUEST_ATTRIBUTE, None)


KEEP_ATTRIBUTE = "_nilva_session_keep"


def keep_session(user: Any, session_or_request: Any) -> None:
    """Keep one session alive through the password change about to be saved on ``user``.

    Like Django's ``update_session_auth_hash`` but called *before* ``user.save()``::

        sessions.keep_session(request.user, request)   # or a UserSession
        request.user.set_password(new_password)
        request.user.save()

    Every other session of the user ends with reason ``password_changed``.
    """
    session = (
        session_or_request
        if isinstance(session_or_request, UserSession)
        else current_session(session_or_request)
    )
    setattr(user, KEEP_ATTRIBUTE, session.pk if session is not None else None)


def kept_session_id(user: Any) -> Any:
    """Return the id set by :func:`keep_session` (once; it is cleared), or None."""
    return user.__dict__.pop(KEEP_ATTRIBUTE, None)
