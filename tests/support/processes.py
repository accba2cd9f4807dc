"""The demo project under gunicorn (real worker processes) and a plain HTTP client for it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .services import (
    EXAMPLE_DIR,
    ROOT,
    free_port,
    native_store,
    pg_url,
    private_redis_url,
    require_redis,
    scratch_database,
    uses_django_redis,
    wait_until,
)

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
ACCESS_LOG_FORMAT = "%(p)s %(s)s %(q)s"


def manage(env: dict[str, str], *args: str) -> None:
    """Run ``example/manage.py`` with ``env``; fail the test with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "example/manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}"


@contextmanager
def demo_environment(users: Iterable[str], password: str) -> Iterator[dict[str, str]]:
    """Yield the env of demo server processes: a migrated PostgreSQL database of their own
    (dropped after) with ``users``, and the suite's private Redis database (flushed first)."""
    import redis

    redis_url = private_redis_url()
    require_redis(redis_url)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # our own db number: forget earlier runs' login throttles
    client.close()
    with scratch_database() as name:
        env = {
            **os.environ,
            "DATABASE_URL": pg_url(name),
            "REDIS_URL": redis_url,
            "DJANGO_DEBUG": "0",
            "DEMO_REDIS_STORE": "1" if native_store() else "",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONPATH": os.pathsep.join([str(EXAMPLE_DIR), str(ROOT)]),
            # pytest-django exported tests.settings_services; the servers run the demo project.
            "DJANGO_SETTINGS_MODULE": "tests.support.demo_settings_django_redis"
            if uses_django_redis()
            else "demo.settings",
        }
        manage(env, "migrate", "--noinput", "-v", "0")
        create = "; ".join(
            [
                "from django.contrib.auth import get_user_model",
                "U = get_user_model()",
                f"[U.objects.create_user(n, password={password!r}) for n in {list(users)!r}]",
            ]
        )
        manage(env, "shell", "-c", create)
        yield env


@dataclass
class Reply:
    status: int
    body: Any
    sent: float  # time.monotonic() when the request was sent
    done: float  # ... and when the answer was read
    tag: str = ""
    who: str = ""


def call(
    port: int,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
    timeout: float = 15.0,
) -> Reply:
    """One request on a fresh connection (no keep-alive), so requests spread over the workers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    all_headers = {"User-Agent": USER_AGENT, "Connection": "close", **(headers or {})}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    sent = time.monotonic()
    try:
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        raw = response.read()
        status = response.status
    except (OSError, http.client.HTTPException) as error:
        # A dropped connection counts as a server error: it is not an answer.
        return Reply(599, repr(error), sent, time.monotonic())
    finally:
        conn.close()
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return Reply(status, parsed, sent, time.monotonic())


class Gunicorn:
    """``python -m gunicorn demo.wsgi -w N`` in ``example/``; stopped by its own process group."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, workers: int = 4, threads: int = 1
    ) -> None:
        self.port = free_port()
        self.workers = workers
        self.threads = threads  # over 1: gunicorn's gthread workers, requests in parallel
        self.env = env
        self.access_log = log_dir / "access.log"
        self.error_log = log_dir / "error.log"
        self.stderr_log = log_dir / "stderr.log"  # what the app logs (the demo logs to stderr)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "demo.wsgi",
            "-w",
            str(self.workers),
            "--threads",
            str(self.threads),
            "-b",
            f"127.0.0.1:{self.port}",
            "--max-requests",
            "0",
            "--timeout",
            "60",
            "--graceful-timeout",
            "3",
            "--no-control-socket",  # the default path is shared by every gunicorn here
            "--access-logfile",
            str(self.access_log),
            "--access-logformat",
            ACCESS_LOG_FORMAT,
            "--error-logfile",
            str(self.error_log),
        ]

    def start(self) -> None:
        with self.stderr_log.open("ab") as stderr:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=EXAMPLE_DIR,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group: we stop exactly what we started
            )

        def answering() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                name = self.command()[2]
                pytest.fail(f"{name} exited with {self.proc.returncode}:\n{self.errors()}")
            return call(self.port, "GET", "/api/whoami/", timeout=2).status == 401

        wait_until(answering, 60, interval=0.2, what=f"{self.command()[2]} to answer")

    def errors(self) -> str:
        try:
            return (self.error_log.read_text() + self.app_log())[-5000:]
        except FileNotFoundError:
            return ""

    def app_log(self) -> str:
        try:
            return self.stderr_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def access_lines(self) -> list[tuple[int, int, str]]:
        """``(worker pid, status, query string)`` of every request logged so far."""
        lines = []
        for line in self.access_log.read_text().splitlines():
            parts = line.split(" ", 2)
            pid = parts[0].strip("<>")  # gunicorn writes the pid as <1234>
            if len(parts) == 3 and pid.isdigit() and parts[1].isdigit():
                lines.append((int(pid), int(parts[1]), parts[2]))
        return lines

    def tagged(self, tag: str, expected: int) -> list[tuple[int, int, str]]:
        """The access-log lines of the requests tagged ``t=<tag>``.

        Waits (bounded) until ``expected`` of them are in the log.
        """
        marker = f"t={tag}&"

        def lines() -> list[tuple[int, int, str]]:
            return [line for line in self.access_lines() if line[2].startswith(marker)]

        wait_until(lambda: len(lines()) >= expected, 10, what=f"{expected} log lines of {tag}")
        return lines()

    def workers_for(self, tag: str, expected: int) -> dict[int, dict[int, int]]:
        """``{pid: {status: count}}`` for the requests tagged ``t=<tag>``."""
        by_pid: dict[int, dict[int, int]] = {}
        for pid, status, _query in self.tagged(tag, expected):
            by_pid.setdefault(pid, {}).setdefault(status, 0)
            by_pid[pid][status] += 1
        return by_pid


class Uvicorn(Gunicorn):
    """``python -m uvicorn demo.asgi:application --workers N``: the demo under an ASGI server.

    uvicorn logs to stderr (``app_log``); its access log carries no worker pid, so the tests
    that must name a worker run one server per worker, each on its own port.
    """

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "demo.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "3",
        ]


@dataclass
class Credential:
    name: str
    header: str  # the Authorization header value


def whoami(port: int, credential: Credential, tag: str, index: int) -> Reply:
    reply = call(
        port,
        "GET",
        f"/api/whoami/?t={tag}&i={index}",
        headers={"Authorization": credential.header},
    )
    reply.tag, reply.who = tag, credential.name
    return reply


def burst(
    port: int, credentials: list[Credential], count: int, tag: str, concurrency: int = 8
) -> list[Reply]:
    """``count`` GETs of /api/whoami/, credentials in turn, ``concurrency`` at a time."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(
            pool.map(
                lambda i: whoami(port, credentials[i % len(credentials)], tag, i), range(count)
            )
        )


@dataclass
class Hammer:
    """Threads sending requests without pause until stopped (bounded in count and time)."""

    port: int
    credentials: list[Credential]
    tag: str
    threads: int = 4
    max_requests: int = 3000
    max_seconds: float = 30.0
    replies: list[Reply] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._count = 0
        self._workers = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)
        ]

    def _next(self) -> int | None:
        with self._lock:
            if self._count >= self.max_requests:
                return None
            self._count += 1
            return self._count

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            index = self._next()
            if index is None:
                return
            tag = self.tag  # may be changed while it runs, to mark phases
            reply = whoami(self.port, self.credentials[index % len(self.credentials)], tag, index)
            with self._lock:
                self.replies.append(reply)

    def __enter__(self) -> Hammer:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)

    def count(self) -> int:
        with self._lock:
            return len(self.replies)


def statuses(replies: Iterable[Reply]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for reply in replies:
        counts[reply.status] = counts.get(reply.status, 0) + 1
    return dict(sorted(counts.items()))
