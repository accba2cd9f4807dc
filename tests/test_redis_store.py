"""The native store (``NILVA_SESSION["REDIS"]``) and its copies kept true by ``CLIENT TRACKING``.

Against a redis-server of this module's own (killed, paused, its clients killed), never the
shared one. Round trips are counted by the server itself (``INFO commandstats``), not by a
wrapper around our client. "Another process" is a second ``RedisStore``: its own connections,
its own copies, exactly what a second worker has.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from django.conf import settings
from django.db import connection
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from redis.crc import key_slot

from nilva_session import cache, codec, sessions, store
from nilva_session.redis_store import RedisStore
from nilva_session.sessions import Client

from .conftest import DESKTOP_UA
from .support.services import SERVICES, free_port, redis_cluster, redis_server, wait_until

pytestmark = [*SERVICES, pytest.mark.django_db(transaction=True)]

LEASE = 0.3
IP = "203.0.113.7"
CLIENT = Client.of(RequestFactory().get("/", HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR=IP))


def config(server, **extra):
    where = (
        {"SENTINELS": [("127.0.0.1", server.sentinel_port)], "SERVICE_NAME": "mymaster"}
        if isinstance(server, Sentineled)
        else {"URL": server.url(), "CLUSTER": isinstance(server, Cluster)}
    )
    return {
        **where,
        "KEY_PREFIX": "t:",
        "OPTIONS": {"socket_timeout": LEASE, "socket_connect_timeout": LEASE},
        **extra,
    }


class Cluster:
    """A 3-master Redis Cluster, seen by these tests like one server."""

    def __init__(self, cluster) -> None:
        self.nodes, self.ready = cluster.nodes, cluster.ready

    def url(self) -> str:
        return self.nodes[0].url()

    def client(self):
        from redis.cluster import RedisCluster

        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port)

    def pause(self) -> None:
        for node in self.nodes:
            node.pause()

    def resume(self) -> None:
        for node in self.nodes:
            node.resume()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def revive(self) -> None:
        """Restart killed nodes (they rejoin from nodes.conf) and wait for cluster_state:ok."""
        for node in self.nodes:
            if node.paused:
                node.resume()
            if node.proc is None or node.proc.poll() is not None:
                node.start()
        wait_until(self.ready, 30, what="the Redis Cluster to be ok again")


class Sentineled:
    """A master and one Sentinel watching it (``redis-server --sentinel``), owned by the test."""

    def __init__(self, master, workdir) -> None:
        self.master, self.nodes = master, [master]
        self.sentinel_port = free_port()
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\n"
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        )
        self.proc = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._knows_master, 10, what="Sentinel to know the master")

    def _knows_master(self) -> bool:
        import redis

        try:
            client = redis.Redis(port=self.sentinel_port, socket_timeout=0.5)
            return client.sentinel_get_master_addr_by_name("mymaster") is not None
        except Exception:
            return False

    def url(self) -> str:
        return self.master.url()

    def client(self):
        return self.master.client()

    def pause(self) -> None:
        self.master.pause()

    def resume(self) -> None:
        self.master.resume()

    def kill(self) -> None:
        self.master.kill()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def kill_clients(server) -> None:
    for node in getattr(server, "nodes", [server]):
        client = node.client()
        client.client_kill_filter(_type="normal", skipme=True)
        client.close()


@pytest.fixture(scope="module")
def running_cluster(tmp_path_factory):
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield Cluster(cluster)


@pytest.fixture(params=["standalone", "cluster", "sentinel"])
def server(request, tmp_path):
    if request.param == "cluster":
        cluster = request.getfixturevalue("running_cluster")
        for node in cluster.nodes:  # a clean cluster for each test
            client = node.client()
            client.flushall()
            client.close()
        yield cluster
        cluster.revive()
        return
    with redis_server(tmp_path) as own:
        if request.param == "sentinel":
            watched = Sentineled(own, tmp_path)
            try:
                yield watched
            finally:
                watched.stop()
            return
        yield own


@pytest.fixture
def native(server, monkeypatch):
    """The package's store points at the private server; yields it."""
    monkeypatch.setattr(cache, "errors", cache._ErrorLog())
    values = {
        **settings.NILVA_SESSION,
        "REDIS": config(server),
        "LOCAL_CACHE_LEASE": LEASE,
        "INVALID_TOKEN_THROTTLE_RATE": "60/min",
    }
    with override_settings(NILVA_SESSION=values):
        yield store.get_store()
    store.reset()


@pytest.fixture
def other_process(server, native):
    other = RedisStore(config(server))
    yield other
    other.close()


def commands(server) -> dict[str, int]:
    """Commands the server (every node) executed so far, by name (PING, INFO ... left out)."""
    counts: dict[str, int] = {}
    for node in getattr(server, "nodes", [server]):
        client = node.client()
        for name, value in client.info("commandstats").items():
            name = name.removeprefix("cmdstat_")
            counts[name] = counts.get(name, 0) + value["calls"]
        client.close()
    return {
        name: n
        for name, n in counts.items()
        if name not in ("ping", "info", "hello", "cluster", "cluster|slots", "cluster|nodes")
        and not name.startswith(("cluster|", "client|", "command|", "flushall", "config"))
    }


def warm(token: str) -> None:
    for _ in range(3):  # fill, then the first tracked read makes the copy
        sessions.authenticate_token(token, CLIENT)


def test_a_warm_request_makes_no_round_trip_and_no_query(native, server, user, open_session):
    _session, token = open_session(user, ip=IP)
    warm(token)
    before = commands(server)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(200):
            authenticated, _ = sessions.authenticate_token(token, CLIENT)
            assert authenticated == user
    assert len(queries) == 0
    assert commands(server) == before
    assert native.stats()["copies"]["hits"] >= 200


def test_a_warm_jwt_session_makes_no_round_trip(native, server, user, open_session):
    session, _ = open_session(user, ip=IP)
    for _ in range(3):
        sessions.authenticate_session_id(session.pk, CLIENT)
    before = commands(server)
    for _ in range(50):
        sessions.authenticate_session_id(session.pk, CLIENT)
    assert commands(server) == before


def test_a_revoke_in_another_process_refuses_the_very_next_request(
    native, other_process, user, open_session
):
    session, token = open_session(user, ip=IP)
    warm(token)
    assert native.stats()["copies"]["entries"] == 1
    # What revoke does in the other worker: the tombstones, through its own connections.
    keys = cache.keys_for(session.pk, session.key)
    assert other_process.set_many(dict.fromkeys(keys, cache.TOMBSTONE), 60) == []
    session.__class__.objects.filter(pk=session.pk).update(is_active=False)
    with pytest.raises(sessions.SessionRefused) as refused:
        sessions.authenticate_token(token, CLIENT)
    assert refused.value.code == "session_ended"
    assert native.stats()["copies"]["invalidations"] >= 1


def test_revoked_sessions_are_refused_at_once_a_hundred_times_over(
    native, other_process, user, open_session
):
    stale = 0
    for _ in range(100):
        session, token = open_session(user, ip=IP)
        warm(token)
        other_process.set_many(dict.fromkeys([cache.token_key(session.key)], cache.TOMBSTONE), 60)
        found = native.read_session(
            cache.token_key(session.key), cache.activity_key(cache.token_key(session.key)), None
        )
        stale += codec.unpack(found.get(cache.token_key(session.key)), session.key) is not None
    assert stale == 0


def test_the_activity_marker_is_never_served_stale(native, other_process, user, open_session):
    session, token = open_session(user, ip=IP)
    warm(token)
    entry_key = cache.token_key(session.key)
    marker_key = cache.activity_key(entry_key)
    other_process.set(marker_key, "?198.51.100.1", 60)  # another worker claims the write
    found = native.read_session(entry_key, marker_key, None)
    assert found[marker_key] == "?198.51.100.1"


def test_throttle_counters_are_read_from_redis_never_from_a_copy(
    native, other_process, user, open_session
):
    session, token = open_session(user, ip=IP)
    warm(token)
    entry_key, counter = cache.token_key(session.key), "nilva_session:t:invalid:x:1"
    marker_key = cache.activity_key(entry_key)
    assert counter not in native.read_session(entry_key, marker_key, counter)  # a copy: not read
    other_process.count(counter, 60)
    native.forget([entry_key])  # no copy: the counter is read along, as Redis has it now
    assert native.read_session(entry_key, marker_key, counter)[counter] == 1
    other_process.count(counter, 60)
    native.forget([entry_key])
    assert native.read_session(entry_key, marker_key, counter)[counter] == 2


def test_a_killed_connection_drops_every_copy(native, server, user, open_session):
    _session, token = open_session(user, ip=IP)
    warm(token)
    assert native.stats()["copies"]["entries"] == 1
    kill_clients(server)
    time.sleep(0.05)
    sessions.authenticate_token(token, CLIENT)  # read again from Redis, copied again
    copies = native.stats()["copies"]
    assert copies["drops"] >= 1
    assert copies["entries"] == 1  # after reconnecting, through the new tracked connection


def test_a_paused_redis_stops_local_answers_within_a_lease(native, server, user, open_session):
    session, token = open_session(user, ip=IP)
    warm(token)
    entry_key = cache.token_key(session.key)
    server.pause()
    try:
        time.sleep(LEASE * 1.5)
        started = time.monotonic()
        with pytest.raises(Exception, match=r"(?i)timeout|timed out"):
            native.read_session(entry_key, cache.activity_key(entry_key), None)
        assert time.monotonic() - started < LEASE * 3
        # authentication still answers, from the database
        authenticated, _ = sessions.authenticate_token(token, CLIENT)
        assert authenticated == user
    finally:
        server.resume()


def test_a_killed_redis_is_a_miss_and_the_database_decides(native, server, user, open_session):
    session, token = open_session(user, ip=IP)
    warm(token)
    server.kill()
    sessions.revoke([session])
    with pytest.raises(sessions.SessionRefused):
        sessions.authenticate_token(token, CLIENT)
    assert native.stats()["copies"]["entries"] == 0


def copies_after(server, open_session, user, sessions_made: int, **limits):
    """The copies' stats after ``sessions_made`` warm sessions under ``limits``."""
    with override_settings(
        NILVA_SESSION={**settings.NILVA_SESSION, "REDIS": config(server), **limits}
    ):
        for _ in range(sessions_made):
            _session, token = open_session(user, ip=IP)
            warm(token)
        copies = store.get_store().stats()["copies"]
    store.reset()
    return copies


def test_the_copies_are_bounded_in_entries(server, user, open_session):
    copies = copies_after(server, open_session, user, 5, LOCAL_CACHE_MAX_ENTRIES=3)
    assert copies["entries"] == 3
    assert copies["evictions"] == 2


def test_the_copies_are_bounded_in_bytes(server, user, open_session):
    copies = copies_after(server, open_session, user, 10, LOCAL_CACHE_MAX_BYTES=2000)
    assert 0 < copies["bytes"] <= 2000
    assert copies["entries"] < 10


def test_without_local_cache_every_request_reads_redis(server, user, open_session):
    values = {**settings.NILVA_SESSION, "REDIS": config(server), "LOCAL_CACHE": False}
    with override_settings(NILVA_SESSION=values):
        _session, token = open_session(user, ip=IP)
        warm(token)
        before = commands(server).get("mget", 0)
        for _ in range(10):
            sessions.authenticate_token(token, CLIENT)
        after = commands(server).get("mget", 0)
    store.reset()
    assert after - before == 10


def test_an_entry_and_its_marker_share_one_cluster_slot(native):
    for entry_key in (cache.token_key("ab" * 32), cache.session_key("0" * 32)):
        entry, marker = native.name(entry_key), native.name(cache.activity_key(entry_key))
        assert key_slot(entry.encode()) == key_slot(marker.encode())
        assert native.name(entry_key) == native.entry_name(entry_key)
    assert native.name("throttle_login_ip_x:1") == "t:throttle_login_ip_x:1"


def test_counters_always_expire(native, server):
    assert native.count("c", 30) == 1
    assert native.count("c", 30) == 2
    assert 0 < server.client().ttl("t:c") <= 30


def test_a_copy_never_outlives_its_redis_key(native, server, user, open_session):
    session, token = open_session(user, ip=IP)
    warm(token)
    name = native.name(cache.token_key(session.key))
    copy = native.copies.copies[cache.token_key(session.key)]
    # The key's end lies before (this reply's arrival + its PTTL); on a loaded machine the PTTL
    # round trip itself can take tens of milliseconds, so read the clock after it, not before.
    remaining_ms = server.client().pttl(name)
    assert copy.expires <= time.monotonic() + (remaining_ms + 1) / 1000
