"""The benchmark's own PostgreSQL database and Redis keys: created before, removed after.

The database is ``BENCH_DATABASE_URL``'s (``python -m benchmarks`` names it ``nilva_bench``, never
the one in ``DATABASE_URL``); it is dropped and created through the server's ``postgres``
database. Redis keys all carry ``BENCH_KEY_PREFIX`` and are deleted with ``SCAN``, so the
Redis database may hold other data.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any
from urllib.parse import unquote, urlparse


def _pg_admin() -> tuple[Any, str] | None:
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        return None
    import psycopg

    parsed = urlparse(url)
    name = unquote(parsed.path.lstrip("/"))
    admin = psycopg.connect(
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 5432,
        user=unquote(parsed.username or "postgres"),
        password=unquote(parsed.password or "") or None,
        dbname="postgres",
        autocommit=True,
    )
    return admin, name


def create_database() -> None:
    found = _pg_admin()
    if found is None:
        path = os.environ.get("BENCH_SQLITE_PATH")
        if path and os.path.exists(path):
            os.remove(path)
        return
    admin, name = found
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def teardown() -> None:
    with contextlib.suppress(Exception):  # Django never set up
        from django.db import connections

        connections.close_all()
    found = _pg_admin()
    if found is not None:
        admin, name = found
        with admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        path = os.environ.get("BENCH_SQLITE_PATH")
        if path and os.path.exists(path):
            os.remove(path)
    if os.environ.get("BENCH_CACHE", "locmem") != "locmem":
        import redis

        client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        prefix = os.environ.get("BENCH_KEY_PREFIX", "nilva-bench")
        batch = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        while batch:
            client.delete(*batch[:1000])
            batch = batch[1000:]


def database_version(connection: Any) -> str:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return f"PostgreSQL {cursor.fetchone()[0]}"
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version}"


def redis_version() -> str:
    import redis

    info = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]).info("server")
    return f"Redis {info['redis_version']}"
