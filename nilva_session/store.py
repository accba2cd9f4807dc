"""Where session entries, tombstones, activity markers and counters live: the session store.

Two stores, one contract (the methods of :class:`Store`):

* :class:`DjangoCacheStore`, the default: the Django cache named by ``CACHE_ALIAS``, any backend.
* :class:`~nilva_session.redis_store.RedisStore`, when ``REDIS`` is set: Redis through redis-py,
  standalone, Sentinel or Cluster, with copies in the worker process kept true by Redis'
  ``CLIENT TRACKING`` (``LOCAL_CACHE``): a warm request then makes no network round trip.

Every method may raise: ``cache.safely`` turns a failure into a miss (the database decides).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import BaseCache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.core.signals import setting_changed

from .conf import session_settings


def get_cache() -> BaseCache:
    """Return the Django cache named by ``CACHE_ALIAS`` (the store unless ``REDIS`` is set)."""
    return caches[session_settings.CACHE_ALIAS]


class Store:
    """The operations nilva-session needs from where it keeps session entries."""

    #: True when reads may be answered from copies in this process (``stats()`` reports them).
    local_copies = False

    def read_session(
        self, entry_key: str, marker_key: str, counter_key: str | None
    ) -> dict[str, Any]:
        """Return the values found under a session's entry, its marker and ``counter_key``.

        One round trip, or none when a store answers from a copy that Redis keeps true; the
        counter is then not read (it matters only when the entry is not found).
        """
        keys = (
            [entry_key, marker_key] if counter_key is None else [entry_key, marker_key, counter_key]
        )
        return self.get_many(keys)

    async def aread_session(
        self, entry_key: str, marker_key: str, counter_key: str | None
    ) -> dict[str, Any]:
        """:meth:`read_session` for the event loop; this default runs it in a worker thread."""
        read = sync_to_async(self.read_session, thread_sensitive=False)
        return await read(entry_key, marker_key, counter_key)

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def get(self, key: str) -> Any:
        """Return the value stored under ``key`` (never a local copy), or None."""
        return self.get_many([key]).get(key)

    def set_many(self, values: Mapping[str, Any], timeout: int) -> list[str]:
        """Set every key; return the keys that could not be set."""
        raise NotImplementedError

    def add(self, key: str, value: Any, timeout: int) -> bool:
        """Set ``key`` only if absent; return True if it was set."""
        raise NotImplementedError

    def set(self, key: str, value: Any, timeout: int) -> None:
        raise NotImplementedError

    def delete_many(self, keys: list[str]) -> None:
        raise NotImplementedError

    def count(self, key: str, timeout: int) -> int:
        """Add one to the counter ``key`` (created with ``timeout``); return its new value."""
        raise NotImplementedError

    def forget(self, keys: list[str]) -> None:
        """Drop this process' copies of ``keys`` (before they are written over)."""

    def clear(self) -> None:
        """Delete everything this store holds (tests and benchmarks; a shared cache: all of it)."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Return what the store reports of itself (its copies: entries, bytes, hits ...)."""
        return {"store": type(self).__name__}


class DjangoCacheStore(Store):
    """The Django cache ``CACHE_ALIAS`` (resolved per call: Django's caches are per thread)."""

    def backend(self) -> BaseCache:
        return get_cache()

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return _get_many(self.backend())(keys)

    async def aread_session(
        self, entry_key: str, marker_key: str, counter_key: str | None
    ) -> dict[str, Any]:
        keys = (
            [entry_key, marker_key] if counter_key is None else [entry_key, marker_key, counter_key]
        )
        return await _aget_many(self.backend())(keys)

    def set_many(self, values: Mapping[str, Any], timeout: int) -> list[str]:
        return list(self.backend().set_many(dict(values), timeout) or [])

    def add(self, key: str, value: Any, timeout: int) -> bool:
        return bool(self.backend().add(key, value, timeout))

    def set(self, key: str, value: Any, timeout: int) -> None:
        self.backend().set(key, value, timeout)

    def delete_many(self, keys: list[str]) -> None:
        self.backend().delete_many(keys)

    def clear(self) -> None:
        self.backend().clear()

    def count(self, key: str, timeout: int) -> int:
        backend = self.backend()
        backend.add(key, 0, timeout)  # opens the window; a concurrent add loses harmlessly
        try:
            return int(backend.incr(key))
        except ValueError:  # the key lapsed between add and incr: this count opens it again
            if backend.add(key, 1, timeout):
                return 1
            return int(backend.incr(key))  # another count opened it first: count on it


_READER = "_nilva_session_get_many"


def _get_many(backend: BaseCache) -> Callable[[list[str]], dict[str, Any]]:
    """Return the ``get_many`` to read ``backend`` with: its own, or a faster equivalent.

    The equivalent (``_reused_client_get_many``) serves only Django's own ``RedisCache``, and
    only while neither the backend's class nor this instance replaces ``get_many`` (a subclass,
    a test spy, a mock): then the replacement is called, as before.
    """
    reader = _own_reader(backend, _READER, _reused_client_get_many)
    return backend.get_many if reader is None else reader


def _own_reader(backend: BaseCache, attribute: str, make: Callable[[BaseCache], Any]) -> Any:
    """Return the reader ``make`` built for ``backend``, or None when there is none or the
    backend's ``get_many`` is not ``RedisCache``'s own (then it is called).

    One reader per process and configuration, not per backend instance: Django keeps caches
    per thread and, under ASGI, per request context, so a reader kept on the instance (and its
    connection) would be built anew for every request.
    """
    state = backend.__dict__
    reader: Any = state.get(attribute)
    if reader is None:
        shared = _configuration_of(backend, attribute)
        reader = _readers.get(shared) if shared is not None else None
        if reader is None:
            reader = make(backend) or False
            if shared is not None:
                reader = _readers.setdefault(shared, reader)
        state[attribute] = reader
    if reader and "get_many" not in state and type(backend).get_many is RedisCache.get_many:
        return reader
    return None


_readers: dict[Any, Any] = {}


def _configuration_of(backend: BaseCache, attribute: str) -> Any:
    """Return what a reader of ``backend`` depends on (None: not one to share)."""
    if type(backend) is not RedisCache:
        return None
    try:
        client: Any = backend._cache
        options = repr(sorted(client._pool_options.items(), key=lambda item: item[0]))
        servers = tuple(client._servers)
    except Exception:  # internals renamed: a reader per instance, as the readers themselves do
        return None
    return (attribute, servers, options, backend.key_prefix, backend.version, backend.key_func)


def _reused_client_get_many(backend: BaseCache) -> Callable[[list[str]], dict[str, Any]] | None:
    """``RedisCache.get_many`` through one redis-py client per connection pool, or None.

    Django's ``RedisCacheClient.get_client()`` builds a new ``redis.Redis`` object on every
    call, which costs more than the round trip itself on a fast network (docs/benchmarks.md).
    This reads exactly what ``RedisCache.get_many`` reads: the same keys (``make_key``; the
    key warnings are skipped, the keys are ours), the same pool (picked per call, as Django
    does, so replicas are still used), one MGET, the same deserializer; an error is raised as
    there. A client class that changes how it reads, or Django internals that differ, get None.
    The ``REDIS`` setting (``RedisStore``) needs none of this: it owns its connections.
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


_ASYNC_READER = "_nilva_session_aget_many"


def _aget_many(backend: BaseCache) -> Callable[[list[str]], Awaitable[dict[str, Any]]]:
    """Return the ``aget_many`` to read ``backend`` with on the event loop.

    Django's ``RedisCache`` has no async client of its own (its ``aget_many`` is ``get_many`` in
    a worker thread): it is read with redis.asyncio (``_redis_asyncio_get_many``) under the same
    conditions as ``_get_many``'s reader; ``LocMemCache`` is read in place (it waits on nothing).
    Any other backend: its own ``aget_many``.
    """
    reader = _own_reader(backend, _ASYNC_READER, _redis_asyncio_get_many)
    if reader is not None:
        return reader  # type: ignore[no-any-return]
    if type(backend) is LocMemCache and "get_many" not in backend.__dict__:
        return _in_memory(backend.get_many)  # no I/O to wait on: no worker thread either
    if type(backend).aget_many is BaseCache.aget_many:
        # Django's default awaits one aget per key, a worker thread each: one for all of them.
        return sync_to_async(backend.get_many, thread_sensitive=False)
    return backend.aget_many


def _in_memory(
    get_many: Callable[[list[str]], dict[str, Any]],
) -> Callable[[list[str]], Awaitable[dict[str, Any]]]:
    async def aget_many(keys: list[str]) -> dict[str, Any]:
        return get_many(keys)

    return aget_many


class PerLoop:
    """One value per running event loop: redis.asyncio clients are bound to the loop they run in."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make
        self.values: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}
        self.lock = threading.Lock()

    def get(self) -> Any:
        loop = asyncio.get_running_loop()
        held = self.values.get(id(loop))
        if held is not None and held[0] is loop:
            return held[1]
        with self.lock:  # a new loop (tests, async_to_sync): forget the closed ones
            self.values = {k: v for k, v in self.values.items() if not v[0].is_closed()}
            value = self.make()
            self.values[id(loop)] = (loop, value)
        return value


def _redis_asyncio_get_many(
    backend: BaseCache,
) -> Callable[[list[str]], Awaitable[dict[str, Any]]] | None:
    """``RedisCache.get_many`` through redis.asyncio: the same keys, servers, options, MGET and
    deserializer (see ``_reused_client_get_many``); None when the backend's client, pool or
    parser class is not Django's and redis-py's own (only those have async twins)."""
    if not isinstance(backend, RedisCache):
        return None
    try:
        import redis
        import redis.asyncio

        client: Any = backend._cache  # private parts, as in _reused_client_get_many
        options = dict(client._pool_options)
        if (
            type(client).get_many is not RedisCacheClient.get_many
            or client._pool_class is not redis.ConnectionPool
            or options.pop("parser_class", None) is not redis.connection.DefaultParser
        ):
            return None
        servers, pick_index = list(client._servers), client._get_connection_pool_index
        make_key, loads = backend.make_key, client._serializer.loads
    except Exception:  # redis-py missing, internals renamed: the backend's own aget_many
        return None

    def clients() -> dict[int, Any]:
        return {}

    per_loop = PerLoop(clients)

    async def aget_many(keys: list[str]) -> dict[str, Any]:
        index, pools = pick_index(False), per_loop.get()
        redis_client = pools.get(index)
        if redis_client is None:
            redis_client = pools[index] = redis.asyncio.Redis.from_url(servers[index], **options)
        values = await redis_client.mget([make_key(key) for key in keys])
        return {k: loads(v) for k, v in zip(keys, values, strict=False) if v is not None}

    return aget_many


_lock = threading.Lock()
_current: Store | None = None


def get_store() -> Store:
    """Return the session store of the current settings (one per process, built on first use)."""
    store = _current
    if store is None:
        store = _build()
    return store


def _build() -> Store:
    global _current
    with _lock:
        if _current is None:
            if session_settings.REDIS is None:
                _current = DjangoCacheStore()
            else:
                from .redis_store import RedisStore

                _current = RedisStore(session_settings.REDIS)
        return _current


def reset() -> None:
    """Forget the store (and close its connections); the next call builds it anew."""
    global _current
    with _lock:
        store, _current = _current, None
    close = getattr(store, "close", None)
    if close is not None:
        close()


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("NILVA_SESSION", "USER_SESSION", "CACHES"):
        reset()
    if setting == "CACHES":
        _readers.clear()


setting_changed.connect(_settings_changed, dispatch_uid="nilva_session_store_reset")
