"""Revocation across real worker processes: gunicorn (4 sync workers) + PostgreSQL + Redis.

The demo project runs under ``gunicorn demo.wsgi -w 4`` on a PostgreSQL database created for
this module and a Redis database of its own. Every worker serves the session from the warm
cache; the session is then ended through one worker while requests keep flowing, and every
request sent after the end was acknowledged must be refused by every worker: a single 2xx is a
stale success and fails the test. 5xx answers (or dropped connections) fail it too.

The gunicorn access log records the worker pid of each request (``%(p)s``), so the tests prove
that all four workers served the session before the end and refused it after.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from .support.processes import (
    Credential,
    Gunicorn,
    Hammer,
    Reply,
    burst,
    call,
    demo_environment,
    statuses,
)
from .support.services import (
    SERVICES,
    redis_cluster,
    redis_server,
    wait_until,
)

pytestmark = SERVICES

WORKERS = 4
PASSWORD = "multi-process-password-1"
USERS = ("mp_token", "mp_jwt", "mp_all", "mp_outage", "mp_idle", "mp_rotate", "mp_stolen")
WARM_REQUESTS = 200
AFTER_REQUESTS = 400
REFUSED = {401, 429}  # 429: a refused-token throttle may answer once many refusals came in


@dataclass
class Demo:
    server: Gunicorn
    redis_nodes: list[Any] = field(default_factory=list)  # RedisServer of a cluster of its own

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(scope="module")
def demo_env():
    """A migrated PostgreSQL database of our own with the test users; the workers' env."""
    with demo_environment(USERS, PASSWORD) as env:
        yield env


@pytest.fixture(scope="module")
def demo(demo_env, tmp_path_factory):
    """gunicorn, 4 workers, on our database and our db number of the shared Redis."""
    server = Gunicorn(demo_env, tmp_path_factory.mktemp("gunicorn"), workers=WORKERS)
    try:
        server.start()
        yield Demo(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster_demo(demo_env, tmp_path_factory):
    """gunicorn, 4 workers, with the native store on a 3-master Redis Cluster of its own."""
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        env = {**demo_env, "REDIS_URL": cluster.url(), "DEMO_REDIS_STORE": "cluster"}
        server = Gunicorn(env, tmp_path_factory.mktemp("gunicorn-cluster"), workers=WORKERS)
        try:
            server.start()
            yield Demo(server, cluster.nodes)
        finally:
            server.stop()


#: Every revoke test runs on one Redis (the suite's store) and on a Redis Cluster.
TOPOLOGIES = pytest.mark.parametrize("topology", ["demo", "cluster_demo"])


def mgets(nodes: list[Any]) -> int:
    """MGET calls the cluster's nodes executed so far (how the native store reads entries)."""
    total = 0
    for node in nodes:
        client = node.client()
        total += client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
        client.close()
    return total


def test_warm_workers_on_a_redis_cluster_read_from_their_copies(cluster_demo):
    demo = cluster_demo
    victim, victim_id = token_login(demo, "mp_token")
    warm(demo, [victim], {victim.name: victim_id}, "copies-warm")
    before = mgets(demo.redis_nodes)
    replies = burst(demo.port, [victim], WARM_REQUESTS, "copies")
    after = mgets(demo.redis_nodes)
    assert statuses(replies) == {200: WARM_REQUESTS}
    print(
        f"\ncluster: {WARM_REQUESTS} warm requests on {WORKERS} workers made {after - before} MGETs"
    )
    # A worker re-reads after an activity write invalidated its copy: a few, never one per request.
    assert after - before <= 2 * WORKERS
    tracking = []
    for node in demo.redis_nodes:
        client = node.client()
        tracking += [c for c in client.client_list() if "t" in c["flags"]]
        client.close()
    assert len(tracking) >= WORKERS  # every worker reads through a tracked connection


@pytest.fixture
def demo_on_own_redis(demo_env, tmp_path):
    """gunicorn, 4 workers, on a redis-server of its own that the test may kill."""
    with redis_server(tmp_path) as own_redis:
        server = Gunicorn({**demo_env, "REDIS_URL": own_redis.url()}, tmp_path, workers=WORKERS)
        try:
            server.start()
            yield Demo(server), own_redis
        finally:
            server.stop()


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def token_login(demo: Demo, username: str) -> tuple[Credential, str]:
    reply = call(
        demo.port, "POST", "/api/sessions/login/", body={"username": username, "password": PASSWORD}
    )
    assert reply.status == 200, reply.body
    return Credential(
        f"token:{reply.body['session_id'][:8]}", f"Token {reply.body['token']}"
    ), reply.body["session_id"]


def jwt_login(demo: Demo, username: str) -> tuple[Credential, str, str]:
    reply = call(
        demo.port, "POST", "/api/sessions/token/", body={"username": username, "password": PASSWORD}
    )
    assert reply.status == 200, reply.body
    body = reply.body
    return (
        Credential(f"jwt:{body['session_id'][:8]}", f"Bearer {body['access']}"),
        body["session_id"],
        body["refresh"],
    )


def warm(demo: Demo, credentials: list[Credential], session_ids: dict[str, str], tag: str) -> None:
    """Have every worker serve every credential (from the cache, once it is filled)."""
    replies: list[Reply] = []
    served: set[tuple[int, int]] = set()  # (worker pid, credential index) answered 200
    wanted = WORKERS * len(credentials)
    for round_ in range(5):  # bounded: at most 5 * WARM_REQUESTS requests
        replies += burst(demo.port, credentials, WARM_REQUESTS, f"{tag}{round_}")
        for pid, status, query in demo.server.tagged(f"{tag}{round_}", WARM_REQUESTS):
            index = int(query.split("&i=")[1].split("&")[0])
            if status == 200:
                served.add((pid, index % len(credentials)))
        if len(served) >= wanted:
            break
    wrong = [r for r in replies if r.status != 200 or r.body["session_id"] != session_ids[r.who]]
    assert not wrong, f"warm-up answers that are not the session itself: {wrong[:3]}"
    workers = {pid for pid, _ in served}
    assert len(workers) == WORKERS, f"only {len(workers)} of {WORKERS} workers served the warm-up"
    assert len(served) == wanted, f"some worker never served some credential: {sorted(served)}"


@dataclass
class Outcome:
    flowing: int  # requests sent by the hammer while the session was ended
    flowing_after_end: int  # ... of which sent after the end was acknowledged
    after: int  # requests of the final burst
    stale: int  # 2xx answers to requests sent after the end was acknowledged
    server_errors: int  # 5xx answers or dropped connections, in every phase
    after_statuses: dict[int, int]
    workers_refusing: int


def end_under_load(
    demo: Demo,
    victims: list[Credential],
    session_ids: dict[str, str],
    end: Callable[[], Reply],
    tag: str,
) -> Outcome:
    """Warm ``victims`` on every worker, call ``end`` while they are hammered, then check."""
    warm(demo, victims, session_ids, f"{tag}-warm")
    with Hammer(demo.port, victims, f"{tag}-flow", threads=4, max_requests=3000) as hammer:
        wait_until(lambda: hammer.count() >= 40, 20, what="requests to flow")
        ended = end()
        ended_at = time.monotonic()
        assert ended.status == 204, ended.body
        wait_until(
            lambda: sum(1 for r in list(hammer.replies) if r.sent > ended_at) >= 100,
            20,
            what="requests after the end",
        )
    after = burst(demo.port, victims, AFTER_REQUESTS, f"{tag}-after")
    flowing = list(hammer.replies)
    everything = flowing + after
    stale = [r for r in everything if r.sent > ended_at and 200 <= r.status < 300]
    server_errors = [r for r in everything if r.status >= 500]
    # Before the end was sent, every answer is the session itself.
    before = [r for r in flowing if r.done < ended.sent]
    assert before
    assert all(r.status == 200 and r.body["session_id"] == session_ids[r.who] for r in before)
    by_pid = demo.server.workers_for(f"{tag}-after", AFTER_REQUESTS)
    outcome = Outcome(
        flowing=len(flowing),
        flowing_after_end=sum(1 for r in flowing if r.sent > ended_at),
        after=len(after),
        stale=len(stale),
        server_errors=len(server_errors),
        after_statuses=statuses(after),
        workers_refusing=sum(1 for counts in by_pid.values() if set(counts) <= REFUSED),
    )
    print(f"\n{tag}: {outcome}")
    assert outcome.stale == 0, f"stale successes after the end: {stale[:5]}"
    assert outcome.server_errors == 0, f"server errors: {server_errors[:5]}\n{demo.server.errors()}"
    assert set(outcome.after_statuses) <= REFUSED, outcome.after_statuses
    codes = {r.body.get("code") for r in after if r.status == 401}
    assert codes <= {"session_ended", "token_not_valid"}, codes
    assert len(by_pid) == WORKERS, f"only {len(by_pid)} workers answered after the end"
    assert outcome.workers_refusing == WORKERS, by_pid
    return outcome


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------


@TOPOLOGIES
def test_ended_token_session_is_refused_by_every_worker(topology, request):
    demo = request.getfixturevalue(topology)
    victim, victim_id = token_login(demo, "mp_token")
    other, other_id = token_login(demo, "mp_token")
    ids = {victim.name: victim_id, other.name: other_id}

    def end() -> Reply:  # through whichever worker takes it, from the user's other device
        return call(
            demo.port,
            "DELETE",
            f"/api/sessions/active/?token_id={victim_id}",
            headers={"Authorization": other.header},
        )

    end_under_load(demo, [victim], ids, end, "token")
    # The other device was not touched.
    survivors = burst(demo.port, [other], 40, "token-survivor")
    assert {r.status for r in survivors} == {200}


@TOPOLOGIES
def test_ended_jwt_session_is_refused_by_every_worker(topology, request):
    demo = request.getfixturevalue(topology)
    victim, victim_id, refresh = jwt_login(demo, "mp_jwt")

    def end() -> Reply:
        return call(demo.port, "POST", "/api/sessions/token/logout/", body={"refresh": refresh})

    end_under_load(demo, [victim], {victim.name: victim_id}, end, "jwt")
    # The refresh token of the ended session gets no new access token either.
    reply = call(demo.port, "POST", "/api/sessions/token/refresh/", body={"refresh": refresh})
    assert reply.status == 401, reply.body


@TOPOLOGIES
def test_logout_all_ends_every_device_on_every_worker(topology, request):
    demo = request.getfixturevalue(topology)
    first, first_id = token_login(demo, "mp_all")
    second, second_id = token_login(demo, "mp_all")
    third, third_id, _refresh = jwt_login(demo, "mp_all")
    devices = [first, second, third]
    ids = {first.name: first_id, second.name: second_id, third.name: third_id}

    def end() -> Reply:
        return call(
            demo.port, "POST", "/api/sessions/logout/all/", headers={"Authorization": first.header}
        )

    end_under_load(demo, devices, ids, end, "all")


def test_redis_killed_under_load_across_workers(demo_on_own_redis):
    """Redis dies while 4 workers serve: no 5xx, the DB decides, an end made meanwhile holds."""
    demo, own_redis = demo_on_own_redis
    live, live_id = token_login(demo, "mp_outage")
    victim, victim_id = token_login(demo, "mp_outage")
    ids = {live.name: live_id, victim.name: victim_id}
    warm(demo, [live, victim], ids, "outage-warm")

    with Hammer(demo.port, [live, victim], "outage-up", threads=4, max_requests=4000) as hammer:
        wait_until(lambda: hammer.count() >= 40, 20, what="requests to flow")
        own_redis.kill()
        down_at = time.monotonic()
        hammer.tag = "outage-down"
        wait_until(
            lambda: sum(1 for r in list(hammer.replies) if r.sent > down_at) >= 80,
            30,
            what="requests with Redis down",
        )
        ended = call(
            demo.port,
            "DELETE",
            f"/api/sessions/active/?token_id={victim_id}",
            headers={"Authorization": live.header},
        )
        ended_at = time.monotonic()
        assert ended.status == 204, ended.body
        wait_until(
            lambda: sum(1 for r in list(hammer.replies) if r.sent > ended_at) >= 100,
            30,
            what="requests after the end, Redis down",
        )
        own_redis.start()  # empty (--save "")
        up_at = time.monotonic()
        hammer.tag = "outage-back"
        wait_until(
            lambda: sum(1 for r in list(hammer.replies) if r.sent > up_at) >= 100,
            30,
            what="requests with Redis back",
        )

    replies = list(hammer.replies)
    down = [r for r in replies if down_at < r.sent and r.done < up_at]
    server_errors = [r for r in replies if r.status >= 500]
    stale = [r for r in replies if r.who == victim.name and r.sent > ended_at and r.status != 401]
    wrong_live = [
        r
        for r in replies
        if r.who == live.name and (r.status != 200 or r.body["session_id"] != live_id)
    ]
    down_workers = demo.server.workers_for("outage-down", 1)
    warnings = demo.server.app_log().count("serving sessions from the database")
    print(
        f"\nkilled under 4 workers: {len(replies)} requests, {len(down)} with Redis down "
        f"(workers {len(down_workers)}), {len(server_errors)} 5xx, {len(stale)} stale, "
        f"{warnings} cache warnings logged"
    )
    assert len(down) >= 80
    assert not server_errors, f"{server_errors[:3]}\n{demo.server.errors()}"
    assert not stale, stale[:5]
    assert not wrong_live, wrong_live[:5]
    assert len(down_workers) == WORKERS, down_workers
    # Each worker logs the burst once (ERROR_LOG_INTERVAL), not once per failed request.
    assert 1 <= warnings <= WORKERS, demo.server.app_log()[-3000:]
    # Back on Redis: still right.
    after = burst(demo.port, [live, victim], 40, "outage-after")
    assert {r.status for r in after if r.who == live.name} == {200}
    assert {r.status for r in after if r.who == victim.name} == {401}


IDLE_SECONDS = 3
IDLE_BURST = 12


@pytest.fixture
def idle_demo(demo_env, tmp_path):
    """gunicorn, 4 workers, with ``IDLE_TIMEOUT`` 3 s and activity written at most once a second."""
    # Its six sign-ins come from 127.0.0.1 like every other test's here: no login budget.
    options = {
        "IDLE_TIMEOUT": IDLE_SECONDS,
        "LAST_ONLINE_UPDATE_INTERVAL": 1,
        "LOGIN_THROTTLE_RATE": None,
    }
    server = Gunicorn({**demo_env, "DEMO_NILVA_SESSION": json.dumps(options)}, tmp_path, WORKERS)
    try:
        server.start()
        yield Demo(server)
    finally:
        server.stop()


def _simultaneously(count: int, send: Callable[[], Reply]) -> list[Reply]:
    start = threading.Barrier(count, timeout=20)

    def one(_: int) -> Reply:
        start.wait()
        return send()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_a_burst_on_an_idle_session_is_refused_on_every_path(idle_demo):
    """Sign in, 3 requests, idle past ``IDLE_TIMEOUT``, then 12 at once: 0 answered 200.

    On the opaque token, the JWT access token and ``token/refresh/`` (a 200 there would mint
    an access token for an idle session), across 4 worker processes sharing PostgreSQL + Redis.
    """
    demo = idle_demo
    accepted: dict[str, list[int]] = {}
    for path in ("token", "jwt", "refresh"):
        for _round in range(2):
            if path == "token":
                credential, _session_id = token_login(demo, "mp_idle")
            else:
                credential, _session_id, refresh = jwt_login(demo, "mp_idle")
            warmup = [whoami_reply(demo, credential) for _ in range(3)]
            assert {r.status for r in warmup} == {200}, warmup
            time.sleep(IDLE_SECONDS + 0.7)
            if path == "refresh":
                body = {"refresh": refresh}
                send = lambda body=body: call(  # noqa: E731
                    demo.port, "POST", "/api/sessions/token/refresh/", body=body
                )
            else:
                send = lambda credential=credential: whoami_reply(demo, credential)  # noqa: E731
            replies = _simultaneously(IDLE_BURST, send)
            accepted.setdefault(path, []).append(sum(1 for r in replies if r.status == 200))
            assert not [r for r in replies if r.status >= 500], demo.server.errors()
            assert {r.status for r in replies} <= {401}, statuses(replies)
            codes = {r.body.get("code") for r in replies}
            assert codes <= {"session_idle", "session_ended"}, codes
    print(f"\nidle bursts of {IDLE_BURST} across {WORKERS} workers, 200s per burst: {accepted}")
    assert all(count == 0 for counts in accepted.values() for count in counts), accepted


def whoami_reply(demo: Demo, credential: Credential) -> Reply:
    return call(demo.port, "GET", "/api/whoami/", headers={"Authorization": credential.header})


@pytest.fixture
def proxied_demo(demo_env, tmp_path):
    """gunicorn, 4 workers of 8 threads, behind one trusted proxy (X-Forwarded-For names the
    client): 32 requests in parallel."""
    options = {"TRUSTED_PROXY_COUNT": 1, "LOGIN_THROTTLE_RATE": "10/min"}
    env = {**demo_env, "DEMO_NILVA_SESSION": json.dumps(options)}
    server = Gunicorn(env, tmp_path, WORKERS, threads=8)
    try:
        server.start()
        yield Demo(server)
    finally:
        server.stop()


def test_the_login_budget_holds_across_workers(proxied_demo):
    """40 simultaneous wrong logins for one username from 40 IPs, budget 10 per username.

    Exactly 10 reach the password check (400); the other 30 get 429, on ``login/`` and on
    ``token/``, whichever of the 4 worker processes answers.
    """
    demo = proxied_demo
    counts: dict[str, dict[int, int]] = {}
    for url in ("/api/sessions/login/", "/api/sessions/token/"):
        username = f"budget-{uuid.uuid4().hex[:8]}"
        left = 60 - time.time() % 60
        if left < 8:  # the fixed window must not end during the burst (bounded wait)
            time.sleep(left + 0.1)

        def wrong_login(i: int, username: str = username, url: str = url) -> Reply:
            headers = {"X-Forwarded-For": f"198.51.100.{i + 1}"}
            body = {"username": username, "password": "wrong"}
            return call(demo.port, "POST", url, headers=headers, body=body)

        start = threading.Barrier(40, timeout=20)

        def at_once(i: int, start: threading.Barrier = start) -> Reply:
            start.wait()
            return wrong_login(i)

        with ThreadPoolExecutor(40) as pool:
            replies = list(pool.map(at_once, range(40)))
        counts[url] = statuses(replies)
    print(f"\n40 simultaneous wrong logins, budget 10, {WORKERS} workers x 8 threads: {counts}")
    assert counts["/api/sessions/login/"] == {400: 10, 429: 30}, counts
    assert counts["/api/sessions/token/"] == {401: 10, 429: 30}, counts


# --------------------------------------------------------------------------------------------
# stolen-token defence across workers: refresh reuse, token rotation
# --------------------------------------------------------------------------------------------

REUSE_GRACE_SECONDS = 1
REFRESH_PATH = "/api/sessions/token/refresh/"


@pytest.fixture
def rotating_demo(demo_env, tmp_path):
    """gunicorn, 4 workers, with simplejwt's rotation on and a 1 s reuse grace.

    The retired credentials these tests send hundreds of times would otherwise trip the
    unknown-token throttle of 127.0.0.1, which every test here shares.
    """
    options = {
        "REFRESH_REUSE_GRACE": REUSE_GRACE_SECONDS,
        "LOGIN_THROTTLE_RATE": None,
        "INVALID_TOKEN_THROTTLE_RATE": None,
    }
    env = {
        **demo_env,
        "DEMO_SIMPLE_JWT": json.dumps({"ROTATE_REFRESH_TOKENS": True}),
        "DEMO_NILVA_SESSION": json.dumps(options),
    }
    server = Gunicorn(env, tmp_path, WORKERS)
    try:
        server.start()
        yield Demo(server)
    finally:
        server.stop()


def refresh_reply(demo: Demo, refresh: str, tag: str = "r", index: int = 0) -> Reply:
    return call(demo.port, "POST", f"{REFRESH_PATH}?t={tag}&i={index}", body={"refresh": refresh})


def test_tabs_refreshing_at_once_on_different_workers_all_succeed(rotating_demo):
    """12 refreshes with one token at once, spread over the workers: all 200, one rotation."""
    demo = rotating_demo
    _credential, _session_id, refresh = jwt_login(demo, "mp_rotate")
    counter = iter(range(100))
    replies = _simultaneously(12, lambda: refresh_reply(demo, refresh, "tabs", next(counter)))
    # Each answer with its code and seconds since the first was sent: a 401 past the 1 s grace
    # means the workers were too loaded to answer 12 refreshes within it.
    start = min(r.sent for r in replies)
    answers = [
        (r.status, getattr(r.body, "get", str)("code"), round(r.done - start, 2)) for r in replies
    ]
    assert [r.status for r in replies] == [200] * 12, answers
    workers = {pid for pid, _status, _query in demo.server.tagged("tabs", 12)}
    generations = {
        json.loads(_b64(r.body["refresh"].split(".")[1]))["refresh_gen"] for r in replies
    }
    print(f"\n12 simultaneous refreshes over {len(workers)} workers: generations {generations}")
    assert generations == {1}
    assert len(workers) > 1, "the refreshes did not spread over the workers"


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_a_replayed_refresh_token_ends_the_session_on_every_worker(rotating_demo):
    """The client rotates; past the grace a thief replays the old token: the session ends, and
    its access token and rotated refresh token are refused by every worker."""
    demo = rotating_demo
    access, session_id, stolen = jwt_login(demo, "mp_stolen")
    warm(demo, [access], {access.name: session_id}, "stolen-warm")
    rotated = refresh_reply(demo, stolen)
    assert rotated.status == 200, rotated.body
    time.sleep(REUSE_GRACE_SECONDS + 0.3)

    replay = refresh_reply(demo, stolen)

    assert (replay.status, replay.body.get("code")) == (401, "refresh_reused"), replay.body
    after = burst(demo.port, [access], WARM_REQUESTS, "stolen-after")
    by_worker = demo.server.workers_for("stolen-after", WARM_REQUESTS)
    assert {r.status for r in after} == {401}, statuses(after)
    assert {r.body.get("code") for r in after} == {"session_ended"}
    assert len(by_worker) == WORKERS, by_worker
    legit = refresh_reply(demo, rotated.body["refresh"])
    assert (legit.status, legit.body.get("code")) == (401, "session_ended")


def test_a_rotated_opaque_token_is_refused_by_every_worker(rotating_demo):
    """Warm a token on all 4 workers, rotate it through one: the old token is refused by every
    worker from the next request on, the new one served by every worker."""
    demo = rotating_demo
    credential, session_id = token_login(demo, "mp_rotate")
    warm(demo, [credential], {credential.name: session_id}, "rotate-warm")

    reply = call(
        demo.port, "POST", "/api/sessions/rotate/", headers={"Authorization": credential.header}
    )

    assert reply.status == 200, reply.body
    old = burst(demo.port, [credential], WARM_REQUESTS, "rotate-old")
    assert {r.status for r in old} == {401}, statuses(old)
    assert {r.body.get("code") for r in old} == {"invalid_token"}
    assert len(demo.server.workers_for("rotate-old", WARM_REQUESTS)) == WORKERS
    new = Credential("rotated", f"Token {reply.body['token']}")
    warm(demo, [new], {new.name: session_id}, "rotate-new")
