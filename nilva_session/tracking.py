"""Session entries copied into the worker process, kept true by Redis itself (``CLIENT TRACKING``).

Redis 6+ remembers which keys a tracked connection read and, when any client changes them (or
they expire or are evicted), pushes an ``invalidate`` message on that connection. The rules:

* Only what was read through the tracked connection is copied, and only session entries and
  their activity markers: a throttle counter is never served from a copy.
* Before a copy is served, every message waiting on the connection is read (a poll that does
  not wait), so each invalidation Redis has sent is applied before the copy is trusted.
* A copy is served only while the connection is proven alive: a reply on the connection shows
  that every invalidation Redis queued before it has arrived. A ``PING`` is sent (without
  waiting for its answer) when the last proof is half a lease old; once no proof is younger
  than ``LOCAL_CACHE_LEASE``, nothing is served from the copies until a reply comes. A paused or
  partitioned Redis therefore stops local answers within one lease.
* A connection that errs, closes or reconnects drops every copy made through it.
* A copy never outlives the Redis key it copies (its remaining ``PTTL`` is read along), and the
  copies are bounded in entries and bytes (least recently used first out).

Redis writes an invalidation into the reader's connection while it executes the write, before
it answers the writer; see docs/production.md for the staleness guarantee this gives.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

logger = logging.getLogger("nilva_session.cache")

#: Bytes counted for a copy beyond its pickled size: the unpickled tuple, its key, the map slot
#: (measured with tracemalloc by benchmarks/memory.py: about 1,080 bytes per copy in all).
COPY_OVERHEAD = 760


class Copy(NamedTuple):
    """A session entry and its activity marker as Redis had them, until ``expires``."""

    entry: Any
    marker: Any
    expires: float  # time.monotonic()
    size: int
    source: object  # the tracked connection it was read through


class LocalCopies:
    """A bounded map of copies (LRU by entries and bytes) with counters for ``stats()``."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.copies: OrderedDict[str, Copy] = OrderedDict()
        self.bytes = 0
        self.counts = dict.fromkeys(
            ("hits", "misses", "invalidations", "evictions", "expired", "drops"), 0
        )

    def get(self, key: str, now: float) -> Copy | None:
        copy = self.copies.get(key)
        if copy is None:
            self.counts["misses"] += 1
            return None
        if copy.expires <= now:
            self._remove(key)
            self.counts["expired"] += 1
            self.counts["misses"] += 1
            return None
        self.copies.move_to_end(key)
        self.counts["hits"] += 1
        return copy

    def put(self, key: str, copy: Copy) -> None:
        if copy.size > self.max_bytes:
            return
        self._remove(key)
        self.copies[key] = copy
        self.bytes += copy.size
        while len(self.copies) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self.copies))
            self._remove(oldest)
            self.counts["evictions"] += 1

    def invalidate(self, keys: Sequence[str]) -> None:
        for key in keys:
            if self._remove(key):
                self.counts["invalidations"] += 1

    def _remove(self, key: str) -> bool:
        copy = self.copies.pop(key, None)
        if copy is None:
            return False
        self.bytes -= copy.size
        return True

    def clear(self, source: object = None) -> None:
        """Drop every copy, or every copy read through ``source``."""
        doomed = [k for k, c in self.copies.items() if source is None or c.source is source]
        if doomed:
            self.counts["drops"] += 1
        for key in doomed:
            self._remove(key)

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self.copies),
            "bytes": self.bytes,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
            **self.counts,
        }


_PUSHED = object()

# Bumped in a forked child (gunicorn --preload): a child never reads its parent's socket.
# Cheaper than os.getpid(), a system call on every warm request.
_generation = [0]
os.register_at_fork(after_in_child=lambda: _generation.__setitem__(0, _generation[0] + 1))


class TrackedConnection:
    """One RESP3 connection to one Redis node with ``CLIENT TRACKING ON``, for this process.

    ``make_connection`` returns an unconnected redis-py ``Connection`` with ``protocol=3``.
    ``on_invalidate(names, connection)`` receives the key names Redis invalidated, or None for
    every key read through this connection (``FLUSHALL``, a lost connection). Not thread-safe on
    its own: the owner holds a lock.
    """

    def __init__(
        self,
        make_connection: Callable[[], Any],
        on_invalidate: Callable[[list[str] | None, TrackedConnection], None],
        lease: Callable[[], float],
    ) -> None:
        self._make, self._on_invalidate, self._lease = make_connection, on_invalidate, lease
        self._conn: Any = None
        self._poller: Any = None
        self._pid = -1  # the fork generation the connection was made in
        self._pings: deque[float] = deque()  # send times of the PINGs not answered yet
        self.proven_at = float("-inf")  # when the newest answered PING (or read) was sent
        self.reconnects = 0

    # -- the connection --------------------------------------------------------------------

    def _connected(self) -> Any:
        if self._conn is not None and self._pid == _generation[0]:
            return self._conn
        self._conn = None  # a forked child never uses its parent's socket
        self._on_invalidate(None, self)
        conn = self._make()
        conn.connect()
        self._poller = select.poll()
        self._poller.register(conn._sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        conn._parser.set_invalidation_push_handler(self._pushed)  # redis-py ≥ 5.1
        conn.send_command("CLIENT", "TRACKING", "ON")
        if str_of(conn.read_response()) != "OK":
            conn.disconnect()
            raise ConnectionError("CLIENT TRACKING ON was refused")
        self._conn, self._pid = conn, _generation[0]
        self._pings.clear()
        self.reconnects += 1
        return conn

    def broken(self, error: BaseException | None = None) -> None:
        """Forget the connection and every copy made through it."""
        conn, self._conn = self._conn, None
        self._pings.clear()
        self.proven_at = float("-inf")
        self._on_invalidate(None, self)
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # closing a broken socket: nothing more to lose
                logger.debug("closing a broken tracked connection failed", exc_info=True)

    def _pushed(self, message: list[Any]) -> object:
        names = message[1] if len(message) > 1 else None
        self._on_invalidate(None if names is None else [str_of(name) for name in names], self)
        return _PUSHED

    # -- what the owner calls ----------------------------------------------------------------

    def poll(self, now: float) -> bool:
        """Apply every waiting message; return True if copies may be served (proven alive).

        Sends a ``PING`` (not waiting) when the proof is half a lease old. Never blocks.
        """
        conn = self._conn
        if conn is None or self._pid != _generation[0]:
            return False
        try:
            # Every operation leaves redis-py's buffer empty (``_drain``): a poll of the socket
            # alone tells whether anything arrived.
            if self._poller.poll(0):
                self._drain(conn)
            lease = self._lease()
            if now - self.proven_at >= lease / 2 and not self._pings:
                conn.send_command("PING")
                self._pings.append(now)
        except Exception as error:  # closed, reset, protocol error: nothing can be trusted
            self.broken(error)
            return False
        return now - self.proven_at < lease

    def execute(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one round trip on the tracked connection; return the replies.

        Their reads are tracked. Any error breaks the connection (and drops every copy) before
        it is raised.
        """
        sent = time.monotonic()
        try:
            conn = self._connected()
            conn.send_packed_command(conn.pack_commands(commands))
            while self._pings:  # answers to PINGs sent before these commands come first
                self._read(conn)
                self._pings.popleft()
            replies = [self._read(conn) for _ in commands]
            self._drain(conn)  # pushes that came in the same packet as the last reply
        except BaseException as error:
            self.broken(error)
            raise
        self.proven_at = max(self.proven_at, sent)
        return replies

    def _drain(self, conn: Any) -> None:
        while conn.can_read(0):
            reply = conn.read_response(push_request=True, disconnect_on_error=False)
            if reply is not _PUSHED and self._pings:
                self.proven_at = self._pings.popleft()

    def _read(self, conn: Any) -> Any:
        while True:  # invalidations before a reply are applied before the reply is used
            reply = conn.read_response(push_request=False, disconnect_on_error=False)
            if reply is not _PUSHED:
                return reply


def str_of(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
