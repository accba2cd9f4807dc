"""Refresh-token rotation with reuse detection (RFC 9700 §4.14), over HTTP.

With simplejwt's ``ROTATE_REFRESH_TOKENS`` every refresh token carries a generation; the
session records the current one. Presenting a retired token ends the session
(``refresh_reused``), except the one retired within ``REFRESH_REUSE_GRACE`` (two tabs
refreshing at once). The blacklist-app variants are in ``tests/test_jwt_blacklist.py``; the
races on PostgreSQL (threads) in ``tests/test_concurrency.py`` and across gunicorn workers in
``tests/test_multiprocess.py``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from nilva_session import sessions
from nilva_session.exceptions import SessionEnded
from nilva_session.models import EndReason, EventKind, SessionEvent, UserSession
from nilva_session.sessions import RefreshVerdict, refresh_verdict
from nilva_session.signals import refresh_token_reused, session_revoked, session_suspended
from tests.support.doubles import nilva_settings
from tests.test_jwt import (
    WHOAMI_URL,
    bearer,
    claims,
    jwt_login,
    login,
    mint_refresh,
    new_client,
    refresh,
    simple_jwt,
)

__all__ = ["jwt_login", "simple_jwt"]  # fixtures used by name below

ATTACKER_IP = "198.51.100.66"


@pytest.fixture
def rotating(simple_jwt):
    simple_jwt(ROTATE_REFRESH_TOKENS=True)


def rotate(token: str, **client) -> str:
    response = refresh(new_client(**client), token)
    assert response.status_code == 200, response.content
    return response.json()["refresh"]


def ended(session: UserSession) -> tuple[bool, str]:
    session.refresh_from_db()
    return session.is_active, session.end_reason


# --- the pure rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("presented", "generation", "age", "verdict"),
    [
        (3, 3, None, RefreshVerdict.CURRENT),
        (0, 0, None, RefreshVerdict.CURRENT),
        (4, 3, 0, RefreshVerdict.UNKNOWN),
        (2, 3, 4.9, RefreshVerdict.GRACE),
        (2, 3, -0.5, RefreshVerdict.GRACE),  # advanced by a request that started after this one
        (2, 3, 5, RefreshVerdict.REUSED),  # the grace is a half-open window
        (2, 3, None, RefreshVerdict.REUSED),  # never advanced by time (a restored database)
        (1, 3, 0, RefreshVerdict.REUSED),  # only the token retired last has a grace
        (0, 3, 0, RefreshVerdict.REUSED),
    ],
)
def test_refresh_verdict(settings, presented, generation, age, verdict):
    from django.utils import timezone

    now = timezone.now()
    at = None if age is None else now - timedelta(seconds=age)
    assert refresh_verdict(presented, generation, at, now) is verdict


def test_a_grace_of_zero_accepts_no_retired_token():
    from django.utils import timezone

    now = timezone.now()
    with nilva_settings(REFRESH_REUSE_GRACE=0):
        assert refresh_verdict(0, 1, now, now) is RefreshVerdict.REUSED
        # A concurrent refresh advanced it a moment after this one was presented (CI saw two
        # 200s of eight simultaneous refreshes without a grace before this counted as zero).
        later = now + timedelta(milliseconds=3)
        assert refresh_verdict(0, 1, later, now) is RefreshVerdict.REUSED


# --- rotation ---------------------------------------------------------------------------------


def test_each_rotation_gives_the_next_generation_and_records_it(jwt_login, rotating):
    data, session = jwt_login
    assert claims(data["refresh"])["refresh_gen"] == 0
    first = rotate(data["refresh"])
    second = rotate(first)

    assert [claims(t)["refresh_gen"] for t in (first, second)] == [1, 2]
    session.refresh_from_db()
    assert session.refresh_generation == 2
    assert session.refreshed_at is not None
    assert all(claims(t)["session_id"] == str(session.pk) for t in (first, second))


def test_access_tokens_do_not_carry_the_refresh_generation(jwt_login, rotating):
    data, _session = jwt_login
    response = refresh(new_client(), data["refresh"])
    assert "refresh_gen" not in claims(data["access"])
    assert "refresh_gen" not in claims(response.json()["access"])


def test_the_generation_claim_name_follows_the_setting(user, api_client, rotating):
    with nilva_settings(REFRESH_GENERATION_CLAIM="gen"):
        data = login(api_client)
        rotated = rotate(data["refresh"])
    assert claims(data["refresh"])["gen"] == 0
    assert claims(rotated)["gen"] == 1


# --- a stolen refresh token -------------------------------------------------------------------


def test_a_stolen_refresh_token_replayed_later_ends_the_session(
    jwt_login, rotating, clock, capture_signal
):
    """The client rotates; later the thief replays the copy it stole from another address."""
    data, session = jwt_login
    reused = capture_signal(refresh_token_reused)
    suspended = capture_signal(session_suspended)
    revoked = capture_signal(session_revoked)
    legitimate = rotate(data["refresh"])
    clock.advance(seconds=6)

    stolen = refresh(new_client(ip=ATTACKER_IP), data["refresh"])

    assert stolen.status_code == 401
    assert stolen.json()["code"] == "refresh_reused"
    assert "access" not in stolen.json()
    assert ended(session) == (False, EndReason.REFRESH_REUSED)
    assert [s["session"].pk for s in reused] == [session.pk]
    assert [s["reason"] for s in suspended] == [EndReason.REFRESH_REUSED]
    assert [r["session_ids"] for r in revoked] == [[session.pk]]
    # Every credential of the session is dead: the client's rotated token and access token too.
    assert refresh(new_client(), legitimate).json()["code"] == "session_ended"
    assert bearer(data["access"]).get(WHOAMI_URL).json()["code"] == "session_ended"
    event = SessionEvent.objects.get(kind=EventKind.REFRESH_REUSED)
    assert (event.session_id, event.reason) == (session.pk, EndReason.REFRESH_REUSED)
    assert not SessionEvent.objects.filter(kind__in=["revoked", "suspended"]).exists()


def test_the_thief_refreshing_first_makes_the_clients_next_refresh_end_it(
    jwt_login, rotating, clock
):
    data, session = jwt_login
    rotate(data["refresh"], ip=ATTACKER_IP)  # the thief wins the race
    clock.advance(seconds=30)

    client = refresh(new_client(), data["refresh"])

    assert client.json()["code"] == "refresh_reused"
    assert ended(session) == (False, EndReason.REFRESH_REUSED)


def test_a_token_two_generations_old_is_reuse_even_within_the_grace(jwt_login, rotating):
    data, session = jwt_login
    rotate(rotate(data["refresh"]))

    response = refresh(new_client(), data["refresh"])

    assert response.json()["code"] == "refresh_reused"
    assert ended(session) == (False, EndReason.REFRESH_REUSED)


def test_a_retired_token_of_an_ended_session_is_session_ended_not_a_second_end(
    jwt_login, rotating, clock
):
    data, _session = jwt_login
    rotate(data["refresh"])
    clock.advance(seconds=6)
    assert refresh(new_client(), data["refresh"]).json()["code"] == "refresh_reused"

    again = refresh(new_client(), data["refresh"])

    assert again.json()["code"] == "session_ended"
    assert SessionEvent.objects.filter(kind=EventKind.REFRESH_REUSED).count() == 1


# --- the grace: two tabs ----------------------------------------------------------------------


def test_two_tabs_refreshing_with_one_token_both_succeed_within_the_grace(jwt_login, rotating):
    data, session = jwt_login
    first = refresh(new_client(), data["refresh"])
    second = refresh(new_client(), data["refresh"])

    assert (first.status_code, second.status_code) == (200, 200)
    tokens = [first.json()["refresh"], second.json()["refresh"]]
    assert [claims(t)["refresh_gen"] for t in tokens] == [1, 1]
    assert ended(session) == (True, "")
    for response in (first, second):
        whoami = bearer(response.json()["access"]).get(WHOAMI_URL)
        assert whoami.status_code == 200
    # Both tabs go on: the first to rotate again wins, the other is then within the grace.
    assert claims(rotate(tokens[0]))["refresh_gen"] == 2
    assert claims(rotate(tokens[1]))["refresh_gen"] == 2


def test_with_no_grace_the_second_tab_ends_the_session(jwt_login, rotating):
    data, session = jwt_login
    with nilva_settings(REFRESH_REUSE_GRACE=timedelta(0)):
        assert refresh(new_client(), data["refresh"]).status_code == 200
        second = refresh(new_client(), data["refresh"])
    assert second.json()["code"] == "refresh_reused"
    assert ended(session) == (False, EndReason.REFRESH_REUSED)


def test_the_grace_is_the_setting(jwt_login, rotating, clock):
    data, _session = jwt_login
    with nilva_settings(REFRESH_REUSE_GRACE=60):
        rotate(data["refresh"])
        clock.advance(seconds=59)
        assert refresh(new_client(), data["refresh"]).status_code == 200
        clock.advance(seconds=2)
        assert refresh(new_client(), data["refresh"]).json()["code"] == "refresh_reused"


# --- when there is nothing to detect ----------------------------------------------------------


def test_without_rotation_one_refresh_token_keeps_working_and_nothing_is_recorded(jwt_login):
    data, session = jwt_login
    for _ in range(3):
        assert refresh(new_client(), data["refresh"]).status_code == 200
    session.refresh_from_db()
    assert (session.refresh_generation, session.refreshed_at) == (0, None)


def test_with_detection_off_rotation_is_simplejwts(jwt_login, rotating, clock):
    data, session = jwt_login
    with nilva_settings(DETECT_REFRESH_REUSE=False):
        rotate(data["refresh"])
        clock.advance(seconds=60)
        assert refresh(new_client(), data["refresh"]).status_code == 200  # no blacklist app
    assert ended(session) == (True, "")


def test_a_token_issued_before_generations_counts_as_generation_zero(user, jwt_login, rotating):
    _data, session = jwt_login
    old = mint_refresh(user, session.pk)  # no refresh_gen claim, as 0.x tokens
    assert "refresh_gen" not in old.payload

    rotated = rotate(str(old))

    assert claims(rotated)["refresh_gen"] == 1
    assert refresh(new_client(), str(old)).status_code == 200  # the grace
    session.refresh_from_db()
    assert session.is_active
    assert session.refresh_generation == 1


# --- bad generations --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [5, "1", 1.5, True, -1, 2**40, None, [0], {"g": 0}])
def test_a_generation_the_session_never_issued_is_401_and_changes_nothing(
    user, jwt_login, rotating, value
):
    _data, session = jwt_login
    token = mint_refresh(user, session.pk)
    token["refresh_gen"] = value

    response = refresh(new_client(), str(token))

    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"
    session.refresh_from_db()
    assert (session.is_active, session.refresh_generation) == (True, 0)


def test_advance_refresh_on_an_ended_session_raises_session_ended(user, open_session):
    session, _token = open_session(user)
    sessions.revoke([session])
    with pytest.raises(SessionEnded):
        sessions.advance_refresh(session, 0)


# --- ATOMIC_REQUESTS: an end made while refusing survives the request's rollback -------------


@pytest.fixture
def atomic_requests():
    from django.db import connection

    connection.settings_dict["ATOMIC_REQUESTS"] = True
    yield
    connection.settings_dict["ATOMIC_REQUESTS"] = False


@pytest.mark.django_db(transaction=True)
def test_under_atomic_requests_a_reused_token_still_ends_the_session(
    user, rotating, atomic_requests, clock, capture_signal
):
    reused = capture_signal(refresh_token_reused)
    data = login(new_client())
    session = UserSession.objects.get(pk=data["session_id"])
    legitimate = rotate(data["refresh"])
    clock.advance(seconds=6)

    assert refresh(new_client(), data["refresh"]).json()["code"] == "refresh_reused"

    assert ended(session) == (False, EndReason.REFRESH_REUSED)
    assert SessionEvent.objects.filter(kind=EventKind.REFRESH_REUSED).count() == 1
    assert len(reused) == 1
    assert refresh(new_client(), legitimate).json()["code"] == "session_ended"


@pytest.mark.django_db(transaction=True)
def test_under_atomic_requests_a_user_agent_suspension_survives_our_handler(
    user, atomic_requests, settings
):
    from tests.conftest import FIREFOX_UA

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "EXCEPTION_HANDLER": "nilva_session.apis.exception_handler",
    }
    data = login(new_client())
    response = bearer(data["access"], ua=FIREFOX_UA).get(WHOAMI_URL)
    assert response.json()["code"] == "session_suspended"
    session = UserSession.objects.get(pk=data["session_id"])
    assert (session.is_active, session.end_reason) == (False, "user_agent_changed")


@pytest.mark.django_db(transaction=True)
def test_under_atomic_requests_drfs_own_handler_rolls_the_suspension_back(user, atomic_requests):
    """What W005 warns about: DRF's handler undoes the end (the client is refused anyway)."""
    from tests.conftest import FIREFOX_UA

    data = login(new_client())
    response = bearer(data["access"], ua=FIREFOX_UA).get(WHOAMI_URL)
    assert response.json()["code"] == "session_suspended"
    assert UserSession.objects.get(pk=data["session_id"]).is_active


def test_turning_rotation_off_leaves_retired_tokens_retired(jwt_login, simple_jwt, clock):
    data, session = jwt_login
    simple_jwt(ROTATE_REFRESH_TOKENS=True)
    current = rotate(data["refresh"])
    clock.advance(seconds=6)
    simple_jwt(ROTATE_REFRESH_TOKENS=False)

    assert refresh(new_client(), current).status_code == 200  # the current one keeps working
    assert refresh(new_client(), current).status_code == 200
    assert refresh(new_client(), data["refresh"]).json()["code"] == "refresh_reused"
    assert ended(session) == (False, EndReason.REFRESH_REUSED)
