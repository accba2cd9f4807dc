"""Security events end to end: what each path records, logs and signals, and the schema."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from nilva_session import events, sessions
from nilva_session.events import FIELDS, MAX_TEXT, SCHEMA_VERSION, as_dict
from nilva_session.models import EndReason, EventKind, SessionEvent, UserSession
from nilva_session.signals import security_event
from nilva_session.utils import hash_data

from .conftest import DESKTOP_UA, FIREFOX_UA, PASSWORD
from .support.doubles import nilva_settings

pytestmark = pytest.mark.django_db

LOGIN_URL = "/api/sessions/login/"
TOKEN_URL = "/api/sessions/token/"
LOGOUT_URL = "/api/sessions/logout/"
LOGOUT_ALL_URL = "/api/sessions/logout/all/"
ACTIVE_URL = "/api/sessions/active/"
ROTATE_URL = "/api/sessions/rotate/"
WHOAMI_URL = "/api/whoami/"

IP = "203.0.113.7"
# Distinctive, so that finding them anywhere cannot be a coincidence.
ODD_USERNAME = "zx-carol-q7k9v"
UNKNOWN_USERNAME = "nobody-w4j8r2"
WRONG_PASSWORD = "Wr0ng-pa55-t6y3u"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def logs(caplog):
    """Every log record (every logger, DEBUG and up) while the test runs."""
    caplog.set_level(logging.DEBUG)
    return caplog


def event_logs(caplog) -> list[dict]:
    """The messages of the ``nilva_session.events`` records, parsed as JSON."""
    return [
        json.loads(record.getMessage())
        for record in caplog.records
        if record.name == "nilva_session.events"
    ]


def log_text(caplog) -> str:
    """Everything the records say: messages, arguments and every attribute."""
    parts = []
    for record in caplog.records:
        parts += [record.getMessage(), repr(record.args), repr(record.msg)]
        parts += [repr(value) for value in vars(record).values()]
    return "\n".join(parts)


def events_text() -> str:
    """Every field of every stored event, as exported."""
    return "\n".join(json.dumps(as_dict(e)) for e in SessionEvent.objects.all())


def assert_nowhere(secrets, caplog, received=()) -> None:
    """None of ``secrets`` is in a log record, a stored event or a signalled event."""
    texts = {
        "logs": log_text(caplog),
        "events": events_text(),
        "signal": "\n".join(
            json.dumps(as_dict(kwargs["event"]), default=str) + repr(kwargs) for kwargs in received
        ),
    }
    for secret in secrets:
        for where, text in texts.items():
            assert secret not in text, f"{secret!r} found in {where}"


def of_kind(kind) -> list[SessionEvent]:
    return list(SessionEvent.objects.filter(kind=kind).order_by("id"))


def client(ua: str = DESKTOP_UA, ip: str = IP, token: str | None = None) -> APIClient:
    api = APIClient(HTTP_USER_AGENT=ua, REMOTE_ADDR=ip)
    if token is not None:
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return api


def event_inserts(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries
        if q["sql"].startswith("INSERT") and '"user_session_event"' in q["sql"]
    ]


# --------------------------------------------------------------------------------------------
# login
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [LOGIN_URL, TOKEN_URL])
def test_login_over_http_records_one_login_event_and_logs_it(user, logs, url):
    response = client().post(url, {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    body = response.json()

    (event,) = SessionEvent.objects.all()
    assert event.kind == EventKind.LOGIN
    assert event.user_id == user.pk
    assert str(event.session_id) == body["session_id"]
    assert event.ip == IP
    assert event.user_agent == DESKTOP_UA
    assert event.reason == ""
    assert event.data == {}

    assert event_logs(logs) == [as_dict(event)]

    credentials = [body[name] for name in ("token", "access", "refresh") if name in body]
    session = UserSession.objects.get(pk=event.session_id)
    assert_nowhere([*credentials, session.key, hash_data(credentials[0]), PASSWORD], logs)


def test_login_event_log_record_carries_the_event(user, logs):
    client().post(LOGIN_URL, {"username": "alice", "password": PASSWORD}, format="json")
    (record,) = [r for r in logs.records if r.name == "nilva_session.events"]
    assert record.levelno == logging.INFO
    assert record.event.pk == SessionEvent.objects.get().pk


# --------------------------------------------------------------------------------------------
# failed logins
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [LOGIN_URL, TOKEN_URL])
@pytest.mark.parametrize("known", [True, False], ids=["known-user", "unknown-user"])
def test_a_failed_login_records_login_failed_naming_only_an_existing_user(
    user, logs, capture_signal, url, known
):
    carol = get_user_model().objects.create_user(ODD_USERNAME, "c@example.com", PASSWORD)
    username = ODD_USERNAME if known else UNKNOWN_USERNAME
    received = capture_signal(security_event)
    response = client().post(url, {"username": username, "password": WRONG_PASSWORD}, format="json")
    assert response.status_code in (400, 401)

    (event,) = SessionEvent.objects.all()
    assert event.kind == EventKind.LOGIN_FAILED
    assert event.user_id == (carol.pk if known else None)
    assert event.session_id is None
    assert (event.ip, event.user_agent) == (IP, DESKTOP_UA)
    assert event_logs(logs) == [as_dict(event)]
    assert [kwargs["event"].kind for kwargs in received] == [EventKind.LOGIN_FAILED]
    assert_nowhere([username, WRONG_PASSWORD], logs, received)


def test_failed_login_keeps_at_most_max_text_of_the_user_agent(user):
    long_agent = "Mozilla/5.0 " + "x" * 5000
    client(ua=long_agent).post(
        LOGIN_URL, {"username": "alice", "password": WRONG_PASSWORD}, format="json"
    )
    (event,) = of_kind(EventKind.LOGIN_FAILED)
    assert 0 < len(event.user_agent) <= MAX_TEXT
    assert long_agent.startswith(event.user_agent)


# --------------------------------------------------------------------------------------------
# ends: logout, logout/all, DELETE active/<id>/, password change, deactivation
# --------------------------------------------------------------------------------------------


def test_logout_records_one_revoked_event_with_reason_logout(user, token_client, logs):
    api, session, token = token_client
    other, _ = sessions.open_session(user)
    assert api.post(LOGOUT_URL).status_code == 204

    (event,) = of_kind(EventKind.REVOKED)
    assert (event.session_id, event.user_id) == (session.pk, user.pk)
    assert event.reason == EndReason.LOGOUT
    assert event.data == {}  # no detail was given
    assert (event.ip, event.user_agent) == (IP, DESKTOP_UA)
    assert other.pk != event.session_id
    assert as_dict(event) in event_logs(logs)
    assert_nowhere([token, session.key], logs)


def test_logout_all_records_one_revoked_event_per_session_in_one_insert(user, open_session):
    opened = [open_session(user) for _ in range(4)]
    _, token = opened[0]
    ended_before, _ = open_session(user)
    sessions.revoke([ended_before], EndReason.ADMIN)
    before = set(SessionEvent.objects.values_list("pk", flat=True))

    with CaptureQueriesContext(connection) as queries:
        assert client(token=token).post(LOGOUT_ALL_URL).status_code == 204

    new = SessionEvent.objects.exclude(pk__in=before)
    assert {e.kind for e in new} == {EventKind.REVOKED}
    assert {e.reason for e in new} == {EndReason.LOGOUT_ALL}
    assert sorted(str(e.session_id) for e in new) == sorted(str(s.pk) for s, _ in opened)
    assert {e.user_id for e in new} == {user.pk}
    assert len(event_inserts(queries)) == 1


def test_delete_active_session_records_revoked_for_that_session_only(
    user, token_client, open_session
):
    api, _current, _token = token_client
    target, _ = open_session(user)
    assert api.delete(f"{ACTIVE_URL}{target.pk}/").status_code == 204

    (event,) = of_kind(EventKind.REVOKED)
    assert event.session_id == target.pk
    assert event.reason == EndReason.REVOKED


def test_delete_active_of_another_user_records_nothing(user, other_user, token_client):
    api, _, _ = token_client
    theirs, _ = sessions.open_session(other_user)
    assert api.delete(f"{ACTIVE_URL}{theirs.pk}/").status_code == 404
    assert of_kind(EventKind.REVOKED) == []


def test_password_change_records_revoked_with_reason_password_changed(user, open_session):
    kept, _ = open_session(user)
    ended, _ = open_session(user)
    sessions.keep_session(user, kept)
    user.set_password("a brand new passphrase")
    user.save()

    (event,) = of_kind(EventKind.REVOKED)
    assert event.session_id == ended.pk
    assert event.reason == EndReason.PASSWORD_CHANGED
    assert event.user_id == user.pk


def test_deactivation_records_revoked_with_reason_user_deactivated(user, open_session):
    opened = {open_session(user)[0].pk for _ in range(2)}
    user.is_active = False
    user.save()

    revoked = of_kind(EventKind.REVOKED)
    assert {e.session_id for e in revoked} == opened
    assert len(revoked) == 2
    assert {e.reason for e in revoked} == {EndReason.USER_DEACTIVATED}


# --------------------------------------------------------------------------------------------
# suspension, rotation
# --------------------------------------------------------------------------------------------


def test_user_agent_change_records_exactly_one_suspended_event(user, token_client, logs):
    _api, session, token = token_client
    thief = client(ua=FIREFOX_UA, token=token)
    first = thief.get(WHOAMI_URL)
    assert first.status_code == 401
    assert first.json()["code"] == "session_suspended"
    assert thief.get(WHOAMI_URL).status_code == 401  # ended now: nothing more to record

    ended = SessionEvent.objects.exclude(kind=EventKind.LOGIN)
    (event,) = ended
    assert event.kind == EventKind.SUSPENDED
    assert event.session_id == session.pk
    assert event.reason == EndReason.USER_AGENT_CHANGED
    assert "User agent changed" in event.data["detail"]
    assert event.user_agent == DESKTOP_UA  # the session's, the one it was opened with
    assert of_kind(EventKind.REVOKED) == []
    assert as_dict(event) in event_logs(logs)
    assert_nowhere([token, session.key], logs)


def test_rotate_records_one_rotated_event(user, token_client, logs):
    api, session, old_token = token_client
    before = set(SessionEvent.objects.values_list("pk", flat=True))  # the login
    response = api.post(ROTATE_URL)
    assert response.status_code == 200
    new_token = response.json()["token"]
    assert new_token != old_token

    (event,) = of_kind(EventKind.ROTATED)
    assert event.session_id == session.pk
    assert event.user_id == user.pk
    assert event.data == {"credential": "token"}
    assert list(SessionEvent.objects.exclude(pk__in=before)) == [event]
    assert event_logs(logs) == [as_dict(event)]
    assert_nowhere([old_token, new_token, hash_data(old_token), hash_data(new_token)], logs)


# --------------------------------------------------------------------------------------------
# EVENT_HISTORY, the signal
# --------------------------------------------------------------------------------------------


@nilva_settings(EVENT_HISTORY=False)
def test_without_event_history_nothing_is_stored_but_signal_and_log_happen(
    user, logs, capture_signal
):
    received = capture_signal(security_event)
    with CaptureQueriesContext(connection) as queries:
        response = client().post(
            LOGIN_URL, {"username": "alice", "password": PASSWORD}, format="json"
        )
    assert response.status_code == 200
    assert SessionEvent.objects.count() == 0
    assert event_inserts(queries) == []

    (kwargs,) = received
    assert kwargs["event"].kind == EventKind.LOGIN
    assert kwargs["event"].pk is None
    assert str(kwargs["event"].session_id) == response.json()["session_id"]
    (logged,) = event_logs(logs)
    assert logged["kind"] == "login"
    assert logged["id"] is None
    assert logged["session_id"] == response.json()["session_id"]


def test_security_event_signal_carries_the_saved_event(user, capture_signal):
    received = capture_signal(security_event)
    response = client().post(LOGIN_URL, {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 200

    (kwargs,) = received
    assert kwargs["sender"] is SessionEvent
    event = kwargs["event"]
    assert isinstance(event, SessionEvent)
    assert event.pk == SessionEvent.objects.get().pk  # saved before the signal
    assert event.kind == EventKind.LOGIN
    assert str(event.session_id) == response.json()["session_id"]


def test_security_event_signal_is_sent_once_per_ended_session(user, open_session, capture_signal):
    opened = [open_session(user)[0] for _ in range(3)]
    received = capture_signal(security_event)
    sessions.revoke(UserSession.objects.for_user(user), EndReason.ADMIN)
    assert sorted(str(k["event"].session_id) for k in received) == sorted(str(s.pk) for s in opened)
    assert {k["event"].kind for k in received} == {EventKind.REVOKED}


# --------------------------------------------------------------------------------------------
# events outlive their user
# --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_events_of_a_deleted_user_stay_with_the_user_id(user, open_session):
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA foreign_keys")
            assert cursor.fetchone()[0] == 1  # enforced (Django turns them on)
        constraints = connection.introspection.get_constraints(cursor, "user_session_event")
    assert [c for c in constraints.values() if c["foreign_key"]] == []  # none on the user
    session, _ = open_session(user)
    user_pk = user.pk

    user.delete()  # autocommit: a constraint on the event's user would fail here

    (event,) = SessionEvent.objects.all()
    assert event.kind == EventKind.LOGIN
    assert event.user_id == user_pk
    assert event.session_id == session.pk
    assert not UserSession.objects.filter(pk=session.pk).exists()
    connection.check_constraints(table_names=["user_session_event"])


# --------------------------------------------------------------------------------------------
# the schema
# --------------------------------------------------------------------------------------------


def test_as_dict_has_exactly_v_and_the_fields(user, open_session):
    session, _ = open_session(user)
    event = SessionEvent.objects.get()
    exported = as_dict(event)
    assert set(exported) == {"v", *FIELDS}
    assert len(exported) == len(FIELDS) + 1
    assert exported["v"] == SCHEMA_VERSION == 1
    assert exported["time"].endswith("Z")
    assert "+00:00" not in exported["time"]
    assert datetime.fromisoformat(exported["time"].replace("Z", "+00:00")) == event.created_at
    assert exported["session_id"] == str(session.pk)
    assert isinstance(exported["session_id"], str)
    assert exported["user_id"] == user.pk
    assert json.loads(json.dumps(exported)) == exported  # JSON-ready as it is


def test_as_dict_without_a_session_has_a_null_session_id(db):
    event = events.record(EventKind.LOGIN_FAILED, ip="198.51.100.1")
    exported = as_dict(event)
    assert exported["session_id"] is None
    assert exported["user_id"] is None
    assert exported["id"] == event.pk is not None


def test_as_dict_time_is_utc_whatever_zone_the_event_time_is_in(db):
    at = datetime(2024, 3, 1, 12, 0, tzinfo=ZoneInfo("Asia/Tehran"))  # +03:30
    event = events.new(EventKind.LOGIN, at=at)
    assert as_dict(event)["time"] == "2024-03-01T08:30:00Z"
    events.emit([event])
    stored = SessionEvent.objects.get()
    assert as_dict(stored)["time"] == "2024-03-01T08:30:00Z"
    assert stored.created_at == at.astimezone(dt_timezone.utc)


def test_new_cuts_the_user_agent_and_emit_saves_in_one_insert(db):
    batch = [
        events.new(EventKind.LOGIN, user_agent="a" * (MAX_TEXT + 100), at=None) for _ in range(3)
    ]
    with CaptureQueriesContext(connection) as queries:
        events.emit(batch)
    assert len(event_inserts(queries)) == 1
    assert [len(e.user_agent) for e in SessionEvent.objects.all()] == [MAX_TEXT] * 3
    assert all(e.pk is not None for e in batch)


def test_emit_of_nothing_does_nothing(db, capture_signal, logs):
    received = capture_signal(security_event)
    with CaptureQueriesContext(connection) as queries:
        assert events.emit([]) == []
    assert (len(queries), received, event_logs(logs)) == (0, [], [])


def test_event_time_defaults_to_now(db, clock):
    event = events.record(EventKind.LOGIN)
    assert event.created_at == clock.now()
    clock.advance(minutes=5)
    assert SessionEvent.objects.get().created_at == clock.now() - timedelta(minutes=5)
