"""Requests through Django's WSGI handler, and counters of DB queries and cache operations.

Requests are made by calling ``django.core.handlers.wsgi.WSGIHandler`` with a prepared environ:
the whole of Django's request/response cycle (signals, URL resolving, the DRF view, rendering,
``request_finished``) and nothing else. ``django.test.Client`` would add its own work (request
factory, signal hooks for templates, cookie handling, response copying), identical for every
scheme but noisier.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core.handlers.wsgi import WSGIHandler

DESKTOP_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
CLIENT_IP = "203.0.113.7"


class Handler:
    """A WSGI handler and prepared environs; :meth:`call` times one request in nanoseconds."""

    def __init__(self) -> None:
        self.wsgi = WSGIHandler()

    @staticmethod
    def environ(
        path: str,
        *,
        method: str = "GET",
        authorization: str | None = None,
        body: bytes = b"",
        content_type: str = "application/json",
        query: str = "",
    ) -> dict[str, Any]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": query,
            "SERVER_NAME": "bench.local",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": CLIENT_IP,
            "HTTP_HOST": "bench.local",
            "HTTP_USER_AGENT": DESKTOP_UA,
            "HTTP_ACCEPT": "application/json",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "_body": body,
        }
        if body:
            environ["CONTENT_TYPE"] = content_type
            environ["CONTENT_LENGTH"] = str(len(body))
        if authorization is not None:
            environ["HTTP_AUTHORIZATION"] = authorization
        return environ

    def call(self, template: dict[str, Any]) -> tuple[int, bytes, int]:
        """Return ``(status, body, nanoseconds)`` of one request."""
        environ = template.copy()
        environ["wsgi.input"] = io.BytesIO(environ.pop("_body"))
        statuses: list[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            statuses.append(status)

        started = time.perf_counter_ns()
        response = self.wsgi(environ, start_response)
        content = b"".join(response)
        response.close()  # request_finished, as a WSGI server would
        elapsed = time.perf_counter_ns() - started
        return int(statuses[0].split()[0]), content, elapsed


def summary(samples_ns: list[int]) -> dict[str, float]:
    """Median, quartiles and count of samples, in microseconds."""
    us = sorted(s / 1000 for s in samples_ns)
    q = statistics.quantiles(us, n=4) if len(us) > 1 else [us[0]] * 3
    return {"median_us": statistics.median(us), "p25_us": q[0], "p75_us": q[2], "n": len(us)}


# ---- counting ----------------------------------------------------------------------------------

BACKEND_READS = ("get", "get_many", "has_key")
BACKEND_WRITES = ("set", "add", "set_many", "delete", "delete_many", "incr", "decr", "touch")
REDIS_READS = frozenset({"GET", "MGET", "EXISTS", "TTL", "PTTL", "STRLEN", "TYPE"})
REDIS_SETUP = frozenset({"SELECT", "PING", "CLIENT", "HELLO", "AUTH", "INFO"})


class CacheCounter:
    """Counts one cache backend's calls (reads, writes) and, for Redis, the commands sent.

    Backend calls are counted at the outermost level only (``BaseCache.get_many`` of LocMem calls
    ``get`` per key: one operation). With Redis, round trips are counted where redis-py sends:
    ``Redis.execute_command`` (one command) and ``Pipeline.execute`` (one round trip for a batch),
    which also sees any path that reaches Redis without going through the backend's methods.
    """

    def __init__(self) -> None:
        self.backend_reads = self.backend_writes = 0
        self.backend_calls: list[str] = []
        self.redis_reads = self.redis_writes = self.redis_round_trips = 0
        self.wire_sends = self.pings = 0  # every send on any redis-py connection (tracked too)
        self.redis_commands: list[str] = []
        self._depth = 0

    def as_dict(self, redis: bool) -> dict[str, Any]:
        if redis:
            return {
                "reads": self.redis_reads,
                "writes": self.redis_writes,
                "round_trips": self.redis_round_trips,
                "wire_sends": self.wire_sends,
                "pings": self.pings,
                "commands": self.redis_commands,
                "backend_calls": self.backend_calls,
            }
        return {
            "reads": self.backend_reads,
            "writes": self.backend_writes,
            "round_trips": self.backend_reads + self.backend_writes,
            "commands": self.backend_calls,
            "backend_calls": self.backend_calls,
        }

    def _wrap(self, name: str, func: Callable[..., Any], write: bool) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self._depth == 0:
                self.backend_calls.append(name)
                if write:
                    self.backend_writes += 1
                else:
                    self.backend_reads += 1
            self._depth += 1
            try:
                return func(*args, **kwargs)
            finally:
                self._depth -= 1

        return counted

    def _command(self, name: str) -> None:
        name = name.upper()
        if name in REDIS_SETUP:
            return
        self.redis_commands.append(name)
        if name in REDIS_READS:
            self.redis_reads += 1
        else:
            self.redis_writes += 1

    @contextmanager
    def patched(self, backend: Any) -> Iterator[CacheCounter]:
        originals = {}
        for names, write in ((BACKEND_READS, False), (BACKEND_WRITES, True)):
            for name in names:
                originals[name] = backend.__dict__.get(name)
                setattr(backend, name, self._wrap(name, getattr(backend, name), write))
        undo: list[Callable[[], None]] = []
        try:
            import redis.client

            counter = self
            execute_command = redis.client.Redis.execute_command
            pipeline_execute = redis.client.Pipeline.execute

            def counted_execute_command(client: Any, *args: Any, **options: Any) -> Any:
                if args and str(args[0]).upper() not in REDIS_SETUP:
                    counter.redis_round_trips += 1
                    counter._command(str(args[0]).split()[0])
                return execute_command(client, *args, **options)

            def counted_pipeline_execute(pipe: Any, *args: Any, **kwargs: Any) -> Any:
                if pipe.command_stack:
                    counter.redis_round_trips += 1
                    for command_args, _options in pipe.command_stack:
                        counter._command(str(command_args[0]).split()[0])
                return pipeline_execute(pipe, *args, **kwargs)

            import redis.connection

            send_packed = redis.connection.AbstractConnection.send_packed_command

            def counted_send_packed(conn: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
                # The wire itself: what the native store's tracked connection sends is seen too.
                raw = b"".join(command) if isinstance(command, (list, tuple)) else command
                if b"PING" in bytes(raw)[:32]:
                    counter.pings += 1
                else:
                    counter.wire_sends += 1
                return send_packed(conn, command, *args, **kwargs)

            redis.client.Redis.execute_command = counted_execute_command  # type: ignore[method-assign]
            redis.client.Pipeline.execute = counted_pipeline_execute  # type: ignore[method-assign]
            redis.connection.AbstractConnection.send_packed_command = counted_send_packed  # type: ignore[method-assign]

            def restore() -> None:
                redis.client.Redis.execute_command = execute_command  # type: ignore[method-assign]
                redis.client.Pipeline.execute = pipeline_execute  # type: ignore[method-assign]
                redis.connection.AbstractConnection.send_packed_command = send_packed  # type: ignore[method-assign]

            undo.append(restore)
        except ImportError:
            pass
        try:
            yield self
        finally:
            for fn in undo:
                fn()
            for name, original in originals.items():
                if original is None:
                    delattr(backend, name)
                else:
                    setattr(backend, name, original)
