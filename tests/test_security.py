"""Security requirements, one test (or more) per requirement id (issue 5).

OWASP ASVS 5.0 chapter V7 (session management) and ASVS 4.0.3 chapter V3, as far as they apply
to a token API; ``docs/security.md`` maps every id to the tests below. A test is named after the
requirement it shows (``test_asvs_7_4_3_...`` = ASVS 5.0 7.4.3, ``test_asvs403_3_1_1_...`` = ASVS
4.0.3 V3.1.1); tests of threats that no ASVS id names start with ``test_threat_``.

Every test goes through the public surface (HTTP API, admin, Django forms, settings); the
opaque token and the JWT are both exercised where a rule applies to both. "Warm" means the
session is in the cache, checked by a request that costs no query.

Runs on SQLite + local memory (default) and on PostgreSQL + Redis (``--ds=tests.settings_services``,
where the session cache moves to a private Redis database and key prefix, see ``_cache``). Redis
does not follow the fake ``Clock``: where the local-memory cache would let a key lapse after the
clock moved, ``lapse_activity_markers`` deletes it (the activity marker is the only key whose
lapse the tests rely on).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from datetime import timedelta
from types import SimpleNamespace

import jwt as pyjwt
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import path, reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView
from rest_framework_simplejwt.tokens import AccessToken

from nilva_session import cache, checks, codec, sessions
from nilva_session.apis import ListDestroyActiveSessionsApi
from nilva_session.backends import UserSessionDBJwtAuthentication
from nilva_session.models import EndReason, UserSession
from nilva_session.permissions import RecentlyAuthenticated
from nilva_session.utils import hash_data, token_generator

from . import urls as base_urls
from .conftest import DESKTOP_UA, FIREFOX_UA, IPHONE_UA, PASSWORD
from .support.doubles import nilva_settings
from .support.inprocess import private_redis_cache
from .support.services import services_active

# The module is its own URLconf: the suite's routes plus a few views that use the public API.
pytestmark = [pytest.mark.urls("tests.test_security")]

LOGIN_URL = "/api/sessions/login/"
LOGOUT_URL = "/api/sessions/logout/"
TOKEN_URL = "/api/sessions/token/"
REFRESH_URL = "/api/sessions/token/refresh/"
JWT_LOGOUT_URL = "/api/sessions/token/logout/"
HISTORY_URL = "/api/sessions/history/"
ACTIVE_URL = "/api/sessions/active/"
REAUTH_URL = "/api/sessions/reauthenticate/"
WHOAMI_URL = "/api/whoami/"
CHANGE_PASSWORD_URL = "/api/change-password/"
SENSITIVE_URL = "/api/sensitive/"
VERY_SENSITIVE_URL = "/api/very-sensitive/"
GUARDED_SESSIONS_URL = "/api/guarded-sessions/"

IP = "203.0.113.7"
OTHER_IP = "198.51.100.20"
NEW_PASSWORD = "a brand new passphrase"
POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


# --------------------------------------------------------------------------------------------
# views used by the tests (this module is the URLconf)
# --------------------------------------------------------------------------------------------


class ChangePasswordView(APIView):
    """A project's own password change: ``request.user`` as authentication rebuilt it."""

    deferred: list[set[str]] = []

    def post(self, request):
        user = request.user
        ChangePasswordView.deferred.append(set(user.get_deferred_fields()))
        if request.data.get("keep"):
            sessions.keep_session(user, request)
        user.set_password(request.data["password"])
        user.save()
        return Response(status=204)


class SensitiveView(APIView):
    permission_classes = [IsAuthenticated, RecentlyAuthenticated]

    def post(self, request):
        return Response({"done": True})


class VerySensitiveView(SensitiveView):
    permission_classes = [IsAuthenticated, RecentlyAuthenticated.with_max_age(timedelta(minutes=5))]


class GuardedSessionsView(ListDestroyActiveSessionsApi):
    """The documented recipe for ASVS 7.5.2: ending sessions needs a recent password."""

    def get_permissions(self):
        permissions = super().get_permissions()
        if self.request.method == "DELETE":
            permissions.append(RecentlyAuthenticated())
        return permissions


urlpatterns = [
    *base_urls.urlpatterns,
    path("api/change-password/", ChangePasswordView.as_view()),
    path("api/sensitive/", SensitiveView.as_view()),
    path("api/very-sensitive/", VerySensitiveView.as_view()),
    path("api/guarded-sessions/", GuardedSessionsView.as_view()),
]


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _cache(monkeypatch):
    """On the services settings, a private Redis database and key prefix for each test.

    The suite's Redis database is shared with other runs that flush it between tests; a flush
    in the middle of a test would turn a warm path cold. Fails (never skips) without Redis.
    """
    ChangePasswordView.deferred.clear()
    if not services_active():
        yield
        return
    with private_redis_cache(monkeypatch):
        yield


def client_from(ip: str = IP, ua: str = DESKTOP_UA, **extra) -> APIClient:
    return APIClient(HTTP_USER_AGENT=ua, REMOTE_ADDR=ip, **extra)


def token_device(
    username: str = "alice", password: str = PASSWORD, ip: str = IP, ua: str = DESKTOP_UA, **extra
) -> SimpleNamespace:
    """Sign in through ``login/``; return the client (carrying the token) and what login said."""
    client = client_from(ip, ua, **extra)
    response = client.post(LOGIN_URL, {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    data = response.json()
    client.credentials(HTTP_AUTHORIZATION=f"Token {data['token']}")
    return SimpleNamespace(kind="token", client=client, **data)


def jwt_device(
    username: str = "alice", password: str = PASSWORD, ip: str = IP, ua: str = DESKTOP_UA, **extra
) -> SimpleNamespace:
    """Sign in through ``token/``; return the client (carrying the access token) and the pair."""
    client = client_from(ip, ua, **extra)
    response = client.post(TOKEN_URL, {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    data = response.json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {data['access']}")
    return SimpleNamespace(kind="jwt", client=client, **data)


DEVICES = {"token": token_device, "jwt": jwt_device}


def whoami(device):
    """Return ``(status_code, code_or_None, number_of_queries)`` of one request."""
    with CaptureQueriesContext(connection) as queries:
        response = device.client.get(WHOAMI_URL)
    code = None if response.status_code == 200 else response.json().get("code")
    return response.status_code, code, len(queries)


def warm(*devices) -> None:
    """Make each device's session cached, and check it: the next request costs no query."""
    for device in devices:
        assert whoami(device)[0] == 200
        assert whoami(device) == (200, None, 0), f"{device.kind} session is not served warm"


def assert_ended(device, code: str = "session_ended") -> None:
    status, got, _queries = whoami(device)
    assert (status, got) == (401, code), device.kind


def session_row(device) -> UserSession:
    return UserSession.objects.get(pk=device.session_id)


def entry_keys(session: UserSession) -> list[str]:
    return [cache.token_key(session.key), cache.session_key(session.pk)]


def is_cached(device) -> bool:
    session = session_row(device)
    key = cache.token_key(session.key) if device.kind == "token" else cache.session_key(session.pk)
    return codec.unpack(cache.get_store().get(key)) is not None


def lapse_activity_markers(*devices) -> None:
    """Delete the activity markers, as their ``LAST_ONLINE_UPDATE_INTERVAL`` TTL would have.

    The local-memory cache follows the fake clock and has already let them lapse; Redis keeps
    real time.
    """
    keys = [
        cache.activity_key(key) for device in devices for key in entry_keys(session_row(device))
    ]
    cache.get_store().delete_many(keys)


def history(device) -> dict[str, str]:
    """``{session_id: end_reason}`` from ``GET history/``."""
    response = device.client.get(HISTORY_URL)
    assert response.status_code == 200, response.content
    return {row["session_id"]: row["end_reason"] for row in response.json()}


def check_ids(*functions) -> list[str]:
    return sorted({message.id for function in functions for message in function()})


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "root password")


@pytest.fixture
def admin_client(superuser):
    client = Client()
    client.force_login(superuser)
    return client


def relogin(user):
    """A fresh copy of ``user`` from the database."""
    return get_user_model().objects.get(pk=user.pk)


# --------------------------------------------------------------------------------------------
# ASVS 5.0 7.4.3 / 4.0.3 3.3.3: a password change ends the other sessions
# --------------------------------------------------------------------------------------------


def three_devices():
    """Alice on two token devices (one warm, one cold) and one JWT device (warm)."""
    warm_token, cold_token = token_device(), token_device(ua=FIREFOX_UA)
    jwt = jwt_device(ua=IPHONE_UA)
    warm(warm_token, jwt)
    return warm_token, cold_token, jwt


def assert_all_ended_by_password_change(*devices) -> None:
    for device in devices:
        assert_ended(device)
        row = session_row(device)
        assert (row.is_active, row.end_reason) == (False, EndReason.PASSWORD_CHANGED)


def test_asvs_7_4_3_password_change_ends_other_sessions(user):
    devices = three_devices()
    user.set_password(NEW_PASSWORD)
    user.save()
    assert_all_ended_by_password_change(*devices)
    jwt = devices[2]
    refreshed = jwt.client.post(REFRESH_URL, {"refresh": jwt.refresh}, format="json")
    assert refreshed.status_code == 401
    assert token_device(password=NEW_PASSWORD)  # the new password signs in


def test_asvs_7_4_3_admin_password_form_ends_sessions(user, admin_client):
    devices = three_devices()
    response = admin_client.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert response.status_code == 302, response.content
    assert relogin(user).check_password(NEW_PASSWORD)
    assert_all_ended_by_password_change(*devices)


def test_asvs_7_4_3_admin_removing_the_password_ends_sessions(user, admin_client):
    """Removal of the factor (Django's "disable password-based authentication")."""
    devices = three_devices()
    response = admin_client.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {"usable_password": "false", "unset-password": "1"},
    )
    assert response.status_code == 302, response.content
    assert not relogin(user).has_usable_password()
    assert_all_ended_by_password_change(*devices)


def test_asvs_7_4_3_password_reset_form_ends_sessions(user):
    devices = three_devices()
    form = SetPasswordForm(
        relogin(user), {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert form.is_valid(), form.errors
    form.save()
    assert_all_ended_by_password_change(*devices)


@pytest.mark.parametrize("kind", DEVICES)
def test_asvs_7_4_3_password_change_on_the_cached_request_user_ends_every_session(user, kind):
    """The user that authentication rebuilt from the cache has no password loaded."""
    devices = three_devices()
    changer = DEVICES[kind](ip=OTHER_IP)
    warm(changer)
    response = changer.client.post(CHANGE_PASSWORD_URL, {"password": NEW_PASSWORD}, format="json")
    assert response.status_code == 204
    assert ChangePasswordView.deferred == [{"password"}]  # it really was the cached user
    assert_all_ended_by_password_change(*devices, changer)


@pytest.mark.parametrize("kind", DEVICES)
def test_asvs_7_4_3_keep_session_keeps_the_one_making_the_change(user, kind):
    devices = three_devices()
    changer = DEVICES[kind](ip=OTHER_IP)
    warm(changer)
    response = changer.client.post(
        CHANGE_PASSWORD_URL, {"password": NEW_PASSWORD, "keep": True}, format="json"
    )
    assert response.status_code == 204
    assert ChangePasswordView.deferred == [{"password"}]
    assert_all_ended_by_password_change(*devices)
    assert whoami(changer)[:2] == (200, None)
    assert session_row(changer).is_active


def test_asvs_7_4_3_keep_session_with_a_session_instance(user):
    kept, other = token_device(), token_device(ua=FIREFOX_UA)
    warm(kept, other)
    sessions.keep_session(user, session_row(kept))
    user.set_password(NEW_PASSWORD)
    user.save()
    assert whoami(kept)[:2] == (200, None)
    assert_all_ended_by_password_change(other)


def test_asvs_7_4_3_end_reason_is_shown_in_history_and_admin(user, admin_client):
    devices = three_devices()
    user.set_password(NEW_PASSWORD)
    user.save()
    listed = history(token_device(password=NEW_PASSWORD))
    for device in devices:
        assert listed[device.session_id] == "password_changed"
    changelist = admin_client.get(
        reverse("admin:nilva_session_usersession_changelist"),
        {"end_reason__exact": "password_changed"},
    )
    assert changelist.status_code == 200
    page = changelist.content.decode()
    assert all(device.session_id in page for device in devices)
    detail = admin_client.get(
        reverse("admin:nilva_session_usersession_change", args=[devices[0].session_id])
    )
    assert "Password changed" in detail.content.decode()


@nilva_settings(END_SESSIONS_ON_PASSWORD_CHANGE=False)
def test_asvs_7_4_3_can_be_turned_off(user):
    devices = three_devices()
    user.set_password(NEW_PASSWORD)
    user.save()
    for device in devices:
        assert whoami(device)[:2] == (200, None)
        assert session_row(device).is_active


def test_asvs_7_4_3_a_save_that_keeps_the_password_ends_nothing(user):
    devices = three_devices()
    # The cached request.user (password deferred) saving something else.
    cached_user = sessions.authenticate_token(
        devices[0].token, sessions.UNKNOWN, record_activity=False
    )[0]
    assert "password" in cached_user.get_deferred_fields()
    cached_user.last_name = "Liddell"
    cached_user.save()
    fresh = relogin(user)
    fresh.email = "alice@new.example.com"
    fresh.save()
    same = relogin(user)
    same.first_name = "Alice"
    same.save()
    same.save(update_fields=["password"])  # the same hash written again
    for device in devices:
        assert whoami(device)[:2] == (200, None)
        assert session_row(device).is_active
    assert relogin(user).last_name == "Liddell"


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Stands for the stronger hasher of a newer Django release (more iterations)."""

    iterations = 2


def test_asvs_7_4_3_a_password_hash_upgrade_at_login_is_not_a_password_change(user, settings):
    """Django re-hashes a password at login when the preferred hasher changes (every Django
    release raises the PBKDF2 iterations); the user's other sessions must survive it."""
    devices = three_devices()
    settings.PASSWORD_HASHERS = [
        "tests.test_security.FastPBKDF2PasswordHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
    assert relogin(user).password.startswith("md5$")
    fourth = token_device()
    assert relogin(user).password.startswith("pbkdf2_sha256$2$")  # upgraded by that login
    for device in (*devices, fourth):
        assert whoami(device)[:2] == (200, None), device.kind
        assert session_row(device).is_active
    relogin_user = relogin(user)
    relogin_user.set_password(NEW_PASSWORD)  # a real change still ends them
    relogin_user.save()
    assert_all_ended_by_password_change(*devices, fourth)


def test_asvs_7_4_3_a_new_hash_saved_on_its_own_is_a_password_change(user):
    """Only an upgrade of an outdated hash counts as a re-hash; a new hash written directly is a
    change, even with ``update_fields=["password"]``."""
    from django.contrib.auth.hashers import make_password

    devices = three_devices()
    changed = relogin(user)
    changed.password = make_password(NEW_PASSWORD)
    changed.save(update_fields=["password"])
    assert_all_ended_by_password_change(*devices)


# --------------------------------------------------------------------------------------------
# ASVS 5.0 7.4.2: a disabled or deleted user loses every session at once
# --------------------------------------------------------------------------------------------


def test_asvs_7_4_2_deactivated_user_loses_every_session(user):
    devices = three_devices()
    user.is_active = False
    user.save()
    for device in devices:
        assert_ended(device)
        assert session_row(device).end_reason == EndReason.USER_DEACTIVATED
    jwt = devices[2]
    assert jwt.client.post(REFRESH_URL, {"refresh": jwt.refresh}, format="json").status_code == 401
    user.is_active = True
    user.save()
    for device in devices:  # reactivation does not bring them back
        assert_ended(device)


def test_asvs_7_4_2_deactivated_in_the_admin_loses_every_session(user, admin_client):
    devices = three_devices()
    data = {  # the admin's user form with "Active" unticked
        "username": "alice",
        "first_name": "",
        "last_name": "",
        "email": "alice@example.com",
        "date_joined_0": "2024-01-01",
        "date_joined_1": "00:00:00",
        "last_login_0": "",
        "last_login_1": "",
        "_save": "Save",
    }
    response = admin_client.post(reverse("admin:auth_user_change", args=[user.pk]), data)
    assert response.status_code == 302, response.content
    assert not relogin(user).is_active
    for device in devices:
        assert_ended(device)


def test_asvs_7_4_2_deleted_user_loses_every_session(user):
    devices = three_devices()
    user.delete()
    for device in devices:
        assert_ended(device, "invalid_token")
    jwt = devices[2]
    assert jwt.client.post(REFRESH_URL, {"refresh": jwt.refresh}, format="json").status_code == 401


def test_asvs_7_4_2_user_deleted_through_a_queryset_loses_every_session(user):
    devices = three_devices()
    get_user_model().objects.filter(pk=user.pk).delete()
    for device in devices:
        assert_ended(device, "invalid_token")


# --------------------------------------------------------------------------------------------
# ASVS 5.0 7.3.1 / 4.0.3 3.3.2: inactivity timeout
# --------------------------------------------------------------------------------------------

IDLE = timedelta(minutes=10)


@nilva_settings(IDLE_TIMEOUT=IDLE)
@pytest.mark.parametrize("kind", DEVICES)
def test_asvs_7_3_1_idle_session_is_refused_cold(user, clock, kind):
    device = DEVICES[kind]()
    assert not is_cached(device)
    clock.advance(minutes=10, seconds=1)
    assert_ended(device, "session_idle")
    row = session_row(device)
    assert (row.is_active, row.end_reason) == (False, EndReason.IDLE)
    assert_ended(device)  # and it stays ended


@nilva_settings(IDLE_TIMEOUT=IDLE)
@pytest.mark.parametrize("kind", DEVICES)
def test_asvs_7_3_1_idle_session_is_refused_warm(user, clock, kind):
    device = DEVICES[kind]()
    warm(device)
    clock.advance(minutes=10, seconds=1)  # under SESSION_CACHE_TTL (15 min): still cached
    lapse_activity_markers(device)
    assert is_cached(device)
    assert_ended(device, "session_idle")
    assert session_row(device).end_reason == EndReason.IDLE
    assert_ended(device)


@nilva_settings(IDLE_TIMEOUT=IDLE)
def test_asvs_7_3_1_idle_jwt_cannot_be_refreshed(user, clock):
    device = jwt_device()
    clock.advance(minutes=11)
    response = device.client.post(REFRESH_URL, {"refresh": device.refresh}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "session_idle"


@nilva_settings(IDLE_TIMEOUT=IDLE)
@pytest.mark.parametrize("kind", DEVICES)
def test_asvs_7_3_1_session_used_within_the_timeout_stays_alive(user, clock, kind):
    device = DEVICES[kind]()
    warm(device)
    for _ in range(30):  # two hours, one request every four minutes
        clock.advance(minutes=4)
        lapse_activity_markers(device)
        assert whoami(device)[:2] == (200, None)
    assert session_row(device).is_active
    assert session_row(device).last_online == clock.now()


@nilva_settings(IDLE_TIMEOUT=IDLE)
def test_asvs_7_3_1_activity_just_inside_the_timeout_keeps_the_session(user, clock):
    device = token_device()
    clock.advance(minutes=9, seconds=59)  # last_online was written at login
    assert whoami(device)[:2] == (200, None)
    clock.advance(minutes=9, seconds=59)
    lapse_activity_markers(device)
    assert whoami(device)[:2] == (200, None)


@nilva_settings(IDLE_TIMEOUT=IDLE)
def test_asvs_7_3_1_idleness_is_measured_from_the_last_recorded_activity(user, clock):
    """Activity is written at most once per LAST_ONLINE_UPDATE_INTERVAL (60 s), so a session
    may end up to one interval early: never later than IDLE_TIMEOUT after its last request.
    docs/security.md states this granularity."""
    device = token_device()  # last_online written at login
    clock.advance(seconds=59)
    assert whoami(device)[:2] == (200, None)  # inside the interval: not written
    assert session_row(device).last_online == clock.now() - timedelta(seconds=59)
    clock.advance(minutes=9, seconds=2)  # 9:02 after that request, 10:01 after the last write
    lapse_activity_markers(device)
    assert_ended(device, "session_idle")


def test_asvs_7_3_1_idle_timeout_must_exceed_the_activity_interval():
    # E015 (it was E010, which also named invalid values: one id, one problem now)
    with nilva_settings(IDLE_TIMEOUT=timedelta(seconds=60)):
        assert "nilva_session.E015" in check_ids(checks.check_timeouts)
    with nilva_settings(IDLE_TIMEOUT=timedelta(minutes=5), LAST_ONLINE_UPDATE_INTERVAL=600):
        assert "nilva_session.E015" in check_ids(checks.check_timeouts)
    with nilva_settings(IDLE_TIMEOUT=timedelta(seconds=0)):
        assert "nilva_session.E010" in check_ids(checks.check_timeouts)
    with nilva_settings(IDLE_TIMEOUT=timedelta(seconds=61)):
        assert check_ids(checks.check_timeouts) == []
    with nilva_settings(IDLE_TIMEOUT=600):  # seconds are accepted
        assert check_ids(checks.check_timeouts) == []


# --------------------------------------------------------------------------------------------
# ASVS 5.0 7.3.2 / 4.0.3 3.3.2: absolute lifetime, sliding expiry
# --------------------------------------------------------------------------------------------


@nilva_settings(EXPIRE_AT=timedelta(days=30), ABSOLUTE_LIFETIME=timedelta(hours=8))
@pytest.mark.parametrize("kind", DEVICES)
def test_asvs_7_3_2_absolute_lifetime_caps_the_expiry_at_login(user, clock, kind):
    device = DEVICES[kind]()
    row = session_row(device)
    assert row.expire_at == row.created_at + timedelta(hours=8) == clock.now() + timedelta(hours=8)
    clock.advance(hours=8)
    assert_ended(device, "session_expired")


@nilva_settings(EXPIRE_AT=None, ABSOLUTE_LIFETIME=timedelta(hours=8))
def test_asvs_7_3_2_absolute_lifetime_caps_sessions_that_would_never_expire(user, clock):
    device = token_device()
    assert session_row(device).expire_at == clock.now() + timedelta(hours=8)
    session, _token = sessions.open_session(user, expire_at=clock.now() + timedelta(days=400))
    assert session.expire_at == clock.now() + timedelta(hours=8)


@nilva_settings(
    SLIDING_EXPIRY=True, EXPIRE_AT=timedelta(hours=1), ABSOLUTE_LIFETIME=timedelta(hours=8)
)
@pytest.mark.parametrize("kind", DEVICES)
def test_asvs_7_3_2_sliding_session_in_constant_use_ends_at_the_absolute_lifetime(
    user, clock, kind
):
    device = DEVICES[kind]()
    warm(device)
    for _ in range(15):  # every 30 minutes for 7.5 hours: far past EXPIRE_AT, kept by sliding
        clock.advance(minutes=30)
        lapse_activity_markers(device)
        assert whoami(device)[:2] == (200, None)
    assert session_row(device).expire_at == session_row(device).created_at + timedelta(hours=8)
    clock.advance(minutes=30)
    lapse_activity_markers(device)
    assert_ended(device, "session_expired")
    if kind == "jwt":
        response = device.client.post(REFRESH_URL, {"refresh": device.refresh}, format="json")
        assert response.status_code == 401


@nilva_settings(
    SLIDING_EXPIRY=True, EXPIRE_AT=timedelta(hours=7), ABSOLUTE_LIFETIME=timedelta(hours=8)
)
def test_asvs_7_3_2_sliding_is_one_conditional_update_per_interval_and_never_past_the_cap(
    user, clock
):
    device = token_device()
    warm(device)
    clock.advance(minutes=2)
    lapse_activity_markers(device)
    with CaptureQueriesContext(connection) as queries:
        assert device.client.get(WHOAMI_URL).status_code == 200
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 1, statements
    update = statements[0]
    assert update.startswith("UPDATE")
    where = update.split("WHERE", 1)[1]
    assert '"is_active"' in where
    assert '"id"' in where
    assert '"expire_at"' in update.split("WHERE", 1)[0]
    slid = clock.now() + timedelta(hours=7)
    assert session_row(device).expire_at == slid

    clock.advance(seconds=30)  # within the interval: nothing written
    assert whoami(device) == (200, None, 0)
    assert session_row(device).expire_at == slid

    clock.advance(hours=6, minutes=57, seconds=30)  # 7h after login: now + 7h is past the cap
    lapse_activity_markers(device)
    assert whoami(device)[:2] == (200, None)
    assert session_row(device).expire_at == session_row(device).created_at + timedelta(hours=8)


@nilva_settings(
    SLIDING_EXPIRY=True, EXPIRE_AT=timedelta(hours=1), ABSOLUTE_LIFETIME=timedelta(hours=8)
)
def test_asvs_7_3_2_sliding_never_revives_an_ended_session(user, clock):
    device = token_device()
    warm(device)
    sessions.revoke(UserSession.objects.filter(pk=device.session_id))
    clock.advance(minutes=2)
    lapse_activity_markers(device)
    assert_ended(device)
    row = session_row(device)
    assert not row.is_active
    assert row.expire_at == row.created_at + timedelta(hours=1)


def test_asvs_7_3_2_a_shorter_absolute_lifetime_applies_to_existing_sessions(user, clock):
    with nilva_settings(EXPIRE_AT=timedelta(days=30)):
        cold, hot = token_device(), jwt_device()
        warm(hot)
    with nilva_settings(EXPIRE_AT=timedelta(days=30), ABSOLUTE_LIFETIME=timedelta(hours=1)):
        clock.advance(minutes=59)
        warm(hot)
        clock.advance(minutes=1)
        assert_ended(cold, "session_expired")
        assert_ended(hot, "session_expired")


def test_asvs_7_3_2_sliding_expiry_needs_an_absolute_lifetime():
    with nilva_settings(SLIDING_EXPIRY=True):
        assert "nilva_session.E011" in check_ids(checks.check_timeouts)
    with nilva_settings(SLIDING_EXPIRY=True, ABSOLUTE_LIFETIME=timedelta(days=30)):
        assert check_ids(checks.check_timeouts) == []
    with nilva_settings(ABSOLUTE_LIFETIME=timedelta(days=-1)):
        assert "nilva_session.E010" in check_ids(checks.check_timeouts)


# --------------------------------------------------------------------------------------------
# ASVS 5.0 7.1.2: concurrent-session limit
# --------------------------------------------------------------------------------------------


@nilva_settings(MAX_SESSIONS_PER_USER=2)
def test_asvs_7_1_2_limit_ends_the_least_recently_used_session(user, clock):
    first = token_device()
    clock.advance(minutes=1)
    second = jwt_device(ua=IPHONE_UA)
    warm(second)
    clock.advance(minutes=2)
    assert whoami(first)[:2] == (200, None)  # first is now the more recently used
    clock.advance(minutes=1)
    third = token_device(ua=FIREFOX_UA)
    assert_ended(second)  # its warm cached copy is refused
    assert session_row(second).end_reason == EndReason.REPLACED
    assert whoami(first)[:2] == (200, None)
    assert whoami(third)[:2] == (200, None)
    assert UserSession.objects.for_user(user).active().count() == 2
    assert history(third)[second.session_id] == "replaced"


@nilva_settings(MAX_SESSIONS_PER_USER=2, SESSION_LIMIT_POLICY="refuse")
@pytest.mark.parametrize("url", [LOGIN_URL, TOKEN_URL])
def test_asvs_7_1_2_limit_refuses_a_new_login(user, url):
    first, second = token_device(), jwt_device()
    before = list(UserSession.objects.order_by("pk").values_list("pk", "is_active"))
    response = client_from().post(url, {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "session_limit_reached"
    assert "token" not in response.json()
    assert "access" not in response.json()
    assert list(UserSession.objects.order_by("pk").values_list("pk", "is_active")) == before
    assert whoami(first)[:2] == whoami(second)[:2] == (200, None)
    assert first.client.post(LOGOUT_URL).status_code == 204
    assert token_device()  # room again


@nilva_settings(MAX_SESSIONS_PER_USER=1, SESSION_LIMIT_POLICY="refuse")
def test_asvs_7_1_2_ended_and_expired_sessions_do_not_count(user, clock):
    token_device()
    clock.advance(days=1)  # EXPIRE_AT: the first one has expired
    second = token_device()
    second.client.post(LOGOUT_URL)
    assert token_device()


@nilva_settings(MAX_SESSIONS_PER_USER=1)
def test_asvs_7_1_2_limit_is_per_user(user, other_user):
    alice, bob = token_device(), token_device(username="bob")
    assert whoami(alice)[:2] == whoami(bob)[:2] == (200, None)


@pytest.mark.parametrize(
    ("limit", "policy", "ok"),
    [
        (None, "end_least_recent", True),
        (1, "refuse", True),
        (0, "refuse", False),
        (-1, "end_least_recent", False),
        (True, "refuse", False),
        ("3", "refuse", False),
        (3, "oldest", False),
    ],
)
def test_asvs_7_1_2_limit_settings_are_checked(limit, policy, ok):
    with nilva_settings(MAX_SESSIONS_PER_USER=limit, SESSION_LIMIT_POLICY=policy):
        ids = check_ids(checks.check_session_limit)
    assert ids == ([] if ok else ["nilva_session.E012"])


def _run_together(count: int, target) -> list:
    """Run ``target()`` in ``count`` threads released at the same instant; return results."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(10)
            results[index] = target()
        except BaseException as error:
            results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a login thread did not finish"
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


@pytest.mark.services
@pytest.mark.skipif(
    not POSTGRES, reason="needs PostgreSQL row locks: run with --ds=tests.settings_services"
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("policy", ["end_least_recent", "refuse"])
def test_asvs_7_1_2_limit_holds_under_concurrent_logins(user, policy):
    try:
        connection.ensure_connection()
    except Exception as error:
        pytest.fail(f"PostgreSQL is unreachable ({error}); this test needs it")
    limit, logins, rounds = 2, 10, 3
    peak = [0]
    done = threading.Event()

    def watch() -> None:  # samples the committed number of live sessions while logins race
        try:
            while not done.is_set():
                peak[0] = max(peak[0], UserSession.objects.for_user(user).active().count())
        finally:
            connection.close()

    def login() -> int:
        response = client_from().post(
            LOGIN_URL, {"username": "alice", "password": PASSWORD}, format="json"
        )
        return response.status_code

    statuses: list[int] = []
    with nilva_settings(MAX_SESSIONS_PER_USER=limit, SESSION_LIMIT_POLICY=policy):
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            for _ in range(rounds):
                statuses += _run_together(logins, login)
                assert UserSession.objects.for_user(user).active().count() == limit
        finally:
            done.set()
            watcher.join(10)
    assert peak[0] <= limit
    if policy == "refuse":
        assert sorted(statuses) == [200] * limit + [403] * (logins * rounds - limit)
    else:
        assert statuses == [200] * (logins * rounds)
    if policy == "refuse":
        assert UserSession.objects.for_user(user).count() == limit  # only the first two exist
    else:
        ended = UserSession.objects.for_user(user).filter(is_active=False)
        assert ended.count() == logins * rounds - limit
        assert set(ended.values_list("end_reason", flat=True)) == {EndReason.REPLACED}


# --------------------------------------------------------------------------------------------
# ASVS 5.0 7.5.1 / 7.5.3 / 4.0.3 3.7.1: re-authentication for sensitive operations
# (the permission's own details: tests/test_permissions.py)
# --------------------------------------------------------------------------------------------


def sensitive(device, url=SENSITIVE_URL):
    response = device.client.post(url)
    return response.status_code, response.json().get("code")


def reauthenticate(device, password=PASSWORD):
    return device.client.post(REAUTH_URL, {"password": password}, format="json")


@pytest.mark.parametrize("kind", DEVICES)
def test_asvs_7_5_1_sensitive_operation_needs_a_recent_password(user, clock, kind):
    device = DEVICES[kind]()
    assert sensitive(device) == (200, None)  # login proves the password
    warm(device)
    clock.advance(minutes=15, seconds=1)
    assert sensitive(device) == (403, "reauthentication_required")
    assert whoami(device)[:2] == (200, None)  # the session itself is fine

    wrong = reauthenticate(device, "not the password")
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "invalid_password"
    assert sensitive(device) == (403, "reauthentication_required")

    right = reauthenticate(device)
    assert right.status_code == 200
    assert right.json()["session_id"] == str(session_row(device).pk)
    assert session_row(device).authenticated_at == clock.now()
    assert sensitive(device) == (200, None)
    assert sensitive(device) == (200, None)  # warm again, with the new authenticated_at


def test_asvs_7_5_3_a_view_can_ask_for_a_fresher_password(user, clock):
    device = token_device()
    clock.advance(minutes=6)
    assert sensitive(device, VERY_SENSITIVE_URL) == (403, "reauthentication_required")
    assert sensitive(device) == (200, None)  # the 15-minute default still passes
    assert reauthenticate(device).status_code == 200
    assert sensitive(device, VERY_SENSITIVE_URL) == (200, None)


@nilva_settings(REAUTHENTICATION_MAX_AGE=timedelta(minutes=2))
def test_asvs_7_5_1_max_age_follows_the_setting(user, clock):
    device = token_device()
    clock.advance(minutes=2, seconds=1)
    assert sensitive(device) == (403, "reauthentication_required")


def test_asvs_7_5_1_reauthentication_of_one_session_does_not_vouch_for_another(user, clock):
    one, other = token_device(), jwt_device()
    clock.advance(minutes=16)
    assert reauthenticate(one).status_code == 200
    assert sensitive(one) == (200, None)
    assert sensitive(other) == (403, "reauthentication_required")


@nilva_settings(LOGIN_THROTTLE_RATE="3/min")
def test_asvs_7_5_1_reauthentication_is_throttled(user):
    device = token_device(ip=OTHER_IP)  # the login spends one of OTHER_IP's three attempts
    proved = session_row(device).authenticated_at
    for _ in range(2):
        assert reauthenticate(device, "guess").status_code == 400
    throttled = reauthenticate(device)  # the right password, too late
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    assert session_row(device).authenticated_at == proved
    # Per user as well: from another address, the user's budget (three attempts) is spent.
    elsewhere = SimpleNamespace(client=client_from(ip="192.0.2.1"))
    elsewhere.client.credentials(HTTP_AUTHORIZATION=f"Token {device.token}")
    assert reauthenticate(elsewhere).status_code == 429


def test_asvs_7_5_1_reauthentication_needs_a_session(user):
    assert client_from().post(REAUTH_URL, {"password": PASSWORD}, format="json").status_code == 401


# --------------------------------------------------------------------------------------------
# ASVS 5.0 7.5.2 / 4.0.3 3.3.4: users see and end their sessions (with a recent password)
# --------------------------------------------------------------------------------------------


def test_asvs_7_5_2_users_list_and_end_their_sessions(user, other_user):
    mine, other_mine = token_device(), jwt_device(ua=IPHONE_UA)
    theirs = token_device(username="bob")
    listed = mine.client.get(ACTIVE_URL).json()
    assert {row["session_id"] for row in listed} == {mine.session_id, other_mine.session_id}
    response = mine.client.delete(
        f"{ACTIVE_URL}?token_id={other_mine.session_id}&token_id={theirs.session_id}"
    )
    assert response.status_code == 204
    assert_ended(other_mine)
    assert whoami(theirs)[:2] == (200, None)  # another user's id changes nothing


def test_asvs_7_5_2_ending_sessions_can_require_a_recent_password(user, clock):
    mine, other = token_device(), token_device(ua=FIREFOX_UA)
    clock.advance(minutes=16)
    assert mine.client.get(GUARDED_SESSIONS_URL).status_code == 200
    refused = mine.client.delete(f"{GUARDED_SESSIONS_URL}?token_id={other.session_id}")
    assert (refused.status_code, refused.json()["code"]) == (403, "reauthentication_required")
    assert whoami(other)[:2] == (200, None)
    assert reauthenticate(mine).status_code == 200
    assert (
        mine.client.delete(f"{GUARDED_SESSIONS_URL}?token_id={other.session_id}").status_code == 204
    )
    assert_ended(other)


# --------------------------------------------------------------------------------------------
# ASVS 5.0 7.4.1 / 4.0.3 3.3.1: logout and expiry end the session everywhere
# ASVS 5.0 7.4.5: administrators end sessions
# --------------------------------------------------------------------------------------------


def test_asvs_7_4_1_logout_ends_the_token_session_even_when_cached(user):
    device, other = token_device(), token_device(ua=FIREFOX_UA)
    warm(device, other)
    assert device.client.post(LOGOUT_URL).status_code == 204
    assert_ended(device)
    assert session_row(device).end_reason == EndReason.LOGOUT
    assert whoami(other)[:2] == (200, None)


def test_asvs_7_4_1_jwt_logout_ends_access_and_refresh(user):
    device = jwt_device()
    warm(device)
    response = client_from().post(JWT_LOGOUT_URL, {"refresh": device.refresh}, format="json")
    assert response.status_code == 204
    assert_ended(device)  # the access token is still within its exp: the session decides
    assert (
        device.client.post(REFRESH_URL, {"refresh": device.refresh}, format="json").status_code
        == 401
    )


@pytest.mark.parametrize("kind", DEVICES)
def test_asvs_7_4_1_expired_session_is_refused_even_when_cached(user, clock, kind):
    device = DEVICES[kind]()
    warm(device)
    clock.advance(days=1)  # EXPIRE_AT
    assert_ended(device, "session_expired")


def test_asvs_7_4_5_admin_ends_every_session_of_a_user(user, other_user, admin_client):
    """More in tests/test_admin.py (``test_end_action_*``)."""
    devices = three_devices()
    bob = token_device(username="bob")
    ids = [str(pk) for pk in UserSession.objects.for_user(user).values_list("pk", flat=True)]
    response = admin_client.post(
        reverse("admin:nilva_session_usersession_changelist"),
        {"action": "end_sessions", "_selected_action": ids},
    )
    assert response.status_code == 302
    for device in devices:
        assert_ended(device)
        assert session_row(device).end_reason == EndReason.ADMIN
    assert whoami(bob)[:2] == (200, None)


# --------------------------------------------------------------------------------------------
# ASVS 5.0 7.2.1-7.2.4 / 4.0.3 3.2.x, 3.5.x: how tokens are made and checked
# --------------------------------------------------------------------------------------------


def test_asvs_7_2_3_reference_tokens_are_csprng_unique_and_over_128_bits(user, monkeypatch):
    """And tests/test_utils.py (``test_random_token_draws_from_secrets`` and neighbours)."""
    import math
    import secrets as secrets_module

    from nilva_session import utils

    calls = []

    def counting_choice(sequence):
        calls.append(1)
        return secrets_module.choice(sequence)

    monkeypatch.setattr(
        utils,
        "secrets",
        SimpleNamespace(choice=counting_choice, compare_digest=secrets_module.compare_digest),
    )
    tokens = {token_device().token for _ in range(20)}
    assert len(tokens) == 20
    assert len(calls) == 20 * 43
    body = next(iter(tokens))[len("nvs_") : -6]
    assert len(body) * math.log2(62) >= 256
    with nilva_settings(TOKEN_SIZE=21):  # 125 bits: refused at start-up
        assert "nilva_session.E002" in check_ids(checks.check_token_size)
    # Stored and cached by digest only.
    token = next(iter(tokens))
    row = UserSession.objects.get(key=hash_data(token))
    assert token not in str(list(UserSession.objects.filter(pk=row.pk).values()))


def test_asvs_7_2_4_every_login_gets_a_new_token_whatever_the_client_sends(user):
    first = token_device()
    response = first.client.post(
        LOGIN_URL, {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    second = response.json()
    assert second["token"] != first.token
    assert second["session_id"] != first.session_id
    jwt = jwt_device()
    assert jwt.session_id not in (first.session_id, second["session_id"])


def test_asvs_7_2_1_tokens_are_verified_by_the_server_not_trusted_from_the_client(user):
    """A token that merely looks right (valid prefix and checksum) is refused."""
    device = token_device()
    forged = client_from()
    forged.credentials(HTTP_AUTHORIZATION=f"Token {token_generator()}")
    assert forged.get(WHOAMI_URL).status_code == 401
    assert whoami(device)[:2] == (200, None)


def _jwt_with(payload: dict, key: str = settings.SECRET_KEY, algorithm: str = "HS256") -> str:
    return pyjwt.encode(payload, key, algorithm=algorithm)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_asvs403_3_5_3_tampered_or_unsigned_jwts_are_refused(user, other_user):
    device = jwt_device()
    claims = pyjwt.decode(device.access, options={"verify_signature": False})
    bob = token_device(username="bob")
    forgeries = {
        "alg none": pyjwt.encode(claims, None, algorithm="none"),
        "other key": _jwt_with(claims, key="another-key-that-is-long-enough-for-hs256"),
        "payload edited, signature kept": ".".join(
            [
                device.access.split(".")[0],
                pyjwt.utils.base64url_encode(
                    pyjwt.api_jws.json.dumps({**claims, "user_id": other_user.pk}).encode()
                ).decode(),
                device.access.split(".")[2],
            ]
        ),
        "HS512 with the right key": _jwt_with(claims, algorithm="HS512"),
    }
    for name, forged in forgeries.items():
        client = client_from()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")
        assert client.get(WHOAMI_URL).status_code == 401, name
    # Correctly signed, but naming someone else's session (or another user for this session):
    # refused, and bob's session is not suspended by the attempt.
    for payload in ({**claims, "session_id": bob.session_id}, {**claims, "user_id": other_user.pk}):
        client = client_from(ua=FIREFOX_UA)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {_jwt_with(payload)}")
        assert client.get(WHOAMI_URL).status_code == 401
    assert whoami(bob)[:2] == (200, None)
    assert whoami(device)[:2] == (200, None)


# --------------------------------------------------------------------------------------------
# ASVS 4.0.3 3.1.1: tokens stay out of URLs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parameter", ["token", "auth_token", "access_token", "key", "jwt"])
@pytest.mark.parametrize("kind", DEVICES)
def test_asvs403_3_1_1_token_in_the_query_string_is_never_accepted(user, parameter, kind):
    device = DEVICES[kind]()
    credential = device.token if kind == "token" else device.access
    anonymous = client_from()
    response = anonymous.get(f"{WHOAMI_URL}?{parameter}={credential}")
    assert response.status_code == 401
    assert (
        anonymous.post(f"{REAUTH_URL}?{parameter}={credential}", {"password": PASSWORD}).status_code
        == 401
    )
    form = anonymous.post(WHOAMI_URL, {parameter: credential})
    assert form.status_code == 401


def test_asvs403_3_1_1_login_puts_no_token_in_a_url_or_header(user):
    response = client_from().post(
        LOGIN_URL, {"username": "alice", "password": PASSWORD}, format="json"
    )
    token = response.json()["token"]
    assert "Location" not in response
    assert all(token not in value for _name, value in response.items())


# --------------------------------------------------------------------------------------------
# ASVS 4.0.3 7.1.1, 7.2.1: security events logged with the session id, never the token or digest
# --------------------------------------------------------------------------------------------


def _all_text(record: logging.LogRecord) -> str:
    """The formatted message and the arguments; for nilva's records, every attribute too."""
    parts = [record.getMessage(), repr(record.args), repr(record.msg)]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    if record.name.startswith("nilva_session"):
        parts.extend(repr(value) for value in vars(record).values())
    return "\n".join(parts)


@nilva_settings(INVALID_TOKEN_THROTTLE_RATE="2/min")
def test_asvs403_7_1_1_security_events_are_logged_without_tokens_or_digests(user, caplog):
    caplog.set_level(logging.DEBUG)
    secrets_seen: list[str] = []

    device = token_device()  # login
    secrets_seen += [device.token, hash_data(device.token)]
    jwt = jwt_device()
    secrets_seen += [jwt.access, jwt.refresh]
    failed = client_from().post(
        LOGIN_URL, {"username": "alice", "password": "wrong"}, format="json"
    )
    assert failed.status_code == 400
    warm(device, jwt)
    suspended = token_device()
    secrets_seen += [suspended.token, hash_data(suspended.token)]
    thief = SimpleNamespace(kind="token", client=client_from(ua=IPHONE_UA))
    thief.client.credentials(HTTP_AUTHORIZATION=f"Token {suspended.token}")
    assert_ended(thief, "session_suspended")
    unknown = [token_generator() for _ in range(3)]
    secrets_seen += unknown + [hash_data(t) for t in unknown]
    guesser = client_from(ip=OTHER_IP)
    codes = []
    for guess in unknown:
        guesser.credentials(HTTP_AUTHORIZATION=f"Token {guess}")
        codes.append(guesser.get(WHOAMI_URL).status_code)
    assert codes == [401, 401, 429]
    assert device.client.post(LOGOUT_URL).status_code == 204
    query = client_from().get(f"{WHOAMI_URL}?token={jwt.access}")
    assert query.status_code == 401

    security = [r for r in caplog.records if r.name == "nilva_session.security"]
    messages = "\n".join(r.getMessage() for r in security)
    assert f"session opened: session={device.session_id}" in messages
    assert "login failed" in messages
    assert f"session suspended: session={suspended.session_id}" in messages
    assert (
        f"authentication refused: session={suspended.session_id} reason=session_suspended"
        in messages
    )
    assert "authentication throttled" in messages
    assert f"session ended: session={device.session_id} user={user.pk} reason=logout" in messages
    for record in caplog.records:
        if record.name.startswith("django.db.backends"):
            continue  # SQL logging is the project's DEBUG choice, not a security log
        text = _all_text(record)
        for secret in secrets_seen:
            assert secret not in text, (record.name, record.getMessage())


# --------------------------------------------------------------------------------------------
# client IP behind proxies (feeds last_ip, BIND_IP and the per-IP throttles)
# --------------------------------------------------------------------------------------------


def test_threat_proxy_spoofing_remote_addr_is_the_default_and_x_forwarded_for_is_ignored(user):
    device = token_device(ip=IP, HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert session_row(device).last_ip == IP
    device.client.get(WHOAMI_URL, HTTP_X_FORWARDED_FOR="7.7.7.7")
    assert session_row(device).last_ip == IP


@nilva_settings(TRUSTED_PROXY_COUNT=1)
def test_threat_proxy_spoofing_trusted_proxy_count(user):
    # One proxy (10.0.0.1) appends the address it saw; what the client wrote before is ignored.
    device = token_device(ip="10.0.0.1", HTTP_X_FORWARDED_FOR=f"6.6.6.6, {OTHER_IP}")
    assert session_row(device).last_ip == OTHER_IP
    no_header = token_device(ip="10.0.0.1")
    assert session_row(no_header).last_ip == "10.0.0.1"


@nilva_settings(TRUSTED_PROXIES=["10.0.0.0/8", "2001:db8::/32"])
def test_threat_proxy_spoofing_trusted_proxy_networks(user):
    device = token_device(ip="10.0.0.2", HTTP_X_FORWARDED_FOR=f"6.6.6.6, {OTHER_IP}, 10.1.2.3")
    assert session_row(device).last_ip == OTHER_IP
    direct = token_device(ip=IP, HTTP_X_FORWARDED_FOR="6.6.6.6")  # not from a trusted proxy
    assert session_row(direct).last_ip == IP


BAD_FORWARDED = [
    "garbage",
    "<script>alert(1)</script>",
    "203.0.113.9:443",
    "unknown",
    "999.1.1.1",
    " , , ",
    "1.2.3.4\x00",
    "fe80::1%eth0%x",
    "a" * 5000,
    ",".join(["6.6.6.6"] * 100) + ",zz",
]


@pytest.mark.parametrize("forwarded", BAD_FORWARDED)
@pytest.mark.parametrize(
    "options",
    [{"TRUSTED_PROXY_COUNT": 1}, {"TRUSTED_PROXIES": ["10.0.0.0/8"]}],
    ids=["count", "networks"],
)
def test_threat_proxy_spoofing_invalid_addresses_are_never_stored(user, forwarded, options):
    with nilva_settings(**options):
        device = token_device(ip="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded)
        device.client.get(WHOAMI_URL, HTTP_X_FORWARDED_FOR=forwarded, REMOTE_ADDR="10.0.0.2")
    stored = session_row(device).last_ip
    assert str(ipaddress.ip_address(stored)) == stored
    assert stored == "10.0.0.2"


@pytest.mark.parametrize(
    ("options", "ok"),
    [
        ({"TRUSTED_PROXY_COUNT": 2}, True),
        ({"TRUSTED_PROXIES": ["10.0.0.0/8", "fd00::/8"]}, True),
        ({"TRUSTED_PROXY_COUNT": -1}, False),
        ({"TRUSTED_PROXY_COUNT": True}, False),
        ({"TRUSTED_PROXIES": "10.0.0.0/8"}, False),
        ({"TRUSTED_PROXIES": ["10.0.0.0/33"]}, False),
        ({"TRUSTED_PROXIES": ["proxy.internal"]}, False),
        ({"TRUSTED_PROXY_COUNT": 1, "TRUSTED_PROXIES": ["10.0.0.0/8"]}, False),
    ],
)
def test_threat_proxy_spoofing_proxy_settings_are_checked(options, ok):
    with nilva_settings(**options):
        ids = check_ids(checks.check_trusted_proxies)
    assert ids == ([] if ok else ["nilva_session.E013"])


# --------------------------------------------------------------------------------------------
# token guessing (ASVS 4.0.3 2.2.1 anti-automation; more in tests/test_guessing.py)
# --------------------------------------------------------------------------------------------


@nilva_settings(INVALID_TOKEN_THROTTLE_RATE="5/min")
def test_threat_token_guessing_is_throttled_per_client_ip(user, django_assert_num_queries):
    device = token_device()
    warm(device)
    guesser = client_from()  # same IP as the device
    for _ in range(5):
        guesser.credentials(HTTP_AUTHORIZATION=f"Token {token_generator()}")
        assert guesser.get(WHOAMI_URL).status_code == 401
    guesser.credentials(HTTP_AUTHORIZATION=f"Token {token_generator()}")
    with django_assert_num_queries(0):
        throttled = guesser.get(WHOAMI_URL)
    assert throttled.status_code == 429
    assert 0 < int(throttled["Retry-After"]) <= 60
    with django_assert_num_queries(0):
        assert device.client.get(WHOAMI_URL).status_code == 200  # a live cached session still works
    elsewhere = client_from(ip=OTHER_IP)
    elsewhere.credentials(HTTP_AUTHORIZATION=f"Token {token_generator()}")
    assert elsewhere.get(WHOAMI_URL).status_code == 401  # another IP is not affected


@nilva_settings(LOGIN_THROTTLE_RATE="2/min")
def test_asvs403_2_2_1_login_is_throttled_per_ip_and_username(user, caplog):
    """One case here; tests/test_throttling.py covers both budgets, windows and outages."""
    caplog.set_level(logging.INFO, logger="nilva_session.security")
    attacker = client_from()
    for _ in range(2):
        response = attacker.post(
            LOGIN_URL, {"username": "alice", "password": "guess"}, format="json"
        )
        assert response.status_code == 400
    response = attacker.post(LOGIN_URL, {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 429
    assert "token" not in response.json()
    # The username's budget is spent too: from another IP, alice is throttled.
    other = client_from(ip=OTHER_IP).post(
        LOGIN_URL, {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert other.status_code == 429
    throttled = [r.getMessage() for r in caplog.records if "login throttled" in r.getMessage()]
    assert any(f"ip={IP}" in message for message in throttled)
    assert any(f"ip={OTHER_IP}" in message for message in throttled)


# --------------------------------------------------------------------------------------------
# stolen tokens: user-agent check and optional IP binding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DEVICES)
def test_threat_stolen_token_user_agent_change_suspends(user, kind):
    device = DEVICES[kind]()
    warm(device)
    thief = client_from(ua=IPHONE_UA)
    thief.credentials(HTTP_AUTHORIZATION=device.client._credentials["HTTP_AUTHORIZATION"])
    response = thief.get(WHOAMI_URL)
    assert (response.status_code, response.json()["code"]) == (401, "session_suspended")
    row = session_row(device)
    assert (row.is_active, row.end_reason) == (False, EndReason.USER_AGENT_CHANGED)
    assert_ended(device)  # the owner has to sign in again too


@pytest.mark.parametrize(
    ("mode", "suspends"), [("family", False), ("strict", True), ("off", False)]
)
def test_threat_stolen_token_user_agent_check_modes(user, mode, suspends):
    with nilva_settings(USER_AGENT_CHECK=mode):
        device = token_device()
        bumped = client_from(ua=DESKTOP_UA.replace("Chrome/120.0.0.0", "Chrome/121.0.0.0"))
        bumped.credentials(HTTP_AUTHORIZATION=f"Token {device.token}")
        assert bumped.get(WHOAMI_URL).status_code == (401 if suspends else 200)
        other_browser = client_from(ua=FIREFOX_UA)
        other_browser.credentials(HTTP_AUTHORIZATION=f"Token {device.token}")
        expected = 200 if mode == "off" else 401
        assert other_browser.get(WHOAMI_URL).status_code == expected


def test_threat_stolen_token_ip_change_is_allowed_by_default(user):
    device = token_device()
    warm(device)
    roaming = client_from(ip=OTHER_IP)
    roaming.credentials(HTTP_AUTHORIZATION=f"Token {device.token}")
    assert roaming.get(WHOAMI_URL).status_code == 200
    assert session_row(device).last_ip == OTHER_IP


@nilva_settings(BIND_IP=True)
@pytest.mark.parametrize("kind", DEVICES)
def test_threat_stolen_token_bind_ip_suspends_on_an_ip_change(user, kind):
    device = DEVICES[kind]()
    warm(device)
    thief = client_from(ip=OTHER_IP)
    thief.credentials(HTTP_AUTHORIZATION=device.client._credentials["HTTP_AUTHORIZATION"])
    response = thief.get(WHOAMI_URL)
    assert (response.status_code, response.json()["code"]) == (401, "session_suspended")
    row = session_row(device)
    assert (row.is_active, row.end_reason) == (False, EndReason.IP_CHANGED)
    assert OTHER_IP in row.detail
    assert_ended(device)
    if kind == "jwt":
        response = device.client.post(REFRESH_URL, {"refresh": device.refresh}, format="json")
        assert response.status_code == 401


@nilva_settings(BIND_IP=True)
def test_threat_stolen_token_bind_ip_accepts_the_same_ip(user, clock):
    device = token_device()
    for _ in range(3):
        clock.advance(minutes=2)
        lapse_activity_markers(device)
        assert whoami(device)[:2] == (200, None)


@nilva_settings(BIND_IP=True)
def test_threat_bind_ip_binds_a_session_opened_without_an_ip_on_the_warm_path_too(user):
    # Opened without a usable IP: the first request binds it, and the cached copy must carry
    # that binding (the copy is filled after the activity write).
    from .conftest import FakeRequest

    session, token = sessions.open_session(user, FakeRequest(DESKTOP_UA, ""))
    assert session.last_ip is None
    first = client_from(ip=IP)
    first.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert first.get(WHOAMI_URL).status_code == 200
    thief = client_from(ip=OTHER_IP)
    thief.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = thief.get(WHOAMI_URL)
    assert (response.status_code, response.json()["code"]) == (401, "session_suspended")
    assert UserSession.objects.get(pk=session.pk).end_reason == EndReason.IP_CHANGED


# --------------------------------------------------------------------------------------------
# property: the JWT class never raises anything but AuthenticationFailed
# (the opaque-token class: tests/test_authentication.py
#  ::test_any_header_returns_none_or_raises_authentication_failed; HTTP-level JWT garbage:
#  tests/test_jwt.py::test_any_bearer_garbage_is_401_never_500)
# --------------------------------------------------------------------------------------------


def jwt_request(authorization) -> Request:
    meta = {"HTTP_USER_AGENT": DESKTOP_UA, "REMOTE_ADDR": IP}
    if authorization is not None:
        meta["HTTP_AUTHORIZATION"] = authorization
    return Request(
        APIRequestFactory().get(WHOAMI_URL, **meta),
        authenticators=[UserSessionDBJwtAuthentication()],
    )


def _counting_cache(monkeypatch) -> list[str]:
    calls: list[str] = []
    backend = cache.get_cache()
    for name in ("get", "get_many", "add", "set", "set_many", "delete", "delete_many", "incr"):
        method = getattr(backend, name)

        def spy(*args, _name=name, _method=method, **kwargs):
            calls.append(_name)
            return _method(*args, **kwargs)

        monkeypatch.setattr(backend, name, spy)
    return calls


JWT_HEADERS = st.one_of(
    st.text(),
    st.binary(),
    st.builds(
        "{} {}".format, st.sampled_from(["Bearer", "bearer", "BEARER", "JWT", "Token"]), st.text()
    ),
    st.builds(lambda body: b"Bearer " + body, st.binary()),
    st.builds(
        "Bearer {}.{}.{}".format,
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
    ),
    st.builds(lambda a, b: f"Bearer {a} {b}", st.text(min_size=1), st.text(min_size=1)),
)


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=JWT_HEADERS)
def test_asvs_7_2_1_any_bearer_header_is_refused_before_the_database(value, monkeypatch):
    """No header makes the JWT class raise anything but AuthenticationFailed or look anything up."""
    calls = _counting_cache(monkeypatch)
    with CaptureQueriesContext(connection) as queries:
        try:
            result = UserSessionDBJwtAuthentication().authenticate(jwt_request(value))
        except AuthenticationFailed:
            result = None
    assert result is None
    assert len(queries) == 0, value
    assert calls == [], value
    monkeypatch.undo()


CLAIM_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.uuids().map(str),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=5,
)


def _is_uuid(value) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        return False
    return True


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(session_claim=CLAIM_VALUES, user_claim=CLAIM_VALUES, drop=st.booleans())
def test_asvs_7_2_1_any_claims_in_a_signed_jwt_are_refused_without_a_500(
    session_claim, user_claim, drop, monkeypatch
):
    """Validly signed tokens with any session and user claims: a user, or AuthenticationFailed.

    Only a session claim that is a UUID reaches the cache or the database.
    """
    token = AccessToken()
    token["user_id"] = user_claim
    if not drop:
        token["session_id"] = session_claim
    calls = _counting_cache(monkeypatch)
    with CaptureQueriesContext(connection) as queries:
        try:
            result = UserSessionDBJwtAuthentication().authenticate(jwt_request(f"Bearer {token}"))
        except (AuthenticationFailed, Throttled):
            result = None
    assert result is None  # no such session exists
    if drop or not _is_uuid(session_claim):
        assert len(queries) == 0
        assert calls == []
    monkeypatch.undo()


@nilva_settings(MAX_SESSIONS_PER_USER=1, SESSION_LIMIT_POLICY="refuse", IDLE_TIMEOUT=IDLE)
def test_asvs_7_1_2_sessions_past_the_idle_timeout_do_not_count(user, clock):
    abandoned = token_device()
    clock.advance(minutes=10, seconds=1)  # it can never be used again
    assert token_device()
    assert_ended(abandoned, "session_idle")


def test_asvs_7_1_2_sessions_past_the_absolute_lifetime_do_not_count(user, clock):
    with nilva_settings(EXPIRE_AT=timedelta(days=30)):
        old = token_device()
    clock.advance(hours=2)
    with nilva_settings(
        EXPIRE_AT=timedelta(days=30),
        ABSOLUTE_LIFETIME=timedelta(hours=1),
        MAX_SESSIONS_PER_USER=1,
        SESSION_LIMIT_POLICY="refuse",
    ):
        assert token_device()
        assert_ended(old, "session_expired")
