"""Migrations: in step with the models, and 0001 is the published 0.1.x schema."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from nilva_session.models import UserSession
from nilva_session.utils import hash_data
from tests.conftest import DESKTOP_UA

APP = "nilva_session"
INITIAL = (APP, "0001_initial")
TABLE = "user_session"
COLUMNS_0_1_X = {
    "id",
    "key",
    "expire_at",
    "is_active",
    "last_online",
    "last_ip",
    "user_agent",
    "detail",
    "created_at",
    "user_id",
}
COLUMNS_ADDED = {
    "authenticated_at",
    "ended_at",
    "end_reason",
    "refresh_generation",
    "refreshed_at",
    "device_digest",
}
INDEXES_ADDED = {
    "user_session_user_active",
    "user_session_expire_at",
    "user_session_ended_at",
}


def latest():
    return MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes(APP)


def migrate_to(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def columns():
    with connection.cursor() as cursor:
        return {
            info.name: info
            for info in connection.introspection.get_table_description(cursor, TABLE)
        }


def constraints():
    with connection.cursor() as cursor:
        return connection.introspection.get_constraints(cursor, TABLE)


@pytest.fixture
def at_initial():
    """Migrate nilva_session back to 0001; always return to the latest migration afterwards."""
    try:
        migrate_to([INITIAL])
        yield
    finally:
        migrate_to(latest())


# --- in step with the models ----------------------------------------------------------------------


@pytest.mark.django_db
def test_models_and_migrations_are_in_step():
    out = StringIO()
    call_command("makemigrations", APP, "--check", "--dry-run", stdout=out, stderr=StringIO())
    assert "No changes detected" in out.getvalue()


def test_migration_chain_starts_with_0001_initial():
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    roots = list(graph.root_nodes(APP))
    assert roots == [INITIAL]
    plan = graph.forwards_plan(latest()[0])
    assert [name for app, name in plan if app == APP][:3] == [
        "0001_initial",
        "0002_digest_keys_and_audit_fields",
        "0003_hash_legacy_keys",
    ]


def test_0001_declares_the_0_1_x_model():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    state = loader.project_state(INITIAL)
    model = state.models[APP, "usersession"]
    assert model.options["db_table"] == TABLE
    assert set(model.fields) == (COLUMNS_0_1_X - {"user_id"}) | {"user"}
    assert model.fields["key"].max_length == 64
    assert model.fields["key"].unique
    assert not model.fields["last_ip"].null
    assert model.fields["last_ip"].unpack_ipv4
    assert not model.fields["user_agent"].null
    assert model.fields["detail"].null
    assert model.fields["expire_at"].null
    assert model.fields["user"].remote_field.related_name == "sessions"


# --- the database schema --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_0001_creates_exactly_the_0_1_x_columns(at_initial):
    described = columns()
    assert set(described) == COLUMNS_0_1_X


@pytest.mark.django_db(transaction=True)
def test_0001_last_ip_and_user_agent_are_not_null(at_initial):
    described = columns()
    assert described["last_ip"].null_ok is False
    assert described["user_agent"].null_ok is False
    assert described["detail"].null_ok is True
    assert described["expire_at"].null_ok is True


@pytest.mark.django_db(transaction=True)
def test_0001_key_is_unique_and_id_is_the_primary_key(at_initial):
    found = constraints()
    assert any(c["unique"] and c["columns"] == ["key"] for c in found.values())
    assert any(c["primary_key"] and c["columns"] == ["id"] for c in found.values())
    assert not INDEXES_ADDED & set(found)


@pytest.mark.django_db(transaction=True)
def test_0001_has_a_foreign_key_to_the_user_table(at_initial):
    from django.contrib.auth import get_user_model

    user_table = get_user_model()._meta.db_table
    found = constraints()
    assert any(
        c["foreign_key"] and c["foreign_key"][0] == user_table and c["columns"] == ["user_id"]
        for c in found.values()
    )


@pytest.mark.django_db(transaction=True)
def test_forward_to_latest_adds_columns_and_indexes():
    try:
        migrate_to([INITIAL])
        migrate_to(latest())
        described = columns()
        assert set(described) == COLUMNS_0_1_X | COLUMNS_ADDED
        assert described["last_ip"].null_ok is True
        assert described["user_agent"].null_ok is False
        assert described["authenticated_at"].null_ok is True
        assert described["ended_at"].null_ok is True
        found = constraints()
        assert set(found) >= INDEXES_ADDED
        assert found["user_session_user_active"]["columns"] == ["user_id", "is_active"]
        assert found["user_session_expire_at"]["columns"] == ["expire_at"]
        assert found["user_session_ended_at"]["columns"] == ["ended_at"]
        assert described["refresh_generation"].null_ok is False
    finally:
        migrate_to(latest())


@pytest.mark.django_db(transaction=True)
def test_latest_schema_matches_the_model():
    described = columns()
    assert set(described) == {f.column for f in UserSession._meta.concrete_fields}


def create_0_1_x_row(user, **fields):
    """Write a row as nilva-session 0.1.x did, through the 0001 model state."""
    old_model = (
        MigrationLoader(None, ignore_no_migrations=True)
        .project_state(INITIAL)
        .apps.get_model(APP, "UserSession")
    )
    values = {
        "user_id": user.pk,
        "last_ip": "203.0.113.7",
        "user_agent": DESKTOP_UA,
        "detail": None,
    }
    values.update(fields)
    return old_model.objects.create(**values).pk


@pytest.fixture
def legacy_user(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("legacy", password="pw")


@pytest.mark.django_db(transaction=True)
def test_a_0_1_x_row_survives_the_upgrade(legacy_user):
    expire_at = timezone.now() + timedelta(hours=5)
    try:
        migrate_to([INITIAL])
        session_id = create_0_1_x_row(legacy_user, key="k" * 64, expire_at=expire_at, detail="note")
        migrate_to(latest())
        session = UserSession.objects.get(pk=session_id)
        assert session.user_id == legacy_user.pk
        assert session.is_active
        assert session.last_ip == "203.0.113.7"
        assert session.user_agent == DESKTOP_UA
        assert session.expire_at == expire_at
        assert session.detail == "note"
        assert session.end_reason == ""
        assert session.ended_at is None
        assert session.authenticated_at is None
    finally:
        migrate_to(latest())


@pytest.mark.django_db(transaction=True)
def test_upgrade_replaces_plain_text_keys_by_their_digest(legacy_user):
    plain = "abc123" * 9  # 54 characters of a-z0-9, as 0.1.x generated
    already = hash_data("a token issued after the upgrade")
    try:
        migrate_to([INITIAL])
        plain_id = create_0_1_x_row(legacy_user, key=plain)
        digest_id = create_0_1_x_row(legacy_user, key=already)
        migrate_to(latest())
        assert (
            UserSession.objects.get(pk=plain_id).key == hashlib.sha256(plain.encode()).hexdigest()
        )
        assert UserSession.objects.get(pk=digest_id).key == already
        assert not UserSession.objects.filter(key=plain).exists()
    finally:
        migrate_to(latest())


@pytest.mark.django_db(transaction=True)
def test_upgrade_gives_sessions_without_expiry_the_configured_lifetime(legacy_user):
    try:
        migrate_to([INITIAL])
        session_id = create_0_1_x_row(legacy_user, key="n" * 50, expire_at=None)
        before = timezone.now()
        with override_settings(NILVA_SESSION={"EXPIRE_AT": timedelta(hours=2)}):
            migrate_to(latest())
        expire_at = UserSession.objects.get(pk=session_id).expire_at
        assert before + timedelta(hours=2) <= expire_at <= timezone.now() + timedelta(hours=2)
    finally:
        migrate_to(latest())


@pytest.mark.django_db(transaction=True)
def test_upgrade_keeps_null_expiry_when_sessions_never_expire(legacy_user):
    try:
        migrate_to([INITIAL])
        session_id = create_0_1_x_row(legacy_user, key="m" * 50, expire_at=None)
        with override_settings(NILVA_SESSION={"EXPIRE_AT": None}):
            migrate_to(latest())
        assert UserSession.objects.get(pk=session_id).expire_at is None
    finally:
        migrate_to(latest())


@pytest.mark.django_db(transaction=True)
def test_upgrade_is_safe_to_run_twice(legacy_user):
    plain = "z9" * 30
    try:
        migrate_to([INITIAL])
        session_id = create_0_1_x_row(legacy_user, key=plain)
        migrate_to(latest())
        migrate_to([INITIAL])  # backwards: the data step is a no-op
        migrate_to(latest())
        assert (
            UserSession.objects.get(pk=session_id).key == hashlib.sha256(plain.encode()).hexdigest()
        )
    finally:
        migrate_to(latest())


@pytest.mark.django_db(transaction=True)
def test_a_0_1_x_token_still_authenticates_after_the_upgrade(legacy_user):
    token = "q1w2e3r4t5" * 5  # the shape 0.1.x handed out: 50 characters of a-z0-9
    try:
        migrate_to([INITIAL])
        create_0_1_x_row(legacy_user, key=token, expire_at=timezone.now() + timedelta(days=1))
        migrate_to(latest())
    finally:
        migrate_to(latest())
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.get("/api/whoami/")
    assert response.status_code == 200
    assert response.json()["user"] == "legacy"


@pytest.mark.django_db(transaction=True)
def test_after_the_migration_tests_the_schema_is_latest():
    # Guards the fixtures above: they must leave the latest schema behind.
    executor = MigrationExecutor(connection)
    applied = {key for key in executor.loader.applied_migrations if key[0] == APP}
    assert set(latest()) <= applied
    assert set(columns()) >= COLUMNS_ADDED
