"""tests.settings plus the demo project with OpenAPI: ``tests/test_openapi.py`` and
``tests/test_schemathesis.py``.

The demo app (``example/demo``) is installed with its URLs, so the schema is the demo's own
``/api/schema/`` (and Swagger UI ``/api/docs/``), with the demo's ``SPECTACULAR_SETTINGS``.
Both test modules run in a process started with these settings; in the normal run
``tests/test_openapi.py`` starts it.
"""

import sys
from pathlib import Path

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, NILVA_SESSION, REST_FRAMEWORK

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "example"
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))

from demo.settings import SPECTACULAR_SETTINGS  # noqa: E402

INSTALLED_APPS = [
    *INSTALLED_APPS,
    "django.contrib.staticfiles",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "demo",
]
ROOT_URLCONF = "demo.urls"
STATIC_URL = "/static/"
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "nilva_session.apis.exception_handler",  # as the demo
}
SPECTACULAR_SETTINGS = {**SPECTACULAR_SETTINGS}

# The fuzzer sends many logins and unknown tokens: no throttling (tests.settings has none either).
NILVA_SESSION = {**NILVA_SESSION, "LOGIN_THROTTLE_RATE": None, "INVALID_TOKEN_THROTTLE_RATE": None}
