"""The 1,000,000-row run (PostgreSQL): cold-path authentication, ``GET active/``, cleanup.

1. One user with 2 live sessions, 998 expired sessions of 1,000 other users: 1,000 rows.
   Cold-path authentication (cache entry deleted before each request) and ``GET active/``.
2. ``INSERT … SELECT generate_series`` up to ``BENCH_SCALE_ROWS`` expired rows (indexes in
   place, as in production); ``ANALYZE``. The same two measurements.
3. ``manage.py nilva_session_cleanup``: every expired row deleted in batches. Each SQL statement
   is timed (``connection.execute_wrapper``): the longest batch is its SELECT of ids plus its
   DELETE; the command itself reports the longest DELETE.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import time
from typing import Any

from benchmarks import services

OTHER_USERS = 1000
SMALL_ROWS = 1000


def log(message: str) -> None:
    print(f"  [scale] {message}", file=sys.stderr, flush=True)


def insert_expired(cursor: Any, first_user: int, start: int, stop: int, user_agent: str) -> None:
    cursor.execute(
        """
        INSERT INTO user_session (id, user_id, key, expire_at, is_active, last_online, last_ip,
                                  user_agent, detail, created_at, authenticated_at, ended_at,
                                  end_reason)
        SELECT gen_random_uuid(), %(first)s + (i %% %(users)s),
               encode(sha256(convert_to('scale-' || i, 'UTF8')), 'hex'),
               now() - interval '1 day' - (i %% 1440) * interval '1 minute', true,
               now() - interval '2 days', '198.51.100.7', %(ua)s, NULL,
               now() - interval '3 days', NULL, NULL, ''
        FROM generate_series(%(start)s, %(stop)s) AS i
        """,
        {"first": first_user, "users": OTHER_USERS, "start": start, "stop": stop, "ua": user_agent},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    services.create_database()
    try:
        result = measure(int(os.environ.get("BENCH_SCALE_ROWS", "1000000")))
    finally:
        services.teardown()
    with open(args.out, "w") as out:
        json.dump(result, out, indent=2, default=str)


def measure(rows: int) -> dict[str, Any]:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.cache import caches
    from django.core.management import call_command
    from django.db import connection

    from benchmarks.harness import CLIENT_IP, DESKTOP_UA, Handler, summary
    from benchmarks.suite import Scheme, run_rounds, versions
    from nilva_session import cache as session_cache
    from nilva_session import sessions
    from nilva_session.utils import hash_data

    log("migrating")
    call_command("migrate", verbosity=0)
    backend = caches["default"]
    handler = Handler()

    class Client:
        META = {"HTTP_USER_AGENT": DESKTOP_UA, "REMOTE_ADDR": CLIENT_IP}

    user = get_user_model().objects.create_user("bench", "bench@example.com", "bench-password")
    _s1, cold_token = sessions.open_session(user, Client())
    _s2, _other = sessions.open_session(user, Client())
    cold_key = session_cache.token_key(hash_data(cold_token))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO auth_user (password, last_login, is_superuser, username, first_name,
                                   last_name, email, is_staff, is_active, date_joined)
            SELECT '!', NULL, false, 'other' || i, '', '', '', false, true, now()
            FROM generate_series(1, %s) AS i
            """,
            [OTHER_USERS],
        )
        cursor.execute("SELECT min(id) FROM auth_user WHERE username LIKE 'other%%'")
        first_user = cursor.fetchone()[0]
        insert_expired(cursor, first_user, 1, SMALL_ROWS - 2, DESKTOP_UA)
        cursor.execute("ANALYZE user_session")

    def request_once(template: dict[str, Any]):
        def once() -> int:
            status, body, elapsed = handler.call(template)
            if status != 200:
                raise RuntimeError(f"{template['PATH_INFO']}: {status} {body[:200]!r}")
            return elapsed

        return once

    def stage() -> dict[str, Any]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM user_session")
            count = cursor.fetchone()[0]
        schemes = [
            Scheme("baseline", request_once(handler.environ("/base/"))),
            Scheme(
                "cold",
                request_once(handler.environ("/ours/token/", authorization=f"Token {cold_token}")),
                prepare=lambda: backend.delete(cold_key),
            ),
            Scheme(
                "active",
                request_once(
                    handler.environ("/api/sessions/active/", authorization=f"Token {cold_token}")
                ),
            ),
        ]
        run_rounds(schemes, 20, 25, 50)
        medians = {s.name: summary(s.samples)["median_us"] for s in schemes}
        return {
            "rows": count,
            "baseline_us": medians["baseline"],
            "cold_us": medians["cold"],
            "active_us": medians["active"],
        }

    log(f"measuring at {SMALL_ROWS:,} rows")
    small = stage()

    loaded = rows - (SMALL_ROWS - 2)
    log(f"loading {loaded:,} more expired rows")
    started = time.monotonic()
    with connection.cursor() as cursor:
        insert_expired(cursor, first_user, SMALL_ROWS - 1, rows, DESKTOP_UA)
        cursor.execute("ANALYZE user_session")
    load_seconds = time.monotonic() - started
    log(f"loaded in {load_seconds:.1f} s; measuring at {rows:,} rows")
    large = stage()

    log("cleanup")
    statements: list[tuple[float, float, str]] = []

    def timed(execute, sql, params, many, context):
        begun = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append((begun, time.perf_counter(), sql))

    out = io.StringIO()
    batch_size = 5000
    started = time.perf_counter()
    with connection.execute_wrapper(timed):
        call_command("nilva_session_cleanup", batch_size=batch_size, stdout=out)
    total = time.perf_counter() - started
    text = out.getvalue()
    match = re.search(
        r"Deleted (\d+) sessions in (\d+) batches \(longest batch ([\d.]+) ms\)", text
    )
    if not match:
        raise RuntimeError(f"unexpected cleanup output: {text!r}")
    # A batch starts with the SELECT of up to batch_size ids (the only statement with LIMIT).
    starts = [begun for begun, _end, sql in statements if "LIMIT" in sql]
    ends = [*starts[1:], statements[-1][1]]
    longest_batch = (
        max(end - begun for begun, end in zip(starts, ends, strict=True)) if starts else 0.0
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM user_session")
        left = cursor.fetchone()[0]
    return {
        "config": "scale",
        "database_version": services.database_version(connection),
        "redis_version": services.redis_version(),
        "versions": versions(),
        "small": small,
        "large": large,
        "loaded_rows": loaded,
        "load_seconds": load_seconds,
        "cleanup": {
            "deleted": int(match.group(1)),
            "batches": int(match.group(2)),
            "batch_size": batch_size,
            "longest_ms": float(match.group(3)),
            "longest_batch_ms": longest_batch * 1000,
            "total_seconds": total,
            "rows_left": left,
            "output": text.strip(),
        },
    }


if __name__ == "__main__":
    main()
