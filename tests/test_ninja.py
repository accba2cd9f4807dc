"""Django Ninja (nilva_session.ninja): the auth classes, the error answers and the router.

In process, with Ninja's ``TestClient`` and ``TestAsyncClient`` on an API of this module (the
router under ``sessions/`` and protected endpoints of "your own"); over a real ASGI server, the
demo under ``uvicorn --workers 2`` on PostgreSQL + Redis (services suite only), whose Ninja
session is ended through the DRF API.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("ninja", reason="django-ninja is not installed (the [ninja] extra)")

from asgiref.sync import async_to_sync
from django.contrib.auth import user_logged_in, user_logged_out, user_login_failed
from django.core.exceptions import SuspiciousOperation
from django.db import connection
from django.test import Client as DjangoClient
from django.test import override_settings
from django.urls import include
from django.urls import path as url_path
from ninja import NinjaAPI
from ninja.testing import TestAsyncClient, TestClient
from rest_framework.exceptions import PermissionDenied
from rest_framework.test import APIClient

from nilva_session import sessions
from nilva_session.authentication import UserSessionDBTokenAuthentication
from nilva_session.exceptions import SessionSuspended
from nilva_session.models import EndReason, UserSession
from nilva_session.ninja import (
    AsyncJWTAuth,
    AsyncTokenAuth,
    JWTAuth,
    Refusal,
    TokenAuth,
    build_router,
    install,
)
from nilva_session.utils import token_generator

from .conftest import DESKTOP_UA, FIREFOX_UA, PASSWORD
from .support.doubles import nilva_settings
from .support.processes import Uvicorn, call, demo_environment
from .support.services import SERVICES

IP = "203.0.113.7"


@pytest.fixture(autouse=True)
def _one_namespace_per_api(monkeypatch):
    # Django Ninja 1.3 refuses a second TestClient on one API (its URL namespace registry);
    # the registry is about URL confs, which these clients do not use.
    monkeypatch.setenv("NINJA_SKIP_REGISTRY", "1")


class StrictAgent(UserSessionDBTokenAuthentication):
    """A project's own user-agent rule: any change at all suspends the session."""

    def check_user_agent(self, session, request):
        if request.META.get("HTTP_USER_AGENT") != session.user_agent:
            raise SessionSuspended()


class StrictTokenAuth(TokenAuth):
    authentication_class = StrictAgent


def make_api(*, installed: bool = True) -> NinjaAPI:
    """An API as a project builds one: the router, and endpoints of its own."""
    api = NinjaAPI(urls_namespace=f"nilva-test-{uuid.uuid4().hex}")
    if installed:
        install(api)
    api.add_router("sessions/", build_router())

    def who(request) -> dict:
        current = sessions.current_session(request)
        return {
            "user": request.user.get_username(),
            "session_id": str(request.auth.pk),
            "auth_is_session": isinstance(request.auth, UserSession),
            "current_session_id": str(current.pk) if current else None,
        }

    @api.get("whoami", auth=[TokenAuth(), JWTAuth()])
    def whoami(request):
        return who(request)

    @api.get("async/whoami", auth=[AsyncTokenAuth(), AsyncJWTAuth()])
    async def async_whoami(request):
        return who(request)

    @api.get("mixed/whoami", auth=[AsyncTokenAuth(), AsyncJWTAuth()])
    def mixed_whoami(request):  # a sync operation with the async classes
        return who(request)

    @api.get("strict/whoami", auth=StrictTokenAuth())
    def strict_whoami(request):
        return who(request)

    @api.get("raises/drf")
    def raises_drf(request):
        raise PermissionDenied("Not for you.")

    @api.get("raises/suspicious")
    def raises_suspicious(request):
        raise SuspiciousOperation("a detail that is not echoed")

    return api


API = make_api()
BARE = make_api(installed=False)  # install() not called
WHOAMI = ["whoami", "async/whoami", "mixed/whoami"]


def server_meta(headers: dict[str, str], ip: str) -> dict[str, str]:
    """``headers`` in ``META`` as a WSGI/ASGI server puts them (``HTTP_USER_AGENT``).

    Ninja's test clients copy ``headers=`` into ``META`` keeping the case (``HTTP_User_Agent``),
    which no server does; simplejwt and the user-agent rule read ``META``.
    """
    meta = {"REMOTE_ADDR": ip}
    for name, value in headers.items():
        meta["HTTP_" + name.upper().replace("-", "_")] = value
    return meta


class ServerHeaders:
    """A Ninja test client sending a browser's User-Agent from a fixed IP, headers as servers
    give them (through ``META=``, which every Ninja release's test client takes)."""

    def __init__(self, api: NinjaAPI, user_agent: str = DESKTOP_UA, ip: str = IP) -> None:
        super().__init__(api)
        self.user_agent = user_agent
        self.ip = ip

    def server_params(self, params: dict) -> dict:
        headers = {"User-Agent": self.user_agent, **params.pop("headers", {})}
        return {**params, "META": server_meta(headers, self.ip)}


class Client(ServerHeaders, TestClient):
    def request(self, method, path, data=None, json=None, **params):
        return super().request(method, path, data, json, **self.server_params(params))


class AsyncClient(ServerHeaders, TestAsyncClient):
    async def request(self, method, path, data=None, json=None, **params):
        return await super().request(method, path, data, json, **self.server_params(params))


@pytest.fixture
def client():
    return Client(API)


def get(path: str, authorization: str | None = None, *, api: NinjaAPI = API, **kwargs):
    """GET ``path`` with the sync client for a sync path, the async one for ``async/``."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    if path.startswith("async/"):

        async def fetch():
            return await AsyncClient(api, **kwargs).get(path, headers=headers)

        return async_to_sync(fetch)()
    return Client(api, **kwargs).get(path, headers=headers)


def login(client, username: str = "alice", password: str = PASSWORD):
    return client.post("sessions/login/", json={"username": username, "password": password})


def token_of(client, username: str = "alice") -> dict:
    response = login(client, username)
    assert response.status_code == 200, response.content
    return response.json()


def jwt_of(username: str = "alice") -> dict:
    """An access token from the DRF API's ``token/`` (Ninja's router has no JWT login)."""
    drf = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR=IP)
    response = drf.post("/api/sessions/token/", {"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.content
    return response.json()


def detail(response) -> tuple[int, str | None]:
    return response.status_code, response.json().get("code")


# --------------------------------------------------------------------------------------------
# login/ and authenticated calls
# --------------------------------------------------------------------------------------------


def test_login_returns_a_token_of_a_new_session(client, user, capture_signal):
    logged_in = capture_signal(user_logged_in)
    body = token_of(client)
    assert set(body) == {"token", "session_id", "expire_at"}
    session = UserSession.objects.get(pk=body["session_id"])
    assert session.user == user
    assert session.is_active
    assert (session.user_agent, session.last_ip) == (DESKTOP_UA, IP)
    assert [call["user"] for call in logged_in] == [user]


@pytest.mark.parametrize("path", WHOAMI)
def test_a_token_authenticates_sync_and_async_operations(client, user, path):
    body = token_of(client)
    response = get(path, f"Token {body['token']}")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "user": "alice",
        "session_id": body["session_id"],
        "auth_is_session": True,
        "current_session_id": body["session_id"],
    }


@pytest.mark.parametrize("path", WHOAMI)
def test_a_jwt_authenticates_sync_and_async_operations(user, path):
    body = jwt_of()
    response = get(path, f"Bearer {body['access']}")
    assert response.status_code == 200, response.content
    assert response.json()["session_id"] == body["session_id"]
    assert response.json()["auth_is_session"] is True


def test_a_warm_async_request_makes_no_thread_hop(client, user, hops):
    token = token_of(client)["token"]
    headers = {"Authorization": f"Token {token}"}

    async def requests(count: int) -> list[tuple[int, float]]:
        """``(status, seconds)`` of ``count`` requests on one event loop, as under a server."""
        async_client, answers = AsyncClient(API), []
        for _ in range(count):
            started = time.perf_counter()
            response = await async_client.get("async/whoami", headers=headers)
            answers.append((response.status_code, time.perf_counter() - started))
        return answers

    hops.hops = 0
    assert [status for status, _ in async_to_sync(requests)(1)] == [200]
    assert hops.hops == 1  # the cold request: aio's one hop to the sync core, which fills
    hops.hops = 0
    answers = async_to_sync(requests)(200)
    assert {status for status, _ in answers} == {200}
    assert hops.hops == 0
    median = statistics.median(seconds for _, seconds in answers[20:]) * 1000
    print(f"\nninja AsyncTokenAuth operation, warm, in process: median {median:.3f} ms")
    assert median < 1000  # generous: the figure is printed, not held to a tight bound


def test_the_keyword_is_read_per_request(client, user):
    token = token_of(client)["token"]
    with nilva_settings(AUTH_HEADER_PREFIX="Session"):
        assert get("whoami", f"Session {token}").status_code == 200
        assert detail(get("whoami", f"Token {token}")) == (401, "not_authenticated")
    assert get("whoami", f"Token {token}").status_code == 200


def test_a_projects_own_rule_applies_through_the_authentication_class(client, user):
    token = token_of(client)["token"]
    other_build = DESKTOP_UA.replace("Chrome/120.0.0.0", "Chrome/121.0.0.0")
    assert get("whoami", f"Token {token}", user_agent=other_build).status_code == 200  # family
    response = get("strict/whoami", f"Token {token}", user_agent=other_build.replace("121", "122"))
    assert detail(response) == (401, "session_suspended")


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", WHOAMI)
@pytest.mark.parametrize("kind", ["token", "jwt"])
def test_an_ended_session_is_refused(client, user, path, kind):
    if kind == "token":
        body = token_of(client)
        header, challenge = f"Token {body['token']}", "Token"
    else:
        body = jwt_of()
        header, challenge = f"Bearer {body['access']}", 'Bearer realm="api"'
    assert get(path, header).status_code == 200
    sessions.revoke(UserSession.objects.filter(pk=body["session_id"]))
    response = get(path, header)
    assert detail(response) == (401, "session_ended")
    assert response.json()["detail"] == "This session has ended. Please sign in again."
    assert response["WWW-Authenticate"] == challenge


MALFORMED = [
    ("Token", "invalid_header"),
    ("Token a b", "invalid_header"),
    ("Token " + token_generator(), "invalid_token"),  # well formed, unknown
    ("Token not-a-token", "invalid_token"),
    ("Token héllo€", "invalid_token"),
    ("Token " + "x" * 100_000, "invalid_token"),
    ("Bearer", "bad_authorization_header"),
    ("Bearer a b", "bad_authorization_header"),
    ("Bearer not.a.jwt", "token_not_valid"),
    ("Bearer héllo€", "token_not_valid"),
    ("Bearer " + "x" * 100_000, "token_not_valid"),
    ("Basic dXNlcjpwYXNz", "not_authenticated"),  # not ours: no credential of ours
]


@pytest.mark.parametrize("path", WHOAMI)
@pytest.mark.parametrize(("header", "code"), MALFORMED, ids=[h[:20] for h, _ in MALFORMED])
def test_malformed_credentials_get_a_401_with_a_code(db, path, header, code):
    response = get(path, header)
    assert detail(response) == (401, code)
    assert response["WWW-Authenticate"]


def test_no_credential_names_every_scheme_tried(db):
    response = get("whoami")
    assert detail(response) == (401, "not_authenticated")
    assert response["WWW-Authenticate"] == 'Token, Bearer realm="api"'


@pytest.mark.parametrize("path", WHOAMI)
@pytest.mark.parametrize("header", ["Token héllo€", "Bearer " + "x" * 100_000, "Token", None])
def test_without_install_a_refusal_is_still_a_401(client, user, path, header):
    response = get(path, header, api=BARE)
    assert response.status_code == 401, response.content
    assert isinstance(response.json()["detail"], str)


def test_without_install_an_ended_session_says_so(client, user):
    body = token_of(client)
    sessions.revoke(UserSession.objects.filter(pk=body["session_id"]))
    response = get("whoami", f"Token {body['token']}", api=BARE)
    assert response.status_code == 401
    assert response.json() == {"detail": "This session has ended. Please sign in again."}


def test_a_changed_user_agent_suspends_the_session(client, user):
    body = token_of(client)
    header = f"Token {body['token']}"
    response = get("async/whoami", header, user_agent=FIREFOX_UA)
    assert detail(response) == (401, "session_suspended")
    session = UserSession.objects.get(pk=body["session_id"])
    assert not session.is_active
    assert session.end_reason == EndReason.USER_AGENT_CHANGED
    assert get("whoami", header).status_code == 401  # the real browser is refused too


@pytest.mark.parametrize("path", ["whoami", "async/whoami"])
def test_an_ip_bound_session_is_suspended_from_another_address(client, user, path):
    with nilva_settings(BIND_IP=True):
        token = token_of(client)["token"]
        assert get(path, f"Token {token}").status_code == 200
        response = get(path, f"Token {token}", ip="198.51.100.9")
    assert detail(response) == (401, "session_suspended")
    assert "address" in response.json()["detail"]


@pytest.mark.parametrize("path", ["whoami", "async/whoami"])
def test_an_idle_session_is_refused(client, user, clock, path):
    with nilva_settings(IDLE_TIMEOUT=timedelta(minutes=10)):
        token = token_of(client)["token"]
        assert get(path, f"Token {token}").status_code == 200
        clock.advance(minutes=11, cache=False)
        assert detail(get(path, f"Token {token}")) == (401, "session_idle")


# Through Django's own handler (middleware, ATOMIC_REQUESTS), not Ninja's test client.
urlpatterns = [
    url_path("ninja/", API.urls),
    url_path("api/sessions/", include("nilva_session.urls")),
]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("path", ["whoami", "mixed/whoami"])
def test_a_suspension_survives_atomic_requests(user, monkeypatch, path):
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    django_client = DjangoClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR=IP)
    response = django_client.post(
        "/ninja/sessions/login/",
        {"username": "alice", "password": PASSWORD},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    header = f"Token {body['token']}"
    assert django_client.get(f"/ninja/{path}", HTTP_AUTHORIZATION=header).status_code == 200
    response = django_client.get(
        f"/ninja/{path}", HTTP_AUTHORIZATION=header, HTTP_USER_AGENT=FIREFOX_UA
    )
    assert (response.status_code, response.json()["code"]) == (401, "session_suspended")
    # A refusal rolls the request's transaction back (DRF's handler); the suspension stays.
    session = UserSession.objects.get(pk=body["session_id"])
    assert (session.is_active, session.end_reason) == (False, EndReason.USER_AGENT_CHANGED)


def test_many_unknown_tokens_are_throttled_with_retry_after(db):
    with nilva_settings(INVALID_TOKEN_THROTTLE_RATE="3/min"):
        statuses = [get("async/whoami", f"Token {token_generator()}").status_code for _ in range(6)]
        response = get("whoami", f"Token {token_generator()}")
    assert statuses[:3] == [401, 401, 401]
    assert 429 in statuses
    assert detail(response) == (429, "throttled")
    assert int(response["Retry-After"]) >= 1


def test_install_answers_the_cores_drf_errors_in_your_own_views(client):
    response = client.get("raises/drf")
    assert detail(response) == (403, "permission_denied")
    assert response.json()["detail"] == "Not for you."
    response = client.get("raises/suspicious")
    assert detail(response) == (400, "bad_request")
    assert "not echoed" not in response.content.decode()


def test_refusal_carries_the_drf_answer():
    error = Refusal(429, {"detail": "Slow down.", "code": "throttled"}, {"Retry-After": "3"})
    assert (error.status_code, error.message, error.code) == (429, "Slow down.", "throttled")
    assert str(error) == "Slow down."


# --------------------------------------------------------------------------------------------
# The router: login/ rules, logout/, logout/all/, active/
# --------------------------------------------------------------------------------------------


def test_a_wrong_password_is_a_400_and_sends_user_login_failed(client, user, capture_signal):
    failed = capture_signal(user_login_failed)
    response = login(client, password="wrong")
    assert detail(response) == (400, "invalid_credentials")
    assert response.json()["errors"] == {
        "non_field_errors": ["Unable to log in with provided credentials."]
    }
    assert len(failed) == 1
    assert not UserSession.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"username": "a" * 300, "password": "x"}, 400, "max_length"),
        ({"username": "alice", "password": "x" * 5000}, 400, "max_length"),
        ({"username": "ålice€", "password": PASSWORD}, 400, "invalid_credentials"),
        ({"username": "", "password": PASSWORD}, 400, "blank"),
    ],
)
def test_bad_logins_are_400s_with_a_code(client, user, body, status, code):
    response = client.post("sessions/login/", json=body)
    assert detail(response) == (status, code)


@pytest.mark.parametrize("body", ["{not json", "[" * 5000, "[]", '{"username": 5}'])
def test_a_body_ninja_cannot_read_is_its_own_4xx(client, db, body):
    response = client.post("sessions/login/", body)
    assert 400 <= response.status_code < 500, response.content
    assert "detail" in response.json()


def test_login_shares_the_drf_apis_throttle_budgets(client, user):
    drf = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR=IP)
    with nilva_settings(LOGIN_THROTTLE_RATE="3/min"):
        for _ in range(2):
            response = drf.post("/api/sessions/login/", {"username": "x", "password": "y"})
            assert response.status_code == 400
        assert login(client, password="wrong").status_code == 400  # the third of the window
        response = login(client)  # the right password, but the budget is spent
        assert detail(response) == (429, "throttled")
        assert 1 <= int(response["Retry-After"]) <= 60
        without_install = Client(BARE).post(
            "sessions/login/", json={"username": "alice", "password": PASSWORD}
        )
        assert without_install.status_code == 429
    assert not UserSession.objects.exists()


def test_the_session_cap_applies(client, user):
    with nilva_settings(MAX_SESSIONS_PER_USER=1, SESSION_LIMIT_POLICY="refuse"):
        token_of(client)
        assert detail(login(client)) == (403, "session_limit_reached")
    with nilva_settings(MAX_SESSIONS_PER_USER=1):  # the default policy ends the oldest
        newest = token_of(client)
    assert list(UserSession.objects.filter(is_active=True).values_list("pk", flat=True)) == [
        uuid.UUID(newest["session_id"])
    ]


def test_logout_ends_the_current_session(client, user, open_session, capture_signal):
    logged_out = capture_signal(user_logged_out)
    other, _ = open_session(user)
    body = token_of(client)
    header = {"Authorization": f"Token {body['token']}"}
    response = client.post("sessions/logout/", headers=header)
    assert response.status_code == 204
    assert detail(client.get("whoami", headers=header)) == (401, "session_ended")
    ended = UserSession.objects.get(pk=body["session_id"])
    assert (ended.is_active, ended.end_reason) == (False, EndReason.LOGOUT)
    assert UserSession.objects.get(pk=other.pk).is_active
    assert [call["user"] for call in logged_out] == [user]


def test_logout_with_a_jwt(client, user):
    body = jwt_of()
    header = {"Authorization": f"Bearer {body['access']}"}
    assert client.post("sessions/logout/", headers=header).status_code == 204
    assert detail(client.get("whoami", headers=header)) == (401, "session_ended")


def test_logout_all_ends_every_session_of_the_user_only(client, user, other_user, open_session):
    mine, _ = open_session(user)
    theirs, _ = open_session(other_user)
    body = token_of(client)
    response = client.post(
        "sessions/logout/all/", headers={"Authorization": f"Token {body['token']}"}
    )
    assert response.status_code == 204
    assert not UserSession.objects.filter(user=user, is_active=True).exists()
    assert UserSession.objects.get(pk=mine.pk).end_reason == EndReason.LOGOUT_ALL
    assert UserSession.objects.get(pk=theirs.pk).is_active


@pytest.mark.parametrize("path", ["sessions/logout/", "sessions/logout/all/", "sessions/active/"])
def test_the_protected_endpoints_refuse_without_a_credential(client, db, path):
    response = client.get(path) if path.endswith("active/") else client.post(path)
    assert detail(response) == (401, "not_authenticated")


def test_active_lists_what_the_drf_api_lists(client, user, other_user, open_session):
    open_session(user, ua=FIREFOX_UA)
    ended, _ = open_session(user)
    sessions.revoke([ended])
    open_session(other_user)
    body = token_of(client)
    response = client.get("sessions/active/", headers={"Authorization": f"Token {body['token']}"})
    assert response.status_code == 200
    drf = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR=IP)
    drf.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
    assert response.json() == drf.get("/api/sessions/active/").json()
    listed = response.json()
    assert len(listed) == 2
    assert [
        entry["is_current"] for entry in listed if entry["session_id"] == body["session_id"]
    ] == [True]
    assert all("key" not in entry and "token" not in entry for entry in listed)


def test_delete_ends_one_session_of_the_user(client, user, open_session):
    other, _ = open_session(user)
    body = token_of(client)
    header = {"Authorization": f"Token {body['token']}"}
    response = client.delete(f"sessions/active/{other.pk}/", headers=header)
    assert response.status_code == 204
    other.refresh_from_db()
    assert (other.is_active, other.end_reason) == (False, EndReason.REVOKED)
    assert client.get("whoami", headers=header).status_code == 200
    assert (
        client.delete(f"sessions/active/{body['session_id']}/", headers=header).status_code == 204
    )
    assert detail(client.get("whoami", headers=header)) == (401, "session_ended")


@pytest.mark.parametrize(
    "session_id", ["theirs", str(uuid.uuid4()), "not-a-uuid", "é" * 20, "9" * 5000, "%00"]
)
def test_delete_of_anything_but_ones_own_session_is_a_404(
    client, user, other_user, open_session, session_id
):
    theirs, _ = open_session(other_user)
    if session_id == "theirs":
        session_id = str(theirs.pk)
    body = token_of(client)
    response = client.delete(
        f"sessions/active/{session_id}/", headers={"Authorization": f"Token {body['token']}"}
    )
    assert detail(response) == (404, "not_found")
    theirs.refresh_from_db()
    assert theirs.is_active


def test_each_router_stands_alone():
    # Django Ninja 1.3 mounts a router on one API only: build_router() gives new ones.
    assert build_router() is not build_router()
    custom = build_router(auth=[AsyncTokenAuth()], tags=["mine"])
    api = NinjaAPI(urls_namespace="nilva-test-custom")
    api.add_router("", custom)
    schema = api.get_openapi_schema(path_prefix="")
    assert schema["paths"]["/active/"]["get"]["security"] == [{"AsyncTokenAuth": []}]
    assert schema["paths"]["/active/"]["get"]["tags"] == ["mine"]


# --------------------------------------------------------------------------------------------
# OpenAPI
# --------------------------------------------------------------------------------------------


def test_the_openapi_schema_shows_the_schemes_and_the_operations():
    schema = API.get_openapi_schema(path_prefix="")
    schemes = schema["components"]["securitySchemes"]
    assert schemes["TokenAuth"]["type"] == "apiKey"
    assert (schemes["TokenAuth"]["in"], schemes["TokenAuth"]["name"]) == ("header", "Authorization")
    assert "`Authorization: Token <token>`" in schemes["TokenAuth"]["description"]
    assert schemes["AsyncTokenAuth"] == schemes["TokenAuth"]
    for name in ("JWTAuth", "AsyncJWTAuth"):
        assert {key: schemes[name][key] for key in ("type", "scheme", "bearerFormat")} == {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
        }
    paths = schema["paths"]
    login_operation = paths["/sessions/login/"]["post"]
    assert "security" not in login_operation
    assert login_operation["requestBody"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/SessionLoginIn"
    )
    assert set(login_operation["responses"]) == {200, 400, 403, 429}
    protected = [
        paths["/sessions/logout/"]["post"],
        paths["/sessions/logout/all/"]["post"],
        paths["/sessions/active/"]["get"],
        paths["/sessions/active/{session_id}/"]["delete"],
    ]
    for operation in protected:
        assert operation["security"] == [{"TokenAuth": []}, {"JWTAuth": []}]
        assert operation["tags"] == ["sessions"]
    assert paths["/async/whoami"]["get"]["security"] == [
        {"AsyncTokenAuth": []},
        {"AsyncJWTAuth": []},
    ]
    listed = schema["components"]["schemas"]["SessionOut"]["properties"]
    assert listed["last_online"]["anyOf"][0] == {"type": "string", "format": "date-time"}


def test_the_openapi_schema_is_valid_openapi():
    jsonschema = pytest.importorskip("jsonschema")
    spectacular = pytest.importorskip("drf_spectacular")  # ships the OpenAPI meta-schemas
    document = json.loads(json.dumps(API.get_openapi_schema(path_prefix="/")))
    assert document["openapi"].startswith("3.1")
    meta_schema = Path(spectacular.__file__).parent / "validation" / "openapi_3_1_schema.json"
    jsonschema.validate(document, json.loads(meta_schema.read_text()))


def test_the_schemes_follow_the_settings_when_the_schema_is_built():
    jwt = {"SIMPLE_JWT": {"AUTH_HEADER_TYPES": ("JWT",)}}
    with nilva_settings(AUTH_HEADER_PREFIX="Session"), override_settings(**jwt):
        schemes = make_api().get_openapi_schema(path_prefix="")["components"]["securitySchemes"]
    assert "`Authorization: Session <token>`" in schemes["TokenAuth"]["description"]
    assert (schemes["JWTAuth"]["type"], schemes["JWTAuth"]["name"]) == ("apiKey", "Authorization")
    assert "`Authorization: JWT <token>`" in schemes["JWTAuth"]["description"]


# --------------------------------------------------------------------------------------------
# Over a real ASGI server: the demo under uvicorn, 2 workers, PostgreSQL + Redis
# --------------------------------------------------------------------------------------------

SERVER_USERS = ("ninja_user", "ninja_other")
SERVER_PASSWORD = "ninja-server-password-1"


@pytest.fixture(scope="module")
def asgi_demo(tmp_path_factory):
    with demo_environment(SERVER_USERS, SERVER_PASSWORD) as env:
        server = Uvicorn(env, tmp_path_factory.mktemp("uvicorn-ninja"), workers=2)
        try:
            server.start()
            yield server
        finally:
            server.stop()


def _server_login(port: int, username: str) -> dict:
    body = {"username": username, "password": SERVER_PASSWORD}
    reply = call(port, "POST", "/api/ninja/login/", body=body)
    assert reply.status == 200, reply.body
    return reply.body


@SERVICES[0]
@SERVICES[1]
def test_under_uvicorn_a_ninja_session_ended_through_the_drf_api_is_refused(asgi_demo):
    port = asgi_demo.port
    body = _server_login(port, "ninja_user")
    auth = {"Authorization": f"Token {body['token']}"}
    served = [call(port, "GET", "/api/ninja/whoami", headers=auth) for _ in range(40)]
    assert {reply.status for reply in served} == {200}, [reply.body for reply in served]
    assert {reply.body["session_id"] for reply in served} == {body["session_id"]}
    assert served[0].body["user"] == "ninja_user"
    listed = call(port, "GET", "/api/ninja/active/", headers=auth)
    assert listed.status == 200
    assert [s["session_id"] for s in listed.body] == [body["session_id"]]
    for name, url in [("ninja async", "/api/ninja/whoami"), ("DRF sync", "/api/whoami/")]:
        replies = [call(port, "GET", url, headers=auth) for _ in range(100)]
        assert {reply.status for reply in replies} == {200}
        median = statistics.median(reply.done - reply.sent for reply in replies) * 1000
        print(f"\nuvicorn, 2 workers, {name} whoami, warm: median {median:.1f} ms (new connection)")
    ended = call(port, "POST", "/api/sessions/logout/", headers=auth)  # the DRF API
    assert ended.status == 204, ended.body
    after = [call(port, "GET", "/api/ninja/whoami", headers=auth) for _ in range(20)]
    assert {(reply.status, reply.body["code"]) for reply in after} == {(401, "session_ended")}


@SERVICES[0]
@SERVICES[1]
@pytest.mark.parametrize(
    "header",
    ["Token h\xe9llo", "Bearer h\xe9llo", "Token", "Token a b", "Token " + "x" * 6000],
    ids=["latin-1 token", "latin-1 bearer", "no token", "spaces", "6 KB token"],
)
def test_under_uvicorn_a_malformed_header_is_a_401(asgi_demo, header):
    reply = call(asgi_demo.port, "GET", "/api/ninja/whoami", headers={"Authorization": header})
    assert reply.status == 401, reply.body
    assert reply.body["code"] in {"invalid_header", "invalid_token", "token_not_valid"}


@SERVICES[0]
@SERVICES[1]
def test_under_uvicorn_a_huge_header_is_never_a_5xx(asgi_demo):
    reply = call(
        asgi_demo.port,
        "GET",
        "/api/ninja/whoami",
        headers={"Authorization": "Token " + "x" * 200_000},
    )
    assert 400 <= reply.status < 500, (reply.status, reply.body)


@SERVICES[0]
@SERVICES[1]
def test_under_uvicorn_delete_by_id_and_bad_ids(asgi_demo):
    port = asgi_demo.port
    first = _server_login(port, "ninja_other")
    second = _server_login(port, "ninja_other")
    auth = {"Authorization": f"Token {second['token']}"}
    for bad in ("not-a-uuid", str(uuid.uuid4()), "%C3%A9"):
        reply = call(port, "DELETE", f"/api/ninja/active/{bad}/", headers=auth)
        assert (reply.status, reply.body["code"]) == (404, "not_found")
    reply = call(port, "DELETE", f"/api/ninja/active/{first['session_id']}/", headers=auth)
    assert reply.status == 204
    refused = call(
        port, "GET", "/api/ninja/whoami", headers={"Authorization": f"Token {first['token']}"}
    )
    assert (refused.status, refused.body["code"]) == (401, "session_ended")
    assert call(port, "POST", "/api/ninja/logout/all/", headers=auth).status == 204
