"""Upgrade in place from nilva-session 0.1.x (runs on SQLite and, in CI, on PostgreSQL).

Builds the 0.1.x state the way 0.1.x wrote it — schema 0001, plain-text 50-character keys,
naive local datetimes, NULL expiry, pickled model instances in the cache under the old keys —
then migrates to the latest migration and checks that old credentials keep working.
"""

from __future__ import annotations

import pickle
import random
import string
import uuid
from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from nilva_session.models import UserSession
from nilva_session.utils import hash_data

from .conftest import DESKTOP_UA, PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

APP = "nilva_session"


def _migrate(target: str | None) -> None:
    executor = MigrationExecutor(connection)
    if target is None:
        targets = [key for key in executor.loader.graph.leaf_nodes() if key[0] == APP]
    else:
        targets = [(APP, target)]
    executor.migrate(targets)


@pytest.fixture
def at_0001():
    """Schema of 0.1.x while the test body runs; always back at the latest afterwards."""
    _migrate("0001_initial")
    yield
    _migrate(None)


def legacy_token() -> str:
    # 0.1.x drew 50 characters of a-z0-9 with random.choices (not a CSPRNG).
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=50))


def insert_legacy_row(
    user_id, key: str, expire_at: str | None, is_active: bool = True
) -> uuid.UUID:
    """Insert a row with raw SQL as 0.1.x left it; datetimes are naive local-time strings."""
    session_id = uuid.uuid4()
    now = datetime.now().strftime("%Y-%m-%d %H:%M:%S")  # naive local time: 0.1.x did this
    id_value = session_id.hex if connection.vendor == "sqlite" else str(session_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO user_session (id, key, expire_at, is_active, last_online, last_ip, "
            "user_agent, detail, created_at, user_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                id_value,
                key,
                expire_at,
                is_active,
                now,
                "198.51.100.4",
                DESKTOP_UA,
                None,
                now,
                user_id,
            ],
        )
    return session_id


def naive_in(delta: timedelta) -> str:
    return (datetime.now() + delta).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def legacy_state(at_0001):
    """Rows and cache entries as 0.1.x left them; returns what the test needs to check."""
    users = get_user_model().objects
    alice = users.create_user("alice", "a@example.com", PASSWORD)
    bob = users.create_user("bob", "b@example.com", PASSWORD)
    state = {"alice": alice, "bob": bob, "tokens": {}}
    state["tokens"]["dated"] = legacy_token()
    state["tokens"]["null_expiry"] = legacy_token()
    state["tokens"]["expired"] = legacy_token()
    state["tokens"]["ended"] = legacy_token()
    state["tokens"]["bob"] = legacy_token()
    ids = state["ids"] = {}
    ids["dated"] = insert_legacy_row(
        alice.pk, state["tokens"]["dated"], naive_in(timedelta(days=3))
    )
    ids["null_expiry"] = insert_legacy_row(alice.pk, state["tokens"]["null_expiry"], None)
    ids["expired"] = insert_legacy_row(
        alice.pk, state["tokens"]["expired"], naive_in(-timedelta(hours=2))
    )
    ids["ended"] = insert_legacy_row(
        alice.pk, state["tokens"]["ended"], naive_in(timedelta(days=3)), is_active=False
    )
    ids["bob"] = insert_legacy_row(bob.pk, state["tokens"]["bob"], naive_in(timedelta(days=3)))
    return state


def pickle_like_0_1(session_id, token: str, user) -> bytes:
    """A pickled model instance, which is what 0.1.x cached."""
    instance = UserSession(
        id=session_id,
        user=user,
        key=token,
        expire_at=timezone.now() + timedelta(days=3),
        is_active=True,
        last_ip="198.51.100.4",
        user_agent=DESKTOP_UA,
    )
    return pickle.dumps(instance)


def client_with(header: str) -> APIClient:
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="198.51.100.4")
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


def test_migration_hashes_plain_text_keys_and_keeps_the_rest(legacy_state):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, key, expire_at, is_active, last_ip, user_agent FROM user_session"
        )
        before = {str(row[0]).replace("-", ""): row for row in cursor.fetchall()}
    _migrate(None)
    tokens, ids = legacy_state["tokens"], legacy_state["ids"]
    for name, token in tokens.items():
        row = UserSession.objects.get(pk=ids[name])
        assert row.key == hash_data(token), name
        old = before[ids[name].hex]
        assert (row.is_active, row.last_ip, row.user_agent) == (old[3], old[4], old[5]), name
        if name != "null_expiry":
            assert row.expire_at is not None
    assert not UserSession.objects.filter(key__in=list(tokens.values())).exists()


def test_null_expiry_gets_the_configured_lifetime_from_the_upgrade(legacy_state):
    started = timezone.now()
    with override_settings(NILVA_SESSION={"EXPIRE_AT": timedelta(days=2)}):
        _migrate(None)
    row = UserSession.objects.get(pk=legacy_state["ids"]["null_expiry"])
    assert started + timedelta(days=2) <= row.expire_at <= timezone.now() + timedelta(days=2)


def test_null_expiry_stays_null_when_the_project_wants_no_expiry(legacy_state):
    with override_settings(NILVA_SESSION={"EXPIRE_AT": None}):
        _migrate(None)
    assert UserSession.objects.get(pk=legacy_state["ids"]["null_expiry"]).expire_at is None


def test_migration_is_idempotent_on_digests(legacy_state):
    _migrate(None)
    digests = dict(UserSession.objects.values_list("pk", "key"))
    _migrate("0002_digest_keys_and_audit_fields")
    _migrate(None)
    assert dict(UserSession.objects.values_list("pk", "key")) == digests


def test_old_tokens_authenticate_after_upgrade(legacy_state):
    _migrate(None)
    tokens = legacy_state["tokens"]
    for name in ("dated", "null_expiry"):
        response = client_with(f"Token {tokens[name]}").get("/api/whoami/")
        assert response.status_code == 200, (name, response.content)
        assert response.json()["session_id"] == str(legacy_state["ids"][name])
    for name, code in (("expired", "session_expired"), ("ended", "session_ended")):
        response = client_with(f"Token {tokens[name]}").get("/api/whoami/")
        assert response.status_code == 401
        assert response.json()["code"] == code


def test_old_jwts_with_session_id_authenticate_after_upgrade(legacy_state):
    _migrate(None)
    refresh = RefreshToken.for_user(legacy_state["alice"])
    refresh["session_id"] = str(legacy_state["ids"]["dated"])
    response = client_with(f"Bearer {refresh.access_token}").get("/api/whoami/")
    assert response.status_code == 200, response.content
    assert response.json()["session_id"] == str(legacy_state["ids"]["dated"])


def test_revocation_works_on_upgraded_sessions(legacy_state):
    _migrate(None)
    tokens, ids = legacy_state["tokens"], legacy_state["ids"]
    keep = client_with(f"Token {tokens['dated']}")
    assert keep.get("/api/whoami/").status_code == 200  # warm the cache
    other = client_with(f"Token {tokens['null_expiry']}")
    response = other.delete(f"/api/sessions/active/?token_id={ids['dated']}")
    assert response.status_code == 204
    refused = keep.get("/api/whoami/")
    assert refused.status_code == 401
    assert refused.json()["code"] == "session_ended"
    assert client_with(f"Token {tokens['bob']}").get("/api/whoami/").status_code == 200


def test_get_active_shows_only_the_users_own_sessions_after_upgrade(legacy_state):
    _migrate(None)
    response = client_with(f"Token {legacy_state['tokens']['dated']}").get("/api/sessions/active/")
    listed = {item["session_id"] for item in response.json()}
    assert listed == {str(legacy_state["ids"]["dated"]), str(legacy_state["ids"]["null_expiry"])}


@pytest.mark.parametrize(
    "legacy_settings",
    [
        {},
        # A project that kept the 0.1.x prefixes in USER_SESSION.
        {"SESSION_CACHE_PREFIX": "user_session:", "SESSION_ID_CACHE_PREFIX": "user_session_by_id:"},
    ],
)
def test_pickled_0_1_cache_entries_never_authenticate(legacy_state, legacy_settings):
    _migrate(None)
    alice = legacy_state["alice"]
    tokens, ids = legacy_state["tokens"], legacy_state["ids"]
    # The ended session still has a live-looking pickled copy under every key 0.1.x used,
    # and under the keys nilva-session uses now.
    stale = pickle_like_0_1(ids["ended"], tokens["ended"], alice)
    with override_settings(USER_SESSION=legacy_settings):
        from nilva_session import cache as session_cache

        for key in (
            f"user_session:{tokens['ended']}",
            f"user_session_by_id:{ids['ended']}",
            session_cache.token_key(hash_data(tokens["ended"])),
            session_cache.session_key(ids["ended"]),
        ):
            cache.set(key, pickle.loads(stale), 900)  # noqa: S301 (our own bytes, as 0.1.x cached)
        response = client_with(f"Token {tokens['ended']}").get("/api/whoami/")
        assert response.status_code == 401
        assert response.json()["code"] == "session_ended"
        refresh = RefreshToken.for_user(alice)
        refresh["session_id"] = str(ids["ended"])
        response = client_with(f"Bearer {refresh.access_token}").get("/api/whoami/")
        assert response.status_code == 401


def test_legacy_tokens_can_be_turned_off(legacy_state):
    _migrate(None)
    token = legacy_state["tokens"]["dated"]
    with override_settings(NILVA_SESSION={"ACCEPT_LEGACY_TOKENS": False}):
        response = client_with(f"Token {token}").get("/api/whoami/")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
    assert client_with(f"Token {token}").get("/api/whoami/").status_code == 200
