"""Sessions follow their users: a changed user is re-read, a deactivated or deleted one refused."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import update_last_login
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from nilva_session import cache, sessions
from nilva_session.models import EndReason, UserSession
from nilva_session.signals import session_revoked
from tests.conftest import DESKTOP_UA

pytestmark = pytest.mark.django_db


def whoami(client):
    """Return ``(status_code, number_of_queries)`` of one authenticated request."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/api/whoami/")
    return response.status_code, len(captured.captured_queries)


@pytest.fixture
def warm_client(token_client):
    """``token_client`` whose session is in the cache (a request costs no query)."""
    client, session, token = token_client
    whoami(client)
    assert whoami(client) == (200, 0)
    return client, session, token


def test_changing_the_user_makes_the_next_request_reread(warm_client, user):
    client, session, _ = warm_client
    user.email = "alice@new.example.com"
    user.save()
    assert cache.get_store().get(UserSession.get_cache_key(session.key)) == cache.TOMBSTONE
    status, queries = whoami(client)
    assert status == 200
    assert queries == 1


def test_reread_user_carries_the_change(warm_client, user):
    client, _, _ = warm_client
    user.username = "alice2"
    user.save()
    assert client.get("/api/whoami/").json()["user"] == "alice2"


def test_saving_with_update_fields_other_than_last_login_bars_the_cache(warm_client, user):
    client, _, _ = warm_client
    user.first_name = "Alice"
    user.save(update_fields=["first_name"])
    assert whoami(client) == (200, 1)


def test_last_login_only_save_keeps_the_cache(warm_client, user):
    client, _, _ = warm_client
    user.save(update_fields=["last_login"])
    assert whoami(client) == (200, 0)


def test_update_last_login_signal_keeps_the_cache(warm_client, user):
    client, _, _ = warm_client
    update_last_login(None, user)
    assert whoami(client) == (200, 0)


def test_changing_another_user_keeps_the_cache(warm_client, other_user):
    client, _, _ = warm_client
    other_user.email = "bob@new.example.com"
    other_user.save()
    assert whoami(client) == (200, 0)


def test_creating_a_user_touches_no_session(warm_client):
    client, _, _ = warm_client
    get_user_model().objects.create_user("carol", "carol@example.com", "pw")
    assert whoami(client) == (200, 0)


def test_changing_the_user_does_not_end_sessions(warm_client, user):
    _, session, _ = warm_client
    user.email = "alice@new.example.com"
    user.save()
    session.refresh_from_db()
    assert session.is_active
    assert session.end_reason == ""


def test_deactivating_the_user_revokes_their_sessions(user, other_user, open_session):
    first, _ = open_session(user)
    second, _ = open_session(user)
    theirs, _ = open_session(other_user)
    user.is_active = False
    user.save()
    for session in (first, second):
        session.refresh_from_db()
        assert not session.is_active
        assert session.end_reason == EndReason.USER_DEACTIVATED
        assert session.ended_at is not None
    theirs.refresh_from_db()
    assert theirs.is_active


def test_deactivating_the_user_refuses_a_warm_cached_token(warm_client, user):
    client, _, _ = warm_client
    user.is_active = False
    user.save()
    response = client.get("/api/whoami/")
    assert response.status_code == 401


def test_deactivation_through_update_fields_is_caught(warm_client, user):
    client, session, _ = warm_client
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert client.get("/api/whoami/").status_code == 401
    session.refresh_from_db()
    assert session.end_reason == EndReason.USER_DEACTIVATED


def test_deactivation_sends_session_revoked(user, open_session):
    session, _ = open_session(user)
    received = []

    def listener(**kwargs):
        received.append(kwargs)

    session_revoked.connect(listener)
    try:
        user.is_active = False
        user.save()
    finally:
        session_revoked.disconnect(listener)
    assert len(received) == 1
    assert received[0]["session_ids"] == [session.pk]
    assert received[0]["reason"] == EndReason.USER_DEACTIVATED


def test_saving_an_inactive_user_again_changes_nothing(user, open_session):
    session, _ = open_session(user)
    user.is_active = False
    user.save()
    session.refresh_from_db()
    ended_at = session.ended_at
    user.email = "x@example.com"
    user.save()
    session.refresh_from_db()
    assert session.ended_at == ended_at
    assert session.end_reason == EndReason.USER_DEACTIVATED


def test_reactivating_the_user_does_not_revive_sessions(warm_client, user):
    client, _, _ = warm_client
    user.is_active = False
    user.save()
    user.is_active = True
    user.save()
    assert client.get("/api/whoami/").status_code == 401


def test_deleting_the_user_refuses_a_warm_cached_token(warm_client, user):
    client, session, _ = warm_client
    user.delete()
    assert not UserSession.objects.filter(pk=session.pk).exists()
    assert client.get("/api/whoami/").status_code == 401


def test_deleting_users_through_a_queryset_refuses_a_warm_cached_token(warm_client, user):
    client, _, _ = warm_client
    get_user_model().objects.filter(pk=user.pk).delete()
    assert client.get("/api/whoami/").status_code == 401


def test_deleting_the_user_bars_both_cache_keys(warm_client, user):
    _, session, _ = warm_client
    user.delete()
    store = cache.get_store()
    assert store.get(UserSession.get_cache_key(session.key)) == cache.TOMBSTONE
    assert store.get(UserSession.get_cache_key_by_session_id(session.pk)) == cache.TOMBSTONE


def test_deleting_the_user_does_not_touch_other_users(warm_client, user, other_user, open_session):
    _, theirs_token = open_session(other_user)
    other_client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")
    other_client.credentials(HTTP_AUTHORIZATION=f"Token {theirs_token}")
    whoami(other_client)
    user.delete()
    assert whoami(other_client) == (200, 0)


# --- password changes -----------------------------------------------------------------------------


def test_password_change_ends_every_session_of_the_user(
    warm_client, user, other_user, open_session
):
    client, session, _ = warm_client
    second, _ = open_session(user)
    theirs, _ = open_session(other_user)
    user.set_password("a new password")
    user.save()
    assert client.get("/api/whoami/").status_code == 401
    for mine in (session, second):
        mine.refresh_from_db()
        assert not mine.is_active
        assert mine.end_reason == EndReason.PASSWORD_CHANGED
    theirs.refresh_from_db()
    assert theirs.is_active


def test_password_change_on_a_freshly_loaded_user(warm_client, user):
    client, session, _ = warm_client
    loaded = get_user_model().objects.get(pk=user.pk)
    loaded.set_password("another password")
    loaded.save(update_fields=["password"])
    assert client.get("/api/whoami/").status_code == 401
    session.refresh_from_db()
    assert session.end_reason == EndReason.PASSWORD_CHANGED


def test_keep_session_survives_the_password_change(warm_client, user, open_session):
    client, kept, _ = warm_client
    other, _ = open_session(user)
    sessions.keep_session(user, kept)
    user.set_password("a new password")
    user.save()
    assert client.get("/api/whoami/").status_code == 200
    kept.refresh_from_db()
    other.refresh_from_db()
    assert kept.is_active
    assert other.end_reason == EndReason.PASSWORD_CHANGED


def test_password_change_keeps_sessions_when_turned_off(warm_client, user, settings):
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "END_SESSIONS_ON_PASSWORD_CHANGE": False}
    client, session, _ = warm_client
    user.set_password("a new password")
    user.save()
    session.refresh_from_db()
    assert session.is_active
    assert whoami(client) == (200, 1)  # still re-read: the user row changed


def test_unsaved_password_change_ends_nothing(warm_client, user):
    client, session, _ = warm_client
    user.set_password("not saved")
    user.email = "alice@other.example.com"
    user.save(update_fields=["email"])
    session.refresh_from_db()
    assert session.is_active
    assert client.get("/api/whoami/").status_code == 200


def test_saving_the_same_password_hash_ends_nothing(warm_client, user):
    client, session, _ = warm_client
    loaded = get_user_model().objects.get(pk=user.pk)
    loaded.first_name = "Alice"
    loaded.save()
    session.refresh_from_db()
    assert session.is_active
    assert client.get("/api/whoami/").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("replace", ["unusable", "foreign_hasher"])
def test_replacing_an_outdated_hash_is_a_change_not_a_login_upgrade(
    user, open_session, replace, settings
):
    from django.contrib.auth.hashers import MD5PasswordHasher, PBKDF2PasswordHasher

    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
    outdated = PBKDF2PasswordHasher().encode("old password", "saltsalt", iterations=1000)
    type(user).objects.filter(pk=user.pk).update(password=outdated)
    user.refresh_from_db()
    session, _ = open_session(user)
    if replace == "unusable":
        user.set_unusable_password()
    else:
        user.password = MD5PasswordHasher().encode("new password", "saltsalt")
    user.save(update_fields=["password"])
    assert UserSession.objects.get(pk=session.pk).end_reason == EndReason.PASSWORD_CHANGED
