"""The ``nilva_session_cleanup`` management command."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from nilva_session import utils
from nilva_session.models import EndReason, UserSession
from tests.conftest import DESKTOP_UA

pytestmark = pytest.mark.django_db


def make_session(
    user, *, expire_in=timedelta(days=1), ended_ago=None, last_online_ago=None, ended_at_null=False
):
    """Create a session; ``ended_ago`` ends it that long ago (``ended_at_null`` as 0.1.x did)."""
    now = timezone.now()
    session = UserSession.objects.create(
        user=user,
        key=utils.hash_data(utils.token_generator()),
        user_agent=DESKTOP_UA,
        expire_at=None if expire_in is None else now + expire_in,
    )
    changes = {}
    if ended_ago is not None:
        changes.update(
            is_active=False,
            end_reason=EndReason.LOGOUT,
            ended_at=None if ended_at_null else now - ended_ago,
        )
    if last_online_ago is not None:
        changes["last_online"] = now - last_online_ago
    if changes:
        UserSession.objects.filter(pk=session.pk).update(**changes)
    return session


def run(*args):
    out = StringIO()
    call_command("nilva_session_cleanup", *args, stdout=out)
    return out.getvalue()


def remaining():
    return set(UserSession.objects.values_list("pk", flat=True))


@pytest.fixture
def population(user):
    """Sessions the default retention (30 days) keeps, and ones it deletes."""
    keep = {
        "active": make_session(user),
        "active_forever": make_session(user, expire_in=None),
        "ended_recently": make_session(user, ended_ago=timedelta(days=1)),
        "ended_29_days_ago": make_session(user, ended_ago=timedelta(days=29)),
        "legacy_ended_recently": make_session(
            user, ended_ago=timedelta(0), ended_at_null=True, last_online_ago=timedelta(days=2)
        ),
    }
    delete = {
        "expired": make_session(user, expire_in=-timedelta(minutes=1)),
        "expired_long_ago": make_session(user, expire_in=-timedelta(days=90)),
        "ended_long_ago": make_session(user, ended_ago=timedelta(days=31)),
        "legacy_ended_long_ago": make_session(
            user, ended_ago=timedelta(0), ended_at_null=True, last_online_ago=timedelta(days=40)
        ),
    }
    return keep, delete


def pks(sessions):
    return {s.pk for s in sessions.values()}


def test_deletes_expired_and_old_ended_sessions_only(population):
    keep, _ = population
    run()
    assert remaining() == pks(keep)


def test_reports_the_number_deleted(population):
    _, delete = population
    output = run()
    assert re.search(rf"Deleted {len(delete)} sessions in 1 batches", output)


def test_nothing_to_delete(user):
    session = make_session(user)
    output = run()
    assert "Deleted 0 sessions in 0 batches" in output
    assert remaining() == {session.pk}


def test_dry_run_deletes_nothing_and_prints_the_count(population):
    keep, delete = population
    output = run("--dry-run")
    assert f"Would delete {len(delete)} sessions" in output
    assert remaining() == pks(keep) | pks(delete)


def test_retention_days_option(population):
    keep, _ = population
    run("--retention-days", "7")
    # Ended 29 days ago is now past retention; ended yesterday is not.
    assert remaining() == pks(keep) - {keep["ended_29_days_ago"].pk}


def test_retention_days_zero_deletes_every_ended_session(population):
    keep, _ = population
    run("--retention-days=0")
    assert remaining() == {keep["active"].pk, keep["active_forever"].pk}


def test_retention_days_accepts_fractions(user):
    twelve_hours = make_session(user, ended_ago=timedelta(hours=12))
    two_hours = make_session(user, ended_ago=timedelta(hours=2))
    run("--retention-days", "0.25")
    assert remaining() == {two_hours.pk}
    assert twelve_hours.pk not in remaining()


def test_revoked_retention_setting_is_used(population):
    keep, _ = population
    with override_settings(NILVA_SESSION={"REVOKED_RETENTION": timedelta(days=10)}):
        run()
    assert remaining() == pks(keep) - {keep["ended_29_days_ago"].pk}


def test_revoked_retention_in_seconds(user):
    old = make_session(user, ended_ago=timedelta(hours=2))
    new = make_session(user, ended_ago=timedelta(minutes=10))
    with override_settings(NILVA_SESSION={"REVOKED_RETENTION": 3600}):
        run()
    assert remaining() == {new.pk}
    assert old.pk not in remaining()


def test_retention_option_wins_over_setting(population):
    keep, _ = population
    with override_settings(NILVA_SESSION={"REVOKED_RETENTION": timedelta(days=1000)}):
        run("--retention-days", "30")
    assert remaining() == pks(keep)


def test_batches(user):
    for _ in range(7):
        make_session(user, expire_in=-timedelta(hours=1))
    kept = make_session(user)
    output = run("--batch-size", "3")
    assert "Deleted 7 sessions in 3 batches" in output
    assert remaining() == {kept.pk}


def test_batch_size_of_exact_multiple(user):
    for _ in range(6):
        make_session(user, expire_in=-timedelta(hours=1))
    assert "Deleted 6 sessions in 2 batches" in run("--batch-size=3")


def test_batch_size_one(user):
    for _ in range(3):
        make_session(user, ended_ago=timedelta(days=60))
    assert "Deleted 3 sessions in 3 batches" in run("--batch-size", "1")
    assert remaining() == set()


def test_options_as_keyword_arguments(population):
    keep, delete = population
    out = StringIO()
    call_command("nilva_session_cleanup", batch_size=2, retention_days=30, stdout=out)
    assert f"Deleted {len(delete)} sessions in 2 batches" in out.getvalue()
    assert remaining() == pks(keep)


def test_dry_run_honours_retention(population):
    _, delete = population
    assert f"Would delete {len(delete) + 1} sessions" in run("--dry-run", "--retention-days", "7")


@pytest.mark.parametrize(
    "args",
    [
        ("--batch-size", "0"),
        ("--batch-size", "-3"),
        ("--batch-size", "many"),
        ("--retention-days", "-1"),
        ("--retention-days", "soon"),
        ("--retention-days", "nan"),
        ("--retention-days", "inf"),
        ("--retention-days", "1e9"),
        ("--retention-days", "1000000"),
        ("--no-such-option",),
    ],
)
def test_invalid_options_raise_command_error(population, args):
    with pytest.raises(CommandError):
        run(*args)
    keep, delete = population
    assert remaining() == pks(keep) | pks(delete)


def test_deletes_what_authentication_refuses_for_time_and_keeps_ended_sessions_for_retention(
    user,
):
    """The rule of ``sessions.live``: idle and capped sessions go; ended ones wait out retention."""
    with override_settings(
        NILVA_SESSION={
            "IDLE_TIMEOUT": timedelta(minutes=10),
            "ABSOLUTE_LIFETIME": timedelta(days=2),
        }
    ):
        live = make_session(user, last_online_ago=timedelta(minutes=9))
        make_session(user, last_online_ago=timedelta(minutes=11))
        capped = make_session(user)
        UserSession.objects.filter(pk=capped.pk).update(
            created_at=timezone.now() - timedelta(days=3)
        )
        ended_idle = make_session(
            user, ended_ago=timedelta(days=1), last_online_ago=timedelta(days=1)
        )
        ended_expired = make_session(
            user, expire_in=-timedelta(hours=1), ended_ago=timedelta(days=1)
        )
        run()
    assert remaining() == {live.pk, ended_idle.pk, ended_expired.pk}
