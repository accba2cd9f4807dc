"""PostgreSQL, Redis and process helpers for the ``services`` tests.

These tests run only with ``--ds=tests.settings_services``. On the default settings (SQLite +
local memory) they are skipped with a reason; with the services settings active, a PostgreSQL or
Redis that cannot be reached is a failure, never a skip.

Isolation from other test runs on the same machine: the in-process tests use a Redis database of
their own (``NILVA_TEST_PRIVATE_REDIS_DB``, default 14) with a unique key prefix, the gunicorn
tests a PostgreSQL database they create and drop, and the outage tests a redis-server of their
own on a free loopback port. Nothing here stops, pauses or flushes the shared Redis db 15.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "example"
PRIVATE_REDIS_DB = int(os.environ.get("NILVA_TEST_PRIVATE_REDIS_DB", "14"))


def services_active() -> bool:
    """True when the suite runs on PostgreSQL + Redis (``tests.settings_services``)."""
    engine = settings.DATABASES["default"]["ENGINE"]
    backend = settings.CACHES["default"]["BACKEND"]
    return engine == "django.db.backends.postgresql" and "redis" in backend.lower()


#: ``pytestmark`` of every services test module.
SERVICES = [
    pytest.mark.services,
    pytest.mark.skipif(
        not services_active(),
        reason="needs PostgreSQL + Redis: run with --ds=tests.settings_services",
    ),
]


def native_store() -> bool:
    """True when sessions live in the package's own Redis store (``NILVA_TEST_STORE=native``)."""
    from nilva_session.conf import session_settings

    return session_settings.REDIS is not None


#: Tests that count or break the Django cache's own calls; the native store's round trips and
#: failures have their own tests (tests/test_redis_store.py).
DJANGO_CACHE_ONLY = pytest.mark.skipif(
    native_store(), reason="counts the Django cache's calls; the native store is not one"
)


def uses_django_redis() -> bool:
    return settings.CACHES["default"]["BACKEND"].startswith("django_redis.")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout: float, interval: float = 0.05, what: str = "") -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what or predicate}")


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


def shared_redis_url() -> str:
    """The Redis URL of the services settings (``REDIS_URL``)."""
    return str(getattr(settings, "REDIS_URL", settings.CACHES["default"]["LOCATION"]))


def redis_url_with_db(url: str, db: int) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{db}"))


def private_redis_url() -> str:
    """The shared Redis server, but this suite's own database number."""
    return redis_url_with_db(shared_redis_url(), PRIVATE_REDIS_DB)


def require_redis(url: str) -> None:
    """Fail (not skip) when the Redis at ``url`` does not answer."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except Exception as error:
        pytest.fail(f"Redis at {url} is unreachable ({error}); the services tests need it")
    finally:
        client.close()


def store_settings(location: str, *, timeout: float = 0.5, cluster: bool = False) -> dict:
    """``NILVA_SESSION`` keys that point the native store at ``location`` ({} without it)."""
    if not native_store() and not cluster:
        return {}
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    return {
        "REDIS": {"URL": location, "CLUSTER": cluster, "OPTIONS": options},
        "LOCAL_CACHE_LEASE": timeout,
    }


def cache_settings(location: str, *, key_prefix: str = "", timeout: float | None = 0.5) -> dict:
    """``CACHES`` for ``location`` with the backend of the running suite and socket timeouts."""
    backend = settings.CACHES["default"]["BACKEND"]
    options: dict[str, Any]
    if backend.startswith("django_redis."):
        options = {"CLIENT_CLASS": "django_redis.client.DefaultClient"}
        if timeout is not None:
            options.update(SOCKET_TIMEOUT=timeout, SOCKET_CONNECT_TIMEOUT=timeout)
    else:
        options = {}
        if timeout is not None:
            options.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    return {
        "default": {
            "BACKEND": backend,
            "LOCATION": location,
            "KEY_PREFIX": key_prefix,
            "OPTIONS": options,
        }
    }


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free as well.

    Both lie below Linux's ephemeral range (32768 and up): a port found free there could be
    taken by any outgoing connection before redis-server binds it (CI saw that once).
    """
    import random

    for _ in range(200):
        port = random.randint(20000, 22767)
        try:
            for candidate in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of loopback ports for a Redis Cluster node")


class RedisServer:
    """A redis-server this test owns, on a free loopback port: start, kill, pause, restart."""

    def __init__(self, workdir: Path, *, cluster: bool = False) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not on PATH; the Redis outage tests need it")
        self.port = free_cluster_port() if cluster else free_port()
        self.workdir = workdir
        self.cluster = cluster
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, timeout: float = 2.0) -> Any:
        import redis

        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def start(self) -> None:
        """Start on the same port; loads ``dump.rdb`` from ``workdir`` if one was saved."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = (self.workdir / "redis-server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--dbfilename",
                "dump.rdb",
                "--loglevel",
                "warning",
                *(
                    ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
                    if self.cluster
                    else []
                ),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()  # the child holds its own copy
        wait_until(self.ping_or_fail, 10, what=f"redis-server on port {self.port}")

    def ping_or_fail(self) -> bool:
        """``ping``, but fail at once (with its log) if the server has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.workdir / "redis-server.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"redis-server on port {self.port} exited ({self.proc.returncode}): {log}")
        return self.ping()

    def ping(self) -> bool:
        client = self.client(timeout=0.5)
        try:
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()

    def save(self) -> None:
        """Write ``dump.rdb`` now (the next ``start`` loads it)."""
        client = self.client()
        try:
            client.save()
        finally:
            client.close()

    def forget_dump(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "dump.rdb").unlink()

    def kill(self) -> None:
        """SIGKILL: the server is gone at once (connections refused)."""
        if self.proc is not None and self.proc.poll() is None:
            if self.paused:
                self.resume()
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its data and its port but answers nothing."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        self.kill()
        self.forget_dump()
        if self.cluster:
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / "nodes.conf").unlink()


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RedisCluster:
    """Three redis-server masters with ``--cluster-enabled yes`` on free loopback ports, joined
    by ``redis-cli --cluster create`` (no replicas): a real Redis Cluster owned by the test."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        if shutil.which("redis-cli") is None:
            pytest.fail("redis-cli is not on PATH; the Redis Cluster tests need it")
        self.nodes = []
        for index in range(masters):
            node_dir = workdir / f"node{index}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(RedisServer(node_dir, cluster=True))

    def url(self) -> str:
        return self.nodes[0].url()

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(self.ready, 30, what="the Redis Cluster to settle (cluster_state:ok)")

    def ready(self) -> bool:
        for node in self.nodes:
            client = node.client(timeout=0.5)
            try:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
            except Exception:
                return False
            finally:
                client.close()
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def redis_cluster(workdir: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def pg_params() -> dict[str, Any]:
    db = settings.DATABASES["default"]
    params = {
        "host": db.get("HOST") or "127.0.0.1",
        "port": int(db.get("PORT") or 5432),
        "user": db.get("USER") or "postgres",
        "connect_timeout": 5,
    }
    if db.get("PASSWORD"):
        params["password"] = db["PASSWORD"]
    return params


def pg_url(name: str) -> str:
    from urllib.parse import quote

    params = pg_params()
    auth = quote(params["user"])
    if params.get("password"):
        auth += ":" + quote(params["password"])
    return f"postgres://{auth}@{params['host']}:{params['port']}/{name}"


def _maintenance_connection() -> Any:
    import psycopg

    try:
        return psycopg.connect(dbname="postgres", autocommit=True, **pg_params())
    except Exception as error:
        pytest.fail(
            f"PostgreSQL at {pg_params()['host']}:{pg_params()['port']} is unreachable: {error}"
        )


@contextlib.contextmanager
def scratch_database(prefix: str = "nilva_mp") -> Iterator[str]:
    """Create a PostgreSQL database of our own; drop it (even with open connections) after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _maintenance_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with _maintenance_connection() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
