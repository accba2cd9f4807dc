"""Redis outages against a redis-server this module owns (never the shared one).

* Killed while requests flow: every request is answered from PostgreSQL (no 5xx), a session ended
  before or during the outage stays refused, a live one is accepted, logins work, and the
  failures are logged once for the burst, not once per request.
* Back with its data (paused with SIGSTOP, writes held by ``CLIENT PAUSE``, or restarted from a
  saved ``dump.rdb``): a session ended while Redis could not take the tombstone must not come
  back through the entry that Redis kept.

The cache points at the private server with short socket timeouts (what docs/production.md
recommends), so a hung Redis costs a request a fraction of a second, not redis-py's 5 s default.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from nilva_session import cache, codec
from nilva_session.models import UserSession

from .conftest import DESKTOP_UA, PASSWORD
from .support.services import SERVICES, cache_settings, redis_server, store_settings, wait_until

pytestmark = [*SERVICES, pytest.mark.django_db(transaction=True)]

WHOAMI = "/api/whoami/"
SOCKET_TIMEOUT = 0.25
IP = "203.0.113.7"


@pytest.fixture
def redis_of_our_own(tmp_path, monkeypatch):
    """A private redis-server; the session cache points at it; a fresh error log."""
    monkeypatch.setattr(cache, "errors", cache._ErrorLog())
    with (
        redis_server(tmp_path) as server,
        override_settings(
            CACHES=cache_settings(server.url(), timeout=SOCKET_TIMEOUT),
            NILVA_SESSION={
                **settings.NILVA_SESSION,
                "INVALID_TOKEN_THROTTLE_RATE": None,
                **store_settings(server.url(), timeout=SOCKET_TIMEOUT),
            },
        ),
    ):
        assert cache.get_store().get("nothing") is None  # it answers
        yield server


def client_for(token: str | None = None) -> APIClient:
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR=IP)
    client.raise_request_exception = False  # a crash is a 500 to count, not an exception
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@dataclass
class Answer:
    who: str
    status: int
    session_id: str | None
    sent: float
    done: float


class Traffic:
    """One thread sending requests for several tokens in turn until stopped (bounded)."""

    def __init__(self, tokens: dict[str, str], max_requests: int = 3000, max_seconds: float = 30):
        self.tokens = tokens
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        clients = {who: client_for(token) for who, token in self.tokens.items()}
        names = list(clients)
        deadline = time.monotonic() + self.max_seconds
        try:
            for index in range(self.max_requests):
                if self.stop.is_set() or time.monotonic() > deadline:
                    break
                who = names[index % len(names)]
                sent = time.monotonic()
                response = clients[who].get(WHOAMI)
                body = response.json() if response.status_code < 500 else {}
                self.answers.append(
                    Answer(
                        who, response.status_code, body.get("session_id"), sent, time.monotonic()
                    )
                )
        finally:
            connection.close()

    def since(self, moment: float) -> list[Answer]:
        return [a for a in list(self.answers) if a.sent > moment]

    def wait_for(self, count: int, since: float, what: str) -> None:
        wait_until(lambda: len(self.since(since)) >= count, 20, what=what)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def end_session(by_token: str, session: UserSession) -> float:
    """End ``session`` through the API from another device; return when that was acknowledged."""
    response = client_for(by_token).delete(f"/api/sessions/active/?token_id={session.pk}")
    assert response.status_code == 204
    return time.monotonic()


def test_redis_killed_while_requests_flow(redis_of_our_own, user, open_session, caplog):
    server = redis_of_our_own
    live, live_token = open_session(user)
    ended_before, ended_before_token = open_session(user)
    ended_during, ended_during_token = open_session(user)
    tokens = {
        "live": live_token,
        "ended_before": ended_before_token,
        "ended_during": ended_during_token,
    }
    for token in tokens.values():  # warm: every session is in Redis
        assert client_for(token).get(WHOAMI).status_code == 200
    end_session(live_token, ended_before)
    caplog.set_level(logging.WARNING, logger="nilva_session.cache")

    with Traffic(tokens) as traffic:
        traffic.wait_for(30, 0, "traffic with Redis up")
        server.kill()
        down_at = time.monotonic()
        traffic.wait_for(30, down_at, "traffic with Redis down")
        ended_at = end_session(live_token, ended_during)
        # A login works too: the throttle fails open, the session is opened in the database.
        login = client_for().post(
            "/api/sessions/login/", {"username": "alice", "password": PASSWORD}, format="json"
        )
        assert login.status_code == 200
        assert client_for(login.json()["token"]).get(WHOAMI).status_code == 200
        traffic.wait_for(60, ended_at, "traffic after the end, Redis down")
        server.start()  # empty: --save ""
        up_at = time.monotonic()
        traffic.wait_for(60, up_at, "traffic with Redis back")

    answers = traffic.answers
    during = [a for a in answers if down_at < a.sent and a.done < up_at]
    server_errors = [a for a in answers if a.status >= 500]
    stale = [
        a for a in answers if a.who == "ended_during" and a.sent > ended_at and a.status == 200
    ]
    wrong_live = [
        a for a in answers if a.who == "live" and (a.status, a.session_id) != (200, str(live.pk))
    ]
    wrong_before = [a for a in answers if a.who == "ended_before" and a.status != 401]
    print(
        f"\nkilled: {len(answers)} requests, {len(during)} while Redis was down, "
        f"{len(server_errors)} 5xx, {len(stale)} stale, "
        f"max latency {max(a.done - a.sent for a in answers) * 1000:.1f} ms"
    )
    assert len(during) >= 30
    assert not server_errors
    assert not stale
    assert not wrong_live
    assert not wrong_before
    # Before the end was sent, the session that ended during the outage was still served.
    assert any(a.who == "ended_during" and a.status == 200 and a.done < ended_at for a in answers)
    # One warning for the whole burst of failures, not one per request.
    warnings = [r for r in caplog.records if r.name == "nilva_session.cache"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "serving sessions from the database" in warnings[0].getMessage()
    # Redis is back and used again: the live session is cached, the ended ones are not.
    assert client_for(live_token).get(WHOAMI).status_code == 200
    assert codec.unpack(cache.get_store().get(cache.token_key(live.key))) is not None
    for session, token in ((ended_before, ended_before_token), (ended_during, ended_during_token)):
        assert client_for(token).get(WHOAMI).status_code == 401
        assert codec.unpack(cache.get_store().get(cache.token_key(session.key))) is None


# --------------------------------------------------------------------------------------------
# Redis comes back with the data it had: the entry of a session ended meanwhile is still there
# --------------------------------------------------------------------------------------------


class SigStop:
    """The process is frozen (SIGSTOP): connections hang, then time out; data is kept."""

    def __init__(self, server) -> None:
        self.server = server

    def begin(self) -> None:
        self.server.pause()

    def end(self) -> None:
        self.server.resume()


class ClientPauseWrite:
    """``CLIENT PAUSE <ms> WRITE``: reads are served, writes (tombstones) hang, then time out."""

    def __init__(self, server) -> None:
        self.server = server
        self.admin = server.client()

    def begin(self) -> None:
        self.admin.execute_command("CLIENT", "PAUSE", 30000, "WRITE")

    def end(self) -> None:
        self.admin.execute_command("CLIENT", "UNPAUSE")
        self.admin.close()


class RestartWithData:
    """Killed, then restarted from the ``dump.rdb`` saved while the entries were warm."""

    def __init__(self, server) -> None:
        self.server = server

    def begin(self) -> None:
        self.server.save()
        self.server.kill()

    def end(self) -> None:
        self.server.start()


class OutOfMemory:
    """``maxmemory`` reached with ``noeviction``: writes fail with OOM; reads and DEL work."""

    #: nilva-session deletes the entry when the tombstone is refused: no process is served it.
    other_processes_covered = True

    def __init__(self, server) -> None:
        self.admin = server.client()

    def begin(self) -> None:
        self.admin.config_set("maxmemory-policy", "noeviction")
        self.admin.config_set("maxmemory", 1)

    def end(self) -> None:
        self.admin.config_set("maxmemory", 0)
        self.admin.close()


@pytest.fixture
def as_another_process(monkeypatch):
    """Run a request as a process that did not see the tombstone writes fail."""

    def request(token: str) -> int:
        owed = cache.unwritten
        monkeypatch.setattr(cache, "unwritten", cache._UnwrittenTombstones())
        try:
            return client_for(token).get(WHOAMI).status_code
        finally:
            monkeypatch.setattr(cache, "unwritten", owed)

    return request


@pytest.mark.parametrize("outage", [SigStop, ClientPauseWrite, RestartWithData, OutOfMemory])
def test_session_ended_while_redis_kept_its_data_stays_ended(
    redis_of_our_own, user, open_session, outage, as_another_process
):
    server = redis_of_our_own
    _live, live_token = open_session(user)
    victim, victim_token = open_session(user)
    for token in (live_token, victim_token):
        assert client_for(token).get(WHOAMI).status_code == 200
    entry_key = cache.token_key(victim.key)
    assert codec.unpack(cache.get_store().get(entry_key)) is not None  # the warm entry

    trouble = outage(server)
    trouble.begin()
    try:
        started = time.monotonic()
        end_session(live_token, victim)  # the tombstone writes fail
        during = [client_for(victim_token).get(WHOAMI).status_code for _ in range(3)]
        live_during = client_for(live_token).get(WHOAMI).status_code
        elapsed = time.monotonic() - started
        elsewhere_during = as_another_process(victim_token)
    finally:
        trouble.end()
    wait_until(server.ping, 10, what="Redis back")
    # Before this process touches the cache again, a process that saw nothing fail:
    elsewhere_first = as_another_process(victim_token)
    after = [client_for(victim_token).get(WHOAMI).status_code for _ in range(5)]
    elsewhere_after = as_another_process(victim_token)
    print(
        f"\n{outage.__name__}: this process during={during} after={after}; another process "
        f"during={elsewhere_during} back={elsewhere_first} after={elsewhere_after} "
        f"({elapsed:.2f}s for the end and 4 requests)"
    )
    assert during == [401] * 3, (
        "served from the kept entry while the tombstone could not be written"
    )
    assert live_during == 200
    assert after == [401] * 5, "the entry Redis kept let an ended session back in"
    # The owed tombstone was written on this process's first read: every process refuses now.
    assert cache.get_store().get(entry_key) == cache.TOMBSTONE
    assert elsewhere_after == 401
    if getattr(outage, "other_processes_covered", False):
        assert elsewhere_during == elsewhere_first == 401
    assert UserSession.objects.get(pk=victim.pk).is_active is False
    assert client_for(live_token).get(WHOAMI).status_code == 200
