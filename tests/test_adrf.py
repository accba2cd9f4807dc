"""adrf async views with nilva_session.adrf's classes: in process, and under uvicorn.

The in-process tests use DRF's test client on an adrf view (Django runs it on an event loop);
the server tests run the demo under ``uvicorn demo.asgi:application --workers 2`` on PostgreSQL
+ Redis and call its adrf view, ``/api/async/whoami/``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("adrf", reason="adrf is not installed (the [async] extra)")

from adrf.views import APIView
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.test import APIClient

from nilva_session import sessions
from nilva_session.adrf import AsyncJWTAuthentication, AsyncTokenAuthentication
from nilva_session.authentication import UserSessionDBTokenAuthentication
from nilva_session.models import UserSession

from .conftest import DESKTOP_UA, FIREFOX_UA, PASSWORD
from .support.processes import Uvicorn, call, demo_environment
from .support.services import SERVICES

URL = "/async/whoami/"


class AsyncWhoAmI(APIView):
    authentication_classes = [AsyncTokenAuthentication, AsyncJWTAuthentication]

    async def get(self, request):
        session = sessions.current_session(request)
        return Response({"user": request.user.get_username(), "session_id": str(session.pk)})


class StrictAgent(AsyncTokenAuthentication):
    """A project's own user-agent rule: any change at all is refused."""

    def check_user_agent(self, session, request):
        if request.META.get("HTTP_USER_AGENT") != session.user_agent:
            from nilva_session.exceptions import SessionSuspended

            raise SessionSuspended()


class StrictWhoAmI(AsyncWhoAmI):
    authentication_classes = [StrictAgent]


urlpatterns = [
    path("api/sessions/", include("nilva_session.urls")),
    path("async/whoami/", AsyncWhoAmI.as_view()),
    path("async/strict/", StrictWhoAmI.as_view()),
]

pytestmark = pytest.mark.urls(__name__)


@pytest.fixture
def client():
    return APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")


def test_a_token_authenticates_an_async_view(client, user, open_session):
    session, token = open_session(user)
    response = client.get(URL, HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 200, response.content
    assert response.json() == {"user": "alice", "session_id": str(session.pk)}


def test_a_jwt_authenticates_an_async_view(client, user):
    login = client.post(
        "/api/sessions/token/", {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert login.status_code == 200, login.content
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {login.json()['access']}")
    assert response.json() == {"user": "alice", "session_id": login.json()["session_id"]}


def test_a_warm_request_makes_no_thread_hop(client, user, open_session, hops):
    _session, token = open_session(user)
    client.get(URL, HTTP_AUTHORIZATION=f"Token {token}")  # cold: fills the cache
    before = hops.hops
    for _ in range(3):
        assert client.get(URL, HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    assert (before, hops.hops) == (1, 1)


def test_an_ended_session_is_refused(client, user, open_session):
    session, token = open_session(user)
    client.get(URL, HTTP_AUTHORIZATION=f"Token {token}")
    sessions.revoke([session])
    response = client.get(URL, HTTP_AUTHORIZATION=f"Token {token}")
    assert (response.status_code, response.json()["code"]) == (401, "session_ended")
    assert set(response.json()) == {"detail", "code"}
    assert response["WWW-Authenticate"] == "Token"


def test_another_browser_suspends_the_session(user, open_session):
    session, token = open_session(user)
    firefox = APIClient(HTTP_USER_AGENT=FIREFOX_UA, REMOTE_ADDR="203.0.113.7")
    response = firefox.get(URL, HTTP_AUTHORIZATION=f"Token {token}")
    assert response.json()["code"] == "session_suspended"
    assert not UserSession.objects.get(pk=session.pk).is_active


def test_a_projects_own_rule_is_applied_on_the_warm_path(user, open_session):
    _session, token = open_session(user)
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")
    assert client.get("/async/strict/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    assert client.get("/async/strict/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    other = APIClient(HTTP_USER_AGENT=DESKTOP_UA + " x", REMOTE_ADDR="203.0.113.7")
    response = other.get("/async/strict/", HTTP_AUTHORIZATION=f"Token {token}")
    assert response.json()["code"] == "session_suspended"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Token", "invalid_header"),
        ("Token a b", "invalid_header"),
        ("Token nvs_ünï", "invalid_header"),
        ("Token " + "x" * 10000, "invalid_token"),
        ("Bearer not.a.jwt", "token_not_valid"),
        ("Bearer", "bad_authorization_header"),
    ],
    ids=["no-token", "spaces", "non-ascii", "huge", "bad-jwt", "bearer-alone"],
)
def test_malformed_credentials_get_a_401_and_change_nothing(client, user, header, code):
    before = list(UserSession.objects.values_list("pk", "is_active"))
    response = client.get(URL, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401, response.content
    assert response.json()["code"] == code
    assert list(UserSession.objects.values_list("pk", "is_active")) == before


def test_no_credential_is_not_authenticated(client, db):
    response = client.get(URL)
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_the_async_classes_parse_the_header_like_the_sync_one(rf):
    request = rf.get("/", HTTP_AUTHORIZATION="Token nvs_abc")
    parsed = AsyncTokenAuthentication().token_from(request)
    assert parsed == UserSessionDBTokenAuthentication().token_from(request) == "nvs_abc"


# --- under uvicorn ---------------------------------------------------------------------------

SERVER_USERS = ("adrf_token", "adrf_jwt")
SERVER_PASSWORD = "adrf-server-password-1"


@pytest.fixture(scope="module")
def asgi_demo(tmp_path_factory):
    """uvicorn, 2 worker processes, on a PostgreSQL database and Redis db of their own."""
    with demo_environment(SERVER_USERS, SERVER_PASSWORD) as env:
        server = Uvicorn(env, tmp_path_factory.mktemp("uvicorn"), workers=2)
        try:
            server.start()
            yield server
        finally:
            server.stop()


def _login(port: int, path: str, username: str) -> dict:
    reply = call(port, "POST", path, body={"username": username, "password": SERVER_PASSWORD})
    assert reply.status == 200, reply.body
    return reply.body


@pytest.mark.parametrize(
    ("username", "login_path", "header"),
    [
        ("adrf_token", "/api/sessions/login/", lambda body: f"Token {body['token']}"),
        ("adrf_jwt", "/api/sessions/token/", lambda body: f"Bearer {body['access']}"),
    ],
    ids=["token", "jwt"],
)
@SERVICES[0]
@SERVICES[1]
def test_an_async_view_under_uvicorn_serves_then_refuses_an_ended_session(
    asgi_demo, username, login_path, header
):
    body = _login(asgi_demo.port, login_path, username)
    auth = {"Authorization": header(body)}
    served = [call(asgi_demo.port, "GET", "/api/async/whoami/", headers=auth) for _ in range(20)]
    assert {reply.status for reply in served} == {200}, [r.body for r in served]
    assert {reply.body["session_id"] for reply in served} == {body["session_id"]}
    ended = call(asgi_demo.port, "POST", "/api/sessions/logout/", headers=auth)
    assert ended.status in (200, 204), ended.body
    after = [call(asgi_demo.port, "GET", "/api/async/whoami/", headers=auth) for _ in range(20)]
    assert {(reply.status, reply.body["code"]) for reply in after} == {(401, "session_ended")}
