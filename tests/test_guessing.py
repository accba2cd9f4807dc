"""Throttling of token guessing (``nilva_session.guessing``, ``INVALID_TOKEN_THROTTLE_RATE``).

Unknown but well-formed tokens are counted per client IP in a fixed window, in the session
cache. The counter is read in the same ``get_many`` as the session entry, so a client past the
limit gets 429 before the database is asked, and a live cached session costs nothing extra.
End to end: ``tests/test_security.py::test_threat_token_guessing_is_throttled_per_client_ip``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from nilva_session import cache, guessing, sessions
from nilva_session.utils import hash_data, token_generator
from tests.support.services import DJANGO_CACHE_ONLY

from .conftest import DESKTOP_UA
from .support.doubles import nilva_settings
from .support.inprocess import private_redis_cache
from .support.services import services_active

WHOAMI_URL = "/api/whoami/"
IP = "203.0.113.7"
OTHER_IP = "198.51.100.20"
RATE = "3/min"
LIMIT = 3
NOON = datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt_timezone.utc)

throttled = nilva_settings(INVALID_TOKEN_THROTTLE_RATE=RATE)


@pytest.fixture(autouse=True)
def _cache(monkeypatch):
    """On the services settings, a private Redis database and key prefix (see test_security)."""
    if not services_active():
        yield
        return
    with private_redis_cache(monkeypatch):
        yield


def client_from(ip: str = IP) -> APIClient:
    return APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR=ip)


def guess(ip: str = IP, token: str | None = None) -> int:
    client = client_from(ip)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token or token_generator()}")
    return client.get(WHOAMI_URL).status_code


def counter(ip: str = IP):
    key = guessing.counter_key(ip, timezone_now())
    return cache.get_store().get(key) if key else None


def timezone_now():
    from django.utils import timezone

    return timezone.now()


# --------------------------------------------------------------------------------------------
# the pieces
# --------------------------------------------------------------------------------------------


def test_counter_key_is_none_when_throttling_is_off():
    assert guessing.counter_key(IP, NOON) is None  # the test settings turn it off


@throttled
def test_counter_key_names_the_ip_and_the_window():
    key = guessing.counter_key(IP, NOON)
    assert key.startswith("nilva_session:t:invalid:203.0.113.7:")
    assert guessing.counter_key(IP, NOON + timedelta(seconds=59)) == key
    assert guessing.counter_key(IP, NOON + timedelta(seconds=60)) != key
    assert guessing.counter_key(OTHER_IP, NOON) != key
    assert guessing.counter_key(None, NOON).startswith("nilva_session:t:invalid:unknown:")


@nilva_settings(INVALID_TOKEN_THROTTLE_RATE="10/hour")
def test_window_follows_the_rate_period():
    key = guessing.counter_key(IP, NOON)
    assert guessing.counter_key(IP, NOON + timedelta(minutes=59)) == key
    assert guessing.counter_key(IP, NOON + timedelta(hours=1)) != key


@throttled
@pytest.mark.parametrize(
    ("failures", "raises"), [(None, False), (0, False), (2, False), (3, True), (99, True)]
)
def test_check_raises_at_the_limit(failures, raises):
    if raises:
        with pytest.raises(guessing.GuessingThrottled) as error:
            guessing.check(failures, NOON + timedelta(seconds=15))
        assert error.value.wait == pytest.approx(45)
    else:
        guessing.check(failures, NOON)


@throttled
@pytest.mark.parametrize("junk", ["3", b"3", 3.5, [3], {"n": 3}, object()])
def test_check_ignores_a_counter_that_is_not_an_int(junk):
    guessing.check(junk, NOON)  # a foreign value under the key never throttles or crashes


def test_check_and_count_do_nothing_when_off():
    guessing.check(10**6, NOON)
    guessing.count("some-key", NOON)
    assert cache.get_store().get("some-key") is None


@throttled
def test_count_adds_one_per_call():
    key = guessing.counter_key(IP, NOON)
    for expected in (1, 2, 3):
        guessing.count(key, NOON)
        assert cache.get_store().get(key) == expected


@throttled
def test_count_survives_a_broken_cache(monkeypatch):
    backend = cache.get_cache()

    def broken(*args, **kwargs):
        raise ConnectionError("cache is down")

    monkeypatch.setattr(backend, "add", broken)
    monkeypatch.setattr(backend, "incr", broken)
    monkeypatch.setattr(cache, "errors", cache._ErrorLog())
    guessing.count(guessing.counter_key(IP, NOON), NOON)  # logged, not raised


# --------------------------------------------------------------------------------------------
# through authentication
# --------------------------------------------------------------------------------------------


@throttled
def test_unknown_tokens_are_counted_and_the_next_one_is_429(db, django_assert_num_queries):
    for _ in range(LIMIT):
        assert guess() == 401
    assert counter() == LIMIT
    with django_assert_num_queries(0):
        assert guess() == 429
    assert counter() == LIMIT  # a throttled attempt is not counted again


@DJANGO_CACHE_ONLY
@throttled
def test_the_counter_is_read_in_the_same_round_trip_as_the_entry(db, cache_spy):
    assert guess() == 401
    assert cache_spy.calls == ["get_many", "add", "incr"]  # one read, then the count
    cache_spy.reset()
    for _ in range(LIMIT - 1):
        guess()
    cache_spy.reset()
    assert guess() == 429
    assert cache_spy.calls == ["get_many"]


@DJANGO_CACHE_ONLY
@throttled
def test_a_warm_session_costs_one_read_with_throttling_on(token_client, cache_spy):
    client, _session, _token = token_client
    assert client.get(WHOAMI_URL).status_code == 200
    cache_spy.reset()
    assert client.get(WHOAMI_URL).status_code == 200
    assert cache_spy.calls == ["get_many"]


@throttled
def test_malformed_tokens_are_neither_counted_nor_looked_up(db, cache_spy):
    for bad in ("nvs_short", token_generator()[:-1] + "!", "x" * 80):
        assert guess(token=bad) == 401
    assert cache_spy.calls == []
    assert counter() is None


@throttled
def test_known_but_ended_tokens_are_not_counted(token_client):
    client, session, _token = token_client
    sessions.revoke([session])
    for _ in range(LIMIT + 1):
        assert client.get(WHOAMI_URL).status_code == 401
    assert counter() is None


@throttled
def test_a_throttled_ip_keeps_its_warm_session_but_not_a_cold_one(user, open_session):
    _warm_session, warm_token = open_session(user)
    _cold_session, cold_token = open_session(user)
    assert guess(token=warm_token) == 200  # cached now
    for _ in range(LIMIT):
        guess()
    assert guess(token=warm_token) == 200
    assert guess(token=cold_token) == 429  # not cached: the database would be asked
    assert guess(ip=OTHER_IP, token=cold_token) == 200


@throttled
def test_other_ips_are_not_affected(db):
    for _ in range(LIMIT):
        guess()
    assert guess() == 429
    assert guess(ip=OTHER_IP) == 401
    assert guess(ip="2001:db8::1") == 401


@throttled
def test_requests_without_an_address_share_one_budget(db):
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="not an address")
    statuses = []
    for _ in range(LIMIT + 1):
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_generator()}")
        statuses.append(client.get(WHOAMI_URL).status_code)
    assert statuses == [401] * LIMIT + [429]
    assert guessing.counter_key(None, timezone_now()).endswith(
        guessing.counter_key("x", timezone_now()).rsplit(":", 1)[1]
    )


@throttled
def test_the_budget_comes_back_in_the_next_window(db, clock):
    for _ in range(LIMIT):
        guess()
    response_status = guess()
    assert response_status == 429
    clock.advance(seconds=60)
    assert guess() == 401


@throttled
def test_429_carries_retry_after_until_the_window_ends(db, clock):
    for _ in range(LIMIT):
        guess()
    client = client_from()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_generator()}")
    response = client.get(WHOAMI_URL)
    assert response.status_code == 429
    window_left = 60 - clock.now().timestamp() % 60
    assert int(response["Retry-After"]) == pytest.approx(window_left, abs=1)
    assert response.json()["detail"]


@throttled
def test_legacy_shaped_tokens_are_counted_too(db):
    legacy = "a" * 60
    for _ in range(LIMIT):
        assert guess(token=legacy) == 401
    assert guess(token=legacy) == 429


@throttled
def test_jwt_requests_are_not_throttled_by_it(user, django_assert_num_queries):
    for _ in range(LIMIT):
        guess()
    login = client_from().post(
        "/api/sessions/token/",
        {"username": "alice", "password": "correct horse battery staple"},
        format="json",
    )
    assert login.status_code == 200
    client = client_from()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {login.json()['access']}")
    assert client.get(WHOAMI_URL).status_code == 200  # a session id behind a signature


@throttled
def test_the_counter_key_holds_no_token_or_digest(db):
    token = token_generator()
    guess(token=token)
    key = guessing.counter_key(IP, timezone_now())
    assert token not in key
    assert hash_data(token) not in key


@override_settings(NILVA_SESSION={"LOGIN_THROTTLE_RATE": None})
def test_throttling_is_on_by_default(db):
    """The project default is 60/min (the test settings turn it off)."""
    statuses = [guess() for _ in range(61)]
    assert statuses == [401] * 60 + [429]
