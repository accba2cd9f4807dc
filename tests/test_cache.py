"""The cache protocol: one read when warm, ``add`` fills, tombstones, foreign entries, outages.

Also home of two helpers the other core test modules import: ``CacheSpy`` (counts the calls
made on the real cache object) and ``Clock`` (freezes and advances Django's clock and the
cache's). The suite runs on LocMemCache (``tests.settings``) and on Redis, Django's backend or
django-redis (``tests.settings_services``): ``remaining_ttl`` and ``stored_items`` look into
either.
"""

from __future__ import annotations

import logging
import math
import pickle
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.cache.backends import locmem
from django.core.cache.backends.locmem import LocMemCache
from django.test import override_settings

from nilva_session import cache, codec, sessions
from nilva_session.models import UserSession
from nilva_session.utils import hash_data
from tests.support.services import DJANGO_CACHE_ONLY

from .conftest import PASSWORD
from .support.doubles import nilva_settings, redis_client

WHOAMI_URL = "/api/whoami/"


def raw_get(key):
    """Read a key straight from the cache backend, bypassing nilva_session."""
    return cache.get_store().get(key)


def remaining_ttl(key) -> float | None:
    """Seconds until ``key`` expires, as the backend itself records it; None if it is absent.

    LocMemCache: its expiry time against its (possibly fake) clock. Redis: ``PTTL``.
    ``math.inf`` for a key stored without a timeout.
    """
    backend = cache.get_cache()
    full_key = backend.make_and_validate_key(key)
    if isinstance(backend, LocMemCache):
        if not backend.has_key(key):
            return None
        expires = backend._expire_info[full_key]
        return math.inf if expires is None else expires - locmem.time.time()
    client = redis_client(backend)
    assert client is not None, f"no TTL reader for {type(backend).__name__}"
    left_ms = client.pttl(full_key)
    if left_ms == -2:
        return None
    return math.inf if left_ms == -1 else left_ms / 1000


def stored_items() -> dict[str, bytes]:
    """Every key the cache backend holds, as stored (prefixed), with its stored bytes."""
    backend = cache.get_cache()
    if isinstance(backend, LocMemCache):
        return dict(backend._cache)  # pickled values, expired ones not yet culled included
    client = redis_client(backend)
    assert client is not None, f"cannot list the keys of {type(backend).__name__}"
    items = {}
    for key in client.scan_iter(count=1000):
        value = client.get(key)
        if value is not None:  # not expired meanwhile
            items[key.decode()] = value
    return items


# --------------------------------------------------------------------------------------------
# warm and cold paths
# --------------------------------------------------------------------------------------------


@DJANGO_CACHE_ONLY
def test_warm_request_reads_the_cache_once_and_writes_nothing(
    clock, token_client, cache_spy, django_assert_num_queries
):
    client, _session, _token = token_client
    assert client.get(WHOAMI_URL).status_code == 200  # fills the cache
    cache_spy.reset()
    with django_assert_num_queries(0):
        response = client.get(WHOAMI_URL)
    assert response.status_code == 200
    assert cache_spy.calls == ["get_many"]


@DJANGO_CACHE_ONLY
def test_many_warm_requests_stay_free_of_queries_and_writes(
    clock, token_client, cache_spy, django_assert_num_queries
):
    client, _session, _token = token_client
    client.get(WHOAMI_URL)
    cache_spy.reset()
    with django_assert_num_queries(0):
        for _ in range(10):
            clock.advance(seconds=5)  # 50 s in all: still inside the activity interval
            assert client.get(WHOAMI_URL).status_code == 200
    assert cache_spy.writes == []
    assert cache_spy.calls == ["get_many"] * 10


@DJANGO_CACHE_ONLY
def test_cold_request_makes_one_query_and_one_cache_add(
    clock, token_client, cache_spy, django_assert_num_queries
):
    client, session, _token = token_client
    with django_assert_num_queries(1):
        response = client.get(WHOAMI_URL)
    assert response.status_code == 200
    assert response.json()["session_id"] == str(session.pk)
    assert cache_spy.calls == ["get_many", "add"]
    assert codec.unpack(raw_get(cache.token_key(session.key))) is not None


def test_unknown_token_is_not_cached(user, api_client, cache_spy):
    from nilva_session.utils import token_generator

    response = api_client.get(WHOAMI_URL, HTTP_AUTHORIZATION=f"Token {token_generator()}")
    assert response.status_code == 401
    assert cache_spy.writes == []


def test_cache_entry_rebuilds_the_session_and_user(user, open_session, clock):
    session, _token = open_session(user)
    session = UserSession.objects.select_related("user").get(pk=session.pk)
    cached, cached_user = codec.unpack(codec.pack(session, session.user))
    for name in codec.SESSION_FIELDS:
        assert getattr(cached, name) == getattr(session, name), name
    assert cached.is_active is True
    assert cached_user.pk == user.pk
    assert cached_user.get_username() == "alice"
    assert cached_user.is_active is True


def test_cache_entry_never_holds_the_password_hash(user, open_session):
    session, _token = open_session(user)
    entry = codec.pack(session, user)
    assert user.password not in pickle.dumps(entry).decode("latin-1")
    _session, cached_user = codec.unpack(entry)
    assert "password" in cached_user.get_deferred_fields()


# --------------------------------------------------------------------------------------------
# entry lifetime: fixed at fill time, never longer than the session
# --------------------------------------------------------------------------------------------


@DJANGO_CACHE_ONLY
def test_warm_requests_never_extend_the_entry_lifetime(clock, token_client, cache_spy):
    client, session, _token = token_client
    key = cache.token_key(session.key)
    client.get(WHOAMI_URL)
    ttl_at_fill = remaining_ttl(key)
    assert 15 * 60 - 1 < ttl_at_fill <= 15 * 60  # SESSION_CACHE_TTL
    for _ in range(14):
        clock.advance(minutes=1)
        assert client.get(WHOAMI_URL).status_code == 200
    assert codec.unpack(raw_get(key)) is not None  # those requests were served by the entry
    assert remaining_ttl(key) <= ttl_at_fill - 14 * 60  # ... which they did not extend
    assert "touch" not in cache_spy.calls
    clock.advance(minutes=1, seconds=1)  # SESSION_CACHE_TTL (15 min) after the fill
    assert raw_get(key) is None


@DJANGO_CACHE_ONLY
def test_entry_lifetime_is_capped_at_the_session_expiry(user, open_session, api_client, clock):
    session, token = open_session(user, expire_at=clock.now() + timedelta(minutes=5))
    assert api_client.get(WHOAMI_URL, HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    assert 5 * 60 - 1 < remaining_ttl(cache.token_key(session.key)) <= 5 * 60
    clock.advance(minutes=4, seconds=59)
    assert codec.unpack(raw_get(cache.token_key(session.key))) is not None
    clock.advance(seconds=2)
    assert raw_get(cache.token_key(session.key)) is None


@DJANGO_CACHE_ONLY
@nilva_settings(SESSION_CACHE_TTL=30)
def test_entry_lifetime_follows_session_cache_ttl(clock, token_client):
    client, session, _token = token_client
    client.get(WHOAMI_URL)
    assert 29 < remaining_ttl(cache.token_key(session.key)) <= 30
    clock.advance(seconds=29)
    assert codec.unpack(raw_get(cache.token_key(session.key))) is not None
    clock.advance(seconds=2)
    assert raw_get(cache.token_key(session.key)) is None


# --------------------------------------------------------------------------------------------
# the race: a request that read the row before a revoke must not cache it afterwards
# --------------------------------------------------------------------------------------------


def test_revoke_between_db_read_and_fill_leaves_no_live_entry(token_client, monkeypatch):
    client, session, _token = token_client
    real_fill = sessions._fill_cache
    interleaved = []

    def revoke_then_fill(entry_key, live_session, user, now):
        # Request A has read the live row; the session is ended before A writes the cache.
        assert live_session.is_active
        UserSession.objects.filter(pk=session.pk).revoke()
        interleaved.append(entry_key)
        real_fill(entry_key, live_session, user, now)

    monkeypatch.setattr(sessions, "_fill_cache", revoke_then_fill)
    assert client.get(WHOAMI_URL).status_code == 200  # A itself started before the revoke
    monkeypatch.setattr(sessions, "_fill_cache", real_fill)

    assert interleaved == [cache.token_key(session.key)]
    assert raw_get(cache.token_key(session.key)) == cache.TOMBSTONE
    assert codec.unpack(raw_get(cache.token_key(session.key))) is None
    response = client.get(WHOAMI_URL)
    assert response.status_code == 401
    assert response.json()["code"] == "session_ended"


def test_user_change_between_db_read_and_fill_is_seen_by_the_next_request(
    user, token_client, monkeypatch
):
    client, _session, _token = token_client
    real_fill = sessions._fill_cache

    def rename_then_fill(entry_key, live_session, stale_user, now):
        user.username = "alice2"
        user.save()
        real_fill(entry_key, live_session, stale_user, now)

    monkeypatch.setattr(sessions, "_fill_cache", rename_then_fill)
    assert client.get(WHOAMI_URL).json()["user"] == "alice"
    monkeypatch.setattr(sessions, "_fill_cache", real_fill)
    assert client.get(WHOAMI_URL).json()["user"] == "alice2"


def test_fill_never_overwrites_a_tombstone(user, open_session, clock):
    session, _token = open_session(user)
    key = cache.token_key(session.key)
    cache.bar([key])
    sessions._fill_cache(key, session, user, clock.now())
    assert raw_get(key) == cache.TOMBSTONE


def test_tombstoned_session_is_served_from_the_database(
    token_client, cache_spy, django_assert_num_queries
):
    client, session, _token = token_client
    client.get(WHOAMI_URL)
    UserSession.invalidate_cache(session.key)
    cache_spy.reset()
    for _ in range(3):
        with django_assert_num_queries(1):
            assert client.get(WHOAMI_URL).status_code == 200
    assert "add" not in cache_spy.calls  # the tombstone stands until it expires
    assert raw_get(cache.token_key(session.key)) == cache.TOMBSTONE


@DJANGO_CACHE_ONLY
def test_tombstone_expires_and_the_session_is_cached_again(clock, token_client):
    client, session, _token = token_client
    key = cache.token_key(session.key)
    client.get(WHOAMI_URL)
    UserSession.invalidate_cache(session.key)
    assert raw_get(key) == cache.TOMBSTONE
    assert 59 < remaining_ttl(key) <= 60  # TOMBSTONE_TTL
    clock.advance(seconds=59)
    assert client.get(WHOAMI_URL).status_code == 200
    assert raw_get(key) == cache.TOMBSTONE  # still standing: served from the database
    clock.advance(seconds=2)
    assert client.get(WHOAMI_URL).status_code == 200
    assert codec.unpack(raw_get(cache.token_key(session.key))) is not None


def test_revoke_writes_the_tombstones_again_after_commit(
    user, open_session, django_capture_on_commit_callbacks
):
    session, _token = open_session(user)
    keys = cache.keys_for(session.pk, session.key)
    with django_capture_on_commit_callbacks() as callbacks:
        sessions.revoke(UserSession.objects.filter(pk=session.pk))
        assert all(raw_get(key) == cache.TOMBSTONE for key in keys)  # before the UPDATE
        cache.get_store().delete_many(keys)  # as if a filler raced past the first ones
    assert callbacks
    for callback in callbacks:
        callback()
    assert all(raw_get(key) == cache.TOMBSTONE for key in keys)


# --------------------------------------------------------------------------------------------
# foreign objects under our keys are never trusted
# --------------------------------------------------------------------------------------------


def _legacy_model_instance(session):
    """What nilva-session 0.1.x cached: the model instance itself, pickled by the backend."""
    return UserSession.objects.select_related("user").get(pk=session.pk)


def _wrong_signature(session):
    real = codec.pack(session, session.user)
    return (real[0] + 1, *real[1:])


def _short_session_values(session):
    real = codec.pack(session, session.user)
    return (real[0], real[1][:-1], real[2])


FOREIGN_ENTRIES = {
    "0.1.x model instance": _legacy_model_instance,
    "random string": lambda session: "6f1c2b0e-not-an-entry",
    "tuple of the wrong shape": lambda session: (1, 2, 3),
    "pair": lambda session: ("a", "b"),
    "dict": lambda session: {"id": str(session.pk), "is_active": True},
    "entry of another layout": _wrong_signature,
    "entry with a missing field": _short_session_values,
}


@pytest.mark.parametrize("make_entry", FOREIGN_ENTRIES.values(), ids=FOREIGN_ENTRIES.keys())
def test_foreign_entry_is_ignored_and_the_database_decides(
    token_client, make_entry, django_assert_num_queries
):
    client, session, _token = token_client
    cache.get_store().set(cache.token_key(session.key), make_entry(session), 300)
    with django_assert_num_queries(1):
        assert client.get(WHOAMI_URL).status_code == 200
    assert codec.unpack(raw_get(cache.token_key(session.key))) is None  # not replaced either


@pytest.mark.parametrize("make_entry", FOREIGN_ENTRIES.values(), ids=FOREIGN_ENTRIES.keys())
def test_foreign_entry_of_an_ended_session_is_refused(token_client, make_entry):
    client, session, _token = token_client
    entry = make_entry(session)  # taken while the session was active
    UserSession.objects.filter(pk=session.pk).update(is_active=False)
    cache.get_store().set(cache.token_key(session.key), entry, 300)
    response = client.get(WHOAMI_URL)
    assert response.status_code == 401
    assert response.json()["code"] == "session_ended"


def test_unpack_refuses_the_tombstone_and_none():
    assert codec.unpack(cache.TOMBSTONE) is None
    assert codec.unpack(None) is None


# --------------------------------------------------------------------------------------------
# keys: derived from the digest or the session id, never from the token
# --------------------------------------------------------------------------------------------


def test_cache_never_holds_the_raw_token(clock, user, token_client):
    client, session, token = token_client
    client.get(WHOAMI_URL)  # entry
    client.get(WHOAMI_URL, REMOTE_ADDR="198.51.100.4")  # activity marker
    items = stored_items()  # whatever the backend (LocMem or Redis) holds, as stored
    assert any(hash_data(token) in key for key in items)
    assert any(key.endswith(":a") for key in items)
    for key in items:
        assert token not in key
        assert hash_data(token) in key or session.pk.hex in key
    for value in items.values():
        assert token.encode() not in value
    UserSession.objects.filter(pk=session.pk).revoke()
    items = stored_items()
    assert any(session.pk.hex in key for key in items)  # the tombstones
    assert all(token not in key for key in items)
    assert all(token.encode() not in value for value in items.values())


def test_keys_are_built_from_the_digest_and_the_session_id(user, open_session):
    session, token = open_session(user)
    token_key, session_key = cache.keys_for(session.pk, session.key)
    assert token_key == f"nilva_session:t:{hash_data(token)}"
    assert session_key == f"nilva_session:s:{session.pk.hex}"
    assert UserSession.get_cache_key(session.key) == token_key
    assert UserSession.get_cache_key_by_session_id(session.pk) == session_key


@nilva_settings(SESSION_CACHE_PREFIX="app:tok:", SESSION_ID_CACHE_PREFIX="app:sid:")
def test_key_prefixes_come_from_the_settings(token_client):
    client, session, _token = token_client
    client.get(WHOAMI_URL)
    assert codec.unpack(raw_get(f"app:tok:{session.key}")) is not None


# --------------------------------------------------------------------------------------------
# a broken cache: served from the database, revocations hold, one warning per burst
# --------------------------------------------------------------------------------------------


class FailingCache(LocMemCache):
    """A real backend whose every operation fails, like Redis being down."""

    def _fail(self, *args, **kwargs):
        raise ConnectionError("cache is down")

    get = get_many = has_key = _fail
    add = set = set_many = touch = _fail
    delete = delete_many = incr = decr = clear = _fail


@pytest.fixture
def failing_cache(monkeypatch):
    monkeypatch.setattr(cache, "errors", cache._ErrorLog())
    with override_settings(
        CACHES={"default": {"BACKEND": "tests.test_cache.FailingCache", "LOCATION": "failing"}}
    ):
        assert isinstance(cache.get_cache(), FailingCache)
        yield


@DJANGO_CACHE_ONLY
def test_broken_cache_authentication_works_from_the_database(
    token_client, failing_cache, django_assert_num_queries
):
    client, session, _token = token_client
    for _ in range(3):
        with django_assert_num_queries(1):
            response = client.get(WHOAMI_URL)
        assert response.status_code == 200
        assert response.json()["session_id"] == str(session.pk)


def test_broken_cache_login_and_session_work(user, api_client, failing_cache):
    response = api_client.post(
        "/api/sessions/login/", {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    assert api_client.get(WHOAMI_URL, HTTP_AUTHORIZATION=f"Token {token}").status_code == 200


def test_broken_cache_revoked_session_stays_refused(token_client, failing_cache):
    client, session, _token = token_client
    assert client.get(WHOAMI_URL).status_code == 200
    assert UserSession.objects.filter(pk=session.pk).revoke() == 1
    for _ in range(2):
        response = client.get(WHOAMI_URL)
        assert response.status_code == 401
        assert response.json()["code"] == "session_ended"


@DJANGO_CACHE_ONLY
def test_broken_cache_logs_one_warning_per_burst(token_client, failing_cache, caplog):
    client, _session, _token = token_client
    with caplog.at_level(logging.WARNING, logger="nilva_session.cache"):
        for _ in range(10):
            assert client.get(WHOAMI_URL).status_code == 200
    warnings = [r for r in caplog.records if r.name == "nilva_session.cache"]
    assert len(warnings) == 1
    assert "ConnectionError" in warnings[0].getMessage()


@DJANGO_CACHE_ONLY
def test_broken_cache_logs_again_with_a_count_after_the_interval(
    token_client, failing_cache, caplog, monkeypatch
):
    client, _session, _token = token_client
    now = [1000.0]
    monkeypatch.setattr(cache, "time", SimpleNamespace(monotonic=lambda: now[0]))
    with caplog.at_level(logging.WARNING, logger="nilva_session.cache"):
        client.get(WHOAMI_URL)
        client.get(WHOAMI_URL)
        now[0] += cache.ERROR_LOG_INTERVAL + 1
        client.get(WHOAMI_URL)
    warnings = [r.getMessage() for r in caplog.records if r.name == "nilva_session.cache"]
    # Request 1: the read is reported, the fill suppressed; request 2: read and fill suppressed.
    assert len(warnings) == 2
    assert "3 more failures since the last report" in warnings[1]


def test_first_cache_failure_is_logged_even_right_after_boot(monkeypatch, caplog):
    # time.monotonic() counts from an arbitrary point (boot on Linux): it may be small.
    monkeypatch.setattr(cache, "time", SimpleNamespace(monotonic=lambda: 5.0))
    log = cache._ErrorLog()
    with caplog.at_level(logging.WARNING, logger="nilva_session.cache"):
        log.report("read", ConnectionError("down"))
    assert len([r for r in caplog.records if r.name == "nilva_session.cache"]) == 1


def test_read_on_a_broken_cache_is_a_miss(failing_cache):
    assert cache.lookup(cache.token_key("0" * 64), codec.unpack)[:3] == (None, None, None)
