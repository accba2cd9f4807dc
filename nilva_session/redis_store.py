"""The native session store: Redis through redis-py, standalone, Sentinel or Cluster.

Configured by ``NILVA_SESSION["REDIS"]`` (a URL, or a dict; the README's "Redis" section):

* ``redis://``, ``rediss://``, ``unix://``: one Redis (or ``"CLUSTER": True``: a Redis Cluster,
  its nodes discovered from that one);
* ``"SENTINELS": [(host, port), ...]`` with ``"SERVICE_NAME"``: the master Sentinel names.

Key names: an entry and its activity marker share a hash tag (``{<entry key>}``), so they live
in one Cluster slot and are read together; everything else is ``KEY_PREFIX`` + the key.

With ``LOCAL_CACHE`` (the default), entries and markers are read through one tracked RESP3
connection per node and copied in the process (``nilva_session.tracking``): a warm request makes
no round trip, and a write by any process removes every copy. Writes (tombstones, fills,
markers, counters) go through redis-py's client and its connection pool.
"""

from __future__ import annotations

import logging
import pickle
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async

from .conf import session_settings
from .store import PerLoop, Store
from .tracking import COPY_OVERHEAD, Copy, LocalCopies, TrackedConnection

logger = logging.getLogger("nilva_session.cache")

#: redis-py options the store sets unless ``OPTIONS`` says otherwise: a Redis that does not
#: answer is a miss within half a second (the database decides), never a hung request.
DEFAULT_OPTIONS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}

# Opens the window and counts in one step, so a counter never exists without its expiry.
_COUNT_SCRIPT = (
    "redis.call('SET', KEYS[1], 0, 'EX', ARGV[1], 'NX') return redis.call('INCR', KEYS[1])"
)


def dumps(value: Any) -> bytes | int:
    # Integers stay plain (INCR counts them); anything else is pickled, as Django's cache does.
    return value if type(value) is int else pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def loads(data: Any) -> Any:
    if data is None:
        return None
    try:
        return int(data)
    except ValueError:
        return pickle.loads(data)  # noqa: S301 - written by this store only, as Django's cache


def options_of(config: Any) -> dict[str, Any]:
    """Return ``REDIS`` as a dict (a URL string is ``{"URL": url}``)."""
    return {"URL": config} if isinstance(config, str) else dict(config)


class RedisStore(Store):
    """Session entries in Redis; see the module docstring."""

    def __init__(self, config: Any) -> None:
        import redis  # the [redis] extra

        self.config = options_of(config)
        self.prefix: str = self.config.get("KEY_PREFIX", "")
        redis_options = {**DEFAULT_OPTIONS, **self.config.get("OPTIONS", {})}
        self.cluster = bool(self.config.get("CLUSTER"))
        self.sentinel: Any = None
        self.client: Any
        if self.config.get("SENTINELS"):
            from redis.sentinel import Sentinel

            sentinel_options = self.config.get("SENTINEL_OPTIONS", {})
            self.sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py: untyped
                self.config["SENTINELS"], sentinel_kwargs=sentinel_options, **redis_options
            )
            self.client = self.sentinel.master_for(self.config["SERVICE_NAME"])
        elif self.cluster:
            from redis.cluster import RedisCluster

            self.client = RedisCluster.from_url(self.config["URL"], **redis_options)
        else:
            self.client = redis.Redis.from_url(self.config["URL"], **redis_options)
        self.redis_options = redis_options
        self.local_copies = bool(session_settings.LOCAL_CACHE)
        self.copies = LocalCopies(
            session_settings.LOCAL_CACHE_MAX_ENTRIES, session_settings.LOCAL_CACHE_MAX_BYTES
        )
        self.lock = threading.Lock()
        self.tracked: dict[str, TrackedConnection] = {}
        self.busy = 0  # reads that went around the tracked connection (another thread had it)
        self.async_clients = PerLoop(self._async_client)
        self._entry_key = _entry_key_pattern()

    # -- names ---------------------------------------------------------------------------------

    def entry_name(self, entry_key: str) -> str:
        return f"{self.prefix}{{{entry_key}}}"

    def name(self, key: str) -> str:
        """Return the Redis key of one of our keys (entries and markers carry a hash tag)."""
        match = self._entry_key.fullmatch(key)
        if match is None:
            return f"{self.prefix}{key}"
        return self.entry_name(match["entry"]) + (match["marker"] or "")

    def _invalidated(self, names: list[str] | None, source: TrackedConnection) -> None:
        if names is None:
            self.copies.clear(source)
            return
        tag = len(self.prefix) + 1
        self.copies.invalidate(
            [name[tag : name.index("}", tag)] for name in names if "}" in name[tag:]]
        )

    # -- reads ---------------------------------------------------------------------------------

    def read_session(
        self, entry_key: str, marker_key: str, counter_key: str | None
    ) -> dict[str, Any]:
        if not self.local_copies or not self.lock.acquire(blocking=False):
            if self.local_copies:
                self.busy += 1
            keys = (
                [entry_key, marker_key]
                if counter_key is None
                else [entry_key, marker_key, counter_key]
            )
            return self.get_many(keys)
        try:
            return self._read_tracked(entry_key, marker_key, counter_key)
        finally:
            self.lock.release()

    async def aread_session(
        self, entry_key: str, marker_key: str, counter_key: str | None
    ) -> dict[str, Any]:
        if self.local_copies:
            copied = self.read_copy(entry_key, marker_key)
            if copied is not None:
                return copied
            # Only reads through the tracked connection are copied (tracking.py): the read that
            # makes the copy runs in a worker thread; the next request makes no round trip.
            read = sync_to_async(self.read_session, thread_sensitive=False)
            return await read(entry_key, marker_key, counter_key)
        keys = (
            [entry_key, marker_key] if counter_key is None else [entry_key, marker_key, counter_key]
        )
        names = [self.name(key) for key in keys]
        client = self.async_clients.get()
        values = await (client.mget_nonatomic(names) if self.cluster else client.mget(names))
        return {
            key: loads(value) for key, value in zip(keys, values, strict=True) if value is not None
        }

    def read_copy(self, entry_key: str, marker_key: str) -> dict[str, Any] | None:
        """Return a session's copied entry and marker if they may be served now, else None.

        Never waits on the network (the event loop calls it): a poll of the tracked socket
        that does not wait, and no lock held by another thread is waited for.
        """
        if not self.lock.acquire(blocking=False):
            return None
        try:
            tracked = self._tracked_for(self.entry_name(entry_key))
            return self._copied(entry_key, marker_key, tracked, time.monotonic())
        finally:
            self.lock.release()

    def _copied(
        self, entry_key: str, marker_key: str, tracked: TrackedConnection, now: float
    ) -> dict[str, Any] | None:
        if not tracked.poll(now):
            return None
        copy = self.copies.get(entry_key, now)
        if copy is None:
            return None
        found = {entry_key: copy.entry}
        if copy.marker is not None:
            found[marker_key] = copy.marker
        return found

    def _read_tracked(
        self, entry_key: str, marker_key: str, counter_key: str | None
    ) -> dict[str, Any]:
        entry_name = self.entry_name(entry_key)
        tracked = self._tracked_for(entry_name)
        now = time.monotonic()
        copied = self._copied(entry_key, marker_key, tracked, now)
        if copied is not None:
            return copied
        marker_name = entry_name + ":a"
        commands: list[tuple[Any, ...]] = [
            ("MGET", entry_name, marker_name),
            ("PTTL", entry_name),
            ("PTTL", marker_name),
        ]
        try:
            (entry_data, marker_data), entry_ttl, marker_ttl = tracked.execute(commands)
        except Exception as error:
            if self.cluster and "MOVED" in str(error):
                self.client.nodes_manager.initialize()  # the slots moved: learn where
            raise
        entry, marker = loads(entry_data), loads(marker_data)
        found = {}
        if entry is not None:
            found[entry_key] = entry
        if marker is not None:
            found[marker_key] = marker
        lifetimes = [ttl for ttl in (entry_ttl, marker_ttl if marker is not None else None) if ttl]
        if entry is not None and _copyable(entry) and lifetimes and min(lifetimes) > 0:
            # Never past the key's remaining TTL (PTTL: -1 no expiry, -2 gone: not copied).
            expires = now + min(lifetimes) / 1000
            size = len(entry_data) + len(marker_data or b"") + len(entry_key) + COPY_OVERHEAD
            self.copies.put(entry_key, Copy(entry, marker, expires, size, tracked))
        if counter_key is not None:
            counter = loads(self.client.get(self.name(counter_key)))
            if counter is not None:
                found[counter_key] = counter
        return found

    def _tracked_for(self, name: str) -> TrackedConnection:
        """Return the tracked connection to the master holding ``name`` (made on first use)."""
        node = self.client.get_node_from_key(name).name if self.cluster else ""
        tracked = self.tracked.get(node)
        if tracked is None:
            tracked = self.tracked[node] = TrackedConnection(
                self._connection_factory(name), self._invalidated, _lease
            )
        return tracked

    def _connection_factory(self, name: str) -> Any:
        """Return a factory of unconnected RESP3 connections to the master holding ``name``."""
        if self.cluster:
            node = self.client.get_node_from_key(name)
            return _resp3(self.client.get_redis_connection(node).connection_pool)
        if self.sentinel is not None:
            sentinel, service, pool = (
                self.sentinel,
                self.config["SERVICE_NAME"],
                self.client.connection_pool,
            )

            def to_master() -> Any:  # asked on every (re)connect: a failover moves the master
                host, port = sentinel.discover_master(service)
                return _resp3(pool, plain=True, host=host, port=port)()

            return to_master
        return _resp3(self.client.connection_pool)

    def _async_client(self) -> Any:
        """Return a redis.asyncio client like ``self.client`` (one per event loop: ``PerLoop``)."""
        if self.sentinel is not None:
            from redis.asyncio.sentinel import Sentinel

            sentinel_options = self.config.get("SENTINEL_OPTIONS", {})
            sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py: untyped
                self.config["SENTINELS"], sentinel_kwargs=sentinel_options, **self.redis_options
            )
            return sentinel.master_for(self.config["SERVICE_NAME"])
        if self.cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(self.config["URL"], **self.redis_options)
        import redis.asyncio

        return redis.asyncio.Redis.from_url(self.config["URL"], **self.redis_options)

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        names = [self.name(key) for key in keys]
        values = self.client.mget_nonatomic(names) if self.cluster else self.client.mget(names)
        return {
            key: loads(value) for key, value in zip(keys, values, strict=True) if value is not None
        }

    def get(self, key: str) -> Any:
        return loads(self.client.get(self.name(key)))

    # -- writes --------------------------------------------------------------------------------

    def set_many(self, values: Mapping[str, Any], timeout: int) -> list[str]:
        keys = list(values)
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.set(self.name(key), dumps(values[key]), ex=timeout)
        results = pipe.execute(raise_on_error=False)
        self._fence([self.name(key) for key in keys])
        return [key for key, result in zip(keys, results, strict=True) if result is not True]

    def _fence(self, names: list[str]) -> None:
        """One more round trip to each node written to, so its invalidations are out.

        Redis queues a write's invalidations while it executes it and sends them to the readers
        in the same event-loop pass as the writer's reply, in no set order. It answers a
        command sent after that reply only in a later pass: once the ``PING`` returns, every
        invalidation of the write has been written to its reader's socket. A revoke (the only
        ``set_many``: tombstones) thus returns after every worker's copy is invalidated.
        """
        if self.cluster:
            nodes = {node.name: node for node in map(self.client.get_node_from_key, names)}
            self.client.ping(target_nodes=list(nodes.values()))
        else:
            self.client.ping()

    def add(self, key: str, value: Any, timeout: int) -> bool:
        return bool(self.client.set(self.name(key), dumps(value), ex=timeout, nx=True))

    def set(self, key: str, value: Any, timeout: int) -> None:
        self.client.set(self.name(key), dumps(value), ex=timeout)

    def delete_many(self, keys: list[str]) -> None:
        if keys:
            self.client.delete(*[self.name(key) for key in keys])

    def count(self, key: str, timeout: int) -> int:
        return int(self.client.eval(_COUNT_SCRIPT, 1, self.name(key), timeout))

    def clear(self) -> None:
        """Delete every key under ``KEY_PREFIX`` (with no prefix: the whole database)."""
        if self.prefix:
            names = list(self.client.scan_iter(match=f"{_glob_escape(self.prefix)}*", count=1000))
            for start in range(0, len(names), 1000):
                self.client.delete(*names[start : start + 1000])
        else:
            self.client.flushdb()
        self.forget_all()

    def forget_all(self) -> None:
        with self.lock:
            self.copies.clear()

    def forget(self, keys: list[str]) -> None:
        if self.local_copies:
            with self.lock:
                self.copies.invalidate(keys)

    # -- the rest ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self.lock:
            copies = self.copies.stats()
            tracked = {
                node or "redis": {"proven_ago_s": round(time.monotonic() - t.proven_at, 3)}
                for node, t in self.tracked.items()
            }
        mode = (
            "sentinel" if self.sentinel is not None else "cluster" if self.cluster else "standalone"
        )
        return {
            "store": type(self).__name__,
            "mode": mode,
            "local_copies": self.local_copies,
            "copies": copies,
            "tracked_connections": tracked,
            "reads_around_busy_tracked_connection": self.busy,
        }

    def close(self) -> None:
        with self.lock:
            for tracked in self.tracked.values():
                tracked.broken()
            self.tracked.clear()
        try:
            self.client.close()
        except Exception:  # closing: nothing to report
            logger.debug("closing the Redis client failed", exc_info=True)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _lease() -> float:
    return float(session_settings.LOCAL_CACHE_LEASE.total_seconds())


def _copyable(entry: Any) -> bool:
    from .cache import TOMBSTONE

    return bool(entry != TOMBSTONE)


def _resp3(pool: Any, plain: bool = False, **overrides: Any) -> Any:
    """Return a factory of unconnected RESP3 connections like those of ``pool``."""
    kwargs = {**pool.connection_kwargs, **overrides, "protocol": 3}
    connection_class = pool.connection_class
    if plain:  # a Sentinel pool's class asks Sentinel on connect; the master is known here
        from redis.connection import Connection

        connection_class = Connection
        kwargs.pop("connection_pool", None)
    return lambda: connection_class(**kwargs)


def _entry_key_pattern() -> re.Pattern[str]:
    token, session_id = (
        re.escape(session_settings.SESSION_CACHE_PREFIX),
        re.escape(session_settings.SESSION_ID_CACHE_PREFIX),
    )
    return re.compile(
        rf"(?P<entry>{token}[0-9a-f]{{64}}|{session_id}[0-9a-f]{{32}})(?P<marker>:a)?"
    )
