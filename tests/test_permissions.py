"""``RecentlyAuthenticated`` (ASVS 5.0 7.5.1, 7.5.3; 4.0.3 3.7.1) and ``POST reauthenticate/``.

The flows through both credentials are in ``tests/test_security.py`` (``test_asvs_7_5_*``);
these are the permission's edges.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import path
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from nilva_session import sessions
from nilva_session.models import UserSession
from nilva_session.permissions import ReauthenticationRequired, RecentlyAuthenticated

from . import urls as base_urls
from .conftest import DESKTOP_UA, PASSWORD
from .support.doubles import nilva_settings
from .support.inprocess import private_redis_cache
from .support.services import services_active

pytestmark = [pytest.mark.urls("tests.test_permissions")]

REAUTH_URL = "/api/sessions/reauthenticate/"
GUARDED_URL = "/guarded/"
GUARDED_ONLY_URL = "/guarded-only/"
FIVE_MINUTES_URL = "/five-minutes/"
REFUSED = {
    "detail": "Please confirm your password to continue.",
    "code": "reauthentication_required",
}


class Guarded(APIView):
    permission_classes = [IsAuthenticated, RecentlyAuthenticated]

    def get(self, request):
        return Response({"ok": True})


class GuardedOnly(Guarded):
    """The permission without IsAuthenticated in front of it."""

    permission_classes = [RecentlyAuthenticated]


class FiveMinutes(Guarded):
    permission_classes = [IsAuthenticated, RecentlyAuthenticated.with_max_age(timedelta(minutes=5))]


urlpatterns = [
    *base_urls.urlpatterns,
    path("guarded/", Guarded.as_view()),
    path("guarded-only/", GuardedOnly.as_view()),
    path("five-minutes/", FiveMinutes.as_view()),
]


@pytest.fixture(autouse=True)
def _cache(monkeypatch):
    if not services_active():
        yield
        return
    with private_redis_cache(monkeypatch):
        yield


@pytest.fixture
def signed_in(token_client):
    client, session, _token = token_client
    return client, session


def get(client, url=GUARDED_URL):
    response = client.get(url)
    return response.status_code, response.json()


# --------------------------------------------------------------------------------------------
# the permission
# --------------------------------------------------------------------------------------------


def test_a_fresh_login_passes(signed_in):
    client, _session = signed_in
    assert get(client) == (200, {"ok": True})


def test_exactly_max_age_passes_and_a_second_more_does_not(clock, user, open_session):
    _session, token = open_session(user)
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    clock.advance(minutes=15)
    assert get(client)[0] == 200
    clock.advance(seconds=1)
    assert get(client) == (403, REFUSED)


def test_a_session_that_never_proved_a_password_is_refused(signed_in):
    """Sessions carried over from nilva-session 0.1.x have no ``authenticated_at``."""
    client, session = signed_in
    UserSession.objects.filter(pk=session.pk).update(authenticated_at=None)
    assert get(client) == (403, REFUSED)


def test_a_request_without_a_session_is_refused_not_crashed(user):
    client = APIClient()
    client.force_authenticate(user)  # authenticated by something other than nilva-session
    assert get(client) == (403, REFUSED)


def test_anonymous_requests_get_401_not_403(db):
    client = APIClient()
    assert client.get(GUARDED_URL).status_code == 401
    assert client.get(GUARDED_ONLY_URL).status_code == 401


def test_with_max_age_makes_a_subclass_and_leaves_the_default_alone(clock, user, open_session):
    five = RecentlyAuthenticated.with_max_age(timedelta(minutes=5))
    assert issubclass(five, RecentlyAuthenticated)
    assert five.max_age == timedelta(minutes=5)
    assert RecentlyAuthenticated.max_age is None
    assert five.__name__ == "RecentlyAuthenticatedWithin300s"
    _session, token = open_session(user)
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    clock.advance(minutes=5, seconds=1)
    assert get(client, FIVE_MINUTES_URL) == (403, REFUSED)
    assert get(client)[0] == 200


def test_max_age_setting_is_read_per_request(clock, signed_in):
    client, _session = signed_in
    clock.advance(minutes=3)
    assert get(client)[0] == 200
    with nilva_settings(REAUTHENTICATION_MAX_AGE=120):  # seconds are accepted
        assert get(client) == (403, REFUSED)
    assert get(client)[0] == 200


def test_the_exception_is_a_permission_denied_with_its_code():
    error = ReauthenticationRequired()
    assert error.status_code == 403
    assert error.default_code == "reauthentication_required"


# --------------------------------------------------------------------------------------------
# POST reauthenticate/
# --------------------------------------------------------------------------------------------


def test_reauthenticate_answers_the_session_and_the_time(clock, signed_in):
    client, session = signed_in
    clock.advance(minutes=20)
    response = client.post(REAUTH_URL, {"password": PASSWORD}, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "session_id": str(session.pk),
        "authenticated_at": clock.now().isoformat(),
    }
    assert get(client)[0] == 200


@pytest.mark.parametrize(
    "body", [{}, {"password": ""}, {"password": None}, {"password": "x" * 5000}, {"pass": PASSWORD}]
)
def test_reauthenticate_refuses_bad_bodies_with_400(clock, signed_in, body):
    client, session = signed_in
    clock.advance(minutes=20)
    response = client.post(REAUTH_URL, body, format="json")
    assert response.status_code == 400
    assert UserSession.objects.get(pk=session.pk).authenticated_at == session.authenticated_at


def test_reauthenticate_with_another_users_password_fails(clock, user, other_user, signed_in):
    client, _session = signed_in
    other_user.set_password("bob's own password")
    other_user.save()
    clock.advance(minutes=20)
    response = client.post(REAUTH_URL, {"password": "bob's own password"}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "invalid_password")


def test_reauthenticate_does_not_revive_an_ended_session(signed_in):
    client, session = signed_in
    assert get(client)[0] == 200  # warm
    session_row = UserSession.objects.get(pk=session.pk)
    sessions.revoke([session_row])
    sessions.confirm_authentication(session_row)  # e.g. a reauthentication racing the revoke
    row = UserSession.objects.get(pk=session.pk)
    assert not row.is_active
    assert client.post(REAUTH_URL, {"password": PASSWORD}, format="json").status_code == 401


def test_reauthenticate_needs_a_nilva_session(user):
    client = APIClient()
    client.force_authenticate(user)
    response = client.post(REAUTH_URL, {"password": PASSWORD}, format="json")
    assert (response.status_code, response.json()["code"]) == (403, "no_session")


def test_reauthenticate_of_an_inactive_user_fails(signed_in, user):
    client, _session = signed_in
    user.is_active = False
    user.save()
    assert client.post(REAUTH_URL, {"password": PASSWORD}, format="json").status_code == 401


def test_a_max_age_of_zero_is_not_the_default():
    assert RecentlyAuthenticated.with_max_age(timedelta(0))().get_max_age() == timedelta(0)
