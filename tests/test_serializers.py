"""SessionSerializer (the listing contract) and LoginSerializer, used directly."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import user_logged_in
from django.test import RequestFactory, override_settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from nilva_session.models import UserSession
from nilva_session.serializers import LoginSerializer, SessionSerializer
from nilva_session.utils import hash_data, is_well_formed_token

from .conftest import DESKTOP_UA, IPHONE_UA, PASSWORD

CONTRACT_FIELDS = {
    "session_id",
    "user_id",
    "user_agent_data",
    "last_online",
    "last_ip",
    "created_at",
}


@pytest.fixture
def login_request():
    """A plain HttpRequest as a login view would pass in the serializer context."""
    return RequestFactory().post(
        "/api/sessions/login/", HTTP_USER_AGENT=IPHONE_UA, REMOTE_ADDR="198.51.100.20"
    )


def login_serializer(data, request):
    return LoginSerializer(data=data, context={"request": request})


# --------------------------------------------------------------------------------------------
# SessionSerializer
# --------------------------------------------------------------------------------------------


def test_session_serializer_has_the_contract_fields_and_more(user, open_session):
    session, _ = open_session(user)

    data = SessionSerializer(session).data

    assert set(data) >= CONTRACT_FIELDS
    assert set(data) == CONTRACT_FIELDS | {
        "expire_at",
        "is_current",
        "is_active",
        "ended_at",
        "end_reason",
    }


def test_session_serializer_values(user, open_session):
    session, _ = open_session(user, ua=IPHONE_UA, ip="198.51.100.20")
    session.refresh_from_db()

    data = SessionSerializer(session).data

    assert data["session_id"] == str(session.pk)
    assert data["user_id"] == user.pk
    assert data["last_ip"] == "198.51.100.20"
    assert parse_datetime(data["created_at"]) == session.created_at
    assert parse_datetime(data["last_online"]) == session.last_online
    assert parse_datetime(data["expire_at"]) == session.expire_at


def test_session_serializer_describes_the_user_agent(user, open_session):
    session, _ = open_session(user, ua=IPHONE_UA)

    agent = SessionSerializer(session).data["user_agent_data"]

    assert {
        "os",
        "device_brand",
        "device_model",
        "device_family",
        "browser",
        "is_mobile",
        "is_tablet",
    } <= set(agent)
    assert agent["os"] == "iOS"
    assert agent["device_family"] == "iPhone"
    assert agent["device_brand"] == "Apple"
    assert agent["is_mobile"] is True
    assert agent["is_tablet"] is False


def test_session_serializer_describes_an_empty_user_agent(user, open_session):
    session, _ = open_session(user, ua="")

    agent = SessionSerializer(session).data["user_agent_data"]

    assert agent["is_mobile"] is False
    assert agent["is_tablet"] is False
    assert isinstance(agent["os"], str)


def test_session_serializer_is_current_only_for_the_named_session(user, open_session):
    current, _ = open_session(user)
    other, _ = open_session(user)
    context = {"current_session_id": current.pk}

    assert SessionSerializer(current, context=context).data["is_current"] is True
    assert SessionSerializer(other, context=context).data["is_current"] is False


def test_session_serializer_is_current_false_without_context(user, open_session):
    session, _ = open_session(user)

    assert SessionSerializer(session).data["is_current"] is False


def test_session_serializer_is_current_false_for_a_none_current_id(user, open_session):
    session, _ = open_session(user)

    assert (
        SessionSerializer(session, context={"current_session_id": None}).data["is_current"] is False
    )


def test_session_serializer_never_includes_the_key(user, open_session):
    session, token = open_session(user)

    data = SessionSerializer(session).data
    text = repr(dict(data))

    assert "key" not in data
    assert session.key not in text
    assert token not in text


def test_session_serializer_expire_at_none(user, open_session):
    with override_settings(NILVA_SESSION={"EXPIRE_AT": None, "LOGIN_THROTTLE_RATE": None}):
        session, _ = open_session(user)

    assert SessionSerializer(session).data["expire_at"] is None


def test_session_serializer_many(user, open_session):
    sessions = [open_session(user, ua=ua)[0] for ua in (DESKTOP_UA, IPHONE_UA)]

    data = SessionSerializer(
        sessions, many=True, context={"current_session_id": sessions[1].pk}
    ).data

    assert [row["session_id"] for row in data] == [str(s.pk) for s in sessions]
    assert [row["is_current"] for row in data] == [False, True]


def test_session_serializer_is_read_only(user, open_session):
    session, _ = open_session(user)
    serializer = SessionSerializer(
        session,
        data={
            "session_id": str(uuid.uuid4()),
            "user_id": 999,
            "last_ip": "10.0.0.1",
            "is_current": True,
        },
        partial=True,
    )

    assert serializer.is_valid()
    assert serializer.validated_data == {}


def test_session_serializer_user_id_follows_a_non_integer_pk(monkeypatch, user, open_session):
    session, _ = open_session(user)
    target = UserSession._meta.get_field("user").target_field
    monkeypatch.setattr(target, "get_internal_type", lambda: "UUIDField")

    fields = SessionSerializer(session).get_fields()

    assert isinstance(fields["user_id"], serializers.CharField)


# --------------------------------------------------------------------------------------------
# LoginSerializer
# --------------------------------------------------------------------------------------------


def test_login_serializer_valid_credentials_open_a_session(user, login_request):
    serializer = login_serializer({"username": "alice", "password": PASSWORD}, login_request)

    assert serializer.is_valid(), serializer.errors
    serializer.save()
    data = serializer.data

    assert set(data) == {"token", "session_id", "expire_at"}
    session = UserSession.objects.get(pk=data["session_id"])
    assert session.user == user
    assert session.key == hash_data(data["token"])
    assert is_well_formed_token(data["token"])
    assert session.last_ip == "198.51.100.20"
    assert session.user_agent == IPHONE_UA
    assert parse_datetime(data["expire_at"]) == session.expire_at


def test_login_serializer_validation_alone_opens_no_session(user, login_request):
    serializer = login_serializer({"username": "alice", "password": PASSWORD}, login_request)

    assert serializer.is_valid()
    assert serializer.validated_data["user"] == user
    assert not UserSession.objects.exists()


def test_login_serializer_never_outputs_the_password(user, login_request):
    serializer = login_serializer({"username": "alice", "password": PASSWORD}, login_request)
    serializer.is_valid()
    serializer.save()

    assert PASSWORD not in repr(serializer.data)
    assert serializer.fields["password"].write_only


def test_login_serializer_sends_user_logged_in_on_save(user, login_request):
    calls = []

    def receiver(sender, **kwargs):
        calls.append(kwargs)

    user_logged_in.connect(receiver, weak=False)
    try:
        serializer = login_serializer({"username": "alice", "password": PASSWORD}, login_request)
        serializer.is_valid()
        assert calls == []
        serializer.save()
    finally:
        user_logged_in.disconnect(receiver)

    assert len(calls) == 1
    assert calls[0]["user"] == user
    assert calls[0]["request"] is login_request


def test_login_serializer_wrong_password_is_invalid_credentials(user, login_request):
    serializer = login_serializer({"username": "alice", "password": "nope"}, login_request)

    assert not serializer.is_valid()
    assert serializer.errors["non_field_errors"][0].code == "invalid_credentials"
    assert not UserSession.objects.exists()


@override_settings(
    AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.AllowAllUsersModelBackend"]
)
def test_login_serializer_refuses_an_inactive_user_even_if_the_backend_accepts_it(
    user, login_request
):
    user.is_active = False
    user.save()

    serializer = login_serializer({"username": "alice", "password": PASSWORD}, login_request)

    assert not serializer.is_valid()
    assert serializer.errors["non_field_errors"][0].code == "invalid_credentials"


def test_login_serializer_does_not_trim_whitespace(user, login_request):
    serializer = login_serializer({"username": "alice ", "password": PASSWORD}, login_request)

    assert not serializer.is_valid()
    assert serializer.errors["non_field_errors"][0].code == "invalid_credentials"


@pytest.mark.parametrize(
    ("data", "field", "code"),
    [
        ({"password": PASSWORD}, "username", "required"),
        ({"username": "alice"}, "password", "required"),
        ({"username": "a" * 255, "password": PASSWORD}, "username", "max_length"),
        ({"username": "alice", "password": "p" * 4097}, "password", "max_length"),
        (
            {"username": "al\x00ice", "password": PASSWORD},
            "username",
            "null_characters_not_allowed",
        ),
        ({"username": ["alice"], "password": PASSWORD}, "username", "invalid"),
        ({"username": "alice", "password": None}, "password", "null"),
    ],
    ids=["no-username", "no-password", "long-username", "long-password", "nul", "list", "null"],
)
def test_login_serializer_field_errors(user, login_request, data, field, code):
    serializer = login_serializer(data, login_request)

    assert not serializer.is_valid()
    assert serializer.errors[field][0].code == code
    assert not UserSession.objects.exists()


def test_login_serializer_maximum_lengths_pass_field_validation(user, login_request):
    serializer = login_serializer({"username": "a" * 254, "password": "p" * 4096}, login_request)

    assert not serializer.is_valid()
    assert set(serializer.errors) == {"non_field_errors"}


def test_login_serializer_expire_at_none_when_sessions_never_expire(user, login_request):
    with override_settings(NILVA_SESSION={"EXPIRE_AT": None, "LOGIN_THROTTLE_RATE": None}):
        serializer = login_serializer({"username": "alice", "password": PASSWORD}, login_request)
        serializer.is_valid()
        serializer.save()

    assert serializer.data["expire_at"] is None
    assert UserSession.objects.get(pk=serializer.data["session_id"]).expire_at is None


def test_login_serializer_expire_at_follows_the_setting(user, login_request):
    with override_settings(
        NILVA_SESSION={"EXPIRE_AT": timedelta(hours=2), "LOGIN_THROTTLE_RATE": None}
    ):
        before = timezone.now()
        serializer = login_serializer({"username": "alice", "password": PASSWORD}, login_request)
        serializer.is_valid()
        serializer.save()
        after = timezone.now()

    expire_at = parse_datetime(serializer.data["expire_at"])
    assert before + timedelta(hours=2) <= expire_at <= after + timedelta(hours=2)
