"""Races on PostgreSQL + Redis with real threads (each with its own database connection).

* A revoke racing a cold cache fill never leaves a live entry: after both, the session is refused.
  Many free-running iterations, plus forced interleavings (the revoke lands between the fill's
  database read and its ``add``; before and after the revoke's commit; and a fill that stalls
  longer than the tombstone lives).
* A revoke racing an activity update never revives the row: ``UPDATE … WHERE is_active`` waits
  for the revoke's row lock and then matches nothing; ``is_active`` stays False.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from nilva_session import cache, codec, sessions
from nilva_session.models import UserSession

from .conftest import FakeRequest
from .support.inprocess import private_redis_cache
from .support.services import SERVICES

pytestmark = [*SERVICES, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis_cache(monkeypatch):
    """The session cache on our own Redis database (see tests/support/inprocess.py)."""
    with private_redis_cache(monkeypatch) as backend:
        yield backend


ITERATIONS = 60
IP = "203.0.113.7"
NEW_IP = "198.51.100.20"


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Start ``target`` in a thread with its own DB connection; the dict gets result or error."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as error:  # reported by join_all
            outcome["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def join_all(*pairs: tuple[threading.Thread, dict[str, Any]]) -> list[Any]:
    results = []
    for thread, outcome in pairs:
        thread.join(30)
        assert not thread.is_alive(), "a racing thread did not finish"
        if "error" in outcome:
            raise outcome["error"]
        results.append(outcome.get("result"))
    return results


def attempt(credential: str, session: UserSession, *, by_id: bool, ip: str = IP) -> str:
    """Authenticate by token or by session id (the JWT path); return "ok" or the refusal code."""
    try:
        if by_id:
            sessions.authenticate_session_id(session.pk, sessions.Client.of(FakeRequest(ip=ip)))
        else:
            sessions.authenticate_token(credential, sessions.Client.of(FakeRequest(ip=ip)))
    except sessions.SessionRefused as refused:
        return refused.code
    return "ok"


def entry_key(session: UserSession, by_id: bool) -> str:
    return cache.session_key(session.pk) if by_id else cache.token_key(session.key)


def assert_ended_everywhere(session: UserSession, token: str) -> None:
    for by_id in (False, True):
        assert attempt(token, session, by_id=by_id) == "session_ended"
        assert codec.unpack(cache.get_store().get(entry_key(session, by_id))) is None
    assert UserSession.objects.get(pk=session.pk).is_active is False


# --------------------------------------------------------------------------------------------
# revoke vs cold fill
# --------------------------------------------------------------------------------------------


def test_revoke_racing_a_cold_fill_never_leaves_a_live_entry(redis_cache, user, open_session):
    outcomes: Counter[str] = Counter()
    for iteration in range(ITERATIONS):
        session, token = open_session(user)
        by_id = iteration % 2 == 1
        start = threading.Barrier(2, timeout=10)
        # Either side may start a little late, so both orders and the overlaps happen.
        late = random.uniform(0, 0.004)
        auth_delay, delay = (late, 0.0) if iteration % 4 in (0, 1) else (0.0, late)

        def authenticate(
            session=session, token=token, by_id=by_id, start=start, delay=auth_delay
        ) -> str:
            connection.ensure_connection()  # connect before the start, not in the race
            start.wait()
            time.sleep(delay)
            return attempt(token, session, by_id=by_id)

        def revoke(session=session, start=start, delay=delay) -> int:
            connection.ensure_connection()  # connect before the start, not in the race
            start.wait()
            time.sleep(delay)
            return sessions.revoke([session])

        first, ended = join_all(in_thread(authenticate), in_thread(revoke))
        assert ended == 1
        outcomes[first] += 1
        assert_ended_everywhere(session, token)
    print(f"\ncold fill vs revoke, first request: {dict(outcomes)}")
    assert set(outcomes) <= {"ok", "session_ended"}


class HeldFill:
    """Wraps ``sessions._fill_cache``: the filling thread stops after its DB read until released."""

    def __init__(self, monkeypatch) -> None:
        self.read_done = threading.Event()
        self.release = threading.Event()
        self.filled_at: float | None = None
        original = sessions._fill_cache

        def held(*args: Any, **kwargs: Any) -> None:
            self.read_done.set()
            assert self.release.wait(10)
            self.filled_at = time.monotonic()
            original(*args, **kwargs)

        monkeypatch.setattr(sessions, "_fill_cache", held)


@pytest.mark.parametrize("by_id", [False, True], ids=["token", "session_id"])
@pytest.mark.parametrize("moment", ["after_commit", "before_commit"])
def test_revoke_between_the_fill_read_and_its_add(
    redis_cache, user, open_session, monkeypatch, moment, by_id
):
    session, token = open_session(user)
    fill = HeldFill(monkeypatch)
    reader = in_thread(lambda: attempt(token, session, by_id=by_id))
    assert fill.read_done.wait(10)  # the reader saw the row active and is about to fill
    if moment == "after_commit":
        assert sessions.revoke([session]) == 1
        fill.release.set()
        (first,) = join_all(reader)
    else:
        with transaction.atomic():
            assert sessions.revoke([session]) == 1
            fill.release.set()  # it fills while the revoke is not yet committed
            wait = time.monotonic() + 10
            while reader[0].is_alive() and time.monotonic() < wait:
                time.sleep(0.005)
        (first,) = join_all(reader)
    assert first == "ok"  # it read the row before the revoke: served, but not cached
    assert cache.get_store().get(entry_key(session, by_id)) == cache.TOMBSTONE
    assert_ended_everywhere(session, token)


def test_fill_that_stalls_longer_than_the_tombstone_lives_is_dropped(
    redis_cache, user, open_session, monkeypatch, settings
):
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "TOMBSTONE_TTL": 1}
    session, token = open_session(user)
    read_done, release = threading.Event(), threading.Event()
    check_user_agent = sessions.check_user_agent

    def stall_after_the_read(*args: Any) -> None:  # runs after the DB read, before the fill
        read_done.set()
        assert release.wait(10)
        check_user_agent(*args)

    monkeypatch.setattr(sessions, "check_user_agent", stall_after_the_read)
    reader = in_thread(lambda: attempt(token, session, by_id=False))
    assert read_done.wait(10)
    assert sessions.revoke([session]) == 1
    time.sleep(1.6)  # e.g. a GC pause or a stalled worker: the tombstone has expired
    assert cache.get_store().get(cache.token_key(session.key)) is None
    release.set()
    (first,) = join_all(reader)
    assert first == "ok"  # it read the row before the revoke
    monkeypatch.setattr(sessions, "check_user_agent", check_user_agent)
    assert_ended_everywhere(session, token)


# --------------------------------------------------------------------------------------------
# revoke vs activity update
# --------------------------------------------------------------------------------------------


def row(session: UserSession) -> UserSession:
    return UserSession.objects.get(pk=session.pk)


def record_activity(stale: UserSession, *, ip: str = NEW_IP) -> None:
    """What a request served from a cached copy does when the client's IP changed."""
    sessions._record_activity(stale, cache.token_key(stale.key), None, ip, timezone.now())


def test_activity_update_waiting_on_the_revoke_lock_matches_nothing(
    redis_cache, user, open_session
):
    session, _token = open_session(user)
    stale = row(session)  # the copy a request read before the revoke
    locked = threading.Event()
    finished: dict[str, float] = {}

    def activity() -> None:
        assert locked.wait(10)
        started = time.monotonic()
        record_activity(stale)
        finished["waited"] = time.monotonic() - started

    worker = in_thread(activity)
    with transaction.atomic():
        assert sessions.revoke([session]) == 1  # holds the row lock until the commit
        locked.set()
        time.sleep(0.3)
    join_all(worker)
    assert finished["waited"] >= 0.2, "the activity UPDATE did not wait for the revoke"
    ended = row(session)
    assert ended.is_active is False
    assert ended.end_reason == "revoked"
    assert ended.last_ip == IP  # the activity UPDATE matched no row


def test_revoke_waiting_on_the_activity_lock_still_ends_the_session(
    redis_cache, user, open_session
):
    session, token = open_session(user)
    stale = row(session)
    locked = threading.Event()
    release = threading.Event()

    def activity() -> None:
        with transaction.atomic():
            record_activity(stale)  # holds the row lock until the commit
            locked.set()
            assert release.wait(10)

    worker = in_thread(activity)
    assert locked.wait(10)
    revoker = in_thread(lambda: sessions.revoke([session]))
    time.sleep(0.2)
    assert revoker[0].is_alive(), "the revoke did not wait for the activity UPDATE"
    release.set()
    _, ended = join_all(worker, revoker)
    assert ended == 1
    final = row(session)
    assert final.is_active is False
    assert final.last_ip == NEW_IP  # committed first, then the revoke
    assert_ended_everywhere(session, token)


def test_revoke_racing_activity_updates_from_warm_requests(redis_cache, user, open_session):
    outcomes: Counter[str] = Counter()
    for iteration in range(ITERATIONS // 2):
        session, token = open_session(user)
        assert attempt(token, session, by_id=False) == "ok"  # warm entry in Redis
        start = threading.Barrier(2, timeout=10)
        ip = f"198.51.100.{iteration + 1}"  # a new IP: the request writes activity

        # Either side may start a little late, so both orders happen.
        late = random.uniform(0, 0.004)
        request_delay, revoke_delay = (late, 0.0) if iteration % 2 else (0.0, late)

        def request(token=token, session=session, start=start, ip=ip, delay=request_delay) -> str:
            connection.ensure_connection()  # connect before the start, not in the race
            start.wait()
            time.sleep(delay)
            return attempt(token, session, by_id=False, ip=ip)

        def revoke(session=session, start=start, delay=revoke_delay) -> int:
            connection.ensure_connection()  # connect before the start, not in the race
            start.wait()
            time.sleep(delay)
            return sessions.revoke([session])

        first, ended = join_all(in_thread(request), in_thread(revoke))
        outcomes[first] += 1
        assert ended == 1
        assert row(session).is_active is False
        assert_ended_everywhere(session, token)
    print(f"\nwarm activity vs revoke, racing request: {dict(outcomes)}")


# --------------------------------------------------------------------------------------------
# idle timeout vs a burst of concurrent requests
# --------------------------------------------------------------------------------------------

BURST = 12
IDLE_SECONDS, INTERVAL_SECONDS = 2, 1


@pytest.mark.parametrize("by_id", [False, True], ids=["token", "session-id"])
def test_a_burst_on_an_idle_session_is_refused_whole(
    redis_cache, user, open_session, settings, by_id
):
    """12 simultaneous requests on a session idle past ``IDLE_TIMEOUT``: none succeeds.

    Warm first (entry and activity marker in Redis), so the burst starts on the cached path,
    where only one request can claim the activity write; the others must not pass unchecked.
    """
    settings.NILVA_SESSION = {
        **settings.NILVA_SESSION,
        "IDLE_TIMEOUT": IDLE_SECONDS,
        "LAST_ONLINE_UPDATE_INTERVAL": INTERVAL_SECONDS,
        "INVALID_TOKEN_THROTTLE_RATE": None,
    }
    accepted: Counter[str] = Counter()
    for _round in range(3):
        session, token = open_session(user)
        for _ in range(3):
            assert attempt(token, session, by_id=by_id) == "ok"
        time.sleep(IDLE_SECONDS + 0.6)  # idle; the activity marker (1 s) is long gone
        start = threading.Barrier(BURST, timeout=10)

        def request(token=token, session=session, start=start) -> str:
            connection.ensure_connection()  # connect before the start, not in the race
            start.wait()
            return attempt(token, session, by_id=by_id)

        results = join_all(*(in_thread(request) for _ in range(BURST)))
        accepted.update(results)
        assert "ok" not in results, f"{results.count('ok')} of {BURST} accepted on an idle session"
        assert set(results) <= {"session_idle", "session_ended"}, results
        assert row(session).is_active is False
        assert row(session).end_reason == "idle_timeout"
    print(f"\nidle burst ({'id' if by_id else 'token'}), 3 rounds of {BURST}: {dict(accepted)}")


def test_a_burst_on_a_live_session_with_idle_timeout_is_accepted_whole(
    redis_cache, user, open_session, settings
):
    """The other side: a session used within ``IDLE_TIMEOUT`` is never refused by the burst."""
    settings.NILVA_SESSION = {
        **settings.NILVA_SESSION,
        "IDLE_TIMEOUT": IDLE_SECONDS,
        "LAST_ONLINE_UPDATE_INTERVAL": INTERVAL_SECONDS,
    }
    session, token = open_session(user)
    assert attempt(token, session, by_id=False) == "ok"
    for _round in range(3):
        time.sleep(INTERVAL_SECONDS + 0.2)  # the marker lapsed: the burst races for the write
        start = threading.Barrier(BURST, timeout=10)

        def request(start=start) -> str:
            connection.ensure_connection()
            start.wait()
            return attempt(token, session, by_id=False)

        results = join_all(*(in_thread(request) for _ in range(BURST)))
        assert results == ["ok"] * BURST, results
    assert row(session).is_active is True


# --------------------------------------------------------------------------------------------
# the login budget under concurrent attempts
# --------------------------------------------------------------------------------------------

ATTEMPTS, LOGIN_BUDGET = 40, 10


def _clear_of_a_window_edge(period: int = 60, margin: float = 5.0) -> None:
    """Wait until the fixed window has at least ``margin`` seconds left (bounded: one margin)."""
    left = period - time.time() % period
    if left < margin:
        time.sleep(left + 0.05)


def test_the_username_budget_holds_under_40_simultaneous_attempts(redis_cache, settings):
    """40 threads, 40 client IPs, one username, a budget of 10: exactly 10 are let through."""
    from rest_framework.parsers import JSONParser
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from nilva_session.throttling import LoginUsernameThrottle

    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "LOGIN_THROTTLE_RATE": "10/min"}
    outcomes: Counter[bool] = Counter()
    for round_ in range(3):
        username = f"victim{round_}-{time.time_ns()}"
        requests = [
            Request(
                APIRequestFactory().post(
                    "/api/sessions/login/",
                    {"username": username, "password": "wrong"},
                    format="json",
                    REMOTE_ADDR=f"198.51.100.{i + 1}",
                ),
                parsers=[JSONParser()],
            )
            for i in range(ATTEMPTS)
        ]
        _clear_of_a_window_edge()
        start = threading.Barrier(ATTEMPTS, timeout=10)

        def attempt_login(request, start=start) -> bool:
            cache.get_store().get("warm")  # connect before the start, not in the race
            start.wait()
            return LoginUsernameThrottle().allow_request(request, None)

        pairs = [in_thread(lambda request=request: attempt_login(request)) for request in requests]
        allowed = join_all(*pairs)
        outcomes.update(allowed)
        assert allowed.count(True) == LOGIN_BUDGET, allowed.count(True)
    print(f"\n40 simultaneous attempts x 3 rounds, budget 10: {dict(outcomes)}")


# --------------------------------------------------------------------------------------------
# stolen-token defence: concurrent refreshes, rotations and "this wasn't me" links
# --------------------------------------------------------------------------------------------

RACERS = 8
ROUNDS = 15
REFRESH_URL = "/api/sessions/token/refresh/"
ROTATE_URL = "/api/sessions/rotate/"


def all_at_once(count: int, send: Callable[[], Any]) -> list[Any]:
    """Run ``send`` in ``count`` threads (own DB connections) released together."""
    start = threading.Barrier(count, timeout=20)

    def one() -> Any:
        connection.ensure_connection()  # connect before the start, not in the race
        start.wait()
        return send()

    return join_all(*[in_thread(one) for _ in range(count)])


def jwt_pair(user: Any) -> tuple[UserSession, str]:
    from nilva_session.jwt import refresh_token_for_session

    session, _token = sessions.open_session(user, FakeRequest(ip=IP))
    return session, str(refresh_token_for_session(session, user))


def post(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> tuple[int, Any]:
    from rest_framework.test import APIClient

    from .conftest import DESKTOP_UA

    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR=IP)
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.post(url, body or {}, format="json")
    data = response.json() if response.content else {}
    return response.status_code, data


@pytest.fixture
def rotating_jwt(monkeypatch):
    from .test_jwt import simple_jwt

    apply = simple_jwt.__wrapped__(monkeypatch)  # the generator fixture, driven by hand
    next(apply)(ROTATE_REFRESH_TOKENS=True)
    yield
    next(apply, None)


def test_concurrent_refreshes_with_one_token_advance_it_once_and_all_succeed(
    redis_cache, user, rotating_jwt
):
    """8 tabs refresh with one token at once, 15 times: every one gets a token, generation 1."""
    for _ in range(ROUNDS):
        session, refresh = jwt_pair(user)
        replies = all_at_once(
            RACERS, lambda refresh=refresh: post(REFRESH_URL, {"refresh": refresh})
        )
        assert [status for status, _ in replies] == [200] * RACERS, replies
        row = UserSession.objects.get(pk=session.pk)
        assert (row.is_active, row.refresh_generation) == (True, 1)
        from .test_jwt import claims

        assert {claims(body["refresh"])["refresh_gen"] for _, body in replies} == {1}


def test_concurrent_refreshes_without_a_grace_let_exactly_one_through(
    redis_cache, user, rotating_jwt, settings
):
    """With no grace, of 8 simultaneous refreshes exactly one succeeds, and the reuse ends it."""
    from nilva_session.models import EventKind, SessionEvent

    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "REFRESH_REUSE_GRACE": 0}
    for _ in range(ROUNDS):
        session, refresh = jwt_pair(user)
        replies = all_at_once(
            RACERS, lambda refresh=refresh: post(REFRESH_URL, {"refresh": refresh})
        )
        statuses = Counter(status for status, _ in replies)
        assert statuses == {200: 1, 401: RACERS - 1}, replies
        codes = {body["code"] for status, body in replies if status == 401}
        assert codes <= {"refresh_reused", "session_ended"}
        assert "refresh_reused" in codes
        row = UserSession.objects.get(pk=session.pk)
        assert (row.is_active, row.end_reason) == (False, "refresh_reused")
        reuses = SessionEvent.objects.filter(session_id=session.pk, kind=EventKind.REFRESH_REUSED)
        assert reuses.count() == 1


def test_concurrent_rotations_of_one_opaque_token_let_exactly_one_through(redis_cache, user):
    for _ in range(ROUNDS):
        session, token = sessions.open_session(user, FakeRequest(ip=IP))
        replies = all_at_once(RACERS, lambda token=token: post(ROTATE_URL, token=token))
        winners = [body for status, body in replies if status == 200]
        assert len(winners) == 1, replies
        assert {body["code"] for status, body in replies if status != 200} == {"invalid_token"}
        row = UserSession.objects.get(pk=session.pk)
        assert row.is_active
        assert row.key == sessions.hash_data(winners[0]["token"])
        assert attempt(token, session, by_id=False) == "invalid_token"
        assert attempt(winners[0]["token"], session, by_id=False) == "ok"


def test_concurrent_posts_of_one_not_me_link_act_once(redis_cache, user, settings):
    from django.test import Client

    from nilva_session import alerts
    from nilva_session.models import EventKind, SessionEvent

    from .conftest import FIREFOX_UA

    sessions.open_session(user, FakeRequest(ip=IP))
    sessions.open_session(user, FakeRequest(user_agent=FIREFOX_UA, ip="198.51.100.9"))
    event = SessionEvent.objects.get(kind=EventKind.NEW_DEVICE)
    form = {"token": alerts.not_me_token(event)}

    statuses = all_at_once(RACERS, lambda: Client().post("/api/sessions/not-me/", form).status_code)

    assert Counter(statuses) == {200: 1, 410: RACERS - 1}
    assert not UserSession.objects.filter(user=user, is_active=True).exists()
    ended = SessionEvent.objects.filter(kind=EventKind.REVOKED, reason="reported")
    assert ended.count() == 2


def test_concurrent_revokes_of_one_session_end_and_report_it_once(redis_cache, user):
    """Row locks: of 8 simultaneous revokes, one ends the session; one event, one signal."""
    from nilva_session.models import SessionEvent
    from nilva_session.signals import session_revoked

    sent: list[Any] = []

    def receiver(**kwargs: Any) -> None:
        sent.append(kwargs["session_ids"])

    session_revoked.connect(receiver, weak=False)
    try:
        for _ in range(ROUNDS):
            session, _token = sessions.open_session(user, FakeRequest(ip=IP))
            sent.clear()
            counts = all_at_once(RACERS, lambda session=session: sessions.revoke([session]))
            assert sorted(counts) == [0] * (RACERS - 1) + [1]
            assert sent == [[session.pk]]
            assert SessionEvent.objects.filter(session_id=session.pk, kind="revoked").count() == 1
    finally:
        session_revoked.disconnect(receiver)
