"""The JWT side: simplejwt access/refresh tokens bound to a ``UserSession`` (issue 3).

Endpoints: ``token/`` (obtain), ``token/refresh/``, ``token/logout/``; authentication class
``nilva_session.backends.UserSessionDBJwtAuthentication``. The blacklist-app variant runs in its
own process (see ``test_blacklist_app_suite_passes_in_its_own_process``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import sys
import uuid
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from pathlib import Path

import jwt as pyjwt
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model, user_logged_in, user_login_failed
from django.contrib.auth.backends import ModelBackend
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView
from rest_framework_simplejwt import authentication as simplejwt_authentication
from rest_framework_simplejwt import settings as simplejwt_settings_module
from rest_framework_simplejwt import state as simplejwt_state
from rest_framework_simplejwt import tokens as simplejwt_tokens
from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from nilva_session import cache as session_cache
from nilva_session.backends import UserSessionDBJwtAuthentication, UserSessionDBTokenAuthentication
from nilva_session.models import EndReason, UserSession
from nilva_session.serializers import TokenSessionObtainPairSerializer
from nilva_session.sessions import current_session
from nilva_session.signals import session_created
from tests.conftest import DESKTOP_UA, FIREFOX_UA, PASSWORD
from tests.support.doubles import nilva_settings
from tests.support.subsuite import assert_suite_passes

OBTAIN_URL = "/api/sessions/token/"
REFRESH_URL = "/api/sessions/token/refresh/"
LOGOUT_URL = "/api/sessions/token/logout/"
ACTIVE_URL = "/api/sessions/active/"
LOGOUT_ALL_URL = "/api/sessions/logout/all/"
WHOAMI_URL = "/api/whoami/"
CLIENT_IP = "203.0.113.7"
TOKEN_CLASS = "nilva_session.backends.UserSessionDBTokenAuthentication"
JWT_CLASS = "nilva_session.backends.UserSessionDBJwtAuthentication"
ROOT = Path(__file__).resolve().parent.parent
OTHER_KEY = "not-the-signing-key-but-long-enough-for-hs256"

# The settings object simplejwt's modules bound when they were imported (see ``simple_jwt``).
IMPORT_TIME_JWT_SETTINGS = simplejwt_tokens.api_settings


# --------------------------------------------------------------------------------------------
# Settings helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def simple_jwt(monkeypatch):
    """``simple_jwt(**options)``: run the rest of the test as if ``SIMPLE_JWT = options``.

    ``override_settings(SIMPLE_JWT=...)`` alone is not enough: simplejwt's receiver rebinds only
    ``rest_framework_simplejwt.settings.api_settings``, while its token classes (lifetimes,
    claims), token backend (algorithm, keys) and header parser (``AUTH_HEADER_TYPES``) keep what
    they read at import, as does every module that imported ``api_settings`` by name (nilva's
    included). This applies the override to all of them and monkeypatch restores them after.
    """
    overrides = []
    seen = {id(IMPORT_TIME_JWT_SETTINGS)}

    def apply(**options):
        override = override_settings(SIMPLE_JWT=options)
        override.enable()
        overrides.append(override)
        fresh = simplejwt_settings_module.api_settings  # rebuilt by simplejwt's receiver
        for name, module in list(sys.modules.items()):
            # simplejwt's own modules bind it by name; nilva_session reads it at call time.
            if module is None or not name.startswith("rest_framework_simplejwt"):
                continue
            for attribute, value in list(vars(module).items()):
                if id(value) in seen and value is not fresh:
                    monkeypatch.setattr(module, attribute, fresh)
        seen.add(id(fresh))
        monkeypatch.setattr(
            simplejwt_state,
            "token_backend",
            TokenBackend(
                fresh.ALGORITHM,
                fresh.SIGNING_KEY,
                fresh.VERIFYING_KEY,
                fresh.AUDIENCE,
                fresh.ISSUER,
                fresh.JWK_URL,
                fresh.LEEWAY,
                fresh.JSON_ENCODER,
            ),
        )
        monkeypatch.setattr(AccessToken, "lifetime", fresh.ACCESS_TOKEN_LIFETIME)
        monkeypatch.setattr(RefreshToken, "lifetime", fresh.REFRESH_TOKEN_LIFETIME)
        monkeypatch.setattr(
            RefreshToken,
            "no_copy_claims",
            (fresh.TOKEN_TYPE_CLAIM, "exp", fresh.JTI_CLAIM, "jti", "iat"),
        )
        header_types = fresh.AUTH_HEADER_TYPES
        if not isinstance(header_types, (list, tuple)):
            header_types = (header_types,)
        monkeypatch.setattr(simplejwt_authentication, "AUTH_HEADER_TYPES", header_types)
        monkeypatch.setattr(
            simplejwt_authentication,
            "AUTH_HEADER_TYPE_BYTES",
            {h.encode("iso-8859-1") for h in header_types},
        )
        return fresh

    yield apply
    for override in reversed(overrides):
        override.disable()


@pytest.fixture
def auth_classes(monkeypatch):
    """``auth_classes([path, ...])``: set ``DEFAULT_AUTHENTICATION_CLASSES`` for the test.

    DRF reloads ``api_settings`` on ``setting_changed``, but ``APIView.authentication_classes``
    was read from it when DRF was imported, so the views' default is patched as well.
    """
    overrides = []

    def apply(paths):
        rest_framework = {**settings.REST_FRAMEWORK, "DEFAULT_AUTHENTICATION_CLASSES": list(paths)}
        override = override_settings(REST_FRAMEWORK=rest_framework)
        override.enable()
        overrides.append(override)
        from rest_framework.settings import api_settings

        monkeypatch.setattr(
            APIView, "authentication_classes", api_settings.DEFAULT_AUTHENTICATION_CLASSES
        )

    yield apply
    for override in reversed(overrides):
        override.disable()


@pytest.fixture(scope="module")
def rsa_keys():
    """``(private_pem, public_pem)`` of a fresh 2048-bit RSA key.

    ``cryptography`` (simplejwt's ``crypto`` extra) is imported here so that, if it is missing,
    only the RS256 tests fail.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


# --------------------------------------------------------------------------------------------
# Client helpers
# --------------------------------------------------------------------------------------------


def new_client(ua: str = DESKTOP_UA, ip: str = CLIENT_IP) -> APIClient:
    return APIClient(HTTP_USER_AGENT=ua, REMOTE_ADDR=ip)


def obtain(client: APIClient, username: str = "alice", password: str = PASSWORD):
    return client.post(OBTAIN_URL, {"username": username, "password": password}, format="json")


def login(client: APIClient, username: str = "alice", password: str = PASSWORD) -> dict:
    """Obtain a pair through the API; return the response data."""
    response = obtain(client, username, password)
    assert response.status_code == 200, response.content
    return response.json()


def bearer(access: str, ua: str = DESKTOP_UA, keyword: str = "Bearer") -> APIClient:
    client = new_client(ua)
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {access}")
    return client


def claims(token: str) -> dict:
    """The payload of an encoded token, without verifying it."""
    return pyjwt.decode(token, options={"verify_signature": False})


def refresh(client: APIClient, token: str):
    return client.post(REFRESH_URL, {"refresh": token}, format="json")


def logout(client: APIClient, token):
    return client.post(LOGOUT_URL, {"refresh": token}, format="json")


def mint_refresh(user, session_id) -> RefreshToken:
    """A validly signed refresh token for ``user`` that names ``session_id``, built by hand."""
    token = RefreshToken.for_user(user)
    token["session_id"] = str(session_id)
    return token


def mint_access(user, session_id) -> AccessToken:
    token = AccessToken.for_user(user)
    token["session_id"] = str(session_id)
    return token


def expired(token):
    """``token`` with ``exp`` an hour in the past."""
    token.set_exp(from_time=timezone.now() - timedelta(hours=2), lifetime=timedelta(hours=1))
    return token


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assert_401_json(response, detail_pattern: str | None = None) -> dict:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body.get("detail"), body
    if detail_pattern is not None:
        assert re.search(detail_pattern, json.dumps(body), re.IGNORECASE), body
    return body


def db_state():
    """Everything the database holds about sessions and users, for "nothing changed" checks."""
    sessions = list(UserSession.objects.order_by("pk").values())
    users = list(get_user_model().objects.order_by("pk").values())
    return sessions, users


@pytest.fixture
def jwt_login(user, api_client):
    """``(data, session)``: alice logged in through ``token/``; data holds access and refresh."""
    data = login(api_client)
    return data, UserSession.objects.get(pk=data["session_id"])


@pytest.fixture
def jwt_client(jwt_login):
    """``(client, data, session)``: a client sending alice's access token as ``Bearer``."""
    data, session = jwt_login
    return bearer(data["access"]), data, session


class EmailBackend(ModelBackend):
    """Authenticates by e-mail address: obtain must work with any backend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        user = get_user_model().objects.filter(email__iexact=username).first()
        if user is not None and user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None


# --------------------------------------------------------------------------------------------
# Obtain: POST token/
# --------------------------------------------------------------------------------------------


def test_obtain_returns_access_refresh_session_id_and_expire_at(user, api_client):
    data = login(api_client)

    assert set(data) == {"access", "refresh", "session_id", "expire_at"}
    session = UserSession.objects.get(pk=data["session_id"])
    assert session.user == user
    assert session.is_active
    parsed = datetime.fromisoformat(data["expire_at"].replace("Z", "+00:00"))
    assert parsed == session.expire_at


def test_obtain_puts_session_id_in_refresh_and_access(jwt_login):
    data, session = jwt_login

    assert claims(data["refresh"])["session_id"] == str(session.pk)
    assert claims(data["access"])["session_id"] == str(session.pk)
    assert claims(data["refresh"])["token_type"] == "refresh"
    assert claims(data["access"])["token_type"] == "access"


def test_obtain_records_client_ip_and_user_agent(user):
    client = new_client(ua=FIREFOX_UA, ip="198.51.100.23")

    data = login(client)

    session = UserSession.objects.get(pk=data["session_id"])
    assert session.last_ip == "198.51.100.23"
    assert session.user_agent == FIREFOX_UA


def test_obtain_opens_one_session_per_login(user, api_client):
    first = login(api_client)
    second = login(api_client)

    assert first["session_id"] != second["session_id"]
    assert UserSession.objects.for_user(user).active().count() == 2


def test_obtain_sends_user_logged_in_and_session_created(user, api_client):
    logged_in, created = [], []

    def on_login(sender, user, request, **kwargs):
        logged_in.append((user, request))

    def on_created(sender, session, request, **kwargs):
        created.append(session)

    user_logged_in.connect(on_login)
    session_created.connect(on_created)
    try:
        data = login(api_client)
    finally:
        user_logged_in.disconnect(on_login)
        session_created.disconnect(on_created)

    assert len(logged_in) == 1
    assert logged_in[0][0] == user
    assert logged_in[0][1].META["REMOTE_ADDR"] == CLIENT_IP
    assert [str(s.pk) for s in created] == [data["session_id"]]


def test_obtain_with_wrong_password_is_401_sends_login_failed_and_opens_nothing(user, api_client):
    failures = []

    def on_failure(sender, credentials, request=None, **kwargs):
        failures.append(credentials)

    user_login_failed.connect(on_failure)
    try:
        response = obtain(api_client, password="wrong password")
    finally:
        user_login_failed.disconnect(on_failure)

    assert_401_json(response, "No active account")
    assert len(failures) == 1
    assert failures[0]["username"] == "alice"
    assert failures[0]["password"] != "wrong password"  # Django cleanses it
    assert not UserSession.objects.exists()


def test_obtain_for_unknown_user_is_401(db, api_client):
    assert_401_json(obtain(api_client, username="nobody"))
    assert not UserSession.objects.exists()


def test_obtain_does_not_send_user_logged_in_on_failure(user, api_client):
    logged_in = []

    def on_login(sender, user, request, **kwargs):
        logged_in.append(user)

    user_logged_in.connect(on_login)
    try:
        obtain(api_client, password="wrong password")
    finally:
        user_logged_in.disconnect(on_login)

    assert logged_in == []


@pytest.mark.parametrize("missing", ["username", "password"])
def test_obtain_with_a_missing_field_is_400(user, api_client, missing):
    body = {"username": "alice", "password": PASSWORD}
    del body[missing]

    response = api_client.post(OBTAIN_URL, body, format="json")

    assert response.status_code == 400
    assert missing in response.json()["detail"]
    assert not UserSession.objects.exists()


def test_obtain_works_with_any_authentication_backend(user, api_client):
    with override_settings(AUTHENTICATION_BACKENDS=["tests.test_jwt.EmailBackend"]):
        by_email = obtain(api_client, username="alice@example.com")
        by_username = obtain(api_client, username="alice")

    assert by_email.status_code == 200
    assert UserSession.objects.get(pk=by_email.json()["session_id"]).user == user
    assert by_username.status_code == 401


def test_obtain_refuses_inactive_user_with_check_user_is_active(user, api_client, simple_jwt):
    simple_jwt(CHECK_USER_IS_ACTIVE=True)
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)

    with override_settings(
        AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.AllowAllUsersModelBackend"]
    ):
        response = obtain(api_client)

    assert_401_json(response)
    assert not UserSession.objects.exists()


def test_obtain_uses_the_configured_session_id_claim(user, api_client):
    with nilva_settings(SESSION_ID_CLAIM="sid"):
        data = login(api_client)
        whoami = bearer(data["access"]).get(WHOAMI_URL)

    assert claims(data["refresh"])["sid"] == data["session_id"]
    assert claims(data["access"])["sid"] == data["session_id"]
    assert "session_id" not in claims(data["access"])
    assert whoami.status_code == 200
    assert whoami.json()["session_id"] == data["session_id"]


def test_obtain_keeps_claims_added_by_a_get_token_override(user):
    class WithRole(TokenSessionObtainPairSerializer):
        @classmethod
        def get_token(cls, user):
            token = super().get_token(user)
            token["role"] = "reader"
            return token

    request = Request(APIRequestFactory().post(OBTAIN_URL, HTTP_USER_AGENT=DESKTOP_UA))
    serializer = WithRole(
        data={"username": "alice", "password": PASSWORD}, context={"request": request}
    )

    assert serializer.is_valid(), serializer.errors
    access = claims(serializer.validated_data["access"])
    assert access["role"] == "reader"
    assert access["session_id"] == serializer.validated_data["session_id"]


# --------------------------------------------------------------------------------------------
# UserSessionDBJwtAuthentication
# --------------------------------------------------------------------------------------------


def test_access_token_authenticates_and_names_its_session(jwt_client, user):
    client, _data, session = jwt_client

    response = client.get(WHOAMI_URL)

    assert response.status_code == 200
    assert response.json() == {"user": "alice", "session_id": str(session.pk)}


def test_request_auth_is_the_validated_token_and_current_session_is_the_session(jwt_login, user):
    data, session = jwt_login
    request = Request(
        APIRequestFactory().get(
            WHOAMI_URL, HTTP_AUTHORIZATION=f"Bearer {data['access']}", HTTP_USER_AGENT=DESKTOP_UA
        ),
        authenticators=[UserSessionDBJwtAuthentication()],
    )

    assert request.user == user
    assert isinstance(request.auth, AccessToken)
    assert request.auth["session_id"] == str(session.pk)
    assert current_session(request).pk == session.pk


def test_jwt_class_is_the_one_in_backends():
    from nilva_session import authentication

    assert UserSessionDBJwtAuthentication is authentication.UserSessionDBJwtAuthentication


def test_jwt_class_ignores_requests_without_its_header(db):
    request = Request(APIRequestFactory().get(WHOAMI_URL))

    assert UserSessionDBJwtAuthentication().authenticate(request) is None


def test_refresh_token_used_as_access_token_is_401(jwt_login):
    data, _ = jwt_login

    response = bearer(data["refresh"]).get(WHOAMI_URL)

    assert_401_json(response, "token")


def test_expired_access_token_is_401(user, jwt_login):
    _, session = jwt_login
    token = expired(mint_access(user, session.pk))

    assert_401_json(bearer(str(token)).get(WHOAMI_URL), "expired")


def test_jwt_without_session_claim_is_401_with_clear_message(user, jwt_login):
    token = AccessToken.for_user(user)  # plain simplejwt: no session id

    body = assert_401_json(bearer(str(token)).get(WHOAMI_URL))

    assert "session id" in body["detail"]


@pytest.mark.parametrize(
    "claim", ["not-a-uuid", "", "1234", 42, 3.5, True, ["x"], {"id": "x"}, "a" * 5000, None]
)
def test_session_claim_that_is_not_a_uuid_is_401(user, claim):
    token = AccessToken.for_user(user)
    token["session_id"] = claim

    response = bearer(str(token)).get(WHOAMI_URL)

    assert_401_json(response)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    claim=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=5), children, max_size=3)
        ),
        max_leaves=6,
    )
)
def test_any_session_claim_value_is_401_never_500(user, claim):
    token = AccessToken.for_user(user)
    token["session_id"] = claim

    response = bearer(str(token)).get(WHOAMI_URL)

    assert response.status_code == 401


def test_unknown_session_id_is_401(user, jwt_login):
    token = mint_access(user, uuid.uuid4())

    assert_401_json(bearer(str(token)).get(WHOAMI_URL))


def test_forged_token_naming_another_users_session_is_401(user, other_user, open_session):
    their_session, _ = open_session(other_user)
    payload = {
        "token_type": "access",
        "exp": int((timezone.now() + timedelta(minutes=5)).timestamp()),
        "iat": int(timezone.now().timestamp()),
        "jti": uuid.uuid4().hex,
        "user_id": str(other_user.pk),
        "session_id": str(their_session.pk),
    }
    forged = pyjwt.encode(payload, OTHER_KEY, algorithm="HS256")
    before = db_state()

    assert_401_json(bearer(forged).get(WHOAMI_URL))
    assert db_state() == before


def test_token_with_alg_none_is_401(user, other_user, open_session):
    session, _ = open_session(user)
    token = mint_access(user, session.pk)
    unsigned = pyjwt.encode(dict(token.payload), None, algorithm="none")

    assert_401_json(bearer(unsigned).get(WHOAMI_URL))


def test_signed_token_of_one_user_naming_another_users_session_is_401(
    user, other_user, open_session
):
    their_session, _ = open_session(other_user)
    token = mint_access(user, their_session.pk)

    assert_401_json(bearer(str(token)).get(WHOAMI_URL))


def test_signed_token_naming_another_users_session_leaves_that_session_untouched(
    user, other_user, open_session
):
    # From another browser family: the user-agent rule must not be applied to (and suspend)
    # a session the token does not own.
    their_session, _ = open_session(other_user)
    token = mint_access(user, their_session.pk)
    before = db_state()

    response = bearer(str(token), ua=FIREFOX_UA).get(WHOAMI_URL)

    assert response.status_code == 401
    assert db_state() == before
    assert session_cache.get_store().get(session_cache.session_key(their_session.pk)) is None


def test_access_token_of_an_ended_session_is_401(jwt_client):
    client, _, session = jwt_client
    session.revoke()

    assert_401_json(client.get(WHOAMI_URL), "session")


def test_access_token_of_an_expired_session_is_401(jwt_client):
    client, _, session = jwt_client
    UserSession.objects.filter(pk=session.pk).update(
        expire_at=timezone.now() - timedelta(seconds=1)
    )

    body = assert_401_json(client.get(WHOAMI_URL))

    assert body["code"] == "session_expired"


def test_access_token_of_an_inactive_user_is_401(jwt_client, user):
    client, _, _ = jwt_client
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)  # no signal, cold cache

    body = assert_401_json(client.get(WHOAMI_URL))

    assert body["code"] == "user_inactive"


def test_access_token_from_another_browser_suspends_the_session(jwt_login):
    data, session = jwt_login

    response = bearer(data["access"], ua=FIREFOX_UA).get(WHOAMI_URL)

    assert_401_json(response)
    session.refresh_from_db()
    assert not session.is_active
    assert session.end_reason == EndReason.USER_AGENT_CHANGED


def test_check_revoke_token_refuses_access_after_password_change(user, api_client, simple_jwt):
    simple_jwt(CHECK_REVOKE_TOKEN=True)
    data = login(api_client)
    client = bearer(data["access"])
    assert "hash_password" in claims(data["access"])
    assert client.get(WHOAMI_URL).status_code == 200

    user.set_password("a brand new password")
    # QuerySet.update sends no signal, so the session itself stays active: only simplejwt's
    # CHECK_REVOKE_TOKEN can refuse the token.
    get_user_model().objects.filter(pk=user.pk).update(password=user.password)

    body = assert_401_json(client.get(WHOAMI_URL))
    assert body["code"] == "password_changed"
    assert UserSession.objects.get(pk=data["session_id"]).is_active


def test_without_check_revoke_token_a_password_change_alone_does_not_refuse(
    user, api_client, simple_jwt
):
    simple_jwt(CHECK_REVOKE_TOKEN=False)
    data = login(api_client)
    user.set_password("a brand new password")
    get_user_model().objects.filter(pk=user.pk).update(password=user.password)

    assert bearer(data["access"]).get(WHOAMI_URL).status_code == 200


def test_inactive_user_is_refused_even_with_check_user_is_active_off(user, api_client, simple_jwt):
    # "User active" is a session rule (sessions.py), shared with opaque tokens.
    simple_jwt(CHECK_USER_IS_ACTIVE=False)
    data = login(api_client)
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)

    body = assert_401_json(bearer(data["access"]).get(WHOAMI_URL))
    assert body["code"] == "user_inactive"


def test_session_claim_name_follows_settings(user, open_session):
    session, _ = open_session(user)
    with_default_name = mint_access(user, session.pk)

    with nilva_settings(SESSION_ID_CLAIM="sid"):
        response = bearer(str(with_default_name)).get(WHOAMI_URL)

    body = assert_401_json(response)
    assert "session id" in body["detail"]


# --------------------------------------------------------------------------------------------
# Revocation, the warm cache and the session listing
# --------------------------------------------------------------------------------------------


def test_warm_jwt_request_makes_no_database_query(jwt_client, django_assert_num_queries):
    client, _, _ = jwt_client
    assert client.get(WHOAMI_URL).status_code == 200  # fills the cache

    with django_assert_num_queries(0):
        response = client.get(WHOAMI_URL)

    assert response.status_code == 200


def test_revoke_from_another_client_refuses_the_next_request_even_from_warm_cache(
    user, jwt_client, token_client, django_assert_num_queries
):
    client, _, session = jwt_client
    other, _, _ = token_client
    assert client.get(WHOAMI_URL).status_code == 200
    with django_assert_num_queries(0):  # really served from the cache
        assert client.get(WHOAMI_URL).status_code == 200

    revoked = other.delete(f"{ACTIVE_URL}?token_id={session.pk}")

    assert revoked.status_code == 204
    assert_401_json(client.get(WHOAMI_URL), "session")


def test_revoke_from_another_jwt_client_refuses_the_next_request(user, jwt_client):
    client, _, session = jwt_client
    assert client.get(WHOAMI_URL).status_code == 200
    other = bearer(login(new_client())["access"])

    assert other.delete(f"{ACTIVE_URL}?token_id={session.pk}").status_code == 204

    assert_401_json(client.get(WHOAMI_URL))


def test_session_list_marks_the_jwt_session_as_current(jwt_client, token_client):
    client, _, session = jwt_client
    _, token_session, _ = token_client

    response = client.get(ACTIVE_URL)

    assert response.status_code == 200
    current = {item["session_id"]: item["is_current"] for item in response.json()}
    assert current == {str(session.pk): True, str(token_session.pk): False}


def test_delete_active_without_ids_from_jwt_client_keeps_its_own_session(jwt_client, token_client):
    client, _, session = jwt_client
    token_user_client, token_session, _ = token_client

    assert client.delete(ACTIVE_URL).status_code == 204

    session.refresh_from_db()
    token_session.refresh_from_db()
    assert session.is_active
    assert not token_session.is_active
    assert client.get(WHOAMI_URL).status_code == 200
    assert token_user_client.get(WHOAMI_URL).status_code == 401


def test_logout_all_from_jwt_client_ends_jwt_and_token_sessions(jwt_client, token_client):
    client, data, session = jwt_client
    token_user_client, token_session, _ = token_client

    assert client.post(LOGOUT_ALL_URL).status_code == 204

    assert not UserSession.objects.filter(pk__in=[session.pk, token_session.pk], is_active=True)
    assert client.get(WHOAMI_URL).status_code == 401
    assert token_user_client.get(WHOAMI_URL).status_code == 401
    assert_401_json(refresh(new_client(), data["refresh"]))


def test_logout_all_from_token_client_ends_jwt_sessions(jwt_client, token_client):
    client, data, _session = jwt_client
    token_user_client, _, _ = token_client
    assert client.get(WHOAMI_URL).status_code == 200  # warm

    assert token_user_client.post(LOGOUT_ALL_URL).status_code == 204

    assert client.get(WHOAMI_URL).status_code == 401
    assert_401_json(refresh(new_client(), data["refresh"]))


def test_logout_all_leaves_other_users_jwt_sessions(jwt_client, other_user):
    client, _, _ = jwt_client
    theirs = login(new_client(), username="bob")

    assert client.post(LOGOUT_ALL_URL).status_code == 204

    assert UserSession.objects.get(pk=theirs["session_id"]).is_active
    assert bearer(theirs["access"]).get(WHOAMI_URL).status_code == 200


# --------------------------------------------------------------------------------------------
# Refresh: POST token/refresh/
# --------------------------------------------------------------------------------------------


def test_refresh_returns_an_access_token_for_the_same_session(jwt_login):
    data, session = jwt_login

    response = refresh(new_client(), data["refresh"])

    assert response.status_code == 200
    assert set(response.json()) == {"access"}
    new_access = response.json()["access"]
    assert claims(new_access)["session_id"] == str(session.pk)
    assert bearer(new_access).get(WHOAMI_URL).json()["session_id"] == str(session.pk)


def test_refresh_of_an_ended_session_is_401(jwt_login):
    data, session = jwt_login
    session.revoke()

    body = assert_401_json(refresh(new_client(), data["refresh"]))

    assert body["code"] == "session_ended"


def test_refresh_of_an_ended_session_is_401_even_when_cached(jwt_client):
    client, data, session = jwt_client
    assert client.get(WHOAMI_URL).status_code == 200  # the session is in the cache
    assert refresh(new_client(), data["refresh"]).status_code == 200

    UserSession.objects.filter(pk=session.pk).revoke()

    assert_401_json(refresh(new_client(), data["refresh"]))


def test_refresh_of_an_expired_session_is_401(jwt_login):
    data, session = jwt_login
    UserSession.objects.filter(pk=session.pk).update(
        expire_at=timezone.now() - timedelta(seconds=1)
    )

    body = assert_401_json(refresh(new_client(), data["refresh"]))

    assert body["code"] == "session_expired"


def test_refresh_of_a_suspended_session_is_401(jwt_login):
    data, _session = jwt_login
    assert bearer(data["access"], ua=FIREFOX_UA).get(WHOAMI_URL).status_code == 401  # suspends

    body = assert_401_json(refresh(new_client(), data["refresh"]))

    assert body["code"] == "session_ended"


def test_refresh_of_a_deleted_session_is_401(jwt_client):
    client, data, session = jwt_client
    assert client.get(WHOAMI_URL).status_code == 200  # cached before the delete
    UserSession.objects.filter(pk=session.pk).delete()

    assert_401_json(refresh(new_client(), data["refresh"]))


def test_refresh_of_a_session_whose_user_was_deactivated_is_401(jwt_login, user):
    data, _ = jwt_login
    user.is_active = False
    user.save()

    assert_401_json(refresh(new_client(), data["refresh"]))


def test_refresh_of_an_inactive_user_is_401(jwt_login, user):
    data, _ = jwt_login
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)  # no signal

    body = assert_401_json(refresh(new_client(), data["refresh"]))

    assert body["code"] == "user_inactive"


def test_refresh_of_a_deleted_user_is_401(jwt_login, user):
    data, _ = jwt_login
    user.delete()

    assert_401_json(refresh(new_client(), data["refresh"]))


def test_refresh_from_another_browser_is_401(jwt_login):
    data, session = jwt_login

    assert_401_json(refresh(new_client(ua=FIREFOX_UA), data["refresh"]))
    session.refresh_from_db()
    assert not session.is_active


def test_refresh_with_an_access_token_is_401(jwt_login):
    data, _ = jwt_login

    assert_401_json(refresh(new_client(), data["access"]))


def test_refresh_with_an_expired_refresh_token_is_401(user, jwt_login):
    _, session = jwt_login

    assert_401_json(refresh(new_client(), str(expired(mint_refresh(user, session.pk)))))


def test_refresh_without_session_claim_is_401(user, jwt_login):
    plain = RefreshToken.for_user(user)

    body = assert_401_json(refresh(new_client(), str(plain)))

    assert "session id" in body["detail"]


@pytest.mark.parametrize("claim", ["not-a-uuid", 7, ["x"], None, ""])
def test_refresh_with_a_non_uuid_session_claim_is_401(user, claim):
    token = RefreshToken.for_user(user)
    token["session_id"] = claim

    assert_401_json(refresh(new_client(), str(token)))


def test_refresh_naming_another_users_session_is_401(user, other_user, open_session):
    their_session, _ = open_session(other_user)
    token = mint_refresh(user, their_session.pk)
    before = db_state()

    assert_401_json(refresh(new_client(ua=FIREFOX_UA), str(token)))
    assert db_state() == before


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "", "x" * 5000])
def test_refresh_with_garbage_is_an_error_never_500(db, garbage):
    response = refresh(new_client(), garbage)

    assert response.status_code in (400, 401)
    assert response.json()["detail"]


def test_refresh_with_missing_field_is_400(db):
    response = new_client().post(REFRESH_URL, {}, format="json")

    assert response.status_code == 400
    assert "refresh" in response.json()["detail"]


def test_refresh_with_rotation_returns_a_new_refresh_token_for_the_same_session(
    jwt_login, simple_jwt
):
    simple_jwt(ROTATE_REFRESH_TOKENS=True, BLACKLIST_AFTER_ROTATION=True)
    data, session = jwt_login

    response = refresh(new_client(), data["refresh"])

    assert response.status_code == 200
    rotated = response.json()["refresh"]
    assert claims(rotated)["jti"] != claims(data["refresh"])["jti"]
    assert claims(rotated)["session_id"] == str(session.pk)
    session.refresh_from_db()
    assert session.is_active


def test_rotated_refresh_token_keeps_working(jwt_login, simple_jwt):
    simple_jwt(ROTATE_REFRESH_TOKENS=True, BLACKLIST_AFTER_ROTATION=True)
    data, session = jwt_login
    rotated = refresh(new_client(), data["refresh"]).json()["refresh"]

    again = refresh(new_client(), rotated)

    assert again.status_code == 200
    assert bearer(again.json()["access"]).get(WHOAMI_URL).json()["session_id"] == str(session.pk)


def test_without_blacklist_app_rotation_leaves_the_old_refresh_token_usable(jwt_login, simple_jwt):
    # simplejwt's behaviour without token_blacklist (nothing can be blacklisted), when reuse
    # detection is off (tests/test_refresh_reuse.py has it on).
    simple_jwt(ROTATE_REFRESH_TOKENS=True, BLACKLIST_AFTER_ROTATION=True)
    data, _ = jwt_login
    with nilva_settings(DETECT_REFRESH_REUSE=False, REFRESH_REUSE_GRACE=0):
        assert refresh(new_client(), data["refresh"]).status_code == 200

        assert refresh(new_client(), data["refresh"]).status_code == 200


def test_rotated_refresh_token_never_outlives_the_session(user, api_client, simple_jwt):
    simple_jwt(ROTATE_REFRESH_TOKENS=True, REFRESH_TOKEN_LIFETIME=timedelta(days=30))
    with nilva_settings(EXPIRE_AT=timedelta(hours=1)):
        data = login(api_client)
    session = UserSession.objects.get(pk=data["session_id"])

    rotated = refresh(new_client(), data["refresh"]).json()["refresh"]

    assert claims(rotated)["exp"] <= session.expire_at.timestamp()


def test_refreshed_access_token_never_outlives_the_session(user, api_client, simple_jwt):
    simple_jwt(ACCESS_TOKEN_LIFETIME=timedelta(days=2))
    with nilva_settings(EXPIRE_AT=timedelta(hours=1)):
        data = login(api_client)
    session = UserSession.objects.get(pk=data["session_id"])

    access = refresh(new_client(), data["refresh"]).json()["access"]

    assert claims(access)["exp"] <= session.expire_at.timestamp()


def test_blacklist_app_is_not_installed_in_the_default_settings():
    # The "installed" case runs in its own process: see the test below.
    assert "rest_framework_simplejwt.token_blacklist" not in settings.INSTALLED_APPS
    assert not hasattr(RefreshToken, "blacklist")


def test_blacklist_app_suite_passes_in_its_own_process():
    """simplejwt decides at import time whether tokens can be blacklisted, so the tests of
    ``tests/test_jwt_blacklist.py`` need a process started with the app installed."""
    assert_suite_passes("tests.settings_jwt_blacklist", "tests/test_jwt_blacklist.py")


# --------------------------------------------------------------------------------------------
# Logout: POST token/logout/
# --------------------------------------------------------------------------------------------


def test_logout_ends_the_session_and_answers_204_without_body(jwt_login):
    data, session = jwt_login

    response = logout(new_client(), data["refresh"])

    assert response.status_code == 204
    assert response.content == b""
    session.refresh_from_db()
    assert not session.is_active
    assert session.end_reason == EndReason.LOGOUT


def test_after_logout_access_and_refresh_tokens_are_refused(jwt_client):
    client, data, _ = jwt_client
    assert client.get(WHOAMI_URL).status_code == 200  # warm cache

    assert logout(new_client(), data["refresh"]).status_code == 204

    assert_401_json(client.get(WHOAMI_URL))
    assert_401_json(refresh(new_client(), data["refresh"]))


def test_logout_ends_only_its_own_session(user, jwt_login, token_client):
    data, _session = jwt_login
    _, token_session, _ = token_client
    second = login(new_client())

    assert logout(new_client(), data["refresh"]).status_code == 204

    assert UserSession.objects.get(pk=token_session.pk).is_active
    assert UserSession.objects.get(pk=second["session_id"]).is_active


def test_logout_with_a_token_naming_another_users_session_ends_nothing(
    user, other_user, open_session
):
    their_session, _ = open_session(other_user)
    token = mint_refresh(user, their_session.pk)

    response = logout(new_client(), str(token))

    assert response.status_code == 204
    their_session.refresh_from_db()
    assert their_session.is_active


def test_logout_of_an_already_ended_session_is_204(jwt_login):
    data, session = jwt_login
    session.revoke()

    assert logout(new_client(), data["refresh"]).status_code == 204


@pytest.mark.parametrize(
    "garbage", ["garbage", "a.b.c", "", "x" * 4000, "eyJhbGciOiJIUzI1NiJ9.e30.AAAA", 12345]
)
def test_logout_with_a_garbage_refresh_token_is_401_or_400_never_500(jwt_login, garbage):
    _, session = jwt_login

    response = logout(new_client(), garbage)

    assert response.status_code in (400, 401)
    assert response.json()["detail"]
    assert UserSession.objects.get(pk=session.pk).is_active


def test_logout_with_a_malformed_refresh_token_is_401_json(jwt_login):
    assert_401_json(logout(new_client(), "not.a.token"))


def test_logout_with_an_expired_refresh_token_is_401_and_keeps_the_session(user, jwt_login):
    _, session = jwt_login

    assert_401_json(logout(new_client(), str(expired(mint_refresh(user, session.pk)))))
    assert UserSession.objects.get(pk=session.pk).is_active


def test_logout_with_an_access_token_is_401(jwt_login):
    data, session = jwt_login

    assert_401_json(logout(new_client(), data["access"]))
    assert UserSession.objects.get(pk=session.pk).is_active


def test_logout_with_a_forged_refresh_token_is_401(user, jwt_login):
    _, session = jwt_login
    payload = dict(mint_refresh(user, session.pk).payload)
    forged = pyjwt.encode(payload, OTHER_KEY, algorithm="HS256")

    assert_401_json(logout(new_client(), forged))
    assert UserSession.objects.get(pk=session.pk).is_active


@pytest.mark.parametrize("claim", ["not-a-uuid", 7, ["x"], {"a": 1}, ""])
def test_logout_with_a_non_uuid_session_claim_is_401(user, claim):
    token = RefreshToken.for_user(user)
    token["session_id"] = claim

    assert_401_json(logout(new_client(), str(token)))


def test_logout_with_a_non_numeric_user_claim_is_401(user, jwt_login):
    _, session = jwt_login
    token = mint_refresh(user, session.pk)
    token["user_id"] = "not-a-number"

    assert_401_json(logout(new_client(), str(token)))
    assert UserSession.objects.get(pk=session.pk).is_active


def test_logout_without_session_claim_is_401(user):
    assert_401_json(logout(new_client(), str(RefreshToken.for_user(user))), "session id")


def test_logout_with_missing_field_is_400(db):
    response = new_client().post(LOGOUT_URL, {}, format="json")

    assert response.status_code == 400
    assert "refresh" in response.json()["detail"]


# --------------------------------------------------------------------------------------------
# Both authentication classes together
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "order", [[TOKEN_CLASS, JWT_CLASS], [JWT_CLASS, TOKEN_CLASS]], ids=["token-first", "jwt-first"]
)
def test_both_classes_authenticate_their_own_credentials_in_either_order(
    auth_classes, jwt_client, token_client, order
):
    auth_classes(order)
    client, _, session = jwt_client
    token_user_client, token_session, _ = token_client

    by_jwt = client.get(WHOAMI_URL)
    by_token = token_user_client.get(WHOAMI_URL)

    assert by_jwt.status_code == 200
    assert by_jwt.json()["session_id"] == str(session.pk)
    assert by_token.status_code == 200
    assert by_token.json()["session_id"] == str(token_session.pk)


@pytest.mark.parametrize(
    "order", [[TOKEN_CLASS, JWT_CLASS], [JWT_CLASS, TOKEN_CLASS]], ids=["token-first", "jwt-first"]
)
def test_a_jwt_under_the_token_keyword_is_refused(auth_classes, jwt_login, order):
    auth_classes(order)
    data, _ = jwt_login

    assert_401_json(bearer(data["access"], keyword="Token").get(WHOAMI_URL))


@pytest.mark.parametrize(
    "order", [[TOKEN_CLASS, JWT_CLASS], [JWT_CLASS, TOKEN_CLASS]], ids=["token-first", "jwt-first"]
)
def test_an_opaque_token_under_the_bearer_keyword_is_refused(auth_classes, token_client, order):
    auth_classes(order)
    _, _, token = token_client

    assert_401_json(bearer(token).get(WHOAMI_URL))


def test_jwt_class_passes_on_token_headers(token_client):
    _, _, token = token_client
    request = Request(APIRequestFactory().get(WHOAMI_URL, HTTP_AUTHORIZATION=f"Token {token}"))

    assert UserSessionDBJwtAuthentication().authenticate(request) is None


def test_token_class_passes_on_bearer_headers(jwt_login):
    data, _ = jwt_login
    request = Request(
        APIRequestFactory().get(WHOAMI_URL, HTTP_AUTHORIZATION=f"Bearer {data['access']}")
    )

    assert UserSessionDBTokenAuthentication().authenticate(request) is None


@pytest.mark.parametrize(
    "order", [[TOKEN_CLASS, JWT_CLASS], [JWT_CLASS, TOKEN_CLASS]], ids=["token-first", "jwt-first"]
)
def test_custom_auth_header_types_are_followed(
    auth_classes, simple_jwt, jwt_login, token_client, order
):
    auth_classes(order)
    simple_jwt(AUTH_HEADER_TYPES=("JWT",))
    data, session = jwt_login
    token_user_client, _, _ = token_client

    by_custom = bearer(data["access"], keyword="JWT").get(WHOAMI_URL)
    by_bearer = bearer(data["access"], keyword="Bearer").get(WHOAMI_URL)

    assert by_custom.status_code == 200
    assert by_custom.json()["session_id"] == str(session.pk)
    assert by_bearer.status_code == 401
    assert token_user_client.get(WHOAMI_URL).status_code == 200


# --------------------------------------------------------------------------------------------
# simplejwt settings: algorithms, keys, claims, lifetimes
# --------------------------------------------------------------------------------------------


def test_custom_signing_key_signs_and_verifies(user, api_client, simple_jwt):
    simple_jwt(SIGNING_KEY="a-custom-signing-key-of-enough-length-for-hs256")
    data = login(api_client)

    assert bearer(data["access"]).get(WHOAMI_URL).status_code == 200
    pyjwt.decode(
        data["access"],
        "a-custom-signing-key-of-enough-length-for-hs256",
        algorithms=["HS256"],
    )


def test_tokens_signed_with_the_secret_key_are_refused_under_a_custom_signing_key(
    user, api_client, simple_jwt
):
    session = UserSession.objects.get(pk=login(api_client)["session_id"])
    payload = dict(mint_access(user, session.pk).payload)
    signed_with_secret_key = pyjwt.encode(payload, settings.SECRET_KEY, algorithm="HS256")

    simple_jwt(SIGNING_KEY="a-custom-signing-key-of-enough-length-for-hs256")

    assert_401_json(bearer(signed_with_secret_key).get(WHOAMI_URL))


def test_rs256_tokens_work_end_to_end(user, api_client, simple_jwt, rsa_keys):
    private, public = rsa_keys
    simple_jwt(ALGORITHM="RS256", SIGNING_KEY=private, VERIFYING_KEY=public)

    data = login(api_client)
    refreshed = refresh(new_client(), data["refresh"])

    assert pyjwt.get_unverified_header(data["access"])["alg"] == "RS256"
    pyjwt.decode(data["access"], public, algorithms=["RS256"])
    assert bearer(data["access"]).get(WHOAMI_URL).json()["session_id"] == data["session_id"]
    assert refreshed.status_code == 200
    assert bearer(refreshed.json()["access"]).get(WHOAMI_URL).status_code == 200
    assert logout(new_client(), data["refresh"]).status_code == 204
    assert bearer(data["access"]).get(WHOAMI_URL).status_code == 401


def test_rs256_refuses_hs256_token_keyed_with_the_public_key(
    user, api_client, simple_jwt, rsa_keys
):
    private, public = rsa_keys
    simple_jwt(ALGORITHM="RS256", SIGNING_KEY=private, VERIFYING_KEY=public)
    data = login(api_client)
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims(data["access"])).encode())
    signature = hmac.new(public.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    confused = f"{header}.{body}.{b64(signature)}"

    assert_401_json(bearer(confused).get(WHOAMI_URL))


def test_rs256_refuses_token_signed_by_another_private_key(user, api_client, simple_jwt, rsa_keys):
    private, public = rsa_keys
    simple_jwt(ALGORITHM="RS256", SIGNING_KEY=private, VERIFYING_KEY=public)
    data = login(api_client)
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = pyjwt.encode(claims(data["access"]), stranger, algorithm="RS256")

    assert_401_json(bearer(forged).get(WHOAMI_URL))


def test_custom_user_id_claim(user, api_client, simple_jwt):
    simple_jwt(USER_ID_CLAIM="uid")

    data = login(api_client)

    assert str(claims(data["access"])["uid"]) == str(user.pk)  # simplejwt 5.5 writes a str
    assert "user_id" not in claims(data["access"])
    assert bearer(data["access"]).get(WHOAMI_URL).status_code == 200
    assert refresh(new_client(), data["refresh"]).status_code == 200
    assert logout(new_client(), data["refresh"]).status_code == 204
    assert not UserSession.objects.get(pk=data["session_id"]).is_active


def test_custom_user_id_claim_still_refuses_another_users_session(
    user, other_user, open_session, simple_jwt
):
    simple_jwt(USER_ID_CLAIM="uid")
    their_session, _ = open_session(other_user)
    token = mint_access(user, their_session.pk)

    assert_401_json(bearer(str(token)).get(WHOAMI_URL))


def test_session_shorter_than_refresh_lifetime_caps_the_refresh_token(user, api_client, simple_jwt):
    simple_jwt(REFRESH_TOKEN_LIFETIME=timedelta(days=1))
    with nilva_settings(EXPIRE_AT=timedelta(minutes=5)):
        data = login(api_client)
    session = UserSession.objects.get(pk=data["session_id"])

    refresh_claims = claims(data["refresh"])

    assert refresh_claims["exp"] <= session.expire_at.timestamp()
    assert refresh_claims["exp"] == int(session.expire_at.timestamp())
    assert refresh_claims["exp"] - refresh_claims["iat"] < timedelta(minutes=6).total_seconds()


def test_session_shorter_than_access_lifetime_caps_the_access_token(user, api_client, simple_jwt):
    simple_jwt(ACCESS_TOKEN_LIFETIME=timedelta(hours=1))
    with nilva_settings(EXPIRE_AT=timedelta(minutes=5)):
        data = login(api_client)
    session = UserSession.objects.get(pk=data["session_id"])

    assert claims(data["access"])["exp"] <= session.expire_at.timestamp()


def test_session_longer_than_refresh_lifetime_keeps_simplejwts_expiry(user, api_client, simple_jwt):
    simple_jwt(REFRESH_TOKEN_LIFETIME=timedelta(days=1))
    with nilva_settings(EXPIRE_AT=timedelta(days=30)):
        data = login(api_client)

    refresh_claims = claims(data["refresh"])

    assert refresh_claims["exp"] - refresh_claims["iat"] == timedelta(days=1).total_seconds()


def test_sessions_without_expiry_keep_simplejwts_expiry(user, api_client, simple_jwt):
    simple_jwt(REFRESH_TOKEN_LIFETIME=timedelta(days=3))
    with nilva_settings(EXPIRE_AT=None):
        data = login(api_client)

    assert data["expire_at"] is None
    refresh_claims = claims(data["refresh"])
    assert refresh_claims["exp"] - refresh_claims["iat"] == timedelta(days=3).total_seconds()


def test_short_access_lifetime_is_honoured(user, api_client, simple_jwt):
    simple_jwt(ACCESS_TOKEN_LIFETIME=timedelta(seconds=30))

    data = login(api_client)

    access_claims = claims(data["access"])
    assert access_claims["exp"] - access_claims["iat"] == 30
    assert bearer(data["access"]).get(WHOAMI_URL).status_code == 200


def test_long_lifetimes_are_honoured_when_the_session_is_longer(user, api_client, simple_jwt):
    simple_jwt(ACCESS_TOKEN_LIFETIME=timedelta(days=7), REFRESH_TOKEN_LIFETIME=timedelta(days=20))
    with nilva_settings(EXPIRE_AT=timedelta(days=25)):
        data = login(api_client)

    assert claims(data["access"])["exp"] - claims(data["access"])["iat"] == 7 * 86400
    assert claims(data["refresh"])["exp"] - claims(data["refresh"])["iat"] == 20 * 86400
    assert bearer(data["access"]).get(WHOAMI_URL).status_code == 200


def test_expire_at_in_response_matches_the_refresh_cap(user, api_client):
    with nilva_settings(EXPIRE_AT=timedelta(minutes=5)):
        data = login(api_client)

    expire_at = datetime.fromisoformat(data["expire_at"].replace("Z", "+00:00"))
    assert claims(data["refresh"])["exp"] == int(expire_at.timestamp())
    assert expire_at.tzinfo is not None
    assert expire_at <= datetime.now(dt_timezone.utc) + timedelta(minutes=5)


# --------------------------------------------------------------------------------------------
# Bad Authorization headers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer " + "A" * 10240,
        "Bearer " + "eyJ" + "x" * 10240 + ".eyJ" + "y" * 100 + ".zzz",
        "Bearer \xff\xfe\xfd",
        "Bearer eyJ\xff.\xfe.\xfd",
        "Bearer ....",
    ],
    ids=[
        "alone",
        "trailing-space",
        "two-values",
        "10kB",
        "10kB-jwt-shaped",
        "non-utf8",
        "non-utf8-jwt-shaped",
        "dots",
    ],
)
def test_bad_bearer_header_is_401_json_and_changes_nothing(jwt_client, header):
    client, _, _ = jwt_client
    assert client.get(WHOAMI_URL).status_code == 200
    before = db_state()

    response = new_client().get(WHOAMI_URL, HTTP_AUTHORIZATION=header)

    assert_401_json(response)
    assert db_state() == before


@pytest.mark.parametrize(
    "order", [[TOKEN_CLASS, JWT_CLASS], [JWT_CLASS, TOKEN_CLASS]], ids=["token-first", "jwt-first"]
)
def test_header_text_beyond_latin1_is_401_json(auth_classes, jwt_login, order):
    # WSGI servers only pass latin-1, but test clients and middleware can set any text.
    auth_classes(order)

    response = new_client().get(WHOAMI_URL, HTTP_AUTHORIZATION="Bearer \u2603.\u2603.\u2603")

    assert_401_json(response)


def test_non_utf8_bytes_header_is_401_json(jwt_login):
    response = new_client().get(WHOAMI_URL, HTTP_AUTHORIZATION=b"Bearer \xff\xfe.\x80\x81.\xc3")

    assert_401_json(response)


@hypothesis_settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.binary(max_size=2048))
def test_any_bearer_garbage_is_401_never_500(jwt_login, garbage):
    before = db_state()

    response = new_client().get(WHOAMI_URL, HTTP_AUTHORIZATION=b"Bearer " + garbage)

    assert response.status_code == 401
    assert response.json()["detail"]
    assert db_state() == before


class LenientJwtAuthentication(UserSessionDBJwtAuthentication):
    def check_user_agent(self, session, request):
        return None


def test_refresh_uses_the_configured_classs_user_agent_check(user, api_client):
    data = login(api_client)
    firefox = APIClient(HTTP_USER_AGENT=FIREFOX_UA, REMOTE_ADDR="203.0.113.7")
    # Named by JWT_AUTHENTICATION_CLASS (it used to be guessed from the DRF settings).
    lenient = "tests.test_jwt.LenientJwtAuthentication"
    with nilva_settings(JWT_AUTHENTICATION_CLASS=lenient):
        response = firefox.post(REFRESH_URL, {"refresh": data["refresh"]}, format="json")
    assert response.status_code == 200, response.content
    assert UserSession.objects.get(pk=data["session_id"]).is_active


def test_get_user_without_a_request_still_refuses_another_users_session(
    user, other_user, open_session
):
    # Callers such as websocket middleware call get_user() with no request, so the
    # user-agent hook (and the owner check riding on it) does not run: the owner is checked again.
    others_session, _ = open_session(other_user)
    access = AccessToken.for_user(user)
    access["session_id"] = str(others_session.pk)
    with pytest.raises(AuthenticationFailed):
        UserSessionDBJwtAuthentication().get_user(access)
    own_session, _ = open_session(user)
    access["session_id"] = str(own_session.pk)
    assert UserSessionDBJwtAuthentication().get_user(access) == user


# --------------------------------------------------------------------------------------------
# validly signed tokens with claims out of range or of the wrong type: 401, never a 500
# --------------------------------------------------------------------------------------------

ODD_CLAIMS = [
    {"exp": 10**30},
    {"exp": -(10**30)},
    {"exp": 10**18},
    {"exp": 1e300},
    {"exp": "tomorrow"},
    {"exp": [1]},
    {"exp": None},
    {"iat": 10**30},
    {"nbf": 10**30},
    {"nbf": "now"},
    {"user_id": [1]},
    {"user_id": {"id": 1}},
    {"user_id": 10**40},
    {"user_id": 1.5},
    {"user_id": None},
    {"session_id": ["x"]},
    {"session_id": {"id": "x"}},
    {"session_id": "x" * 10_000},
    {"token_type": ["access"]},
    {"jti": None},
    {"jti": {"a": 1}},
]


def signed(payload: dict) -> str:
    """Sign ``payload`` with the project's key, as only the server itself can."""
    from rest_framework_simplejwt.settings import api_settings

    return pyjwt.encode(payload, api_settings.SIGNING_KEY, algorithm=api_settings.ALGORITHM)


@pytest.mark.parametrize(
    "changes", ODD_CLAIMS, ids=lambda c: f"{next(iter(c))}={c[next(iter(c))]!r}"[:40]
)
def test_odd_claims_in_a_signed_token_are_refused_with_401(user, changes):
    data = login(new_client())
    before = db_state()
    for kind, send, answers in (
        ("access", lambda token: bearer(token).get(ACTIVE_URL), {401}),
        ("refresh", lambda token: refresh(new_client(), token), {400, 401}),
        # Logout is idempotent: a token that names no session of its user ends nothing, 204.
        ("refresh", lambda token: logout(new_client(), token), {204, 400, 401}),
    ):
        payload = {**claims(data[kind]), **changes}
        response = send(signed(payload))
        assert response.status_code in answers, response.content
        if response.status_code != 204:
            assert isinstance(response.json().get("code"), str), response.content
    assert db_state() == before


@pytest.mark.parametrize("missing", ["jti", "token_type", "exp", "user_id", "session_id"])
def test_a_signed_token_without_a_required_claim_is_refused_with_401(user, missing):
    data = login(new_client())
    before = db_state()
    for kind, send in (
        ("access", lambda token: bearer(token).get(ACTIVE_URL)),
        ("refresh", lambda token: refresh(new_client(), token)),
        ("refresh", lambda token: logout(new_client(), token)),
    ):
        payload = claims(data[kind])
        del payload[missing]
        response = send(signed(payload))
        assert response.status_code == 401, (kind, response.content)
        assert isinstance(response.json().get("code"), str), response.content
    assert db_state() == before


def test_exp_far_in_the_future_is_refused_on_every_bearer_endpoint(user):
    data = login(new_client())
    token = signed({**claims(data["access"]), "exp": 10**30})
    for url in (ACTIVE_URL, WHOAMI_URL, LOGOUT_ALL_URL):
        method = "post" if url == LOGOUT_ALL_URL else "get"
        response = getattr(bearer(token), method)(url)
        assert response.status_code == 401, (url, response.content)
        assert response.json()["code"] == "token_not_valid"
    assert UserSession.objects.get(pk=data["session_id"]).is_active


# --------------------------------------------------------------------------------------------
# one JWT path: the session claim, the owner, simplejwt settings read at call time
# --------------------------------------------------------------------------------------------


def test_a_token_without_the_session_claim_has_one_code_on_every_path(user):
    access, refresh_token = AccessToken.for_user(user), RefreshToken.for_user(user)
    answers = [
        bearer(str(access)).get(WHOAMI_URL),
        refresh(new_client(), str(refresh_token)),
        logout(new_client(), str(refresh_token)),
    ]
    assert [r.status_code for r in answers] == [401, 401, 401]
    assert {r.json()["code"] for r in answers} == {"no_session_id"}


def test_another_users_idle_session_is_not_found_so_not_ended(user, other_user, open_session):
    """The owner is part of the lookup: no rule (idle, user agent) runs on someone else's row."""
    theirs, _ = open_session(other_user)
    UserSession.objects.filter(pk=theirs.pk).update(last_online=timezone.now() - timedelta(hours=1))
    access = mint_access(user, theirs.pk)
    with nilva_settings(IDLE_TIMEOUT=600):
        response = bearer(str(access), ua=FIREFOX_UA).get(WHOAMI_URL)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"  # not session_idle: nothing revealed
    theirs.refresh_from_db()
    assert theirs.is_active
    assert theirs.end_reason == ""


def test_no_nilva_module_binds_simplejwt_settings_at_import():
    """``override_settings(SIMPLE_JWT=...)`` must reach nilva-session without any patching."""
    for name, module in list(sys.modules.items()):
        if name.startswith("nilva_session") and module is not None:
            bound = [k for k, v in vars(module).items() if v is IMPORT_TIME_JWT_SETTINGS]
            assert not bound, (name, bound)


def test_override_of_simple_jwt_reaches_the_refresh_view(user, api_client):
    data = login(api_client)
    with override_settings(
        SIMPLE_JWT={**getattr(settings, "SIMPLE_JWT", {}), "ROTATE_REFRESH_TOKENS": True}
    ):
        rotated = refresh(new_client(), data["refresh"])
    assert rotated.status_code == 200, rotated.content
    assert "refresh" in rotated.json()
    plain = refresh(new_client(), data["refresh"])
    assert "refresh" not in plain.json()
