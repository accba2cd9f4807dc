"""The cache protocol: entries for active sessions, tombstones, fail-safe reads.

Rules (see the README's "Security model"):

* The cache only ever holds copies of *active* sessions. A miss, an unreadable entry or a broken
  cache falls back to the database, so nothing in (or missing from) the cache can un-revoke.
* An entry is filled with ``add`` (set-if-absent), never ``set``.
* Anything that ends a session, or changes what an entry copies, writes a short-lived tombstone
  over the session's keys (with ``set``), before its UPDATE and again after the commit. A request
  that read the row before the change finds the tombstone when it tries to fill, and fills
  nothing. While a tombstone stands, the session is served from the database.
* Keys come from the token's SHA-256 digest or the session id, never from a token.
* Every cache error is logged (once per burst) and treated as a miss.
* A tombstone that could not be written is owed by this process: the entry under its key is
  not trusted here, and it is written on the next successful read (``_UnwrittenTombstones``).
* The warm path is one read of the session store (``nilva_session.store``): one MGET, or with
  ``REDIS`` and ``LOCAL_CACHE`` none, from a copy that Redis itself invalidates.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from django.core.signals import setting_changed
from django.db import transaction
from django.utils import timezone

from .conf import session_settings
from .store import get_cache as get_cache  # re-exported: cache.get_cache() is public
from .store import get_store

logger = logging.getLogger("nilva_session.cache")

TOMBSTONE = "nilva_session:tombstone"
ERROR_LOG_INTERVAL = 30.0

T = TypeVar("T")


def token_key(digest: str) -> str:
    """Return the cache key for a session looked up by token digest."""
    return f"{session_settings.SESSION_CACHE_PREFIX}{digest}"


def session_key(session_id: uuid.UUID | str) -> str:
    """Return the cache key for a session looked up by id (the JWT path)."""
    parsed = session_id if isinstance(session_id, uuid.UUID) else uuid.UUID(str(session_id))
    return f"{session_settings.SESSION_ID_CACHE_PREFIX}{parsed.hex}"


def activity_key(entry_key: str) -> str:
    """Return the key of the marker that says activity was recorded recently."""
    return f"{entry_key}:a"


class _ErrorLog:
    """Logs the first cache failure of a burst, then one summary per interval."""

    def __init__(self) -> None:
        # -inf, not 0.0: time.monotonic() has an arbitrary origin (boot on Linux) and may be
        # under ERROR_LOG_INTERVAL, which would silence the first failure.
        self.last_logged = float("-inf")
        self.suppressed = 0

    def report(self, operation: str, error: Exception) -> None:
        now = time.monotonic()
        if now - self.last_logged < ERROR_LOG_INTERVAL:
            self.suppressed += 1
            return
        logger.warning(
            "Cache %s failed (%s: %s); serving sessions from the database. "
            "%d more failures since the last report.",
            operation,
            type(error).__name__,
            error,
            self.suppressed,
        )
        self.last_logged, self.suppressed = now, 0


errors = _ErrorLog()


def safely(operation: str, default: T, func: Any, *args: Any, **kwargs: Any) -> T:
    try:
        return func(*args, **kwargs)  # type: ignore[no-any-return]
    except Exception as error:  # any backend, any failure: the DB is the fallback
        errors.report(operation, error)
        return default


class _UnwrittenTombstones:
    """Tombstones this process could not write (the cache failed): owed until written.

    A Redis that comes back *with its data* (paused, partitioned, restarted from disk) still
    holds the live entry of a session ended meanwhile. So: the entry under an owed key is not
    trusted by this process, and every owed tombstone is written as soon as a read succeeds
    again. Owed only for ``SESSION_CACHE_TTL``, the longest an entry filled before can live.
    Other processes do not know: docs/production.md says what that leaves open.
    """

    def __init__(self) -> None:
        self.keys: dict[str, float] = {}  # key -> time.monotonic() after which it is not owed
        self.lock = threading.Lock()

    def add(self, keys: Iterable[str]) -> None:
        until = time.monotonic() + session_settings.SESSION_CACHE_TTL.total_seconds()
        with self.lock:
            for key in keys:
                self.keys.setdefault(key, until)

    def discard(self, keys: Iterable[str]) -> None:
        with self.lock:
            for key in keys:
                self.keys.pop(key, None)

    def clear(self) -> None:
        with self.lock:
            self.keys.clear()

    def pay(self, entry_key: str) -> bool:
        """Write every owed tombstone; return True if ``entry_key`` was owed (do not trust it)."""
        now = time.monotonic()
        with self.lock:
            self.keys = {key: until for key, until in self.keys.items() if until > now}
            owed = dict(self.keys)
        if owed and _write_tombstones(list(owed)):
            with self.lock:
                for key, until in owed.items():
                    if self.keys.get(key) == until:
                        del self.keys[key]
        return entry_key in owed


unwritten = _UnwrittenTombstones()
_FAILED = object()


def _write_tombstones(keys: list[str]) -> bool:
    tombstones, ttl = dict.fromkeys(keys, TOMBSTONE), session_settings.seconds("TOMBSTONE_TTL")
    result = safely("set_many", _FAILED, get_store().set_many, tombstones, ttl)
    if result is not _FAILED and not result:  # set_many returns the keys it failed to set
        return True
    # A Redis that refuses writes but serves reads (maxmemory + noeviction: "OOM command not
    # allowed") still allows DEL: remove the live copies so that no process is served them.
    safely("delete_many", None, get_store().delete_many, keys)
    return False


def _forget_unwritten(*, setting: str, **kwargs: Any) -> None:
    if setting == "CACHES":  # another cache (tests): what was owed to the old one is moot
        unwritten.clear()


setting_changed.connect(_forget_unwritten, dispatch_uid="nilva_session_forget_unwritten")


class Lookup(NamedTuple):
    """What one read of the cache found for a session."""

    found: Any  # the decoded entry, or None (missing, tombstone, foreign, unreadable)
    marker: Any  # the activity marker, or None
    counter: Any  # the counter read along (``counter_key``), or None
    fillable: bool  # nothing stood under the key: a fill may add the session


def lookup(entry_key: str, decode: Callable[[Any], Any], counter_key: str | None = None) -> Lookup:
    """Read a session's entry, its activity marker and ``counter_key`` in one round trip.

    Or in none: the native store answers from a copy Redis keeps true, without the counter
    (read only for a session that is not found, i.e. not copied).

    ``decode`` turns an entry into what the caller wants, or None when it is not a valid entry
    of the current format. Anything else found under our key (another version's entry, an
    object pickled by nilva-session 0.1.x) is barred, so that it lapses quickly.
    """
    marker_key = activity_key(entry_key)
    values: dict[str, Any] | None = safely(
        "read", None, get_store().read_session, entry_key, marker_key, counter_key
    )
    if values is None:
        values = {}
    elif unwritten.keys and unwritten.pay(entry_key):
        values.pop(entry_key, None)  # this process owes a tombstone here: the entry may be stale
    found, foreign = _decoded(values, entry_key, decode, counter_key)
    if foreign:
        bar([entry_key])
    return found


async def alookup(
    entry_key: str, decode: Callable[[Any], Any], counter_key: str | None = None
) -> Lookup | None:
    """:func:`lookup` for the event loop (``Store.aread_session``); None: :func:`lookup`'s turn.

    None when the read has writes to go with it, which the sync path makes: this process owes
    tombstones (``_UnwrittenTombstones``), or a foreign entry is to be barred.
    """
    if unwritten.keys:
        return None
    try:
        values = await get_store().aread_session(entry_key, activity_key(entry_key), counter_key)
    except Exception as error:  # any backend, any failure: the DB is the fallback
        errors.report("read", error)
        values = {}
    found, foreign = _decoded(values, entry_key, decode, counter_key)
    return None if foreign else found


def _decoded(
    values: dict[str, Any], entry_key: str, decode: Callable[[Any], Any], counter_key: str | None
) -> tuple[Lookup, bool]:
    """Return what ``values`` (one read) say of a session, and whether its entry is foreign."""
    entry = values.get(entry_key)
    found = decode(entry) if entry is not None and entry != TOMBSTONE else None
    foreign = entry is not None and found is None and entry != TOMBSTONE
    counter = values.get(counter_key) if counter_key is not None else None
    return Lookup(
        found, values.get(activity_key(entry_key)), counter, fillable=entry is None
    ), foreign


def fill(entry_key: str, entry: Any, *, started: datetime, expire_at: datetime | None) -> None:
    """Cache ``entry`` (an active session read at ``started``) with ``add``; a tombstone wins.

    Nothing is written once the request has run for ``TOMBSTONE_TTL / 2``: the tombstone of a
    revoke that committed after its database read must still stand when the ``add`` arrives.
    The entry lives ``SESSION_CACHE_TTL``, never past ``expire_at``.
    """
    now = timezone.now()
    if now - started >= session_settings.TOMBSTONE_TTL / 2:
        return
    timeout = session_settings.seconds("SESSION_CACHE_TTL")
    if expire_at is not None:
        timeout = min(timeout, max(1, int((expire_at - now).total_seconds())))
    safely("add", False, get_store().add, entry_key, entry, timeout)


PENDING_MARKER_PREFIX = "?"  # never the start of an IP address


def activity_marker(ip: str | None, *, pending: bool = False) -> str:
    """Return the activity marker value for ``ip``: confirmed, or pending its UPDATE."""
    return f"{PENDING_MARKER_PREFIX}{ip or ''}" if pending else ip or ""


def is_pending_marker(marker: Any) -> bool:
    """Return True for a marker whose activity write has not been confirmed yet."""
    return isinstance(marker, str) and marker.startswith(PENDING_MARKER_PREFIX)


def mark_activity(entry_key: str, value: str, *, replace: bool) -> bool:
    """Record an activity marker; return False if another request added one first.

    ``replace`` overwrites the marker (``set``); otherwise it is only added (``add``).
    """
    marker_key, timeout = (
        activity_key(entry_key),
        session_settings.seconds("LAST_ONLINE_UPDATE_INTERVAL"),
    )
    if replace:
        safely("set", None, get_store().set, marker_key, value, timeout)
        return True
    return safely("add", True, get_store().add, marker_key, value, timeout)


def bar(keys: Iterable[str]) -> None:
    """Write tombstones over ``keys`` now and again when the current transaction commits."""
    keys = list(keys)
    if not keys:
        return
    get_store().forget(keys)  # this process' copies go now, not when Redis' message arrives

    def write() -> None:
        if _write_tombstones(keys):
            if unwritten.keys:
                unwritten.discard(keys)
        else:
            unwritten.add(keys)  # written on the next successful read (see _UnwrittenTombstones)

    write()
    transaction.on_commit(write)


def keys_for(session_id: uuid.UUID | str, digest: str) -> list[str]:
    """Return both cache keys of one session."""
    return [token_key(digest), session_key(session_id)]


def bar_sessions(id_and_digest: Iterable[tuple[Any, str]]) -> None:
    """Write tombstones over both keys of each ``(session_id, digest)`` pair."""
    bar(key for session_id, digest in id_and_digest for key in keys_for(session_id, digest))
