"""OpenAPI through drf-spectacular (issue 8): ``nilva_session/openapi.py`` and the demo's schema.

Most of these tests need drf-spectacular installed *and* configured (``INSTALLED_APPS``,
``DEFAULT_SCHEMA_CLASS``), which the suite's own settings are not: they run in a process
started with ``tests/settings_openapi.py`` (the demo project with its ``/api/schema/`` and
``/api/docs/``), together with the contract fuzzing of ``tests/test_schemathesis.py``. In the
normal run, ``TestInTheNormalRun`` starts that process and fails if anything there fails or
skips, runs the demo's ``manage.py spectacular --validate --fail-on-warn``, and checks that the
package and the demo work without drf-spectacular. Without drf-spectacular or schemathesis
installed those fail under ``CI`` and are skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.conf import settings

from tests.support.subsuite import assert_suite_passes

ROOT = Path(__file__).resolve().parent.parent
IN_OPENAPI_PROCESS = "drf_spectacular" in settings.INSTALLED_APPS  # tests.settings_openapi
PREFIX = "/api/sessions/"
AUTHENTICATED = {"sessionTokenAuth", "sessionJwtAuth"}
# Every route of nilva_session/urls.py with its methods, and whether it needs a credential.
OPERATIONS = {
    ("login/", "post"): False,
    ("logout/", "post"): True,
    ("logout/all/", "post"): True,
    ("reauthenticate/", "post"): True,
    ("rotate/", "post"): True,
    ("history/", "get"): True,
    ("active/", "get"): True,
    ("active/", "delete"): True,
    ("active/{session_id}/", "get"): True,
    ("active/{session_id}/", "delete"): True,
    ("token/", "post"): False,
    ("token/refresh/", "post"): False,
    ("token/logout/", "post"): False,
}


def require_openapi_packages() -> None:
    """Fail under CI, skip elsewhere, when the ``openapi``/``test`` extras are missing."""
    import importlib.util

    missing = [
        name
        for name in ("drf_spectacular", "drf_spectacular_sidecar", "schemathesis")
        if importlib.util.find_spec(name) is None
    ]
    if not missing:
        return
    message = f"not installed: {', '.join(missing)} (pip install -e '.[test]')"
    if os.environ.get("CI"):
        pytest.fail(f"the OpenAPI tests need their packages under CI: {message}", pytrace=False)
    pytest.skip(message)


def run(args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT):
    environment = {**os.environ, **(env or {})}
    environment.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600, check=False
    )


# ------------------------------------------------------------------------------------------
# The normal run
# ------------------------------------------------------------------------------------------


class TestInTheNormalRun:
    __test__ = not IN_OPENAPI_PROCESS

    def test_openapi_suite_passes_in_its_own_process(self):
        """This module and tests/test_schemathesis.py under tests.settings_openapi."""
        require_openapi_packages()
        assert_suite_passes(
            "tests.settings_openapi", "tests/test_openapi.py", "tests/test_schemathesis.py"
        )

    def test_the_demo_schema_validates_without_warnings(self, tmp_path):
        """``example/manage.py spectacular --validate --fail-on-warn`` with the demo's settings."""
        require_openapi_packages()
        out = tmp_path / "schema.yaml"
        result = run(
            [
                sys.executable,
                "manage.py",
                "spectacular",
                "--validate",
                "--fail-on-warn",
                "--file",
                str(out),
            ],
            env={"DJANGO_SETTINGS_MODULE": "demo.settings"},
            cwd=ROOT / "example",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Warning" not in result.stderr, result.stderr
        assert "Error" not in result.stderr, result.stderr
        text = out.read_text()
        assert "/api/sessions/login/:" in text
        assert "sessionTokenAuth:" in text
        assert "sessionJwtAuth:" in text

    def test_the_package_and_the_demo_work_without_drf_spectacular(self):
        """No drf-spectacular: nothing imports it, the API answers, the demo has no schema URLs."""
        script = textwrap.dedent(
            """
            import json, sys
            # As if not installed: find_spec() says None and an import fails.
            for name in ("drf_spectacular", "drf_spectacular_sidecar"):
                sys.modules[name] = None
            sys.path.insert(0, "example")
            import django
            from django.conf import settings
            # The demo's settings, on a database of its own instead of example/db.sqlite3.
            settings.DATABASES["default"] = {"ENGINE": "django.db.backends.sqlite3",
                                             "NAME": ":memory:"}
            django.setup()
            from django.core.management import call_command
            from django.test import Client
            from django.urls import Resolver404, resolve
            import nilva_session.apis, nilva_session.urls  # noqa
            call_command("migrate", verbosity=0)
            from django.contrib.auth import get_user_model
            get_user_model().objects.create_user("demo", password="pw-123-not-secret")
            client = Client(HTTP_USER_AGENT="curl/8", SERVER_NAME="localhost")
            login = client.post("/api/sessions/login/", {"username": "demo",
                                "password": "pw-123-not-secret"}, content_type="application/json")
            active = client.get("/api/sessions/active/",
                                HTTP_AUTHORIZATION="Token " + login.json()["token"])
            routes = []
            for url in ("/api/schema/", "/api/docs/"):
                try:
                    resolve(url)
                    routes.append(url)
                except Resolver404:
                    pass
            print(json.dumps({
                "modules": sorted(m for m in sys.modules if m.startswith(("drf_spectacular",
                                  "nilva_session.openapi")) and sys.modules[m] is not None),
                "installed": [a for a in settings.INSTALLED_APPS if "spectacular" in a],
                "schema_class": settings.REST_FRAMEWORK.get("DEFAULT_SCHEMA_CLASS"),
                "statuses": [login.status_code, active.status_code],
                "routes": routes,
            }))
            """
        )
        result = run(
            [sys.executable, "-c", script],
            env={"DJANGO_SETTINGS_MODULE": "demo.settings", "DATABASE_URL": "", "REDIS_URL": ""},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report == {
            "modules": [],
            "installed": [],
            "schema_class": None,
            "statuses": [200, 200],
            "routes": [],
        }


# ------------------------------------------------------------------------------------------
# In the OpenAPI process (tests.settings_openapi: the demo project)
# ------------------------------------------------------------------------------------------


def generate(**spectacular_patches) -> dict:
    """The schema, as ``manage.py spectacular --validate --fail-on-warn`` writes it (JSON)."""
    from django.core.management import call_command
    from drf_spectacular.settings import patched_settings

    with patched_settings(spectacular_patches):
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            call_command(
                "spectacular",
                "--validate",
                "--fail-on-warn",
                "--format",
                "openapi-json",
                "--file",
                out.name,
            )
            return json.loads(Path(out.name).read_text())


def operation_of(schema: dict, route: str, method: str) -> dict:
    return schema["paths"][PREFIX + route][method]


def resolve(schema: dict, ref_or_schema: dict) -> dict:
    ref = ref_or_schema.get("$ref")
    if ref is None:
        return ref_or_schema
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def response_schema(schema: dict, route: str, method: str, status: int) -> dict:
    response = operation_of(schema, route, method)["responses"][str(status)]
    return resolve(schema, response["content"]["application/json"]["schema"])


@pytest.fixture(scope="module")
def schema():
    return generate()


class TestSchema:
    __test__ = IN_OPENAPI_PROCESS

    @pytest.mark.parametrize("split_request", [False, True])
    def test_generation_is_valid_without_warnings(self, split_request):
        """``--validate --fail-on-warn`` raises on any warning or validation error."""
        generated = generate(COMPONENT_SPLIT_REQUEST=split_request)
        assert generated["openapi"].startswith("3.")

    def test_both_security_schemes_are_present(self, schema):
        schemes = schema["components"]["securitySchemes"]
        assert schemes["sessionTokenAuth"]["type"] == "apiKey"
        assert schemes["sessionTokenAuth"]["in"] == "header"
        assert schemes["sessionTokenAuth"]["name"] == "Authorization"
        assert "`Authorization: Token <token>`" in schemes["sessionTokenAuth"]["description"]
        assert {k: v for k, v in schemes["sessionJwtAuth"].items() if k != "description"} == {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
        }

    def test_the_token_keyword_is_read_when_the_schema_is_built(self, settings):
        from tests.settings_openapi import NILVA_SESSION

        settings.NILVA_SESSION = {**NILVA_SESSION, "AUTH_HEADER_PREFIX": "Session"}
        scheme = generate()["components"]["securitySchemes"]["sessionTokenAuth"]
        assert "`Authorization: Session <token>`" in scheme["description"]

    def test_a_jwt_keyword_other_than_bearer_is_an_api_key_header(self, settings):
        settings.SIMPLE_JWT = {**getattr(settings, "SIMPLE_JWT", {}), "AUTH_HEADER_TYPES": ("JWT",)}
        scheme = generate()["components"]["securitySchemes"]["sessionJwtAuth"]
        assert (scheme["type"], scheme["in"], scheme["name"]) == (
            "apiKey",
            "header",
            "Authorization",
        )

    def test_every_route_is_documented(self, schema):
        from django.urls import URLPattern

        from nilva_session import urls

        documented = {
            (path[len(PREFIX) :], method)
            for path, operations in schema["paths"].items()
            if path.startswith(PREFIX)
            for method in operations
        }
        assert documented == set(OPERATIONS)
        # ... and OPERATIONS is every API route and method of nilva_session/urls.py; the one
        # HTML page (the "this wasn't me" link of an email) is no API operation.
        from rest_framework.views import APIView

        routes, pages = set(), set()
        for pattern in urls.urlpatterns:
            assert isinstance(pattern, URLPattern)
            route = str(pattern.pattern).replace("<str:session_id>", "{session_id}")
            view = pattern.callback.view_class
            found = {
                (route, m) for m in ("get", "post", "delete", "put", "patch") if hasattr(view, m)
            }
            if issubclass(view, APIView):
                routes |= found
            else:
                pages |= found
        assert routes == set(OPERATIONS)
        assert pages == {("not-me/", "post"), ("not-me/<str:token>/", "get")}

    @pytest.mark.parametrize(("route", "method"), sorted(OPERATIONS))
    def test_every_operation_is_described(self, schema, route, method):
        operation = operation_of(schema, route, method)
        assert operation["operationId"].startswith("sessions_")
        assert operation["summary"]
        assert operation["description"]
        assert "``" not in operation["description"]  # text for API users, not the docstring
        assert operation["tags"] == ["sessions"]
        security = {name for requirement in operation["security"] for name in requirement}
        if OPERATIONS[route, method]:
            assert security == AUTHENTICATED
        else:
            assert operation["security"] == [{}]
        successes = [code for code in operation["responses"] if code.startswith("2")]
        assert len(successes) == 1

    @pytest.mark.parametrize(("route", "method"), sorted(OPERATIONS))
    def test_error_responses_are_documented_with_the_error_shape(self, schema, route, method):
        responses = operation_of(schema, route, method)["responses"]
        errors = {int(code) for code in responses if not code.startswith("2")}
        expected = {429}
        if OPERATIONS[route, method]:
            expected |= {401, 403}
        if route in ("login/", "reauthenticate/", "token/", "token/refresh/", "token/logout/"):
            expected |= {400, 415}  # operations with a request body
        if (route, method) in (("active/", "delete"), ("rotate/", "post")):
            expected.add(400)  # bad token_id values; rotation_not_supported
        if route in ("token/", "token/refresh/", "token/logout/"):
            expected.add(401)
        if route in ("login/", "token/"):
            expected.add(403)  # session_limit_reached
        if route == "active/{session_id}/":
            expected.add(404)
        assert errors == expected
        for code in errors:
            error = response_schema(schema, route, method, code)
            assert error == schema["components"]["schemas"]["SessionError"]
            assert responses[str(code)]["description"]

    def test_the_error_shape(self, schema):
        error = schema["components"]["schemas"]["SessionError"]
        assert error["type"] == "object"
        assert sorted(error["required"]) == ["code", "detail"]
        assert error["properties"]["detail"]["type"] == "string"
        assert error["properties"]["code"]["type"] == "string"
        assert error["properties"]["errors"]["type"] == "object"

    def test_success_bodies(self, schema):
        login = response_schema(schema, "login/", "post", 200)
        assert set(login["required"]) == {"token", "session_id", "expire_at"}
        assert login["properties"]["expire_at"]["nullable"] is True
        pair = response_schema(schema, "token/", "post", 200)
        assert set(pair["required"]) == {"access", "refresh", "session_id", "expire_at"}
        refreshed = response_schema(schema, "token/refresh/", "post", 200)
        assert refreshed["required"] == ["access"]
        assert "refresh" in refreshed["properties"]
        reauth = response_schema(schema, "reauthenticate/", "post", 200)
        assert set(reauth["required"]) == {"session_id", "authenticated_at"}
        for route, method in [
            ("logout/", "post"),
            ("logout/all/", "post"),
            ("active/", "delete"),
            ("active/{session_id}/", "delete"),
            ("token/logout/", "post"),
        ]:
            assert "content" not in operation_of(schema, route, method)["responses"]["204"]

    def test_request_bodies(self, schema):
        def body(route):
            content = operation_of(schema, route, "post")["requestBody"]["content"]
            return resolve(schema, content["application/json"]["schema"])

        assert set(body("login/")["required"]) == {"username", "password"}
        assert body("reauthenticate/")["required"] == ["password"]
        assert set(body("token/")["required"]) == {"username", "password"}
        assert body("token/refresh/")["required"] == ["refresh"]
        assert body("token/logout/")["required"] == ["refresh"]
        for route in ("logout/", "logout/all/"):
            assert "requestBody" not in operation_of(schema, route, "post")

    def test_the_session_component(self, schema):
        from nilva_session.models import EndReason

        listed = operation_of(schema, "active/", "get")["responses"]["200"]["content"]
        assert listed["application/json"]["schema"]["type"] == "array"
        session = response_schema(schema, "active/{session_id}/", "get", 200)
        assert set(session["properties"]) == {
            "session_id",
            "user_id",
            "user_agent_data",
            "last_online",
            "last_ip",
            "created_at",
            "expire_at",
            "is_current",
            "is_active",
            "ended_at",
            "end_reason",
        }
        # drf-spectacular's enum post-processing turns the enum into named components.
        end_reason = session["properties"]["end_reason"]
        values = set()
        for choice in end_reason.get("oneOf", [end_reason]):
            values |= set(resolve(schema, choice)["enum"])
        assert values == {*EndReason.values, ""}
        agent = resolve(schema, session["properties"]["user_agent_data"])
        assert set(agent["required"]) == {
            "browser",
            "browser_version",
            "os",
            "os_version",
            "device_family",
            "device_brand",
            "device_model",
            "is_mobile",
            "is_tablet",
            "is_pc",
            "is_bot",
        }

    def test_the_token_id_and_session_id_parameters(self, schema):
        (token_id,) = operation_of(schema, "active/", "delete")["parameters"]
        assert token_id["in"] == "query"
        assert token_id["name"] == "token_id"
        assert token_id.get("required", False) is False
        assert (token_id["style"], token_id["explode"]) == ("form", True)
        assert token_id["schema"] == {
            "type": "array",
            "items": {"type": "string", "format": "uuid"},
            "maxItems": 100,
        }
        for method in ("get", "delete"):
            (session_id,) = operation_of(schema, "active/{session_id}/", method)["parameters"]
            assert session_id["in"] == "path"
            assert session_id["required"] is True
            assert session_id["schema"] == {"type": "string", "format": "uuid"}

    def test_the_views_themselves_are_not_modified(self, schema):
        from rest_framework.schemas import DefaultSchema

        from nilva_session import apis

        for view in (apis.LoginApi, apis.ListDestroyActiveSessionsApi, apis.SessionDetailApi):
            assert isinstance(view.__dict__.get("schema", DefaultSchema()), DefaultSchema)
            for method in ("get", "post", "delete"):
                assert not hasattr(getattr(view, method, None), "kwargs")

    def test_subclasses_of_the_views_are_documented_too(self):
        from django.urls import path
        from drf_spectacular.generators import SchemaGenerator

        from nilva_session import apis

        class MyLogin(apis.LoginApi):
            pass

        generator = SchemaGenerator(patterns=[path("my/login/", MyLogin.as_view())])
        operation = generator.get_schema(request=None, public=True)["paths"]["/my/login/"]["post"]
        assert operation["operationId"] == "sessions_login"
        assert set(operation["responses"]) == {"200", "400", "403", "415", "429"}


class TestDemoUrls:
    __test__ = IN_OPENAPI_PROCESS

    def test_the_schema_is_served(self, client):
        response = client.get("/api/schema/")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("application/vnd.oai.openapi")
        assert b"/api/sessions/login/" in response.content
        as_json = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
        assert set(json.loads(as_json.content)["paths"]) >= {PREFIX + r for r, _ in OPERATIONS}

    def test_swagger_ui_loads_its_assets_from_this_server(self, client):
        from django.contrib.staticfiles import finders

        response = client.get("/api/docs/")
        assert response.status_code == 200
        html = response.content.decode()
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets, html
        for asset in assets:
            assert asset.startswith("/"), asset  # nothing from another host (no CDN)
        bundles = [a for a in assets if a.startswith(settings.STATIC_URL)]
        assert {Path(a).name for a in bundles} >= {
            "swagger-ui.css",
            "swagger-ui-bundle.js",
            "swagger-ui-standalone-preset.js",
        }
        for asset in bundles:
            assert finders.find(asset[len(settings.STATIC_URL) :]), asset
        assert "/api/schema/" in html
