"""The warm path, async against sync: the core in process, and a view through each handler.

Run by ``python -m benchmarks --async`` in a process of its own per configuration; writes a
JSON document (``--out``). A warm request is one whose session is cached and that has nothing
to write (the activity marker written during the warm-up is good for a minute).

* **Core**: ``sessions.authenticate_token`` / ``authenticate_session_id`` called in a loop,
  against ``await aio.aauthenticate_token`` / ``aauthenticate_session_id`` awaited in a loop
  inside one event loop that runs for the whole benchmark (its start-up is not timed).
* **Views**: the benchmark's DRF view through Django's ``WSGIHandler`` (as ``suite.py`` does),
  against the adrf twin of that view through Django's ``ASGIHandler`` (a scope, ``receive`` and
  ``send`` of our own, awaited in the same event loop); each against the no-authentication
  view of its own handler, so that *overhead* is what authentication adds there. Two more rows:
  the adrf view with the sync class, and the sync DRF view served through ``ASGIHandler``
  (Django runs it in a worker thread).

Counted apart from the timing, over ``COUNTED`` operations of each scheme: DB queries (every
cursor of every thread), worker-thread hops (every ``run_in_executor`` of the event loop, which
is how ``sync_to_async`` reaches a thread, and apart from them the ``sync_to_async`` calls of
``nilva_session.aio``, what the tests' ``hops`` fixture counts), ``async_to_sync`` calls (a
worker thread handing a coroutine back to the loop and waiting for it: adrf 0.1.14 runs a view's
``initial``, authentication included, in a thread and awaits async authenticators so) and Redis
commands sent and connections opened (sync and ``redis.asyncio`` alike; the native store's
lease ``PING`` apart).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import importlib.util
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from benchmarks import services

COUNTED = 100
SCHEME_LABELS = {
    "core_token_sync": "`sessions.authenticate_token` (sync)",
    "core_token_async": "`await aio.aauthenticate_token`",
    "core_jwt_sync": "`sessions.authenticate_session_id` (sync)",
    "core_jwt_async": "`await aio.aauthenticate_session_id`",
    "wsgi_base": "WSGI, DRF view, no authentication",
    "wsgi_token": "WSGI, DRF view, `UserSessionDBTokenAuthentication`",
    "wsgi_jwt": "WSGI, DRF view, `UserSessionDBJwtAuthentication`",
    "asgi_base": "ASGI, adrf view, no authentication",
    "asgi_token": "ASGI, adrf view, `AsyncTokenAuthentication`",
    "asgi_jwt": "ASGI, adrf view, `AsyncJWTAuthentication`",
    "asgi_adrf_sync_class": "ASGI, adrf view, `UserSessionDBTokenAuthentication` (sync class)",
    "asgi_sync_token": "ASGI, DRF (sync) view, `UserSessionDBTokenAuthentication`",
}
BASELINES = {
    "wsgi_token": "wsgi_base",
    "wsgi_jwt": "wsgi_base",
    "asgi_token": "asgi_base",
    "asgi_jwt": "asgi_base",
    "asgi_adrf_sync_class": "asgi_base",
    "asgi_sync_token": "asgi_base",
}


def log(message: str) -> None:
    print(f"  [async {os.environ.get('BENCH_CONFIG', '?')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Scheme:
    """``run(n)`` makes ``n`` operations and returns the nanoseconds of each."""

    name: str
    run: Callable[[int], list[int]]
    samples: list[int] = field(default_factory=list)


def sync_scheme(name: str, once: Callable[[], Any]) -> Scheme:
    """A scheme timing ``once()`` call by call."""

    def run(n: int) -> list[int]:
        times = []
        for _ in range(n):
            started = time.perf_counter_ns()
            once()
            times.append(time.perf_counter_ns() - started)
        return times

    return Scheme(name, run)


def async_scheme(
    name: str,
    loop: asyncio.AbstractEventLoop,
    once: Callable[[], Awaitable[Any]],
    context: contextvars.Context | None = None,
) -> Scheme:
    """A scheme timing ``await once()`` call by call, ``n`` of them in one run of ``loop``.

    With ``context``, the batch runs in a copy of it (the context an ASGI server runs each
    request in), not in the context of the benchmark's own sync code.
    """

    async def batch(n: int) -> list[int]:
        times = []
        for _ in range(n):
            started = time.perf_counter_ns()
            await once()
            times.append(time.perf_counter_ns() - started)
        return times

    def run(n: int) -> list[int]:
        if context is None:
            return loop.run_until_complete(batch(n))
        return loop.run_until_complete(context.run(loop.create_task, batch(n)))

    return Scheme(name, run)


def run_rounds(schemes: list[Scheme], rounds: int, batch: int, warmup: int) -> None:
    """``suite.run_rounds`` for schemes that run a batch at a time (an event loop per batch run).

    The order of schemes rotates every round, so drift of the machine hits all of them alike.
    """
    for scheme in schemes:
        scheme.run(warmup)
    gc.collect()
    gc.freeze()
    for r in range(rounds):
        shift = r % len(schemes)
        for scheme in schemes[shift:] + schemes[:shift]:
            gc.collect()
            scheme.samples += scheme.run(batch)
    gc.unfreeze()


class AsgiCaller:
    """Django's ``ASGIHandler`` and prepared scopes; :meth:`call` times one request."""

    def __init__(self) -> None:
        from django.core.handlers.asgi import ASGIHandler

        self.app = ASGIHandler()

    @staticmethod
    def scope(path: str, authorization: str | None = None) -> dict[str, Any]:
        from benchmarks.harness import CLIENT_IP, DESKTOP_UA

        headers = [
            (b"host", b"bench.local"),
            (b"user-agent", DESKTOP_UA.encode()),
            (b"accept", b"application/json"),
        ]
        if authorization is not None:
            headers.append((b"authorization", authorization.encode()))
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": (CLIENT_IP, 50000),
            "server": ("bench.local", 80),
        }

    async def call(self, scope: dict[str, Any]) -> tuple[int, bytes]:
        """Return ``(status, body)`` of one request (the client never disconnects)."""
        messages: list[dict[str, Any]] = []
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # cancelled by Django once the response is sent
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        await self.app(dict(scope), receive, send)
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        return messages[0]["status"], body


class Counter:
    """DB queries, thread hops and Redis sends of whatever runs inside :meth:`counting`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reset()

    def reset(self) -> None:
        self.db_queries = self.thread_hops = self.aio_hops = self.loop_reentries = 0
        self.redis_sends = self.redis_async_sends = self.pings = self.connects = 0
        self.sql: list[str] = []

    def snapshot(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, list) else v for k, v in vars(self).items()}

    def restore(self, snapshot: dict[str, Any]) -> None:
        vars(self).update(snapshot)

    def as_dict(self, n: int) -> dict[str, Any]:
        return {
            "counted": n,
            "db_queries": self.db_queries / n,
            "thread_hops": self.thread_hops / n,
            "aio_hops": self.aio_hops / n,
            "loop_reentries": self.loop_reentries / n,
            "redis_sends": (self.redis_sends + self.redis_async_sends) / n,
            "redis_async_sends": self.redis_async_sends / n,
            "pings": self.pings,
            "redis_connects": self.connects / n,
            "sql": self.sql[:5],
        }

    @contextmanager
    def counting(self) -> Iterator[Counter]:
        import redis.asyncio.connection
        import redis.connection
        from asgiref.sync import AsyncToSync
        from django.db.backends import utils

        from nilva_session import aio

        counter, undo = self, []

        def patch(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
            had = name in vars(owner)
            original = getattr(owner, name)
            setattr(owner, name, make(original))
            undo.append(lambda: setattr(owner, name, original) if had else delattr(owner, name))

        def queries(original: Any) -> Any:
            def counted(cursor: Any, sql: Any, *args: Any, **kwargs: Any) -> Any:
                counter.db_queries += 1
                counter.sql.append(str(sql)[:160])
                return original(cursor, sql, *args, **kwargs)

            return counted

        def tally(attribute: str) -> Callable[[Any], Any]:
            def make(original: Any) -> Any:
                def counted(*args: Any, **kwargs: Any) -> Any:
                    setattr(counter, attribute, getattr(counter, attribute) + 1)
                    return original(*args, **kwargs)

                return counted

            return make

        def sends(original: Any) -> Any:
            def counted(conn: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
                counter.sent(command, asynchronous=False)
                return original(conn, command, *args, **kwargs)

            return counted

        def async_sends(original: Any) -> Any:
            async def counted(conn: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
                counter.sent(command, asynchronous=True)
                return await original(conn, command, *args, **kwargs)

            return counted

        def async_connects(original: Any) -> Any:
            async def counted(*args: Any, **kwargs: Any) -> Any:
                counter.connects += 1
                return await original(*args, **kwargs)

            return counted

        patch(utils.CursorWrapper, "_execute_with_wrappers", queries)
        patch(self.loop, "run_in_executor", tally("thread_hops"))  # this loop's own attribute
        patch(aio, "sync_to_async", tally("aio_hops"))
        patch(AsyncToSync, "__call__", tally("loop_reentries"))
        patch(redis.connection.AbstractConnection, "send_packed_command", sends)
        patch(redis.asyncio.connection.AbstractConnection, "send_packed_command", async_sends)
        # ``_connect`` opens the socket (``connect`` is called on every use of a pooled one)
        patch(redis.connection.Connection, "_connect", tally("connects"))
        patch(redis.asyncio.connection.Connection, "_connect", async_connects)
        try:
            yield self
        finally:
            for restore in reversed(undo):
                restore()

    def sent(self, command: Any, *, asynchronous: bool) -> None:
        """Count one command put on the wire (a lease ``PING``, sent and not waited for, apart)."""
        raw = b"".join(command) if isinstance(command, (list, tuple)) else command
        if b"PING" in (raw.encode() if isinstance(raw, str) else bytes(raw))[:32]:
            self.pings += 1
        elif asynchronous:
            self.redis_async_sends += 1
        else:
            self.redis_sends += 1


def copy_misses(store: Any) -> int:
    """Return how many reads the native store's copies could not serve so far (0 without)."""
    return int(store.stats().get("copies", {}).get("misses", 0))


def count_warm(scheme: Scheme, counter: Counter, store: Any) -> dict[str, Any]:
    """Return the counts per operation of ``COUNTED`` warm operations of ``scheme``.

    An operation whose read the native store's copies could not serve is a cold one, left out
    and made again: on a Redis server shared with other work, every ``FLUSHDB`` of any database
    makes Redis drop every tracked key (a null invalidation), so the copies go with it.
    """
    counter.reset()
    warm = cold = 0
    with counter.counting():
        while warm < COUNTED and cold < 10 * COUNTED:
            before, misses = counter.snapshot(), copy_misses(store)
            scheme.run(1)
            if copy_misses(store) == misses:
                warm += 1
            else:
                counter.restore(before)
                cold += 1
    return {**counter.as_dict(max(warm, 1)), "cold_left_out": cold}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    if importlib.util.find_spec("adrf") is None:
        sys.exit("the async run needs adrf: pip install -e '.[bench,async]'")
    services.create_database()
    try:
        result = measure(os.environ["BENCH_CONFIG"], args)
    finally:
        services.teardown()
    with open(args.out, "w") as out:
        json.dump(result, out, indent=2, default=str)


def measure(config: str, args: argparse.Namespace) -> dict[str, Any]:
    # Django keeps a cache backend per context (asgiref.local.Local): one made by this
    # benchmark's sync code would be seen by every request. A server's requests start from a
    # context that has none, and each builds its own: so do the ASGI requests here.
    server_context = contextvars.copy_context()
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.cache import caches
    from django.core.management import call_command
    from django.db import connection
    from django.test import RequestFactory
    from rest_framework_simplejwt.tokens import AccessToken

    from benchmarks.harness import CLIENT_IP, DESKTOP_UA, Handler, summary
    from benchmarks.suite import versions
    from nilva_session import aio, sessions
    from nilva_session import store as session_store
    from nilva_session.conf import session_settings
    from nilva_session.jwt import access_token_for_session, owner_of, refresh_token_for_session

    log("migrating")
    call_command("migrate", verbosity=0)
    backend = caches["default"]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    user = get_user_model().objects.create_user("bench", "bench@example.com", "bench-password")
    request = RequestFactory().get("/", HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR=CLIENT_IP)
    client = sessions.Client.of(request)
    token_session, token = sessions.open_session(user, request)
    jwt_session, _ = sessions.open_session(user, request)
    access = access_token_for_session(refresh_token_for_session(jwt_session, user), jwt_session)
    validated = AccessToken(str(access))
    session_id, owner = validated[session_settings.SESSION_ID_CLAIM], owner_of(validated)

    wsgi, asgi = Handler(), AsgiCaller()

    def wsgi_once(template: dict[str, Any]) -> Callable[[], None]:
        def once() -> None:
            status, body, _elapsed = wsgi.call(template)
            if status != 200:
                raise RuntimeError(f"{template['PATH_INFO']}: {status} {body[:200]!r}")

        return once

    def asgi_once(scope: dict[str, Any]) -> Callable[[], Awaitable[None]]:
        async def once() -> None:
            status, body = await asgi.call(scope)
            if status != 200:
                raise RuntimeError(f"{scope['path']}: {status} {body[:200]!r}")

        return once

    token_header, jwt_header = f"Token {token}", f"Bearer {access}"
    schemes = [
        sync_scheme("core_token_sync", lambda: sessions.authenticate_token(token, client)),
        async_scheme("core_token_async", loop, lambda: aio.aauthenticate_token(token, client)),
        sync_scheme(
            "core_jwt_sync",
            lambda: sessions.authenticate_session_id(session_id, client, owner=owner),
        ),
        async_scheme(
            "core_jwt_async",
            loop,
            lambda: aio.aauthenticate_session_id(session_id, client, owner=owner),
        ),
        sync_scheme("wsgi_base", wsgi_once(wsgi.environ("/base/"))),
        sync_scheme(
            "wsgi_token", wsgi_once(wsgi.environ("/ours/token/", authorization=token_header))
        ),
        sync_scheme("wsgi_jwt", wsgi_once(wsgi.environ("/ours/jwt/", authorization=jwt_header))),
        *(
            async_scheme(name, loop, asgi_once(asgi.scope(path, header)), server_context)
            for name, path, header in (
                ("asgi_base", "/async/base/", None),
                ("asgi_token", "/async/token/", token_header),
                ("asgi_jwt", "/async/jwt/", jwt_header),
                ("asgi_adrf_sync_class", "/async/token-sync-class/", token_header),
                ("asgi_sync_token", "/ours/token/", token_header),
            )
        ),
    ]

    # The right user and session, every path: a warm-up that would measure refusals is no use.
    for found in (
        sessions.authenticate_token(token, client),
        loop.run_until_complete(aio.aauthenticate_token(token, client)),
    ):
        assert (found[0].pk, found[1].pk) == (user.pk, token_session.pk), found
    for found in (
        sessions.authenticate_session_id(session_id, client, owner=owner),
        loop.run_until_complete(aio.aauthenticate_session_id(session_id, client, owner=owner)),
    ):
        assert (found[0].pk, found[1].pk) == (user.pk, jwt_session.pk), found
    for scheme in schemes:
        scheme.run(3)  # raises on anything but a 200; fills the cache, writes the activity

    counter = Counter(loop)
    counts = {}
    store = session_store.get_store()
    for scheme in schemes:
        scheme.run(5)
        counts[scheme.name] = count_warm(scheme, counter, store)

    log(f"timing {len(schemes)} schemes: {args.rounds} rounds x {args.batch}")
    run_rounds(schemes, args.rounds, args.batch, args.warmup)
    stats = {s.name: {"label": SCHEME_LABELS[s.name], **summary(s.samples)} for s in schemes}
    for name, base in BASELINES.items():
        stats[name]["overhead_us"] = stats[name]["median_us"] - stats[base]["median_us"]
    for name in stats:
        stats[name].update(counts[name])
    loop.close()
    return {
        "config": config,
        "database": connection.vendor,
        "database_version": services.database_version(connection),
        "cache_backend": f"{type(backend).__module__}.{type(backend).__qualname__}",
        "store": store.stats(),
        "local_copies": bool(getattr(store, "local_copies", False)),
        "redis_version": services.redis_version() if config != "embedded" else None,
        "loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
        "versions": versions(),
        "rounds": args.rounds,
        "batch": args.batch,
        "schemes": stats,
    }


if __name__ == "__main__":
    main()
