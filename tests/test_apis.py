"""HTTP API of nilva-session: login, logout, the session listing and the session detail views."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import timedelta
from urllib.parse import quote, urlencode

import pytest
from django.contrib.auth import user_logged_in, user_logged_out, user_login_failed
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework import exceptions
from rest_framework.test import APIClient

from nilva_session.apis import MAX_IDS_PER_DELETE, exception_handler
from nilva_session.models import EndReason, UserSession
from nilva_session.serializers import LoginSerializer
from nilva_session.utils import hash_data, is_well_formed_token

from .conftest import DESKTOP_UA, IPHONE_UA, PASSWORD

LOGIN_URL = "/api/sessions/login/"
LOGOUT_URL = "/api/sessions/logout/"
LOGOUT_ALL_URL = "/api/sessions/logout/all/"
ACTIVE_URL = "/api/sessions/active/"
TOKEN_URL = "/api/sessions/token/"
WHOAMI_URL = "/api/whoami/"

SESSION_FIELDS = {
    "session_id",
    "user_id",
    "user_agent_data",
    "last_online",
    "last_ip",
    "created_at",
    "expire_at",
    "is_current",
    "is_active",
    "ended_at",
    "end_reason",
}
USER_AGENT_DATA_KEYS = {
    "os",
    "device_brand",
    "device_model",
    "device_family",
    "browser",
    "is_mobile",
    "is_tablet",
}


# --------------------------------------------------------------------------------------------
# helpers and local fixtures
# --------------------------------------------------------------------------------------------


def detail_url(session_id) -> str:
    return f"{ACTIVE_URL}{session_id}/"


def active_url_with_ids(*ids) -> str:
    return f"{ACTIVE_URL}?{urlencode([('token_id', str(i)) for i in ids])}"


def client_for(token: str, ua: str = DESKTOP_UA, ip: str = "203.0.113.7") -> APIClient:
    client = APIClient(HTTP_USER_AGENT=ua, REMOTE_ADDR=ip)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def is_active(session: UserSession) -> bool:
    return UserSession.objects.get(pk=session.pk).is_active


def assert_error_shape(response, status_code: int) -> dict:
    assert response.status_code == status_code, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    assert isinstance(body.get("detail"), str)
    assert body["detail"]
    return body


def assert_no_body(response) -> None:
    """A 204 without a body. The test client strips 204 bodies, so check the view's data too."""
    assert response.status_code == 204
    assert response.data is None
    assert response.content == b""


@pytest.fixture
def capture_signal():
    """``capture_signal(signal) -> list``: every call of ``signal`` lands in the list as kwargs."""
    connected = []

    def _capture(signal):
        calls = []

        def receiver(sender, **kwargs):
            calls.append({"sender": sender, **kwargs})

        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
        return calls

    yield _capture
    for signal, receiver in connected:
        signal.disconnect(receiver)


@pytest.fixture
def login(api_client):
    def _login(data, **extra):
        return api_client.post(LOGIN_URL, data, format="json", **extra)

    return _login


# --------------------------------------------------------------------------------------------
# POST login/
# --------------------------------------------------------------------------------------------


def test_login_returns_token_session_id_and_expire_at(user, login):
    response = login({"username": "alice", "password": PASSWORD})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "session_id", "expire_at"}
    session = UserSession.objects.get(pk=body["session_id"])
    assert session.user == user
    assert session.is_active
    assert is_well_formed_token(body["token"])
    assert body["expire_at"] is not None
    assert parse_datetime(body["expire_at"]) == session.expire_at


def test_login_token_authenticates_the_new_session(user, login):
    body = login({"username": "alice", "password": PASSWORD}).json()

    response = client_for(body["token"]).get(WHOAMI_URL)

    assert response.status_code == 200
    assert response.json() == {"user": "alice", "session_id": body["session_id"]}


def test_login_stores_only_the_token_digest(user, login):
    body = login({"username": "alice", "password": PASSWORD}).json()

    session = UserSession.objects.get(pk=body["session_id"])
    assert session.key == hash_data(body["token"])
    assert session.key != body["token"]
    stored = UserSession.objects.filter(pk=session.pk).values().get()
    assert all(body["token"] not in str(value) for value in stored.values())


def test_login_opens_a_new_session_with_a_new_token_each_time(user, login):
    first = login({"username": "alice", "password": PASSWORD}).json()
    second = login({"username": "alice", "password": PASSWORD}).json()

    assert first["token"] != second["token"]
    assert first["session_id"] != second["session_id"]
    assert UserSession.objects.for_user(user).active().count() == 2


def test_login_records_client_ip_and_user_agent(user, login):
    body = login({"username": "alice", "password": PASSWORD}).json()

    session = UserSession.objects.get(pk=body["session_id"])
    assert session.last_ip == "203.0.113.7"
    assert session.user_agent == DESKTOP_UA


def test_login_also_accepts_a_form_body(user, api_client):
    response = api_client.post(LOGIN_URL, {"username": "alice", "password": PASSWORD})

    assert response.status_code == 200
    assert UserSession.objects.filter(pk=response.json()["session_id"]).exists()


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "alice", "password": "wrong password"},
        {"username": "nobody", "password": PASSWORD},
        {"username": "ALICE", "password": PASSWORD},
        {"username": " alice", "password": PASSWORD},
        {"username": "alice", "password": PASSWORD + " "},
    ],
    ids=["wrong-password", "unknown-user", "other-case", "leading-space", "trailing-space"],
)
def test_login_with_wrong_credentials_is_400_invalid_credentials(user, login, credentials):
    response = login(credentials)

    body = assert_error_shape(response, 400)
    assert body["code"] == "invalid_credentials"
    assert "errors" in body
    assert "token" not in body
    assert not UserSession.objects.exists()


def test_login_of_an_inactive_user_is_400_invalid_credentials(user, login):
    user.is_active = False
    user.save()

    body = assert_error_shape(login({"username": "alice", "password": PASSWORD}), 400)

    assert body["code"] == "invalid_credentials"
    assert not UserSession.objects.exists()


BAD_LOGIN_BODIES = {
    "empty-object": {},
    "missing-password": {"username": "alice"},
    "missing-username": {"password": PASSWORD},
    "null-username": {"username": None, "password": PASSWORD},
    "null-password": {"username": "alice", "password": None},
    "empty-username": {"username": "", "password": PASSWORD},
    "empty-password": {"username": "alice", "password": ""},
    "list-username": {"username": ["alice"], "password": PASSWORD},
    "object-username": {"username": {"name": "alice"}, "password": PASSWORD},
    "bool-username": {"username": True, "password": PASSWORD},
    "list-password": {"username": "alice", "password": [PASSWORD]},
    "object-password": {"username": "alice", "password": {"p": PASSWORD}},
    "number-username": {"username": 12345, "password": PASSWORD},
    "10kB-username": {"username": "a" * 10_240, "password": PASSWORD},
    "100kB-password": {"username": "alice", "password": "p" * 100_000},
    "nul-in-username": {"username": "ali\x00ce", "password": PASSWORD},
    "nul-in-password": {"username": "alice", "password": PASSWORD + "\x00"},
    "non-ascii-username": {"username": "алиса-علی-爱丽丝", "password": PASSWORD},
    "emoji-username": {"username": "alice\U0001f600", "password": PASSWORD},
    "list-body": ["alice", PASSWORD],
    "string-body": "alice",
    "number-body": 42,
    "null-body": None,
}


@pytest.mark.parametrize("data", list(BAD_LOGIN_BODIES.values()), ids=list(BAD_LOGIN_BODIES))
def test_login_with_bad_input_is_400_with_detail_and_opens_no_session(user, api_client, data):
    response = api_client.post(LOGIN_URL, json.dumps(data), content_type="application/json")

    assert_error_shape(response, 400)
    assert not UserSession.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"username": "alice", "password": ', b"\xff\xfe\x00", b"username=alice"],
    ids=["broken", "truncated", "binary", "form-text"],
)
def test_login_with_a_non_json_body_is_400(user, api_client, raw):
    response = api_client.post(LOGIN_URL, raw, content_type="application/json")

    assert_error_shape(response, 400)
    assert not UserSession.objects.exists()


def test_login_with_missing_username_names_the_field(user, login):
    body = assert_error_shape(login({"password": PASSWORD}), 400)

    assert body["detail"].startswith("username:")
    assert body["code"] == "required"
    assert set(body["errors"]) == {"username"}


def test_login_error_never_echoes_the_password(user, login):
    secret = "hunter2-very-secret"
    response = login({"username": "alice", "password": secret})

    assert response.status_code == 400
    assert secret not in response.content.decode()


def test_login_sends_user_logged_in(user, login, capture_signal):
    logged_in = capture_signal(user_logged_in)
    failed = capture_signal(user_login_failed)

    login({"username": "alice", "password": PASSWORD})

    assert len(logged_in) == 1
    assert logged_in[0]["user"] == user
    assert logged_in[0]["request"] is not None
    assert failed == []


def test_login_failure_sends_user_login_failed(user, login, capture_signal):
    logged_in = capture_signal(user_logged_in)
    failed = capture_signal(user_login_failed)

    login({"username": "alice", "password": "wrong password"})

    assert len(failed) == 1
    assert failed[0]["credentials"]["username"] == "alice"
    assert failed[0]["credentials"]["password"] != "wrong password"
    assert logged_in == []


def test_login_updates_last_login(user, login):
    assert user.last_login is None

    login({"username": "alice", "password": PASSWORD})

    user.refresh_from_db()
    assert user.last_login is not None


@pytest.mark.parametrize(
    "header",
    ["Token nvs_bogus", "Bearer not.a.jwt", "Token", "Basic YWxpY2U6eA==", "Token a b c"],
)
def test_login_ignores_a_bogus_authorization_header(user, login, header):
    response = login({"username": "alice", "password": PASSWORD}, HTTP_AUTHORIZATION=header)

    assert response.status_code == 200
    assert "token" in response.json()


def test_login_ignores_the_token_of_an_ended_session(user, login, open_session):
    session, token = open_session(user)
    session.revoke()

    response = login(
        {"username": "alice", "password": PASSWORD}, HTTP_AUTHORIZATION=f"Token {token}"
    )

    assert response.status_code == 200


def test_login_makes_at_most_six_queries(user, login, django_assert_max_num_queries):
    # The user, its last_login, the user's known devices (NEW_DEVICE_RULE), the session, the
    # device remembered (one upsert), the login event. A user with no known device yet (the
    # first sign-in, or history from before devices were kept) has their sessions read too.
    with django_assert_max_num_queries(7):
        first = login({"username": "alice", "password": PASSWORD})
    with django_assert_max_num_queries(6):
        response = login({"username": "alice", "password": PASSWORD})

    assert first.status_code == response.status_code == 200


def test_login_rejects_get(user, api_client):
    assert_error_shape(api_client.get(LOGIN_URL), 405)


# --------------------------------------------------------------------------------------------
# POST logout/
# --------------------------------------------------------------------------------------------


def test_logout_ends_the_current_session_with_204_and_no_body(token_client):
    client, session, _token = token_client

    response = client.post(LOGOUT_URL)

    assert response.status_code == 204
    assert_no_body(response)
    session.refresh_from_db()
    assert not session.is_active
    assert session.end_reason == EndReason.LOGOUT
    assert session.ended_at is not None


def test_logout_sends_user_logged_out(user, token_client, capture_signal):
    client, _session, _token = token_client
    logged_out = capture_signal(user_logged_out)

    client.post(LOGOUT_URL)

    assert len(logged_out) == 1
    assert logged_out[0]["user"] == user
    assert logged_out[0]["request"] is not None


def test_token_is_refused_with_session_ended_after_logout(token_client):
    client, _session, _token = token_client
    assert client.get(WHOAMI_URL).status_code == 200  # the session is now cached

    client.post(LOGOUT_URL)
    response = client.get(WHOAMI_URL)

    body = assert_error_shape(response, 401)
    assert body["code"] == "session_ended"


def test_logout_keeps_the_users_other_sessions(user, token_client, open_session):
    client, _session, _token = token_client
    other, other_token = open_session(user, ua=IPHONE_UA)

    client.post(LOGOUT_URL)

    assert is_active(other)
    assert client_for(other_token, ua=IPHONE_UA).get(WHOAMI_URL).status_code == 200


def test_logout_with_a_jwt_ends_its_session(user, api_client):
    obtained = api_client.post(
        TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert obtained.status_code == 200
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {obtained.json()['access']}")

    response = client.post(LOGOUT_URL)

    assert response.status_code == 204
    assert not UserSession.objects.get(pk=obtained.json()["session_id"]).is_active
    assert client.get(WHOAMI_URL).json()["code"] == "session_ended"


# --------------------------------------------------------------------------------------------
# POST logout/all/
# --------------------------------------------------------------------------------------------


def test_logout_all_ends_every_session_of_the_user_only(user, other_user, open_session):
    mine = [open_session(user, ua=ua) for ua in (DESKTOP_UA, IPHONE_UA, DESKTOP_UA)]
    theirs, theirs_token = open_session(other_user)
    _current_session, current_token = mine[0]

    response = client_for(current_token).post(LOGOUT_ALL_URL)

    assert response.status_code == 204
    assert_no_body(response)
    for session, _token in mine:
        session.refresh_from_db()
        assert not session.is_active
        assert session.end_reason == EndReason.LOGOUT_ALL
    assert is_active(theirs)
    assert client_for(theirs_token).get(WHOAMI_URL).status_code == 200


def test_logout_all_refuses_every_token_of_the_user_afterwards(user, open_session):
    mine = [open_session(user, ua=ua) for ua in (DESKTOP_UA, IPHONE_UA, DESKTOP_UA)]
    clients = [client_for(token, ua=session.user_agent) for session, token in mine]
    for client in clients:
        assert client.get(WHOAMI_URL).status_code == 200  # warm the cache

    clients[0].post(LOGOUT_ALL_URL)

    for client in clients:
        assert client.get(WHOAMI_URL).json()["code"] == "session_ended"


# --------------------------------------------------------------------------------------------
# GET active/
# --------------------------------------------------------------------------------------------


def test_active_lists_only_the_users_active_unexpired_sessions(user, other_user, open_session):
    current, token = open_session(user)
    mobile, _ = open_session(user, ua=IPHONE_UA)
    ended, _ = open_session(user)
    ended.revoke()
    open_session(user, expire_at=timezone.now() - timedelta(seconds=1))  # expired
    open_session(other_user)

    response = client_for(token).get(ACTIVE_URL)

    assert response.status_code == 200
    assert {row["session_id"] for row in response.json()} == {str(current.pk), str(mobile.pk)}
    assert {row["user_id"] for row in response.json()} == {user.pk}


def test_active_lists_sessions_without_expiry(user, open_session, settings):
    settings.NILVA_SESSION = {"LOGIN_THROTTLE_RATE": None, "EXPIRE_AT": None}
    current, token = open_session(user)
    assert current.expire_at is None

    rows = client_for(token).get(ACTIVE_URL).json()

    assert [row["session_id"] for row in rows] == [str(current.pk)]
    assert rows[0]["expire_at"] is None


def test_active_orders_by_most_recent_activity_first(user, open_session):
    current, token = open_session(user)
    now = timezone.now()
    older, _ = open_session(user)
    oldest, _ = open_session(user)
    recent, _ = open_session(user)
    for session, age in (
        (older, timedelta(hours=1)),
        (oldest, timedelta(hours=2)),
        (recent, timedelta(minutes=30)),
    ):
        UserSession.objects.filter(pk=session.pk).update(last_online=now - age)

    rows = client_for(token).get(ACTIVE_URL).json()

    assert [row["session_id"] for row in rows] == [
        str(current.pk),
        str(recent.pk),
        str(older.pk),
        str(oldest.pk),
    ]


def test_active_rows_have_the_contract_fields(user, open_session):
    current, token = open_session(user)

    rows = client_for(token).get(ACTIVE_URL).json()

    assert len(rows) == 1
    row = rows[0]
    assert set(row) == SESSION_FIELDS
    assert set(row["user_agent_data"]) >= USER_AGENT_DATA_KEYS
    assert row["session_id"] == str(current.pk)
    assert row["user_id"] == user.pk
    assert row["last_ip"] == "203.0.113.7"
    assert row["created_at"]
    assert row["last_online"]
    assert row["expire_at"]


def test_active_describes_the_user_agent(user, token_client, open_session):
    client, _session, _token = token_client
    mobile, _ = open_session(user, ua=IPHONE_UA)

    rows = {row["session_id"]: row for row in client.get(ACTIVE_URL).json()}

    phone = rows[str(mobile.pk)]["user_agent_data"]
    assert phone["os"] == "iOS"
    assert phone["device_brand"] == "Apple"
    assert phone["device_family"] == "iPhone"
    assert phone["is_mobile"] is True
    assert phone["is_tablet"] is False
    desktop = rows[str(token_client[1].pk)]["user_agent_data"]
    assert desktop["os"] == "Windows"
    assert desktop["browser"] == "Chrome"
    assert desktop["is_mobile"] is False


def test_active_marks_only_the_requesting_session_current(user, open_session):
    first, first_token = open_session(user)
    second, second_token = open_session(user, ua=IPHONE_UA)

    seen_by_first = {
        r["session_id"]: r["is_current"] for r in client_for(first_token).get(ACTIVE_URL).json()
    }
    seen_by_second = {
        r["session_id"]: r["is_current"]
        for r in client_for(second_token, ua=IPHONE_UA).get(ACTIVE_URL).json()
    }

    assert seen_by_first == {str(first.pk): True, str(second.pk): False}
    assert seen_by_second == {str(first.pk): False, str(second.pk): True}


def test_active_marks_the_jwt_session_current(user, api_client, open_session):
    other, _ = open_session(user)
    obtained = api_client.post(
        TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json"
    ).json()
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {obtained['access']}")

    rows = {r["session_id"]: r["is_current"] for r in client.get(ACTIVE_URL).json()}

    assert rows == {obtained["session_id"]: True, str(other.pk): False}


def test_active_never_shows_a_key_digest_or_token(user, login, open_session):
    opened = [open_session(user, ua=ua) for ua in (DESKTOP_UA, IPHONE_UA)]
    logged_in = login({"username": "alice", "password": PASSWORD}).json()
    tokens = [token for _, token in opened] + [logged_in["token"]]

    response = client_for(logged_in["token"]).get(ACTIVE_URL)

    text = response.content.decode()
    assert len(response.json()) == 3
    for token in tokens:
        assert token not in text
        assert hash_data(token) not in text
    for key in UserSession.objects.values_list("key", flat=True):
        assert key not in text
    assert '"key"' not in text
    assert '"token"' not in text


def test_active_query_count_does_not_grow_with_sessions(
    user, other_user, open_session, django_assert_num_queries
):
    _, few_token = open_session(user)
    open_session(user)
    _, many_token = open_session(other_user)
    for _ in range(49):
        open_session(other_user)
    few_client, many_client = client_for(few_token), client_for(many_token)

    with CaptureQueriesContext(connection) as few:
        few_rows = few_client.get(ACTIVE_URL).json()
    with django_assert_num_queries(len(few.captured_queries)):
        many_rows = many_client.get(ACTIVE_URL).json()

    assert len(few_rows) == 2
    assert len(many_rows) == 50


# --------------------------------------------------------------------------------------------
# DELETE active/?token_id=...
# --------------------------------------------------------------------------------------------


def test_delete_active_ends_the_named_sessions(user, token_client, open_session):
    client, current, _token = token_client
    first, first_token = open_session(user)
    second, _ = open_session(user)
    kept, _ = open_session(user)

    response = client.delete(active_url_with_ids(first.pk, second.pk))

    assert response.status_code == 204
    assert_no_body(response)
    assert not is_active(first)
    assert not is_active(second)
    assert UserSession.objects.get(pk=first.pk).end_reason == EndReason.REVOKED
    assert is_active(kept)
    assert is_active(current)
    assert client_for(first_token).get(WHOAMI_URL).json()["code"] == "session_ended"


def test_delete_active_can_end_the_current_session(user, token_client, open_session):
    client, current, _token = token_client
    other, _ = open_session(user)

    response = client.delete(active_url_with_ids(current.pk))

    assert response.status_code == 204
    assert not is_active(current)
    assert is_active(other)
    assert client.get(WHOAMI_URL).json()["code"] == "session_ended"


def test_delete_active_ignores_unknown_and_other_users_ids(
    user, other_user, token_client, open_session
):
    client, current, _token = token_client
    theirs, theirs_token = open_session(other_user)
    mine, _ = open_session(user)

    response = client.delete(active_url_with_ids(uuid.uuid4(), theirs.pk))

    assert response.status_code == 204
    assert_no_body(response)
    assert is_active(theirs)
    assert is_active(mine)
    assert is_active(current)
    assert client_for(theirs_token).get(WHOAMI_URL).status_code == 200


def test_delete_active_answers_the_same_for_unknown_ids_as_for_own(
    user, other_user, token_client, open_session
):
    client, _current, _token = token_client
    theirs, _ = open_session(other_user)
    mine, _ = open_session(user)

    for_theirs = client.delete(active_url_with_ids(theirs.pk))
    for_unknown = client.delete(active_url_with_ids(uuid.uuid4()))
    for_mine = client.delete(active_url_with_ids(mine.pk))

    assert {r.status_code for r in (for_theirs, for_unknown, for_mine)} == {204}
    for response in (for_theirs, for_unknown, for_mine):
        assert_no_body(response)


def test_delete_active_mixed_own_and_foreign_ids_ends_only_own(
    user, other_user, token_client, open_session
):
    client, _current, _token = token_client
    theirs, _ = open_session(other_user)
    mine, _ = open_session(user)

    client.delete(active_url_with_ids(theirs.pk, mine.pk))

    assert not is_active(mine)
    assert is_active(theirs)


@pytest.mark.parametrize(
    "bad_id",
    ["not-a-uuid", "", "12345", "x" * 300, "ñandú-séssion", "00000000-0000-0000-0000-00000000000g"],
    ids=["word", "empty", "digits", "300-chars", "non-ascii", "bad-hex"],
)
def test_delete_active_with_a_malformed_id_is_400_and_changes_nothing(
    user, token_client, open_session, bad_id
):
    client, current, _token = token_client
    mine, _ = open_session(user)

    response = client.delete(active_url_with_ids(mine.pk, bad_id))

    body = assert_error_shape(response, 400)
    assert bad_id[:40] in body["detail"]
    assert is_active(mine)
    assert is_active(current)


def test_delete_active_with_too_many_ids_is_400_and_changes_nothing(
    user, token_client, open_session
):
    client, current, _token = token_client
    mine, _ = open_session(user)
    ids = [mine.pk] + [uuid.uuid4() for _ in range(MAX_IDS_PER_DELETE)]

    response = client.delete(active_url_with_ids(*ids))

    assert_error_shape(response, 400)
    assert is_active(mine)
    assert is_active(current)


def test_delete_active_accepts_exactly_the_maximum_number_of_ids(user, token_client, open_session):
    client, _current, _token = token_client
    mine, _ = open_session(user)
    ids = [mine.pk] + [uuid.uuid4() for _ in range(MAX_IDS_PER_DELETE - 1)]

    response = client.delete(active_url_with_ids(*ids))

    assert response.status_code == 204
    assert not is_active(mine)


def test_delete_active_without_ids_ends_the_other_sessions_and_keeps_the_current(
    user, other_user, token_client, open_session
):
    client, current, _token = token_client
    others = [open_session(user, ua=ua)[0] for ua in (DESKTOP_UA, IPHONE_UA)]
    theirs, _ = open_session(other_user)

    response = client.delete(ACTIVE_URL)

    assert response.status_code == 204
    assert_no_body(response)
    assert is_active(current)
    assert not any(is_active(session) for session in others)
    assert is_active(theirs)
    assert client.get(WHOAMI_URL).status_code == 200


def test_delete_active_without_ids_and_only_the_current_session_keeps_it(token_client):
    client, current, _token = token_client

    response = client.delete(ACTIVE_URL)

    assert response.status_code == 204
    assert is_active(current)
    assert client.get(WHOAMI_URL).status_code == 200


# --------------------------------------------------------------------------------------------
# GET / DELETE active/<uuid>/
# --------------------------------------------------------------------------------------------


def test_get_session_detail_returns_one_of_the_users_sessions(user, token_client, open_session):
    client, current, _token = token_client
    mobile, _ = open_session(user, ua=IPHONE_UA)

    own = client.get(detail_url(current.pk))
    other = client.get(detail_url(mobile.pk))

    assert own.status_code == other.status_code == 200
    assert set(own.json()) == SESSION_FIELDS
    assert own.json()["session_id"] == str(current.pk)
    assert own.json()["is_current"] is True
    assert other.json()["session_id"] == str(mobile.pk)
    assert other.json()["is_current"] is False
    assert other.json()["user_agent_data"]["is_mobile"] is True


def test_get_session_detail_never_shows_the_key(token_client):
    client, current, token = token_client

    text = client.get(detail_url(current.pk)).content.decode()

    assert token not in text
    assert current.key not in text


def test_get_session_detail_of_another_user_is_404(other_user, token_client, open_session):
    client, _current, _token = token_client
    theirs, _ = open_session(other_user)

    response = client.get(detail_url(theirs.pk))

    assert_error_shape(response, 404)
    assert str(theirs.pk) not in response.content.decode()


MALFORMED_IDS = {
    "word": "not-a-uuid",
    "300-chars": "a" * 300,
    "non-ascii": "séssion-ñ-سلام",
    "uuid-with-junk": str(uuid.UUID(int=1)) + "x",
    "dots": "..",
    "percent": "%00",
}


@pytest.mark.parametrize(
    "bad_id",
    [str(uuid.uuid4()), *MALFORMED_IDS.values()],
    ids=["unknown", *MALFORMED_IDS],
)
def test_get_session_detail_of_an_unknown_or_malformed_id_is_404(token_client, bad_id):
    client, _current, _token = token_client

    response = client.get(detail_url(quote(bad_id, safe="")))

    assert_error_shape(response, 404)


def test_delete_session_detail_ends_it_with_204_and_no_body(user, token_client, open_session):
    client, current, _token = token_client
    mobile, mobile_token = open_session(user, ua=IPHONE_UA)

    response = client.delete(detail_url(mobile.pk))

    assert response.status_code == 204
    assert_no_body(response)
    assert not is_active(mobile)
    assert is_active(current)
    assert client_for(mobile_token, ua=IPHONE_UA).get(WHOAMI_URL).json()["code"] == "session_ended"


def test_delete_session_detail_of_the_current_session_ends_it(token_client):
    client, current, _token = token_client

    response = client.delete(detail_url(current.pk))

    assert response.status_code == 204
    assert not is_active(current)
    assert client.get(WHOAMI_URL).status_code == 401


def test_delete_session_detail_of_another_user_is_404_and_changes_nothing(
    other_user, token_client, open_session
):
    client, _current, _token = token_client
    theirs, _ = open_session(other_user)

    response = client.delete(detail_url(theirs.pk))

    assert_error_shape(response, 404)
    assert is_active(theirs)


@pytest.mark.parametrize(
    "bad_id",
    [str(uuid.uuid4()), *MALFORMED_IDS.values()],
    ids=["unknown", *MALFORMED_IDS],
)
def test_delete_session_detail_of_an_unknown_or_malformed_id_is_404(token_client, bad_id):
    client, current, _token = token_client

    response = client.delete(detail_url(quote(bad_id, safe="")))

    assert_error_shape(response, 404)
    assert is_active(current)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    raw=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="/"),
        min_size=1,
        max_size=80,
    )
)
def test_session_detail_is_404_json_for_arbitrary_ids(token_client, raw):
    client, _current, _token = token_client

    response = client.get(detail_url(quote(raw, safe="")))

    assert_error_shape(response, 404)


# --------------------------------------------------------------------------------------------
# Authentication required
# --------------------------------------------------------------------------------------------

PROTECTED = [
    ("post", LOGOUT_URL),
    ("post", LOGOUT_ALL_URL),
    ("get", ACTIVE_URL),
    ("delete", ACTIVE_URL),
    ("get", detail_url(uuid.UUID(int=7))),
    ("delete", detail_url(uuid.UUID(int=7))),
]


@pytest.mark.parametrize(("method", "url"), PROTECTED, ids=[f"{m}-{u}" for m, u in PROTECTED])
def test_protected_endpoints_without_credentials_are_401_json(db, api_client, method, url):
    response = getattr(api_client, method)(url)

    assert_error_shape(response, 401)
    assert response.has_header("WWW-Authenticate")


@pytest.mark.parametrize(("method", "url"), PROTECTED, ids=[f"{m}-{u}" for m, u in PROTECTED])
def test_protected_endpoints_with_a_forged_token_are_401_json(db, api_client, method, url):
    api_client.credentials(HTTP_AUTHORIZATION="Token nvs_" + "A" * 49)

    assert_error_shape(getattr(api_client, method)(url), 401)


def test_protected_endpoints_refuse_an_ended_session(user, token_client, open_session):
    client, current, _token = token_client
    mobile, _ = open_session(user, ua=IPHONE_UA)
    current.revoke()

    response = client.delete(active_url_with_ids(mobile.pk))

    assert assert_error_shape(response, 401)["code"] == "session_ended"
    assert is_active(mobile)


def test_protected_endpoints_refuse_an_expired_session(user, open_session):
    _session, token = open_session(user, expire_at=timezone.now() - timedelta(seconds=1))

    response = client_for(token).get(ACTIVE_URL)

    assert assert_error_shape(response, 401)["code"] == "session_expired"


# --------------------------------------------------------------------------------------------
# JWT views: refused credentials are 401, as with simplejwt's own views
# --------------------------------------------------------------------------------------------


def test_token_obtain_with_wrong_credentials_is_401(user, api_client):
    response = api_client.post(TOKEN_URL, {"username": "alice", "password": "wrong"}, format="json")

    assert_error_shape(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not UserSession.objects.exists()


def test_token_obtain_with_bad_input_is_400(user, api_client):
    response = api_client.post(TOKEN_URL, {"username": ["alice"]}, format="json")

    assert_error_shape(response, 400)


def test_token_refresh_of_an_ended_session_is_401_session_ended(user, api_client):
    obtained = api_client.post(
        TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json"
    ).json()
    UserSession.objects.filter(pk=obtained["session_id"]).revoke()

    response = api_client.post(
        f"{TOKEN_URL}refresh/", {"refresh": obtained["refresh"]}, format="json"
    )

    assert assert_error_shape(response, 401)["code"] == "session_ended"


@pytest.mark.parametrize("path", ["refresh/", "logout/"])
def test_token_refresh_and_logout_with_a_garbage_token_are_401(db, api_client, path):
    response = api_client.post(f"{TOKEN_URL}{path}", {"refresh": "garbage"}, format="json")

    assert_error_shape(response, 401)


# --------------------------------------------------------------------------------------------
# exception_handler
# --------------------------------------------------------------------------------------------


def _validation_error_of(serializer) -> exceptions.ValidationError:
    with pytest.raises(exceptions.ValidationError) as raised:
        serializer.is_valid(raise_exception=True)
    return raised.value


def test_exception_handler_folds_a_field_error():
    serializer = LoginSerializer(data={"password": "x"}, context={"request": None})
    error = _validation_error_of(serializer)

    response = exception_handler(error, {})

    assert response.status_code == 400
    assert response.data["detail"] == "username: This field is required."
    assert response.data["code"] == "required"
    assert response.data["errors"] == {"username": ["This field is required."]}


def test_exception_handler_folds_a_non_field_error():
    error = exceptions.ValidationError(
        {"non_field_errors": ["Not allowed."]}, code="forbidden_combo"
    )

    response = exception_handler(error, {})

    assert response.status_code == 400
    assert response.data["detail"] == "Not allowed."
    assert response.data["code"] == "forbidden_combo"
    assert response.data["errors"] == {"non_field_errors": ["Not allowed."]}


def test_exception_handler_folds_a_bare_validation_error():
    response = exception_handler(exceptions.ValidationError("Bad thing.", code="bad"), {})

    assert response.data == {"detail": "Bad thing.", "code": "bad", "errors": ["Bad thing."]}


def test_exception_handler_uses_the_first_of_several_field_errors():
    error = exceptions.ValidationError(
        {"username": ["Too long."], "password": ["Too short."]}, code="length"
    )

    response = exception_handler(error, {})

    assert response.data["detail"] == "username: Too long."
    assert set(response.data["errors"]) == {"username", "password"}


def test_exception_handler_keeps_an_error_that_already_has_a_detail():
    error = exceptions.ValidationError({"detail": "Already shaped.", "code": "shaped"})

    response = exception_handler(error, {})

    assert response.data == {"detail": "Already shaped.", "code": "shaped"}


def test_exception_handler_adds_the_code_to_other_api_errors():
    response = exception_handler(exceptions.NotFound(), {})

    assert response.status_code == 404
    assert response.data == {"detail": "Not found.", "code": "not_found"}


def test_exception_handler_keeps_a_code_that_is_already_there():
    error = exceptions.AuthenticationFailed({"detail": "Nope.", "code": "session_ended"})

    assert exception_handler(error, {}).data == {"detail": "Nope.", "code": "session_ended"}


def test_throttled_errors_carry_a_code(user, api_client):
    with override_settings(NILVA_SESSION={"LOGIN_THROTTLE_RATE": "1/min"}):
        api_client.post("/api/sessions/login/", {"username": "x", "password": "y"}, format="json")
        response = api_client.post(
            "/api/sessions/login/", {"username": "x", "password": "y"}, format="json"
        )
    assert response.status_code == 429
    assert response.json()["code"] == "throttled"


def test_exception_handler_returns_none_for_non_api_errors():
    assert exception_handler(ValueError("boom"), {}) is None


# --------------------------------------------------------------------------------------------
# outside testing: bad input on every endpoint, DELETE's parameters
# --------------------------------------------------------------------------------------------

NESTED = b"[" * 1000 + b"]" * 1000  # 2 KB that json cannot parse without RecursionError
POST_ENDPOINTS = [
    "/api/sessions/login/",
    "/api/sessions/token/",
    "/api/sessions/token/refresh/",
    "/api/sessions/token/logout/",
    "/api/sessions/reauthenticate/",
]


@pytest.mark.parametrize("rate", ["5/min", None], ids=["throttled", "unthrottled"])
@pytest.mark.parametrize("url", POST_ENDPOINTS)
def test_deeply_nested_json_is_400_and_not_a_cache_outage(
    token_client, url, rate, caplog, settings
):
    client, _session, _token = token_client
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "LOGIN_THROTTLE_RATE": rate}
    before = list(UserSession.objects.values())
    with caplog.at_level(logging.WARNING):
        response = client.post(url, NESTED, content_type="application/json")
    body = assert_error_shape(response, 400)
    # Python < 3.12 cannot parse it (parse_error); 3.12+ can, and the serializer refuses a list.
    assert body["code"] in ("parse_error", "invalid")
    assert not [r for r in caplog.records if "Cache" in r.getMessage()]
    assert list(UserSession.objects.values()) == before


def test_token_id_brackets_end_only_the_named_session(user, token_client, open_session):
    client, current, _token = token_client
    others = [open_session(user)[0] for _ in range(7)]
    response = client.delete(f"{ACTIVE_URL}?token_id[]={others[0].pk}&token_id[]={others[1].pk}")
    assert_no_body(response)
    assert not is_active(others[0])
    assert not is_active(others[1])
    assert all(is_active(s) for s in [current, *others[2:]])


@pytest.mark.parametrize(
    "query",
    ["tokenid={id}", "token_ids={id}", "foo=bar", "token_id={id}&foo=1", "token_id%5B0%5D={id}"],
)
def test_delete_with_an_unknown_parameter_is_400_and_ends_nothing(
    user, token_client, open_session, query
):
    client, current, _token = token_client
    others = [open_session(user)[0] for _ in range(3)]
    response = client.delete(f"{ACTIVE_URL}?{query.format(id=others[0].pk)}")
    body = assert_error_shape(response, 400)
    assert body["code"] == "unknown_parameter"
    assert all(is_active(s) for s in [current, *others])


def test_delete_with_too_many_query_fields_answers_in_the_package_shape(
    user, token_client, open_session
):
    client, current, _token = token_client
    other, _ = open_session(user)
    query = "&".join(f"token_id={other.pk}" for _ in range(1001))
    body = assert_error_shape(client.delete(f"{ACTIVE_URL}?{query}"), 400)
    assert body["code"] == "too_many_fields"
    assert is_active(other)
    assert is_active(current)


def test_a_form_body_with_too_many_fields_answers_in_the_package_shape(user, api_client):
    body = "&".join(f"f{i}=x" for i in range(1001)) + "&username=alice&password=x"
    response = api_client.post(LOGIN_URL, body, content_type="application/x-www-form-urlencoded")
    assert assert_error_shape(response, 400)["code"] == "too_many_fields"
    assert not UserSession.objects.exists()


def test_a_body_over_the_upload_limit_answers_in_the_package_shape(user, api_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = api_client.post(
        LOGIN_URL, {"username": "alice", "password": "x" * 4000}, format="json"
    )
    assert assert_error_shape(response, 400)["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("options", "change"),
    [
        ({"IDLE_TIMEOUT": 600}, {"last_online": timezone.now() - timedelta(minutes=11)}),
        ({"ABSOLUTE_LIFETIME": 3600}, {"created_at": timezone.now() - timedelta(hours=2)}),
    ],
    ids=["idle", "past-absolute-lifetime"],
)
def test_active_never_lists_a_session_its_next_request_refuses(
    user, token_client, open_session, settings, options, change
):
    client, current, _token = token_client
    lapsed, lapsed_token = open_session(user)
    UserSession.objects.filter(pk=lapsed.pk).update(**change)
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, **options}
    listed = {row["session_id"] for row in client.get(ACTIVE_URL).json()}
    assert listed == {str(current.pk)}
    assert client_for(lapsed_token).get(WHOAMI_URL).status_code == 401


# --------------------------------------------------------------------------------------------
# POST rotate/ and rotation on reauthenticate/
# --------------------------------------------------------------------------------------------

ROTATE_URL = "/api/sessions/rotate/"
REAUTHENTICATE_URL = "/api/sessions/reauthenticate/"


def test_rotate_gives_a_new_token_for_the_same_session_and_retires_the_old(token_client):
    client, session, old_token = token_client
    assert client.get(WHOAMI_URL).status_code == 200  # cached: the old token is warm

    response = client.post(ROTATE_URL)

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"token", "session_id", "expire_at"}
    assert body["session_id"] == str(session.pk)
    assert body["token"] != old_token
    refused = assert_error_shape(client_for(old_token).get(WHOAMI_URL), 401)
    assert refused["code"] == "invalid_token"
    fresh = client_for(body["token"]).get(WHOAMI_URL)
    assert fresh.status_code == 200
    assert fresh.json()["session_id"] == str(session.pk)
    row = UserSession.objects.get(pk=session.pk)
    assert row.key == hashlib.sha256(body["token"].encode()).hexdigest()
    assert (row.created_at, row.expire_at, row.is_active) == (
        session.created_at,
        session.expire_at,
        True,
    )


def test_rotate_sends_session_rotated_and_never_logs_a_token(token_client, capture_signal, caplog):
    from nilva_session.signals import session_rotated

    client, session, old_token = token_client
    rotated = capture_signal(session_rotated)
    with caplog.at_level("DEBUG"):
        new_token = client.post(ROTATE_URL).json()["token"]
    assert [r["session"].pk for r in rotated] == [session.pk]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert old_token not in logged
    assert new_token not in logged


def test_rotate_with_a_jwt_is_400_rotation_not_supported(user, api_client):
    data = api_client.post(
        TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json"
    ).json()
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {data['access']}")
    before = list(UserSession.objects.values())

    response = client.post(ROTATE_URL)

    assert assert_error_shape(response, 400)["code"] == "rotation_not_supported"
    assert list(UserSession.objects.values()) == before


def test_rotate_without_credentials_is_401(db, api_client):
    assert api_client.post(ROTATE_URL).status_code == 401


def test_rotate_twice_with_one_token_the_second_is_refused(token_client):
    client, session, _old_token = token_client
    assert client.post(ROTATE_URL).status_code == 200
    assert assert_error_shape(client.post(ROTATE_URL), 401)["code"] == "invalid_token"
    assert UserSession.objects.filter(user=session.user).count() == 1


def test_rotate_does_not_end_or_touch_other_sessions(user, token_client, open_session):
    client, _session, _token = token_client
    other, other_token = open_session(user)
    client.post(ROTATE_URL)
    assert client_for(other_token).get(WHOAMI_URL).status_code == 200
    assert UserSession.objects.get(pk=other.pk).key == other.key


def test_reauthenticate_rotates_the_token_when_configured(token_client, settings):
    client, _session, old_token = token_client
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "ROTATE_TOKEN_ON_REAUTHENTICATION": True}

    response = client.post(REAUTHENTICATE_URL, {"password": PASSWORD}, format="json")

    assert response.status_code == 200, response.content
    new_token = response.json()["token"]
    assert client_for(old_token).get(WHOAMI_URL).status_code == 401
    assert client_for(new_token).get(WHOAMI_URL).status_code == 200


def test_reauthenticate_keeps_the_token_by_default(token_client):
    client, _session, old_token = token_client
    response = client.post(REAUTHENTICATE_URL, {"password": PASSWORD}, format="json")
    assert response.status_code == 200
    assert "token" not in response.json()
    assert client_for(old_token).get(WHOAMI_URL).status_code == 200


def test_reauthenticate_with_a_wrong_password_never_rotates(token_client, settings):
    client, session, _old_token = token_client
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "ROTATE_TOKEN_ON_REAUTHENTICATION": True}
    response = client.post(REAUTHENTICATE_URL, {"password": "wrong"}, format="json")
    assert response.status_code == 400
    assert UserSession.objects.get(pk=session.pk).key == session.key


def test_rotate_needs_a_recent_password_proof(token_client, clock):
    client, _session, token = token_client
    clock.advance(minutes=16)  # past REAUTHENTICATION_MAX_AGE (15 min) since the login

    refused = client.post(ROTATE_URL)

    assert assert_error_shape(refused, 403)["code"] == "reauthentication_required"
    assert client_for(token).get(WHOAMI_URL).status_code == 200  # nothing rotated
    assert client.post(REAUTHENTICATE_URL, {"password": PASSWORD}, format="json").status_code == 200
    assert client.post(ROTATE_URL).status_code == 200
