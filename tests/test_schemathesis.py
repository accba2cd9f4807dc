"""Contract fuzzing: schemathesis against the demo's own schema and app (issue 8).

Schemathesis (v4) loads the OpenAPI schema from the demo's ``/api/schema/`` through its WSGI
application (``schemathesis.openapi.from_wsgi``), generates requests for every operation —
valid ones, and invalid ones (negative mode, boundary "coverage" cases) — sends them to the same
WSGI application, and checks every response:

* ``not_a_server_error``: no 5xx;
* ``status_code_conformance``: the status code is one the schema documents for the operation;
* ``content_type_conformance``: the ``Content-Type`` is one the schema documents;
* ``response_schema_conformance``: the body matches the documented schema of that status.

``test_every_operation_keeps_its_contract`` sends real credentials: the demo user signs in
through the API with a fixed User-Agent, and every call sends that User-Agent (a changed one
would suspend the session). Calls alternate between an opaque token (``POST login/``) and a JWT
access token (``POST token/``). Operations that can end the session that makes the request
(``POST logout/``, ``POST logout/all/``, ``DELETE active/{session_id}/``) sign in again before
every call; the others share one token and one JWT per operation.
``test_every_operation_keeps_its_contract_with_made_up_credentials`` sends whatever schemathesis
makes up for the ``Authorization`` header instead. A few requests schemathesis cannot make up (a
right password, a real refresh token, the id of a real session) are sent by
``TestKnownGoodRequests`` and checked the same way. Throttling is off
(``tests/settings_openapi.py``).

Generation is bounded (``MAX_EXAMPLES`` per operation and phase) and derandomized, so a run is
repeatable and takes well under a minute. These tests need ``--ds=tests.settings_openapi``; in
the normal run ``tests/test_openapi.py`` runs them in a process started with those settings.
"""

from __future__ import annotations

import os

import pytest
from django.conf import settings

if "drf_spectacular" not in settings.INSTALLED_APPS:
    pytest.skip(
        "needs --ds=tests.settings_openapi (tests/test_openapi.py runs it in a subprocess)",
        allow_module_level=True,
    )

import schemathesis
from django.contrib.auth import get_user_model
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis import checks as st_checks

from nilva_session.models import UserSession
from tests.conftest import DESKTOP_UA, PASSWORD

SCHEMA_URL = "/api/schema/"
JSON = "application/json"
LOGIN_URL = "/api/sessions/login/"
TOKEN_URL = "/api/sessions/token/"
DETAIL = "/api/sessions/active/{session_id}/"
USERNAME = "demo"
# NILVA_FUZZ_EXAMPLES=1000 for a deeper (slower) local run.
MAX_EXAMPLES = int(os.environ.get("NILVA_FUZZ_EXAMPLES", "50"))
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]
# Operations whose call may end the session that makes it: a fresh sign-in for each call.
ENDS_OWN_SESSION = {
    "POST /api/sessions/logout/",
    "POST /api/sessions/logout/all/",
    "DELETE /api/sessions/active/{session_id}/",
}


class DemoWSGIHandler(WSGIHandler):
    """The project's WSGI application, as a server runs it, but on the test's database connection.

    Django closes the connection when a request starts and when its response is closed; the test's
    transaction has to outlive the requests, so this handler, like Django's test client, keeps
    ``close_old_connections`` out of both.
    """

    def __call__(self, environ, start_response):
        signals.request_started.disconnect(close_old_connections)
        try:
            response = super().__call__(environ, start_response)
        finally:
            signals.request_started.connect(close_old_connections)
        close = response.close

        def close_keeping_the_connection():
            signals.request_finished.disconnect(close_old_connections)
            try:
                close()
            finally:
                signals.request_finished.connect(close_old_connections)

        response.close = close_keeping_the_connection
        return response


# The schema is loaded from the demo app when this module is imported. (The lazy loader,
# schemathesis.pytest.from_fixture, does not work with pytest 9: it sets ``node._nodeid``.)
wsgi_app = DemoWSGIHandler()
schema = schemathesis.openapi.from_wsgi(SCHEMA_URL, wsgi_app)


class DemoUser:
    """The demo user, signed in through the API with a fixed User-Agent.

    ``headers()`` returns the headers of an authenticated call, alternating between an opaque
    token (``POST login/``) and a JWT access token (``POST token/``); ``fresh=True`` signs in
    again first.
    """

    def __init__(self) -> None:
        self.user = get_user_model().objects.create_user(USERNAME, password=PASSWORD)
        self.client = Client(HTTP_USER_AGENT=DESKTOP_UA)
        self.credentials: dict[str, str] = {}
        self.calls = 0

    def sign_in(self, url: str = LOGIN_URL) -> dict:
        response = self.client.post(
            url, {"username": USERNAME, "password": PASSWORD}, content_type=JSON
        )
        assert response.status_code == 200, response.content
        return response.json()

    def login(self) -> dict:
        return self.sign_in(LOGIN_URL)

    def headers(self, fresh: bool = False, kind: str | None = None) -> dict[str, str]:
        self.calls += 1
        kind = kind or ("Token", "Bearer")[self.calls % 2]
        if fresh or kind not in self.credentials:
            if kind == "Token":
                self.credentials[kind] = self.sign_in(LOGIN_URL)["token"]
            else:
                self.credentials[kind] = self.sign_in(TOKEN_URL)["access"]
        return {"Authorization": f"{kind} {self.credentials[kind]}", "User-Agent": DESKTOP_UA}


FORM_MEDIA_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def sendable(case) -> bool:
    """False for a form body that is not an object: werkzeug's test client (schemathesis' WSGI
    transport) cannot encode one and raises before any request reaches the server."""
    return case.media_type not in FORM_MEDIA_TYPES or isinstance(case.body, (dict, type(None)))


@pytest.fixture
def demo_user(db):
    return DemoUser()


@pytest.mark.django_db
@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_keeps_its_contract(case, demo_user):
    if not sendable(case):
        return
    fresh = f"{case.method.upper()} {case.path}" in ENDS_OWN_SESSION
    case.call_and_validate(headers=demo_user.headers(fresh=fresh), checks=CHECKS)


@pytest.mark.django_db
@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_keeps_its_contract_with_made_up_credentials(case, demo_user):
    """No token of ours: the credential is the text schemathesis makes up for the
    ``Authorization`` header, after ``Token`` or ``Bearer`` (so it reaches both authentication
    classes' parsing), or nothing at all."""
    if not sendable(case):
        return
    made_up = (case.headers or {}).get("Authorization")
    headers = {"User-Agent": DESKTOP_UA}
    if made_up is not None:
        keyword = ("Token", "Bearer")[len(made_up) % 2]
        headers["Authorization"] = f"{keyword} {made_up}"
    case.call_and_validate(headers=headers, checks=CHECKS)


class TestKnownGoodRequests:
    """Successful answers, which need values a fuzzer cannot guess, checked the same way."""

    @staticmethod
    def case(method: str, path: str, **kwargs):
        if "body" in kwargs:
            kwargs["media_type"] = JSON
        return schema[path][method].Case(**kwargs)

    @staticmethod
    def call(case, headers=None):
        headers = {"User-Agent": DESKTOP_UA, **(headers or {})}
        return case.call_and_validate(headers=headers, checks=CHECKS)

    def status(self, method: str, path: str, headers=None, **kwargs) -> int:
        return self.call(self.case(method, path, **kwargs), headers).status_code

    def test_login_and_token_obtain(self, demo_user):
        body = {"username": USERNAME, "password": PASSWORD}
        assert self.status("POST", "/api/sessions/login/", body=body) == 200
        pair = self.call(self.case("POST", "/api/sessions/token/", body=body))
        assert pair.status_code == 200
        assert set(pair.json()) == {"access", "refresh", "session_id", "expire_at"}

    def test_session_listing_detail_and_history(self, demo_user):
        headers = demo_user.headers(kind="Token")
        listed = self.call(self.case("GET", "/api/sessions/active/"), headers)
        assert listed.status_code == 200
        (session,) = listed.json()
        assert session["is_current"] is True
        assert session["end_reason"] == ""
        detail = {"session_id": session["session_id"]}
        assert self.status("GET", DETAIL, headers, path_parameters=detail) == 200
        other = {"session_id": demo_user.login()["session_id"]}
        assert self.status("DELETE", DETAIL, headers, path_parameters=other) == 204
        history = self.call(self.case("GET", "/api/sessions/history/"), headers)
        assert history.status_code == 200
        assert {item["end_reason"] for item in history.json()} == {"", "revoked"}
        assert self.status("GET", "/api/whoami/", headers) == 200

    def test_delete_named_and_other_sessions(self, demo_user):
        headers = demo_user.headers(kind="Token")
        others = [demo_user.login()["session_id"] for _ in range(2)]
        named = {"token_id": others[:1]}
        assert self.status("DELETE", "/api/sessions/active/", headers, query=named) == 204
        assert UserSession.objects.active().count() == 2
        assert self.status("DELETE", "/api/sessions/active/", headers) == 204
        assert UserSession.objects.active().count() == 1

    def test_reauthenticate_logout_and_logout_all(self, demo_user):
        headers = demo_user.headers(kind="Token")
        reauth = "/api/sessions/reauthenticate/"
        assert self.status("POST", reauth, headers, body={"password": PASSWORD}) == 200
        assert self.status("POST", reauth, headers, body={"password": "wrong"}) == 400
        assert self.status("POST", "/api/sessions/logout/", headers) == 204
        # The ended session's token is refused now: 401 session_ended, documented.
        assert self.status("GET", "/api/sessions/active/", headers) == 401
        headers = demo_user.headers(fresh=True, kind="Token")
        assert self.status("POST", "/api/sessions/logout/all/", headers) == 204

    def test_jwt_refresh_bearer_and_logout(self, demo_user):
        body = {"username": USERNAME, "password": PASSWORD}
        pair = self.call(self.case("POST", "/api/sessions/token/", body=body)).json()
        refresh = self.case(
            "POST", "/api/sessions/token/refresh/", body={"refresh": pair["refresh"]}
        )
        bearer = {"Authorization": f"Bearer {self.call(refresh).json()['access']}"}
        assert self.status("GET", "/api/sessions/active/", bearer) == 200
        logout = {"refresh": pair["refresh"]}
        assert self.status("POST", "/api/sessions/token/logout/", body=logout) == 204
        assert self.status("GET", "/api/whoami/", bearer) == 401
        assert self.call(refresh).status_code == 401
