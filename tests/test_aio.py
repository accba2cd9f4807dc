"""The async entry points (nilva_session.aio): the same verdicts as the sync core, and a warm
request decided on the event loop without a worker thread.

Every case runs twice, on two sessions prepared alike: once through ``sessions`` and once
through ``aio``; the outcomes must be equal. The async calls run on a real event loop
(``async_to_sync``); their cold path's worker thread is asgiref's, as under an ASGI server.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model

from nilva_session import aio, cache, sessions, store
from nilva_session.exceptions import SessionRefused
from nilva_session.models import EndReason, UserSession

from .conftest import DESKTOP_UA, DESKTOP_UA_NEXT, FIREFOX_UA, FakeRequest
from .support.doubles import nilva_settings
from .support.services import DJANGO_CACHE_ONLY, SERVICES, native_store, services_active

IP = "203.0.113.7"


def client_of(ua: str = DESKTOP_UA, ip: str = IP) -> sessions.Client:
    return sessions.Client.of(FakeRequest(ua, ip))


def by_token(token: str, client: sessions.Client, **kwargs):
    return sessions.authenticate_token(token, client, **kwargs)


def by_token_async(token: str, client: sessions.Client, **kwargs):
    return async_to_sync(aio.aauthenticate_token)(token, client, **kwargs)


def by_id(session: UserSession, client: sessions.Client, **kwargs):
    owner = ("pk", session.user_id)
    return sessions.authenticate_session_id(str(session.pk), client, owner=owner, **kwargs)


def by_id_async(session: UserSession, client: sessions.Client, **kwargs):
    owner = ("pk", session.user_id)
    call = async_to_sync(aio.aauthenticate_session_id)
    return call(str(session.pk), client, owner=owner, **kwargs)


def outcome(call) -> tuple:
    """``("ok", username, session still active)`` or ``("refused", status, code)``."""
    try:
        user, session = call()
    except SessionRefused as refusal:
        return ("refused", refusal.status_code, refusal.default_code)
    active = UserSession.objects.get(pk=session.pk).is_active
    return ("ok", user.get_username(), active)


def _revoke(session, user, clock):
    sessions.revoke([session])


def _deactivate_user(session, user, clock):
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    sessions.invalidate_user(user)


def _expire(session, user, clock):
    clock.advance(days=2)


def _idle(session, user, clock):
    clock.advance(minutes=11, cache=False)


#: (name, settings, what happens after the warm-up request, the checked request's client,
#: the verdict: "ok" or the refusal's code)
CASES = [
    ("warm", {}, None, client_of(), "ok"),
    ("revoked-while-cached", {}, _revoke, client_of(), "session_ended"),
    ("user-deactivated", {}, _deactivate_user, client_of(), "user_inactive"),
    ("expired-copy", {}, _expire, client_of(), "session_expired"),
    ("new-browser-version", {}, None, client_of(DESKTOP_UA_NEXT), "ok"),
    ("other-browser", {}, None, client_of(FIREFOX_UA), "session_suspended"),
    ("strict-agent", {"USER_AGENT_CHECK": "strict"}, None, client_of(DESKTOP_UA_NEXT),
     "session_suspended"),
    ("agent-check-off", {"USER_AGENT_CHECK": "off"}, None, client_of(FIREFOX_UA), "ok"),
    ("ip-bound-new-ip", {"BIND_IP": True}, None, client_of(ip="198.51.100.9"),
     "session_suspended"),
    ("new-ip", {}, None, client_of(ip="198.51.100.9"), "ok"),
    ("idle", {"IDLE_TIMEOUT": timedelta(minutes=10)}, _idle, client_of(), "session_idle"),
    ("no-request", {}, None, sessions.UNKNOWN, "ok"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "options", "change", "client", "verdict"), CASES, ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("path", ["token", "session-id"])
def test_async_and_sync_reach_the_same_verdict(
    user, open_session, clock, name, options, change, client, verdict, path
):
    results = []
    with nilva_settings(**options):
        for sync in (True, False):
            session, token = open_session(user)
            by_token(token, client_of())  # the warm-up request caches the session
            if change is not None:
                change(session, user, clock)
            record = client is not sessions.UNKNOWN
            if path == "token":
                call = by_token if sync else by_token_async
                results.append(outcome(lambda: call(token, client, record_activity=record)))  # noqa: B023
            else:
                call = by_id if sync else by_id_async
                results.append(outcome(lambda: call(session, client, record_activity=record)))  # noqa: B023
            if change is not None:  # undo what the change did to the user for the second run
                get_user_model().objects.filter(pk=user.pk).update(is_active=True)
                sessions.invalidate_user(user)
                clock.offset = timedelta(0)
    assert results[0] == results[1], name
    assert (results[0][0] if verdict == "ok" else results[0][2]) == verdict


@pytest.mark.parametrize(
    ("credential", "code"),
    [
        ("", "invalid_token"),
        ("nvs_" + "x" * 5000, "invalid_token"),
        ("nvs_ünïcode", "invalid_token"),
        ("nvs_" + "A" * 43, "invalid_token"),  # well formed, unknown
    ],
    ids=["empty", "huge", "non-ascii", "unknown"],
)
def test_bad_tokens_are_refused_alike(db, credential, code):
    sync = outcome(lambda: by_token(credential, client_of()))
    assert sync == outcome(lambda: by_token_async(credential, client_of()))
    assert sync == ("refused", 401, code)


@pytest.mark.parametrize("session_id", [None, "", "not-a-uuid", "1" * 100, 12, ["x"]], ids=repr)
def test_bad_session_ids_are_refused_alike(db, session_id):
    def sync():
        return sessions.authenticate_session_id(session_id, client_of())

    def asynchronous():
        return async_to_sync(aio.aauthenticate_session_id)(session_id, client_of())

    assert outcome(sync) == outcome(asynchronous)
    assert outcome(sync)[0] == "refused"


def test_another_users_session_is_not_found_by_either_path(user, other_user, open_session):
    session, token = open_session(user)
    by_token(token, client_of())
    owner = ("pk", other_user.pk)
    sync = outcome(lambda: sessions.authenticate_session_id(session.pk, client_of(), owner=owner))
    call = async_to_sync(aio.aauthenticate_session_id)
    assert sync == outcome(lambda: call(session.pk, client_of(), owner=owner))
    assert sync == ("refused", 401, "invalid_token")


# --- where the work happens ---------------------------------------------------------------


def test_a_warm_request_is_decided_on_the_event_loop(
    user, open_session, hops, django_assert_num_queries
):
    session, token = open_session(user)
    by_token(token, client_of())  # cached, activity just written
    with django_assert_num_queries(0):
        found_user, found = by_token_async(token, client_of())
    assert (found_user.pk, found.pk, hops.hops) == (user.pk, session.pk, 0)


def test_the_jwt_path_is_warm_on_the_event_loop_too(user, open_session, hops):
    session, _token = open_session(user)
    by_id(session, client_of())
    by_id_async(session, client_of())
    assert hops.hops == 0


def test_a_cold_request_takes_one_worker_thread_then_the_next_is_warm(user, open_session, hops):
    _session, token = open_session(user)
    by_token_async(token, client_of())
    assert hops.hops == 1
    by_token_async(token, client_of())
    assert hops.hops == 1


def test_the_activity_write_due_goes_to_the_worker_thread(user, open_session, hops, clock):
    session, token = open_session(user)
    by_token(token, client_of())
    clock.advance(minutes=2, cache=False)  # past LAST_ONLINE_UPDATE_INTERVAL: a write is due
    by_token_async(token, client_of())
    assert hops.hops == 1
    assert UserSession.objects.get(pk=session.pk).last_online == clock.now()


def test_a_projects_own_user_agent_rule_runs_on_every_request(user, open_session, hops):
    session, token = open_session(user)
    seen = []

    def rule(checked, request):
        seen.append(checked.pk)

    by_token(token, client_of())
    by_token_async(token, client_of(), user_agent_check=rule)
    by_token_async(token, client_of(), user_agent_check=rule)
    assert (seen, hops.hops) == ([session.pk, session.pk], 2)


def test_the_session_is_attached_to_the_request_on_the_warm_path(user, open_session, hops):
    session, token = open_session(user)
    by_token(token, client_of())
    request = FakeRequest()
    by_token_async(token, sessions.Client.of(request))
    assert (sessions.current_session(request).pk, hops.hops) == (session.pk, 0)


def test_an_owed_tombstone_sends_the_read_to_the_sync_path(user, open_session, hops, monkeypatch):
    session, token = open_session(user)
    by_token(token, client_of())
    monkeypatch.setattr(cache, "unwritten", cache._UnwrittenTombstones())
    cache.unwritten.add([cache.token_key(session.key)])
    by_token_async(token, client_of())
    assert hops.hops == 1
    assert not cache.unwritten.keys  # paid by the sync path's read


def test_a_foreign_entry_is_barred_by_the_sync_path(user, open_session, hops):
    session, token = open_session(user)
    key = cache.token_key(session.key)
    cache.get_store().set(key, ("not", "an", "entry"), 60)
    _user, found = by_token_async(token, client_of())
    assert (found.pk, hops.hops) == (session.pk, 1)
    assert cache.get_store().get(key) == cache.TOMBSTONE


def test_a_broken_store_is_a_miss_on_the_async_path(user, open_session, hops, monkeypatch):
    session, token = open_session(user)
    by_token(token, client_of())

    async def broken(*args):
        raise ConnectionError("down")

    monkeypatch.setattr(type(store.get_store()), "aread_session", broken)
    _user, found = by_token_async(token, client_of())
    assert (found.pk, hops.hops) == (session.pk, 1)


def test_an_ended_session_is_refused_at_once_from_a_warm_copy(user, open_session):
    session, token = open_session(user)
    by_token_async(token, client_of())
    by_token_async(token, client_of())
    sessions.revoke([session], EndReason.REVOKED)
    assert outcome(lambda: by_token_async(token, client_of())) == ("refused", 401, "session_ended")


# --- the stores' async reads --------------------------------------------------------------

on_services = pytest.mark.skipif(not services_active(), reason=SERVICES[1].kwargs["reason"])


@DJANGO_CACHE_ONLY
@on_services
def test_djangos_redis_cache_is_read_with_redis_asyncio(user, open_session):
    backend = cache.get_cache()
    session, token = open_session(user)
    by_token(token, client_of())
    if type(backend).__module__.startswith("django.core"):
        reader = store._aget_many(backend)
        assert reader.__qualname__.startswith("_redis_asyncio_get_many")
    key = cache.token_key(session.key)
    values = async_to_sync(store.get_store().aread_session)(key, cache.activity_key(key), None)
    assert values == store.get_store().read_session(key, cache.activity_key(key), None)


def test_the_local_memory_cache_is_read_on_the_event_loop_itself(db):
    from django.core.cache.backends.locmem import LocMemCache

    backend = LocMemCache("aio-test", {})
    backend.set("k", "v")
    assert async_to_sync(store._aget_many(backend))(["k", "missing"]) == {"k": "v"}
    assert store._aget_many(backend) != backend.aget_many


def test_other_backends_are_read_with_one_worker_thread_for_all_keys(monkeypatch):
    from django.core.cache.backends.dummy import DummyCache

    backend = DummyCache("aio-test", {})
    reads = []
    monkeypatch.setattr(backend, "get_many", lambda keys: reads.append(keys) or {})
    assert async_to_sync(store._aget_many(backend))(["a", "b", "c"]) == {}
    assert reads == [["a", "b", "c"]]  # one get_many, not one get per key


def test_a_backends_own_aget_many_is_respected():
    from django.core.cache.backends.dummy import DummyCache

    class Native(DummyCache):
        async def aget_many(self, keys, version=None):
            return {"own": True}

    backend = Native("aio-test", {})
    assert async_to_sync(store._aget_many(backend))(["a"]) == {"own": True}


def test_the_readers_of_equal_redis_caches_are_one(settings):
    from django.core.cache.backends.redis import RedisCache

    first = RedisCache("redis://127.0.0.1:6379/3", {})
    second = RedisCache("redis://127.0.0.1:6379/3", {})
    other = RedisCache("redis://127.0.0.1:6379/4", {})
    assert store._aget_many(first) is store._aget_many(second)  # no connection per instance
    assert store._get_many(first) is store._get_many(second)
    assert store._aget_many(first) is not store._aget_many(other)


@on_services
@pytest.mark.skipif(not native_store(), reason="the native store (NILVA_TEST_STORE=native)")
def test_the_native_store_serves_its_copy_without_a_round_trip(user, open_session, hops):
    _session, token = open_session(user)
    by_token(token, client_of())  # fills the entry
    by_token(token, client_of())  # the tracked read copies it
    native = store.get_store()
    hits = native.stats()["copies"]["hits"]
    by_token_async(token, client_of())
    assert native.stats()["copies"]["hits"] == hits + 1
    assert hops.hops == 0


@on_services
@pytest.mark.skipif(not native_store(), reason="the native store (NILVA_TEST_STORE=native)")
def test_the_native_store_without_copies_reads_with_redis_asyncio(user, open_session, settings):
    with nilva_settings(LOCAL_CACHE=False, REDIS=settings.NILVA_SESSION["REDIS"]):
        session, token = open_session(user)
        by_token(token, client_of())
        native = store.get_store()
        key = cache.token_key(session.key)
        values = async_to_sync(native.aread_session)(key, cache.activity_key(key), None)
        assert values == native.read_session(key, cache.activity_key(key), None)
        assert values[key] is not None
