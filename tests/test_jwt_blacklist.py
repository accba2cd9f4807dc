"""The JWT flows with simplejwt's ``token_blacklist`` app installed.

simplejwt gives tokens ``blacklist()``/``outstand()`` only when the app is installed at import
time, so these tests need ``--ds=tests.settings_jwt_blacklist``. In the normal run this module
is skipped, and ``test_blacklist_app_suite_passes_in_its_own_process`` in ``tests/test_jwt.py``
runs it in a process with those settings, failing if anything here fails or skips.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings

BLACKLIST_APP = "rest_framework_simplejwt.token_blacklist"

if BLACKLIST_APP not in settings.INSTALLED_APPS:
    pytest.skip(
        "needs --ds=tests.settings_jwt_blacklist (tests/test_jwt.py runs it in a subprocess)",
        allow_module_level=True,
    )

from rest_framework_simplejwt.tokens import RefreshToken  # noqa: E402

from nilva_session.models import EndReason, UserSession  # noqa: E402
from tests.support.doubles import nilva_settings  # noqa: E402
from tests.test_jwt import (  # noqa: E402
    WHOAMI_URL,
    bearer,
    claims,
    jwt_client,
    jwt_login,
    login,
    logout,
    mint_refresh,
    new_client,
    refresh,
    simple_jwt,
)

__all__ = ["jwt_client", "jwt_login", "simple_jwt"]  # fixtures used by name below


def blacklisted(token: str) -> bool:
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

    return BlacklistedToken.objects.filter(token__jti=claims(token)["jti"]).exists()


def outstanding(token: str):
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

    return OutstandingToken.objects.filter(jti=claims(token)["jti"]).first()


def test_tokens_have_blacklist_methods():
    assert hasattr(RefreshToken, "blacklist")
    assert hasattr(RefreshToken, "check_blacklist")


def test_obtain_records_the_refresh_token_as_outstanding(user, jwt_login):
    data, _ = jwt_login

    record = outstanding(data["refresh"])

    assert record is not None
    assert record.user == user


def test_refresh_works_with_the_blacklist_app(jwt_login):
    data, session = jwt_login

    response = refresh(new_client(), data["refresh"])

    assert response.status_code == 200
    assert claims(response.json()["access"])["session_id"] == str(session.pk)


def test_rotation_blacklists_the_old_refresh_token(jwt_login, simple_jwt):
    simple_jwt(ROTATE_REFRESH_TOKENS=True, BLACKLIST_AFTER_ROTATION=True)
    data, _ = jwt_login

    response = refresh(new_client(), data["refresh"])

    assert response.status_code == 200
    assert blacklisted(data["refresh"])
    assert not blacklisted(response.json()["refresh"])


def test_without_reuse_detection_a_blacklisted_token_is_simply_refused(jwt_login, simple_jwt):
    simple_jwt(ROTATE_REFRESH_TOKENS=True, BLACKLIST_AFTER_ROTATION=True)
    data, session = jwt_login
    with nilva_settings(DETECT_REFRESH_REUSE=False):
        assert refresh(new_client(), data["refresh"]).status_code == 200
        body = refresh(new_client(), data["refresh"])
    assert body.status_code == 401
    assert "blacklisted" in body.json()["detail"]
    session.refresh_from_db()
    assert session.is_active


def test_a_blacklisted_retired_token_within_the_grace_is_the_other_tab(jwt_login, simple_jwt):
    simple_jwt(ROTATE_REFRESH_TOKENS=True, BLACKLIST_AFTER_ROTATION=True)
    data, session = jwt_login
    first = refresh(new_client(), data["refresh"])
    second = refresh(new_client(), data["refresh"])  # blacklisted by the first, within 5 s
    assert (first.status_code, second.status_code) == (200, 200), second.content
    assert claims(second.json()["refresh"])["refresh_gen"] == 1
    session.refresh_from_db()
    assert session.is_active


def test_a_blacklisted_retired_token_after_the_grace_ends_the_session(jwt_login, simple_jwt, clock):
    simple_jwt(ROTATE_REFRESH_TOKENS=True, BLACKLIST_AFTER_ROTATION=True)
    data, session = jwt_login
    assert refresh(new_client(), data["refresh"]).status_code == 200
    clock.advance(seconds=6)

    body = refresh(new_client(), data["refresh"])

    assert body.status_code == 401
    assert body.json()["code"] == "refresh_reused"
    session.refresh_from_db()
    assert (session.is_active, session.end_reason) == (False, EndReason.REFRESH_REUSED)


def test_a_current_token_blacklisted_by_hand_is_refused_and_ends_nothing(jwt_login, simple_jwt):
    simple_jwt(ROTATE_REFRESH_TOKENS=True, BLACKLIST_AFTER_ROTATION=True)
    data, session = jwt_login
    RefreshToken(data["refresh"]).blacklist()  # as an administrator would

    body = refresh(new_client(), data["refresh"])

    assert body.status_code == 401
    assert body.json()["code"] == "token_not_valid"
    session.refresh_from_db()
    assert session.is_active
    assert session.refresh_generation == 0


def test_rotation_keeps_the_session_and_the_new_token_works(jwt_login, simple_jwt):
    simple_jwt(ROTATE_REFRESH_TOKENS=True, BLACKLIST_AFTER_ROTATION=True)
    data, session = jwt_login

    rotated = refresh(new_client(), data["refresh"]).json()["refresh"]
    again = refresh(new_client(), rotated)

    assert claims(rotated)["session_id"] == str(session.pk)
    assert again.status_code == 200
    assert bearer(again.json()["access"]).get(WHOAMI_URL).status_code == 200
    session.refresh_from_db()
    assert session.is_active


def test_rotated_token_is_outstanding_with_its_capped_expiry(user, api_client, simple_jwt):
    simple_jwt(
        ROTATE_REFRESH_TOKENS=True,
        BLACKLIST_AFTER_ROTATION=True,
        REFRESH_TOKEN_LIFETIME=timedelta(days=30),
    )
    with nilva_settings(EXPIRE_AT=timedelta(hours=1)):
        data = login(api_client)
    session = UserSession.objects.get(pk=data["session_id"])

    rotated = refresh(new_client(), data["refresh"]).json()["refresh"]

    record = outstanding(rotated)
    if not hasattr(RefreshToken, "outstand"):
        # simplejwt < 5.5 records no rotated token (its own refresh view neither); blacklisting
        # it later creates the record, so logout still stops it.
        assert record is None
        assert logout(new_client(), rotated).status_code == 204
        assert refresh(new_client(), rotated).status_code == 401
        return
    assert record is not None
    assert record.token == rotated
    assert record.expires_at <= session.expire_at


def test_rotation_without_blacklist_after_rotation_leaves_the_old_token_usable(
    jwt_login, simple_jwt
):
    simple_jwt(ROTATE_REFRESH_TOKENS=True, BLACKLIST_AFTER_ROTATION=False)
    data, _ = jwt_login
    assert refresh(new_client(), data["refresh"]).status_code == 200

    assert not blacklisted(data["refresh"])
    assert refresh(new_client(), data["refresh"]).status_code == 200


def test_logout_blacklists_the_refresh_token_and_ends_the_session(jwt_login):
    data, session = jwt_login

    response = logout(new_client(), data["refresh"])

    assert response.status_code == 204
    assert blacklisted(data["refresh"])
    session.refresh_from_db()
    assert not session.is_active
    assert session.end_reason == EndReason.LOGOUT


def test_logout_twice_is_401_the_second_time(jwt_login):
    data, _ = jwt_login
    assert logout(new_client(), data["refresh"]).status_code == 204

    response = logout(new_client(), data["refresh"])

    assert response.status_code == 401
    assert "blacklisted" in response.json()["detail"]


def test_refresh_after_logout_is_401(jwt_login):
    data, _ = jwt_login
    logout(new_client(), data["refresh"])

    assert refresh(new_client(), data["refresh"]).status_code == 401


def test_refresh_of_an_ended_session_is_401_and_blacklists_nothing(jwt_login):
    data, session = jwt_login
    session.revoke()

    assert refresh(new_client(), data["refresh"]).status_code == 401
    assert not blacklisted(data["refresh"])


def test_logout_with_another_users_session_blacklists_only_the_given_token(
    user, other_user, open_session
):
    their_session, _ = open_session(other_user)
    token = str(mint_refresh(user, their_session.pk))

    assert logout(new_client(), token).status_code == 204

    assert blacklisted(token)
    their_session.refresh_from_db()
    assert their_session.is_active


def test_access_tokens_of_a_logged_out_session_are_refused(jwt_client):
    client, data, _ = jwt_client
    assert client.get(WHOAMI_URL).status_code == 200

    logout(new_client(), data["refresh"])

    assert client.get(WHOAMI_URL).status_code == 401


def test_a_blacklisted_current_token_touches_nothing_on_its_session(jwt_login, simple_jwt, clock):
    from tests.conftest import FIREFOX_UA

    simple_jwt(ROTATE_REFRESH_TOKENS=True, BLACKLIST_AFTER_ROTATION=True)
    data, session = jwt_login
    RefreshToken(data["refresh"]).blacklist()
    clock.advance(minutes=5)
    before = UserSession.objects.filter(pk=session.pk).values().get()

    plain = refresh(new_client(ip="198.51.100.66"), data["refresh"])
    other_browser = refresh(new_client(ua=FIREFOX_UA), data["refresh"])

    assert plain.json()["code"] == other_browser.json()["code"] == "token_not_valid"
    assert UserSession.objects.filter(pk=session.pk).values().get() == before
