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
* The warm path is one read: ``get_many`` of the backend, or, for Django's own ``RedisCache``,
  the same MGET through one reused redis-py client (``_reused_client_get_many``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from functools import cache as memoize
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from django.contrib.auth import get_user_model
from django.core.cache import BaseCache, caches
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.core.signals import setting_changed
from django.db import router, transaction
from django.db.models import DateTimeField
from django.db.models.base import DEFERRED

from .conf import session_settings

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from .models import UserSession

logger = logging.getLogger("nilva_session.cache")

ENTRY_VERSION = 2
TOMBSTONE = "nilva_session:tombstone"
# The session columns an entry copies, in order. Timestamps are stored as floats to keep it small
# (the user's aware datetimes too); ``key`` is None in an entry filed under the token's digest.
SESSION_FIELDS = (
    "id",
    "user_id",
    "key",
    "expire_at",
    "last_online",
    "last_ip",
    "user_agent",
    "created_at",
    "authenticated_at",
)
_TIMESTAMPS = frozenset({"expire_at", "last_online", "created_at", "authenticated_at"})
ERROR_LOG_INTERVAL = 30.0

T = TypeVar("T")


def get_cache() -> BaseCache:
    """Return the cache named by ``CACHE_ALIAS``."""
    return caches[session_settings.CACHE_ALIAS]


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
    result = safely("set_many", _FAILED, get_cache().set_many, tombstones, ttl)
    if result is not _FAILED and not result:  # set_many returns the keys it failed to set
        return True
    # A Redis that refuses writes but serves reads (maxmemory + noeviction: "OOM command not
    # allowed") still allows DEL: remove the live copies so that no process is served them.
    safely("delete_many", None, get_cache().delete_many, keys)
    return False


def _forget_unwritten(*, setting: str, **kwargs: Any) -> None:
    if setting == "CACHES":  # another cache (tests): what was owed to the old one is moot
        unwritten.clear()


setting_changed.connect(_forget_unwritten, dispatch_uid="nilva_session_forget_unwritten")


def read(entry_key: str, counter_key: str | None = None) -> tuple[Any, Any, Any]:
    """Return ``(entry, activity_marker, counter)`` in one round trip; None where missing.

    ``counter_key`` (optional) is read along: the invalid-token counter of the client.
    """
    marker_key = activity_key(entry_key)
    keys = [entry_key, marker_key] if counter_key is None else [entry_key, marker_key, counter_key]
    found: dict[str, Any] | None = safely("read", None, _get_many(get_cache()), keys)
    if found is None:
        found = {}
    elif unwritten.keys and unwritten.pay(entry_key):
        found.pop(entry_key, None)  # this process owes a tombstone here: the entry may be stale
    counter = found.get(counter_key) if counter_key is not None else None
    return found.get(entry_key), found.get(marker_key), counter


_READER = "_nilva_session_get_many"


def _get_many(backend: BaseCache) -> Callable[[list[str]], dict[str, Any]]:
    """Return the ``get_many`` to read ``backend`` with: its own, or a faster equivalent.

    The equivalent (``_reused_client_get_many``) serves only Django's own ``RedisCache``, and
    only while neither the backend's class nor this instance replaces ``get_many`` (a subclass,
    a test spy, a mock): then the replacement is called, as before.
    """
    state = backend.__dict__
    reader: Any = state.get(_READER)
    if reader is None:
        reader = state[_READER] = _reused_client_get_many(backend) or False
    if reader and "get_many" not in state and type(backend).get_many is RedisCache.get_many:
        return reader  # type: ignore[no-any-return]
    return backend.get_many


def _reused_client_get_many(backend: BaseCache) -> Callable[[list[str]], dict[str, Any]] | None:
    """``RedisCache.get_many`` through one redis-py client per connection pool, or None.

    Django's ``RedisCacheClient.get_client()`` builds a new ``redis.Redis`` object on every
    call, which costs more than the round trip itself on a fast network (docs/benchmarks.md).
    This reads exactly what ``RedisCache.get_many`` reads: the same keys (``make_key``; the
    key warnings are skipped, the keys are ours), the same pool (picked per call, as Django
    does, so replicas are still used), one MGET, the same deserializer; an error is raised as
    there. A client class that changes how it reads, or Django internals that differ, get None.
    """
    if not isinstance(backend, RedisCache):
        return None
    try:
        client: Any = backend._cache  # the private parts read below: Django 4.0 to 6.1
        if (
            type(client).get_many is not RedisCacheClient.get_many
            or type(client).get_client is not RedisCacheClient.get_client
        ):
            return None
        make_key, loads = backend.make_key, client._serializer.loads
        pick_pool, new_client = client._get_connection_pool, client._client
    except Exception:  # redis-py missing, internals renamed: the backend's own get_many
        return None
    clients: dict[Any, Any] = {}  # pool -> redis.Redis (thread-safe: one connection per command)

    def get_many(keys: list[str]) -> dict[str, Any]:
        pool = pick_pool(False)
        redis_client = clients.get(pool)
        if redis_client is None:
            redis_client = clients[pool] = new_client(connection_pool=pool)
        values = redis_client.mget([make_key(key) for key in keys])
        return {k: loads(v) for k, v in zip(keys, values, strict=False) if v is not None}

    return get_many


def _stamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _unstamp(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


class _Layout(NamedTuple):
    user_model: Any
    names: tuple[str, ...]  # the user's columns in an entry, in order: never the password
    stamped: tuple[int, ...]  # positions of the user's DateTimeFields (aware: stored as floats)
    signature: int
    session_names: tuple[str, ...]  # UserSession.from_db names (model order): entry + is_active
    keyless_names: tuple[str, ...]  # the same without ``key`` (left deferred)
    user_columns: tuple[str, ...]  # every concrete column of each model, in order
    session_columns: tuple[str, ...]


def _from_db(
    model: Any, columns: tuple[str, ...], names: tuple[str, ...], values: dict[str, Any]
) -> Any:
    """``model.from_db`` with one value per concrete column (DEFERRED where absent).

    What ``from_db`` would build itself from ``names``; given in full, it skips that step.
    """
    row = [values.get(column, DEFERRED) for column in columns]
    return model.from_db(router.db_for_read(model), names, row)


@memoize
def _user_layout(label: str) -> _Layout:
    from .models import UserSession

    # The password hash never goes to the cache: it is left deferred on the rebuilt user.
    user_model = get_user_model()
    fields = [f for f in user_model._meta.concrete_fields if f.attname != "password"]
    names = tuple(f.attname for f in fields)
    stamped = tuple(i for i, f in enumerate(fields) if isinstance(f, DateTimeField))
    layout_repr = repr((ENTRY_VERSION, label, names, SESSION_FIELDS))
    signature = zlib.crc32(layout_repr.encode()) & 0x7FFFFFFF  # 31 bits: 5 bytes pickled
    present = {*SESSION_FIELDS, "is_active"}
    # from_db takes values in the model's field order, leaving the others deferred.
    session_names = tuple(
        f.attname for f in UserSession._meta.concrete_fields if f.attname in present
    )
    keyless_names = tuple(name for name in session_names if name != "key")
    return _Layout(
        user_model,
        names,
        stamped,
        signature,
        session_names,
        keyless_names,
        tuple(f.attname for f in user_model._meta.concrete_fields),
        tuple(f.attname for f in UserSession._meta.concrete_fields),
    )


def _layout() -> _Layout:
    return _user_layout(get_user_model()._meta.label)


def pack(session: UserSession, user: AbstractBaseUser, *, with_key: bool = True) -> tuple[Any, ...]:
    """Return the small tuple that the cache stores for an active session and its user.

    ``with_key=False`` leaves out the token digest, for an entry filed under that digest.
    """
    layout = _layout()
    values = []
    for name in SESSION_FIELDS:
        value = getattr(session, name)
        if name in _TIMESTAMPS:
            value = _stamp(value)
        elif name == "id":
            value = value.bytes
        elif name == "key":
            value = bytes.fromhex(value) if with_key else None
        values.append(value)
    user_values = [getattr(user, n) for n in layout.names]
    for i in layout.stamped:
        value = user_values[i]
        if isinstance(value, datetime) and value.tzinfo is not None:
            user_values[i] = value.timestamp()
    return (layout.signature, tuple(values), tuple(user_values))


def unpack(entry: Any, digest: str | None = None) -> tuple[UserSession, AbstractBaseUser] | None:
    """Return ``(session, user)`` rebuilt from an entry, or None when it is not a valid entry.

    ``digest`` is the token digest the entry was looked up by, for an entry that leaves it out
    (without it, such a session's ``key`` is left deferred). Anything else found under our keys
    (a tombstone, an entry of another version or user model, an object pickled by
    nilva-session 0.1.x) is refused.
    """
    from .models import UserSession

    layout = _layout()
    if not (isinstance(entry, tuple) and len(entry) == 3 and entry[0] == layout.signature):
        return None
    _, session_values, user_values = entry
    if len(session_values) != len(SESSION_FIELDS) or len(user_values) != len(layout.names):
        return None
    fields = dict(zip(SESSION_FIELDS, session_values, strict=True))
    for name in _TIMESTAMPS:
        fields[name] = _unstamp(fields[name])
    fields["id"] = uuid.UUID(bytes=fields["id"])
    session_names = layout.session_names
    if fields["key"] is not None:
        fields["key"] = fields["key"].hex()
    elif digest is not None:
        fields["key"] = digest
    else:
        session_names = layout.keyless_names
    columns = dict(zip(layout.names, user_values, strict=True))
    for i in layout.stamped:
        if type(user_values[i]) is float:
            columns[layout.names[i]] = _unstamp(user_values[i])
    user = _from_db(layout.user_model, layout.user_columns, layout.names, columns)
    fields["is_active"] = True
    if session_names is layout.keyless_names:
        del fields["key"]
    session = _from_db(UserSession, layout.session_columns, session_names, fields)
    session.user = user
    return session, user


def fill(entry_key: str, session: UserSession, user: AbstractBaseUser, now: datetime) -> None:
    """Cache an active session with ``add``; a tombstone or a newer entry wins."""
    timeout = session_settings.seconds("SESSION_CACHE_TTL")
    if session.expire_at is not None:
        timeout = min(timeout, max(1, int((session.expire_at - now).total_seconds())))
    # Filed under the token's digest, the entry need not repeat it (see ``unpack``).
    entry = pack(session, user, with_key=entry_key != token_key(session.key))
    safely("add", False, get_cache().add, entry_key, entry, timeout)


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
        safely("set", None, get_cache().set, marker_key, value, timeout)
        return True
    return safely("add", True, get_cache().add, marker_key, value, timeout)


def bar(keys: Iterable[str]) -> None:
    """Write tombstones over ``keys`` now and again when the current transaction commits."""
    keys = list(keys)
    if not keys:
        return

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
