"""The session core: opening sessions, the checks on every request, activity, and revoking.

Each check is shown on the cold path (nothing cached) and on the warm path (a first request has
cached the session, then something changes).
"""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from nilva_session import cache, codec, sessions
from nilva_session.backends import UserSessionDBTokenAuthentication
from nilva_session.models import EndReason, UserSession
from nilva_session.signals import session_created, session_revoked
from nilva_session.utils import hash_data, is_well_formed_token, token_generator

from .conftest import DESKTOP_UA, FakeRequest
from .support.doubles import nilva_settings

# What a test's own transaction adds around a revoke's ``atomic()``; in autocommit (production)
# that block is BEGIN … COMMIT, which no query log shows.
SAVEPOINTS = ("SAVEPOINT", "RELEASE", "ROLLBACK")


def statements(queries) -> list[str]:
    """The first word of each SQL statement run, savepoints left out."""
    verbs = [q["sql"].split(" ", 1)[0] for q in queries]
    return [verb for verb in verbs if verb not in SAVEPOINTS]


WHOAMI_URL = "/api/whoami/"


def refusal(response) -> str:
    """Return the ``code`` of a 401 answer (and check it is one)."""
    assert response.status_code == 401, response.content
    return response.json()["code"]


def warm(client, session) -> None:
    """Make one request so the session is cached."""
    assert client.get(WHOAMI_URL).status_code == 200
    assert codec.unpack(cache.get_store().get(cache.token_key(session.key))) is not None


# --------------------------------------------------------------------------------------------
# open_session / create_user_session_from_request
# --------------------------------------------------------------------------------------------


def test_open_session_returns_the_session_and_its_raw_token(user):
    session, token = sessions.open_session(user, FakeRequest())
    assert isinstance(session, UserSession)
    assert session.user == user
    assert session.is_active
    assert UserSession.objects.get(pk=session.pk).key == hash_data(token)


def test_create_user_session_from_request_returns_session_and_token(user):
    session, token = UserSessionDBTokenAuthentication.create_user_session_from_request(
        user, FakeRequest(ip="198.51.100.2")
    )
    row = UserSession.objects.get(pk=session.pk)
    assert row.key == hash_data(token)
    assert row.last_ip == "198.51.100.2"
    assert row.user_agent == DESKTOP_UA


def test_the_raw_token_is_in_no_column(user):
    session, token = sessions.open_session(user, FakeRequest())
    row = UserSession.objects.filter(pk=session.pk).values().get()
    for column, value in row.items():
        assert token not in str(value), column
    assert len(row["key"]) == 64


def test_tokens_have_the_prefix_and_a_valid_checksum(user):
    _session, token = sessions.open_session(user)
    assert token.startswith("nvs_")
    assert is_well_formed_token(token)


def test_two_sessions_get_different_tokens_and_keys(user):
    first, first_token = sessions.open_session(user)
    second, second_token = sessions.open_session(user)
    assert first_token != second_token
    assert first.key != second.key
    assert first.pk != second.pk


def test_default_expiry_is_expire_at_setting_one_day(user, clock):
    session, _token = sessions.open_session(user, expire_at=None)
    assert session.expire_at == clock.now() + timedelta(days=1)


@nilva_settings(EXPIRE_AT=timedelta(hours=2))
def test_default_expiry_follows_the_setting(user, clock):
    session, _token = UserSessionDBTokenAuthentication.create_user_session_from_request(
        user, FakeRequest(), expire_at=None
    )
    assert session.expire_at == clock.now() + timedelta(hours=2)


def test_explicit_expiry_is_kept(user, clock):
    when = clock.now() + timedelta(minutes=10)
    session, _token = sessions.open_session(user, expire_at=when)
    assert UserSession.objects.get(pk=session.pk).expire_at == when


@nilva_settings(EXPIRE_AT=None)
def test_expire_at_none_setting_gives_sessions_without_expiry(user, api_client, clock):
    session, token = sessions.open_session(user, FakeRequest(), expire_at=None)
    assert UserSession.objects.get(pk=session.pk).expire_at is None
    clock.advance(days=400)
    assert api_client.get(WHOAMI_URL, HTTP_AUTHORIZATION=f"Token {token}").status_code == 200


def test_open_session_without_a_request_stores_no_client(user):
    session, _token = sessions.open_session(user, None)
    assert session.last_ip is None
    assert session.user_agent == ""


def test_open_session_sends_session_created(user, capture_signal):
    received = capture_signal(session_created)
    request = FakeRequest()
    session, _token = sessions.open_session(user, request)
    assert len(received) == 1
    assert received[0]["session"] == session
    assert received[0]["request"] is request


# --------------------------------------------------------------------------------------------
# check 1: the session exists
# --------------------------------------------------------------------------------------------


def test_cold_unknown_token_is_refused(db, api_client):
    response = api_client.get(WHOAMI_URL, HTTP_AUTHORIZATION=f"Token {token_generator()}")
    assert refusal(response) == "invalid_token"


def test_warm_session_deleted_with_queryset_delete_is_refused(token_client):
    client, session, _token = token_client
    warm(client, session)
    UserSession.objects.filter(pk=session.pk).delete()
    assert refusal(client.get(WHOAMI_URL)) == "invalid_token"


def test_warm_session_deleted_as_an_instance_is_refused(token_client):
    client, session, _token = token_client
    warm(client, session)
    UserSession.objects.get(pk=session.pk).delete()
    assert refusal(client.get(WHOAMI_URL)) == "invalid_token"


def test_warm_session_of_a_deleted_user_is_refused(user, token_client):
    client, session, _token = token_client
    warm(client, session)
    user.delete()
    assert refusal(client.get(WHOAMI_URL)) == "invalid_token"


# --------------------------------------------------------------------------------------------
# check 2: the session is active
# --------------------------------------------------------------------------------------------


def test_cold_revoked_session_is_refused(token_client):
    client, session, _token = token_client
    UserSession.objects.filter(pk=session.pk).revoke()
    cache.get_store().clear()  # no tombstone, no entry: only the database can say no
    assert refusal(client.get(WHOAMI_URL)) == "session_ended"


def test_warm_session_revoked_with_queryset_revoke_is_refused_on_the_next_request(token_client):
    client, session, _token = token_client
    warm(client, session)
    assert UserSession.objects.filter(pk=session.pk).revoke() == 1
    assert refusal(client.get(WHOAMI_URL)) == "session_ended"


def test_warm_session_revoked_with_the_instance_method_is_refused(token_client):
    client, session, _token = token_client
    warm(client, session)
    assert session.revoke() is True
    assert refusal(client.get(WHOAMI_URL)) == "session_ended"


def test_warm_session_ended_by_raw_update_is_refused_within_the_cache_ttl(clock, token_client):
    """``update(is_active=False)`` bypasses ``revoke``: the cached copy answers until its TTL ends.

    Code should call ``revoke()``; this pins down the bound when it does not: the entry is never
    extended by use, so the database wins ``SESSION_CACHE_TTL`` (15 min) after the fill.
    """
    client, session, _token = token_client
    warm(client, session)
    UserSession.objects.filter(pk=session.pk).update(is_active=False)
    clock.advance(minutes=14)
    assert client.get(WHOAMI_URL).status_code == 200
    clock.advance(minutes=1, seconds=1)
    assert refusal(client.get(WHOAMI_URL)) == "session_ended"


# --------------------------------------------------------------------------------------------
# check 3: the session has not expired
# --------------------------------------------------------------------------------------------


def test_cold_expired_session_is_refused(clock, token_client):
    client, session, _token = token_client
    UserSession.objects.filter(pk=session.pk).update(expire_at=clock.now() - timedelta(seconds=1))
    assert refusal(client.get(WHOAMI_URL)) == "session_expired"


def test_cold_session_is_refused_from_the_instant_it_expires(clock, token_client):
    client, session, _token = token_client
    UserSession.objects.filter(pk=session.pk).update(expire_at=clock.now())
    assert refusal(client.get(WHOAMI_URL)) == "session_expired"


def test_warm_session_is_refused_once_time_passes_its_expiry(
    user, open_session, api_client, clock, django_assert_num_queries
):
    session, token = open_session(user, expire_at=clock.now() + timedelta(minutes=10))
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    warm(api_client, session)
    clock.advance(minutes=10, cache=False)  # the entry is still in the cache
    with django_assert_num_queries(0):  # decided from the cached copy's expire_at
        response = api_client.get(WHOAMI_URL)
    assert refusal(response) == "session_expired"


def test_warm_entry_keeps_the_expiry_it_was_cached_with_until_barred(clock, token_client):
    """``update(expire_at=...)`` is not seen by a cached copy; ``invalidate_cache`` makes it so."""
    client, session, _token = token_client
    warm(client, session)
    UserSession.objects.filter(pk=session.pk).update(expire_at=clock.now() - timedelta(seconds=1))
    assert client.get(WHOAMI_URL).status_code == 200
    UserSession.invalidate_cache(session.key)
    assert refusal(client.get(WHOAMI_URL)) == "session_expired"


# --------------------------------------------------------------------------------------------
# check 4: the user is active
# --------------------------------------------------------------------------------------------


def test_cold_session_of_an_inactive_user_is_refused(user, token_client):
    client, _session, _token = token_client
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)  # no signal
    assert refusal(client.get(WHOAMI_URL)) == "user_inactive"


def test_warm_session_of_a_deactivated_user_is_refused(user, token_client, open_session):
    client, session, _token = token_client
    other, _other_token = open_session(user, ua=DESKTOP_UA)
    warm(client, session)
    user.is_active = False
    user.save()
    assert refusal(client.get(WHOAMI_URL)) == "session_ended"
    ended = UserSession.objects.filter(pk__in=[session.pk, other.pk])
    assert set(ended.values_list("is_active", "end_reason")) == {
        (False, EndReason.USER_DEACTIVATED)
    }


def test_warm_session_of_a_user_deactivated_by_queryset_update_needs_invalidate_user(
    user, token_client
):
    """``QuerySet.update()`` sends no signal: the cached user answers until ``invalidate_user``."""
    client, session, _token = token_client
    warm(client, session)
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    assert client.get(WHOAMI_URL).status_code == 200
    sessions.invalidate_user(user)
    assert refusal(client.get(WHOAMI_URL)) == "user_inactive"


def test_warm_session_sees_a_saved_user_change_on_the_next_request(user, token_client):
    client, session, _token = token_client
    warm(client, session)
    user.username = "alice.renamed"
    user.save()
    assert client.get(WHOAMI_URL).json()["user"] == "alice.renamed"


def test_saving_only_last_login_keeps_the_session_cached(
    clock, user, token_client, django_assert_num_queries
):
    client, session, _token = token_client
    warm(client, session)
    user.last_login = clock.now()
    user.save(update_fields=["last_login"])
    with django_assert_num_queries(0):
        assert client.get(WHOAMI_URL).status_code == 200


# --------------------------------------------------------------------------------------------
# activity: last_ip and last_online
# --------------------------------------------------------------------------------------------


def _activity_updates(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].startswith('UPDATE "user_session"')]


def test_ip_change_updates_last_ip(clock, token_client):
    client, session, _token = token_client
    warm(client, session)
    assert client.get(WHOAMI_URL, REMOTE_ADDR="198.51.100.23").status_code == 200
    row = UserSession.objects.get(pk=session.pk)
    assert row.last_ip == "198.51.100.23"
    assert row.last_online == clock.now()


def test_activity_write_is_one_update_by_id_and_is_active(token_client):
    client, session, _token = token_client
    warm(client, session)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(WHOAMI_URL, REMOTE_ADDR="198.51.100.23").status_code == 200
    assert len(queries) == 1
    sql = queries[0]["sql"]
    assert sql.startswith('UPDATE "user_session" SET "last_online" = ')
    assert '"last_ip" = ' in sql
    where = sql.split(" WHERE ", 1)[1]
    assert f'"user_session"."id" = \'{session.pk.hex}\'' in where
    assert '"user_session"."is_active"' in where


def test_same_ip_again_writes_nothing(token_client, django_assert_num_queries):
    client, session, _token = token_client
    warm(client, session)
    client.get(WHOAMI_URL, REMOTE_ADDR="198.51.100.23")
    with django_assert_num_queries(0):
        assert client.get(WHOAMI_URL, REMOTE_ADDR="198.51.100.23").status_code == 200


def test_switching_back_to_the_first_ip_is_recorded(token_client):
    client, session, _token = token_client
    warm(client, session)
    client.get(WHOAMI_URL, REMOTE_ADDR="198.51.100.23")
    client.get(WHOAMI_URL)  # the api client's own 203.0.113.7
    assert UserSession.objects.get(pk=session.pk).last_ip == "203.0.113.7"


def test_last_online_is_written_at_most_once_per_interval(clock, token_client):
    client, session, _token = token_client
    writes = []
    for _ in range(60):  # one request every 5 s for 5 minutes
        with CaptureQueriesContext(connection) as queries:
            assert client.get(WHOAMI_URL).status_code == 200
        if _activity_updates(queries):
            writes.append(clock.now())
        clock.advance(seconds=5)
    assert 4 <= len(writes) <= 5
    gaps = [later - earlier for earlier, later in itertools.pairwise(writes)]
    assert all(gap >= timedelta(seconds=60) for gap in gaps), gaps
    assert UserSession.objects.get(pk=session.pk).last_online == writes[-1]


def test_last_online_is_written_once_the_interval_has_passed(clock, token_client):
    client, session, _token = token_client
    warm(client, session)
    clock.advance(seconds=59)
    client.get(WHOAMI_URL)
    assert UserSession.objects.get(pk=session.pk).last_online == session.last_online
    clock.advance(seconds=2)
    client.get(WHOAMI_URL)
    assert UserSession.objects.get(pk=session.pk).last_online == clock.now()


@nilva_settings(LAST_ONLINE_UPDATE_INTERVAL=300)
def test_last_online_interval_follows_the_setting(clock, token_client):
    client, session, _token = token_client
    warm(client, session)
    clock.advance(seconds=299)
    client.get(WHOAMI_URL)
    assert UserSession.objects.get(pk=session.pk).last_online == session.last_online
    clock.advance(seconds=2)
    client.get(WHOAMI_URL)
    assert UserSession.objects.get(pk=session.pk).last_online == clock.now()


def test_cold_request_with_a_stale_last_online_writes_it(clock, token_client):
    client, session, _token = token_client
    clock.advance(minutes=5)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(WHOAMI_URL).status_code == 200
    assert len(_activity_updates(queries)) == 1
    assert UserSession.objects.get(pk=session.pk).last_online == clock.now()


def test_activity_update_never_revives_an_ended_session(user, open_session):
    session, token = open_session(user)

    def revoke_during_the_request(live_session, request):
        # Runs after the checks and before the activity write, like a concurrent revoke.
        UserSession.objects.filter(pk=live_session.pk).revoke()

    sessions.authenticate_token(
        token, sessions.Client.of(FakeRequest(ip="198.51.100.99")), revoke_during_the_request
    )
    row = UserSession.objects.get(pk=session.pk)
    assert row.is_active is False
    assert row.end_reason == EndReason.REVOKED
    assert row.last_ip == "203.0.113.7"  # the guarded UPDATE matched no row


# --------------------------------------------------------------------------------------------
# request.auth and current_session
# --------------------------------------------------------------------------------------------


def test_current_session_returns_the_authenticating_session(token_client):
    client, session, _token = token_client
    assert client.get(WHOAMI_URL).json() == {"user": "alice", "session_id": str(session.pk)}
    assert client.get(WHOAMI_URL).json()["session_id"] == str(session.pk)  # warm too


def test_current_session_of_a_plain_request_is_none():
    assert sessions.current_session(FakeRequest()) is None


# --------------------------------------------------------------------------------------------
# revoke
# --------------------------------------------------------------------------------------------


def test_revoke_queryset_is_one_select_one_update_and_one_event_insert(user, open_session):
    for _ in range(3):
        open_session(user)
    with CaptureQueriesContext(connection) as queries:
        assert sessions.revoke(UserSession.objects.for_user(user)) == 3
    assert statements(queries) == ["SELECT", "UPDATE", "INSERT"]
    run = [q["sql"] for q in queries if not q["sql"].startswith(SAVEPOINTS)]
    assert '"user_session_event"' in run[2]
    assert '"is_active"' in run[1].split(" WHERE ", 1)[1]


def test_revoke_ends_the_sessions_with_reason_and_time(user, open_session, clock):
    session, _token = open_session(user)
    sessions.revoke(UserSession.objects.filter(pk=session.pk), EndReason.ADMIN)
    row = UserSession.objects.get(pk=session.pk)
    assert row.is_active is False
    assert row.ended_at == clock.now()
    assert row.end_reason == EndReason.ADMIN
    assert row.detail == str(EndReason.ADMIN.label)


def test_revoke_sends_session_revoked_with_ids_user_ids_and_reason(
    user, other_user, open_session, capture_signal
):
    received = capture_signal(session_revoked)
    mine, _ = open_session(user)
    theirs, _ = open_session(other_user)
    sessions.revoke(UserSession.objects.all(), EndReason.LOGOUT_ALL)
    assert len(received) == 1
    sent = received[0]
    assert sent["sender"] is UserSession
    assert sent["reason"] == EndReason.LOGOUT_ALL
    assert dict(zip(sent["session_ids"], sent["user_ids"], strict=True)) == {
        mine.pk: user.pk,
        theirs.pk: other_user.pk,
    }


def test_second_revoke_returns_zero_and_sends_nothing(user, open_session, capture_signal):
    session, _token = open_session(user)
    queryset = UserSession.objects.filter(pk=session.pk)
    assert sessions.revoke(queryset) == 1
    received = capture_signal(session_revoked)
    with CaptureQueriesContext(connection) as queries:
        assert sessions.revoke(queryset) == 0
    assert received == []
    assert statements(queries) == ["SELECT"]


def test_revoke_keeps_the_first_end_reason(user, open_session):
    session, _token = open_session(user)
    sessions.revoke(UserSession.objects.filter(pk=session.pk), EndReason.LOGOUT)
    sessions.revoke(UserSession.objects.filter(pk=session.pk), EndReason.ADMIN)
    assert UserSession.objects.get(pk=session.pk).end_reason == EndReason.LOGOUT


def test_revoke_touches_only_the_given_sessions(user, other_user, open_session):
    mine, _ = open_session(user)
    theirs, _ = open_session(other_user)
    assert sessions.revoke(UserSession.objects.for_user(user)) == 1
    assert UserSession.objects.get(pk=theirs.pk).is_active is True
    assert UserSession.objects.get(pk=mine.pk).is_active is False


def test_revoke_accepts_instances(user, open_session):
    first, _ = open_session(user)
    second, _ = open_session(user)
    kept, _ = open_session(user)
    assert sessions.revoke([first, second]) == 2
    assert list(UserSession.objects.filter(is_active=True)) == [kept]


def test_revoke_writes_tombstones_under_both_keys(user, token_client):
    client, session, _token = token_client
    warm(client, session)
    sessions.revoke(UserSession.objects.filter(pk=session.pk))
    backend = cache.get_store()
    assert backend.get(cache.token_key(session.key)) == cache.TOMBSTONE
    assert backend.get(cache.session_key(session.pk)) == cache.TOMBSTONE


def test_revoke_updates_in_batches(user, open_session, monkeypatch):
    monkeypatch.setattr(sessions, "REVOKE_BATCH_SIZE", 2)
    for _ in range(5):
        open_session(user)
    with CaptureQueriesContext(connection) as queries:
        assert sessions.revoke(UserSession.objects.for_user(user)) == 5
    assert statements(queries) == ["SELECT"] + ["UPDATE"] * 3 + ["INSERT"]
    assert not UserSession.objects.filter(is_active=True).exists()


def test_revoke_of_nothing_makes_one_query_and_no_cache_write(db, cache_spy):
    with CaptureQueriesContext(connection) as queries:
        assert sessions.revoke(UserSession.objects.none()) == 0
    assert len(statements(queries)) <= 1
    assert cache_spy.writes == []


# --------------------------------------------------------------------------------------------
# the policy: when a session is live (lapse for one session, lapsed_q / live for rows)
# --------------------------------------------------------------------------------------------

NOW = timezone.now().replace(microsecond=500_000)
TICK = timedelta(microseconds=1)
HOUR, IDLE = timedelta(hours=1), timedelta(minutes=10)

LIVENESS_TABLE = [
    # (case, row values, settings, refusal of check_session, verdict of the time rule alone)
    ("fresh", {}, {}, None, None),
    ("ended", {"is_active": False}, {}, "session_ended", None),
    ("no expiry", {"expire_at": None}, {}, None, None),
    ("expires in a tick", {"expire_at": NOW + TICK}, {}, None, None),
    ("expires now", {"expire_at": NOW}, {}, "session_expired", "session_expired"),
    ("expired", {"expire_at": NOW - HOUR}, {}, "session_expired", "session_expired"),
    (
        "ended and expired",
        {"is_active": False, "expire_at": NOW - HOUR},
        {},
        "session_ended",
        "session_expired",
    ),
    (
        "cap: a tick left",
        {"created_at": NOW - HOUR + TICK},
        {"ABSOLUTE_LIFETIME": HOUR},
        None,
        None,
    ),
    (
        "cap: reached",
        {"created_at": NOW - HOUR},
        {"ABSOLUTE_LIFETIME": HOUR},
        "session_expired",
        "session_expired",
    ),
    ("cap off", {"created_at": NOW - 100 * HOUR}, {}, None, None),
    ("idle: exactly", {"last_online": NOW - IDLE}, {"IDLE_TIMEOUT": IDLE}, None, None),
    (
        "idle: a tick past",
        {"last_online": NOW - IDLE - TICK},
        {"IDLE_TIMEOUT": IDLE},
        "session_idle",
        "session_idle",
    ),
    ("idle off", {"last_online": NOW - 100 * HOUR}, {}, None, None),
    (
        "expired wins over idle",
        {"expire_at": NOW - TICK, "last_online": NOW - HOUR},
        {"IDLE_TIMEOUT": IDLE},
        "session_expired",
        "session_expired",
    ),
]


def _row_as(user, values):
    session, _token = sessions.open_session(user, FakeRequest())
    row = {"expire_at": NOW + HOUR, "created_at": NOW - IDLE, "last_online": NOW, **values}
    UserSession.objects.filter(pk=session.pk).update(**row)
    return UserSession.objects.select_related("user").get(pk=session.pk)


@pytest.mark.parametrize(
    ("values", "options", "code", "time_rule"),
    [case[1:] for case in LIVENESS_TABLE],
    ids=[case[0] for case in LIVENESS_TABLE],
)
def test_one_rule_decides_liveness_for_a_session_and_for_rows(
    user, values, options, code, time_rule
):
    """``check_session`` (one session) and ``live`` (rows: listing, cap, admin, cleanup) agree."""
    with nilva_settings(**options):
        session = _row_as(user, values)
        rows = UserSession.objects.filter(pk=session.pk)
        listed = sessions.live(rows, NOW).exists()
        assert listed is (code is None)
        assert rows.active(NOW).exists() is listed
        assert rows.filter(sessions.lapsed_q(NOW)).exists() is (time_rule is not None)
        found = sessions.lapse(session, NOW)
        assert (found.default_code if found else None) == time_rule
        if code is None:
            sessions.check_session(session, session.user, NOW)
        else:
            with pytest.raises(sessions.SessionRefused) as refused:
                sessions.check_session(session, session.user, NOW)
            assert refused.value.code == code


# --------------------------------------------------------------------------------------------
# the core's input: a Client value and an explicit activity flag
# --------------------------------------------------------------------------------------------


def test_the_core_takes_a_client_it_cannot_be_left_out(user):
    _session, token = sessions.open_session(user, FakeRequest())
    with pytest.raises(TypeError):
        sessions.authenticate_token(token)  # type: ignore[call-arg]


def test_client_of_a_drf_request_reads_ip_and_user_agent_and_attaches_the_session(user):
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    session, token = sessions.open_session(user, FakeRequest())
    request = Request(
        APIRequestFactory().get("/", HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")
    )
    client = sessions.Client.of(request)
    assert (client.ip, client.user_agent, client.known) == ("203.0.113.7", DESKTOP_UA, True)
    _user, found = sessions.authenticate_token(token, client)
    assert found.pk == session.pk
    assert sessions.current_session(request._request).pk == session.pk


def test_an_unknown_client_without_activity_writes_nothing(user, django_assert_num_queries):
    session, token = sessions.open_session(user, FakeRequest(ip="198.51.100.7"))
    UserSession.objects.filter(pk=session.pk).update(
        last_online=timezone.now() - timedelta(hours=1)
    )
    before = UserSession.objects.values_list("last_online", "last_ip", "is_active").get(
        pk=session.pk
    )
    with django_assert_num_queries(1):  # the lookup; no activity UPDATE
        sessions.authenticate_token(token, sessions.UNKNOWN, record_activity=False)
    after = UserSession.objects.values_list("last_online", "last_ip", "is_active").get(
        pk=session.pk
    )
    assert after == before


def test_without_activity_idleness_is_read_from_the_database_even_when_cached(user):
    session, token = sessions.open_session(user, FakeRequest())
    sessions.authenticate_token(token, sessions.Client.of(FakeRequest()))  # cached now
    UserSession.objects.filter(pk=session.pk).update(
        last_online=timezone.now() - timedelta(hours=1)
    )
    with nilva_settings(IDLE_TIMEOUT=600), pytest.raises(sessions.SessionRefused) as refused:
        sessions.authenticate_token(token, sessions.UNKNOWN, record_activity=False)
    assert refused.value.code == "session_idle"
