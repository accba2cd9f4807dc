"""The warm path's read through Django's RedisCache, the entry's size, and the small memos.

``store._get_many`` reads Django's own ``RedisCache`` through one reused redis-py client (the
backend builds a new client object per call, more than a local round trip costs) and every other
backend, subclass, spy or mock through its own ``get_many``. Tests marked with the services marks
compare it with ``RedisCache.get_many`` on a real Redis (our own database, a unique key prefix).
"""

from __future__ import annotations

import logging
import pickle
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.db import connection
from django.db.models.signals import post_init
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from nilva_session import cache, clients, codec, guessing, sessions, store
from nilva_session.models import UserSession
from nilva_session.utils import hash_data
from tests.support.services import DJANGO_CACHE_ONLY

from .conftest import DESKTOP_UA
from .support.services import SERVICES, free_port, private_redis_url, require_redis


def on_services(test):
    """The services marks (PostgreSQL + Redis suites only; skipped with a reason elsewhere)."""
    for mark in SERVICES:
        test = mark(test)
    return test


def unreachable_redis(**params) -> RedisCache:
    """A RedisCache whose server refuses connections at once (nothing listens on the port)."""
    options = {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}
    return RedisCache(f"redis://127.0.0.1:{free_port()}/0", {"OPTIONS": options, **params})


# --------------------------------------------------------------------------------------------
# which get_many is used
# --------------------------------------------------------------------------------------------


def test_other_backends_are_read_through_their_own_get_many():
    backend = LocMemCache(f"fastpath-{uuid.uuid4().hex}", {})
    assert store._get_many(backend) == backend.get_many


def test_djangos_redis_cache_gets_the_reused_client_reader():
    backend = unreachable_redis()
    reader = store._get_many(backend)
    assert reader != backend.get_many
    assert store._get_many(backend) is reader  # built once per backend object


def test_a_get_many_replaced_on_the_instance_is_respected():
    backend = unreachable_redis()
    store._get_many(backend)  # the reader exists already
    calls = []

    def spy(keys):
        calls.append(list(keys))
        return {}

    backend.get_many = spy
    assert store._get_many(backend) is spy
    store._get_many(backend)(["a"])
    assert calls == [["a"]]


def test_a_subclass_that_reads_differently_is_respected():
    class Sharded(RedisCache):
        def get_many(self, keys, version=None):
            return {"sharded": True}

    backend = Sharded(f"redis://127.0.0.1:{free_port()}/0", {})
    assert store._get_many(backend)(["x"]) == {"sharded": True}


def test_a_client_class_that_picks_its_own_client_is_respected():
    class PerKeyClient(RedisCacheClient):
        def get_client(self, key=None, *, write=False):  # e.g. sharding by key
            return super().get_client(key, write=write)

    backend = unreachable_redis()
    backend._class = PerKeyClient
    assert store._get_many(backend) == backend.get_many


def test_the_reader_reuses_one_client_and_reads_like_get_many(monkeypatch):
    import redis

    backend = unreachable_redis(KEY_PREFIX="pre", VERSION=3)
    clients_used, sent = [], []

    def fake_mget(self, keys, *args):
        clients_used.append(self)
        sent.append(list(keys))
        return [pickle.dumps(("entry", 1)), None, b"7"]

    built = []
    get_client = RedisCacheClient.get_client
    monkeypatch.setattr(redis.Redis, "mget", fake_mget)
    monkeypatch.setattr(
        RedisCacheClient, "get_client", lambda *a, **k: built.append(1) or get_client(*a, **k)
    )
    reader = store._get_many(backend)
    first = reader(["e", "m", "c"])
    second = reader(["e", "m", "c"])
    assert built == []  # no client object built per call
    assert first == second == {"e": ("entry", 1), "c": 7}  # misses left out; ints stored raw
    assert sent[0] == ["pre:3:e", "pre:3:m", "pre:3:c"]  # the backend's own make_key
    assert len(clients_used) == 2
    assert clients_used[0] is clients_used[1]


@DJANGO_CACHE_ONLY
def test_a_redis_that_is_down_is_a_logged_miss(caplog, monkeypatch):
    monkeypatch.setattr(cache, "errors", cache._ErrorLog())
    location = f"redis://127.0.0.1:{free_port()}/0"
    options = {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": location,
            "OPTIONS": options,
        }
    }
    with override_settings(CACHES=caches), caplog.at_level(logging.WARNING, "nilva_session.cache"):
        assert cache.lookup("nilva_session:t:abc", codec.unpack, "counter")[:3] == (
            None,
            None,
            None,
        )
        assert cache.lookup("nilva_session:t:abc", codec.unpack)[:3] == (None, None, None)
    warnings = [r for r in caplog.records if "Cache read failed" in r.getMessage()]
    assert len(warnings) == 1  # once per burst


# --------------------------------------------------------------------------------------------
# against a real Redis (services suites)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def real_redis():
    url = private_redis_url()
    require_redis(url)
    prefix = f"nilva-fastpath-{uuid.uuid4().hex[:12]}"
    backend = RedisCache(url, {"KEY_PREFIX": prefix, "VERSION": 2})
    yield backend
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.parametrize(
    "values",
    [
        {"entry": (123, (b"\x00" * 16, 1, None), ("alice",)), "marker": "203.0.113.7", "n": 3},
        {"entry": "nilva_session:tombstone"},
        {},
    ],
    ids=["entry-marker-counter", "tombstone", "nothing"],
)
@on_services
def test_reader_matches_get_many_on_redis(real_redis, values):
    for key, value in values.items():
        real_redis.set(key, value, 60)
    keys = ["entry", "marker", "n"]
    assert store._get_many(real_redis)(keys) == real_redis.get_many(keys) == values


@DJANGO_CACHE_ONLY
@on_services
def test_an_owed_tombstone_is_paid_on_the_fast_read(real_redis, monkeypatch):
    monkeypatch.setattr(store.DjangoCacheStore, "backend", lambda self: real_redis)
    monkeypatch.setattr(cache, "unwritten", cache._UnwrittenTombstones())
    real_redis.set("k", ("stale", "entry"), 60)
    cache.unwritten.add(["k"])
    entry, _marker, _counter, _fillable = cache.lookup("k", lambda entry: entry)
    assert entry is None  # owed here: not trusted
    assert real_redis.get("k") == cache.TOMBSTONE
    assert not cache.unwritten.keys


# --------------------------------------------------------------------------------------------
# the entry
# --------------------------------------------------------------------------------------------


@pytest.fixture
def logged_in(user, open_session):
    user.last_login = timezone.now() - timedelta(minutes=5)
    user.save(update_fields=["last_login"])
    session, token = open_session(user)
    return UserSession.objects.select_related("user").get(pk=session.pk), token


def test_entry_of_a_session_is_small(logged_in):
    session, _token = logged_in
    assert len(session.user_agent) == len(DESKTOP_UA) > 100
    entry = codec.pack(session, session.user, with_key=False)
    assert len(pickle.dumps(entry, pickle.HIGHEST_PROTOCOL)) <= 300
    assert 0 <= entry[0] < 2**31  # the signature pickles in 5 bytes


def test_user_datetimes_are_stored_as_timestamps_and_come_back_equal(logged_in):
    session, _token = logged_in
    user = session.user
    entry = codec.pack(session, user)
    assert not any(isinstance(value, timezone.datetime) for value in entry[2])
    _session, cached_user = codec.unpack(entry)
    assert cached_user.last_login == user.last_login
    assert cached_user.date_joined == user.date_joined
    assert cached_user.date_joined.utcoffset() == timedelta(0)


def test_a_user_without_last_login_keeps_none(user, open_session):
    session, _token = open_session(user)
    session = UserSession.objects.select_related("user").get(pk=session.pk)
    assert session.user.last_login is None
    _session, cached_user = codec.unpack(codec.pack(session, session.user))
    assert cached_user.last_login is None


@DJANGO_CACHE_ONLY
def test_entry_filed_under_the_digest_leaves_the_digest_out(logged_in):
    session, token = logged_in
    digest = hash_data(token)
    sessions._fill_cache(cache.token_key(digest), session, session.user, timezone.now())
    sessions._fill_cache(cache.session_key(session.pk), session, session.user, timezone.now())
    by_token = cache.get_cache().get(cache.token_key(digest))
    by_id = cache.get_cache().get(cache.session_key(session.pk))
    assert by_token[1][codec.SESSION_FIELDS.index("key")] is None
    assert by_id[1][codec.SESSION_FIELDS.index("key")] == bytes.fromhex(digest)
    rebuilt, _user = codec.unpack(by_token, digest)
    assert rebuilt.key == digest
    rebuilt, _user = codec.unpack(by_id)
    assert rebuilt.key == digest


def test_keyless_entry_without_the_digest_reads_the_key_from_the_database(logged_in):
    session, _token = logged_in
    rebuilt, _user = codec.unpack(codec.pack(session, session.user, with_key=False))
    assert "key" in rebuilt.get_deferred_fields()
    with CaptureQueriesContext(connection) as queries:
        assert rebuilt.key == session.key
    assert len(queries) == 1


@DJANGO_CACHE_ONLY
def test_warm_request_by_token_is_served_from_a_keyless_entry(
    token_client, django_assert_num_queries
):
    client, session, token = token_client
    assert client.get("/api/whoami/").status_code == 200  # fills
    entry = cache.get_cache().get(cache.token_key(hash_data(token)))
    assert entry[1][codec.SESSION_FIELDS.index("key")] is None
    with django_assert_num_queries(0):
        response = client.get("/api/whoami/")
    assert response.status_code == 200
    assert response.json()["session_id"] == str(session.pk)


# --------------------------------------------------------------------------------------------
# memos on the per-request path
# --------------------------------------------------------------------------------------------


def test_parse_ip_refuses_what_is_not_a_string_without_memoising_it():
    assert clients.parse_ip(["203.0.113.7"]) is None  # unhashable: no TypeError from the memo
    assert clients.parse_ip(None) is None
    assert str(clients.parse_ip(" 203.0.113.7 ")) == "203.0.113.7"
    assert clients.parse_ip("203.0.113.7") is clients.parse_ip("203.0.113.7")


def test_user_agent_is_returned_as_is_when_printable_and_cleaned_otherwise():
    class Request:
        META = {"HTTP_USER_AGENT": DESKTOP_UA}

    assert clients.user_agent(Request()) == DESKTOP_UA
    Request.META = {"HTTP_USER_AGENT": "Agent\x00/1.0\n"}
    assert clients.user_agent(Request()) == "Agent/1.0"


def test_throttle_rate_follows_the_setting(settings):
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "INVALID_TOKEN_THROTTLE_RATE": "5/min"}
    assert guessing._rate() == (5, 60)
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "INVALID_TOKEN_THROTTLE_RATE": "9/hour"}
    assert guessing._rate() == (9, 3600)
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "INVALID_TOKEN_THROTTLE_RATE": None}
    assert guessing._rate() is None


def test_a_setting_read_once_follows_a_change_of_the_settings(settings):
    from nilva_session.conf import session_settings

    assert session_settings.TOKEN_PREFIX == "nvs_"
    assert "TOKEN_PREFIX" in vars(session_settings)  # later reads skip __getattr__
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "TOKEN_PREFIX": "abc_"}
    assert session_settings.TOKEN_PREFIX == "abc_"
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "TOKEN_PREFIX": "nvs_"}
    assert session_settings.TOKEN_PREFIX == "nvs_"


# --------------------------------------------------------------------------------------------
# prototypes: a warm request clones the pair built for an equal entry
# --------------------------------------------------------------------------------------------


@pytest.fixture
def packed(user, open_session):
    session, _token = open_session(user)
    codec._prototypes.clear()
    yield codec.pack(session, user), session
    codec._prototypes.clear()


def test_an_equal_entry_gets_fresh_instances_of_one_prototype(packed):
    entry, session = packed
    first_session, first_user = codec.unpack(entry)
    first_session.last_ip, first_user.first_name = "198.51.100.9", "changed"
    second_session, second_user = codec.unpack(pickle.loads(pickle.dumps(entry)))  # noqa: S301
    assert len(codec._prototypes) == 1
    assert second_session is not first_session
    assert second_user is not first_user
    assert second_session.last_ip == session.last_ip
    assert second_user.first_name == ""
    assert second_session.user is second_user
    assert not second_session._state.adding
    assert second_session._state.db == "default"


def test_a_post_init_receiver_of_the_user_model_is_never_skipped(packed):
    entry, _session = packed
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance)

    post_init.connect(receiver, sender=get_user_model())
    try:
        codec.unpack(entry)
        codec.unpack(entry)
    finally:
        post_init.disconnect(receiver, sender=get_user_model())
    assert len(seen) == 2  # built with from_db both times
    assert not codec._prototypes


def test_a_pair_holding_a_mutable_value_is_not_kept(packed):
    entry, _session = packed
    session, user = codec._unpack(entry, None)
    user.__dict__["preferences"] = {"theme": "dark"}
    assert not codec._immutable((session, user))
