"""One configuration's measurements; run by ``python -m benchmarks`` in a process of its own.

Writes a JSON document (``--out``): per-scheme request times and overheads, DB queries and cache
operations per request, login, the session listing at 2/20/200 sessions and the cached entry's
size. ``--profile SCHEME`` profiles that scheme's requests instead.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import pickle
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from benchmarks import services

SCHEME_LABELS = {
    "baseline": "no authentication (AllowAny, no auth classes)",
    "ours_token_warm": "nilva-session, opaque token, warm cache",
    "ours_token_cold": "nilva-session, opaque token, cold cache",
    "ours_jwt_warm": "nilva-session, JWT, warm cache",
    "drf_token": "DRF TokenAuthentication",
    "knox": "knox TokenAuthentication",
    "simplejwt": "simplejwt JWTAuthentication",
    "simplejwt_stateless": "simplejwt JWTStatelessUserAuthentication",
    "cache_get_in_view": "reference: no authentication, the view does one cache.get",
    "cache_get": "bare cache.get of one small entry (alone, no request)",
    "redis_py_get": "reference: GET through one reused redis-py client (no request)",
}


@dataclass
class Scheme:
    name: str
    once: Callable[[], int]  # one timed operation; returns nanoseconds
    prepare: Callable[[], None] | None = None  # untimed, before each operation
    request: bool = True
    samples: list[int] = field(default_factory=list)


def log(message: str) -> None:
    print(f"  [{os.environ.get('BENCH_CONFIG', '?')}] {message}", file=sys.stderr, flush=True)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in (
        "nilva-session",
        "Django",
        "djangorestframework",
        "djangorestframework-simplejwt",
        "django-rest-knox",
        "PyJWT",
        "redis",
        "django-redis",
        "psycopg",
        "ua-parser",
        "ua-parser-rs",
    ):
        with contextlib.suppress(PackageNotFoundError):
            found[dist] = version(dist)
    return found


def run_rounds(schemes: list[Scheme], rounds: int, batch: int, warmup: int) -> None:
    """Warm every scheme, then run ``rounds`` rounds of ``batch`` operations of each scheme.

    The order of schemes rotates every round, so drift of the machine hits all of them alike.
    """
    for scheme in schemes:
        for _ in range(warmup):
            if scheme.prepare:
                scheme.prepare()
            scheme.once()
    gc.collect()
    gc.freeze()  # the fixtures: keep the collector's work per request small and alike
    for r in range(rounds):
        shift = r % len(schemes)
        for scheme in schemes[shift:] + schemes[:shift]:
            gc.collect()
            for _ in range(batch):
                if scheme.prepare:
                    scheme.prepare()
                scheme.samples.append(scheme.once())
    gc.unfreeze()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--profile", default=None, help="profile this scheme instead")
    args = parser.parse_args()

    config = os.environ["BENCH_CONFIG"]
    services.create_database()
    try:
        result = measure(config, args)
    finally:
        services.teardown()
    with open(args.out, "w") as out:
        json.dump(result, out, indent=2, default=str)


def measure(config: str, args: argparse.Namespace) -> dict[str, Any]:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.cache import caches
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone
    from knox.models import AuthToken
    from rest_framework.authtoken.models import Token
    from rest_framework_simplejwt.tokens import AccessToken

    from benchmarks.harness import CLIENT_IP, DESKTOP_UA, CacheCounter, Handler, summary
    from benchmarks.urls import SMALL_KEY
    from nilva_session import cache as session_cache
    from nilva_session import codec as session_codec
    from nilva_session import sessions
    from nilva_session import store as session_store
    from nilva_session.jwt import access_token_for_session, refresh_token_for_session
    from nilva_session.utils import hash_data

    log("migrating")
    call_command("migrate", verbosity=0)
    backend = caches["default"]
    is_redis = "redis" in type(backend).__module__
    handler = Handler()

    class Client:  # what open_session reads from a request
        META = {"HTTP_USER_AGENT": DESKTOP_UA, "REMOTE_ADDR": CLIENT_IP}

    user = get_user_model().objects.create_user("bench", "bench@example.com", "bench-password")
    user.last_login = timezone.now()  # as after a login: a second datetime in the cached entry
    user.save(update_fields=["last_login"])
    warm_session, warm_token = sessions.open_session(user, Client())
    _cold_session, cold_token = sessions.open_session(user, Client())
    jwt_session, _ = sessions.open_session(user, Client())
    ours_access = access_token_for_session(
        refresh_token_for_session(jwt_session, user), jwt_session
    )
    drf_key = Token.objects.create(user=user).key
    _knox_row, knox_token = AuthToken.objects.create(user)
    simple_access = AccessToken.for_user(user)
    cold_key = session_cache.token_key(hash_data(cold_token))

    templates = {
        "baseline": handler.environ("/base/"),
        "ours_token_warm": handler.environ("/ours/token/", authorization=f"Token {warm_token}"),
        "ours_token_cold": handler.environ("/ours/token/", authorization=f"Token {cold_token}"),
        "ours_jwt_warm": handler.environ("/ours/jwt/", authorization=f"Bearer {ours_access}"),
        "drf_token": handler.environ("/drf/token/", authorization=f"Token {drf_key}"),
        "knox": handler.environ("/knox/", authorization=f"Token {knox_token}"),
        "simplejwt": handler.environ("/simplejwt/", authorization=f"Bearer {simple_access}"),
        "simplejwt_stateless": handler.environ(
            "/simplejwt/stateless/", authorization=f"Bearer {simple_access}"
        ),
        "cache_get_in_view": handler.environ("/floor/cache-get/"),
    }

    def request_once(template: dict[str, Any]) -> Callable[[], int]:
        def once() -> int:
            status, body, elapsed = handler.call(template)
            if status != 200:
                raise RuntimeError(f"{template['PATH_INFO']}: {status} {body[:200]!r}")
            return elapsed

        return once

    small_key = SMALL_KEY
    backend.set(small_key, "x" * 100, 3600)

    def cache_get() -> int:
        started = time.perf_counter_ns()
        value = backend.get(small_key)
        elapsed = time.perf_counter_ns() - started
        assert value is not None
        return elapsed

    schemes = [Scheme(name, request_once(t)) for name, t in templates.items()]
    cold = next(s for s in schemes if s.name == "ours_token_cold")
    store = session_store.get_store()
    native = store.local_copies or type(store).__name__ == "RedisStore"

    def forget_cold() -> None:
        store.delete_many([cold_key])
        store.forget([cold_key])

    cold.prepare = forget_cold
    schemes.append(Scheme("cache_get", cache_get, request=False))
    if is_redis:
        import redis

        raw = redis.Redis.from_url(settings.REDIS_URL)
        raw_key = backend.make_key(small_key)

        def redis_py_get() -> int:
            started = time.perf_counter_ns()
            raw.get(raw_key)
            return time.perf_counter_ns() - started

        schemes.append(Scheme("redis_py_get", redis_py_get, request=False))
    by_name = {s.name: s for s in schemes}

    # Every response is checked once: the right user, through the right scheme.
    for name, template in templates.items():
        status, body, _ = handler.call(template)
        if status != 200 or json.loads(body) != {"ok": True}:
            raise RuntimeError(f"{name}: {status} {body[:200]!r}")

    # ---- counts: one request of each scheme, after one warm-up request --------------------
    def count(once: Callable[[], Any], prepare: Callable[[], None] | None = None) -> dict[str, Any]:
        if prepare:
            prepare()
        counter = CacheCounter()
        with CaptureQueriesContext(connection) as queries, counter.patched(backend):
            once()
        return {
            "db_queries": len(queries),
            "sql": [q["sql"][:160] for q in queries],
            "cache": counter.as_dict(is_redis),
        }

    counts = {}
    for scheme in schemes:
        if scheme.prepare:
            scheme.prepare()
        scheme.once()
        counts[scheme.name] = count(scheme.once, scheme.prepare)

    if args.profile:
        profile(by_name[args.profile], args)
        return {"config": config, "profiled": args.profile}

    # ---- timing --------------------------------------------------------------------------------
    log(f"timing {len(schemes)} schemes: {args.rounds} rounds x {args.batch}")
    run_rounds(schemes, args.rounds, args.batch, args.warmup)
    base = summary(by_name["baseline"].samples)["median_us"]
    requests = {}
    for scheme in schemes:
        stats = summary(scheme.samples)
        if scheme.request:
            stats["overhead_us"] = stats["median_us"] - base
        requests[scheme.name] = {
            "label": SCHEME_LABELS[scheme.name],
            **stats,
            **counts[scheme.name],
        }

    # ---- login --------------------------------------------------------------------------------
    log("login")
    login_body = json.dumps({"username": "bench", "password": "bench-password"}).encode()
    login = {}
    for name, path in (
        ("login_token", "/api/sessions/login/"),
        ("login_jwt", "/api/sessions/token/"),
    ):
        template = handler.environ(path, method="POST", body=login_body)
        once = request_once(template)
        once()
        counted = count(once)
        samples = [once() for _ in range(60)]
        login[name] = {"path": path, **summary(samples), **counted}

    # ---- GET active/ with 2, 20 and 200 sessions ------------------------------------------------
    log("session listing")
    listing = measure_listing(handler, request_once, count, summary, run_rounds, Client)

    # ---- the cached entry -----------------------------------------------------------------------
    warm_key = session_cache.token_key(hash_data(warm_token))
    entry = store.get(warm_key)
    assert session_codec.unpack(entry) is not None, "the warm session is not cached"
    pickled = pickle.dumps(entry, pickle.HIGHEST_PROTOCOL)
    entry_info: dict[str, Any] = {
        "pickled_bytes": len(pickled),
        "user_agent_chars": len(warm_session.user_agent),
        "fields": repr(entry)[:600],
    }
    if native:
        entry_info["stored_bytes"] = store.client.strlen(store.name(warm_key))
        entry_info["store"] = store.stats()
    elif is_redis:
        entry_info["stored_bytes"] = raw.strlen(backend.make_key(warm_key))

    return {
        "config": config,
        "database": connection.vendor,
        "database_version": services.database_version(connection),
        "cache_backend": f"{type(backend).__module__}.{type(backend).__qualname__}",
        "store": store.stats(),
        "native_store": native,
        "redis_version": services.redis_version() if is_redis else None,
        "versions": versions(),
        "rounds": args.rounds,
        "batch": args.batch,
        "baseline_us": base,
        "requests": requests,
        "login": login,
        "listing": listing,
        "entry": entry_info,
    }


def measure_listing(handler, request_once, count, summary, run_rounds, client_class) -> dict:
    from django.contrib.auth import get_user_model

    from benchmarks.harness import DESKTOP_UA
    from nilva_session import clients, sessions
    from nilva_session.models import UserSession
    from nilva_session.utils import new_key_digest

    schemes, tokens = [], {}
    for n in (2, 20, 200):
        user = get_user_model().objects.create_user(f"list{n}", f"list{n}@example.com", "pw")
        _session, token = sessions.open_session(user, client_class())
        tokens[n] = token
        # Every other session from a different browser build: n distinct user agents to parse.
        UserSession.objects.bulk_create(
            UserSession(
                user=user,
                key=new_key_digest(),
                last_ip=f"198.51.100.{i % 250}",
                user_agent=DESKTOP_UA.replace("Chrome/120.0.0.0", f"Chrome/{121 + i}.0.{n}.0"),
            )
            for i in range(n - 1)
        )
        template = handler.environ("/api/sessions/active/", authorization=f"Token {token}")
        schemes.append(Scheme(f"active_{n}", request_once(template)))
    auth_only = handler.environ("/ours/token/", authorization=f"Token {tokens[2]}")
    schemes.append(Scheme("auth_only", request_once(auth_only)))

    result: dict[str, Any] = {}
    for scheme in schemes:
        scheme.once()  # first listing parses the user agents
        before = (clients._parse.cache_info().misses, clients._describe.cache_info().misses)
        counted = count(scheme.once)
        after = (clients._parse.cache_info().misses, clients._describe.cache_info().misses)
        counted["ua_parses"] = after[0] - before[0] + after[1] - before[1]
        result[scheme.name] = counted
    run_rounds(schemes, 20, 10, 5)
    auth = summary(schemes[-1].samples)["median_us"]
    for scheme in schemes:
        stats = summary(scheme.samples)
        result[scheme.name].update(stats)
        if scheme.name.startswith("active_"):
            n = int(scheme.name.split("_")[1])
            stats["per_session_us"] = (stats["median_us"] - auth) / n
            result[scheme.name]["per_session_us"] = stats["per_session_us"]
            result[scheme.name]["sessions"] = n
    a2, a20, a200 = (result[f"active_{n}"]["median_us"] for n in (2, 20, 200))
    result["marginal_us_per_session"] = {
        "2_to_20": (a20 - a2) / 18,
        "20_to_200": (a200 - a20) / 180,
    }
    return result


def profile(scheme: Scheme, args: argparse.Namespace) -> None:
    """Profile ``scheme`` over many operations (pyinstrument if installed, else cProfile)."""
    n = max(2000, args.rounds * args.batch)
    for _ in range(args.warmup):
        if scheme.prepare:
            scheme.prepare()
        scheme.once()
    try:
        from pyinstrument import Profiler
    except ImportError:
        Profiler = None
    if Profiler is not None:
        profiler = Profiler(interval=0.0001)
        profiler.start()
        for _ in range(n):
            if scheme.prepare:
                scheme.prepare()
            scheme.once()
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False), file=sys.stderr)
    else:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            if scheme.prepare:
                scheme.prepare()
            scheme.once()
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
