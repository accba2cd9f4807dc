"""Demo project: SQLite + local-memory cache by default.

``DATABASE_URL=postgres://user:pass@host:5432/name`` switches to PostgreSQL and
``REDIS_URL=redis://127.0.0.1:6379/0`` to Redis (Django's RedisCache, and the channel layer).
"""

import importlib.util
import json
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "demo-only-secret-key-change-me-in-any-real-deployment"
)
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "nilva_session",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def database_from_url(url: str) -> dict:
    parts = urlparse(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL: only postgres:// is supported, not {parts.scheme!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": database_from_url(os.environ["DATABASE_URL"])}
else:
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}
    }

if os.environ.get("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "nilva_session.backends.UserSessionDBTokenAuthentication",
        "nilva_session.backends.UserSessionDBJwtAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Every error as {"detail", "code"} in the project's own views too.
    "EXCEPTION_HANDLER": "nilva_session.apis.exception_handler",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=5),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    # Tests run the demo with other options, e.g. DEMO_SIMPLE_JWT='{"ROTATE_REFRESH_TOKENS": true}'.
    **json.loads(os.environ.get("DEMO_SIMPLE_JWT") or "{}"),
}

NILVA_SESSION = {
    "EXPIRE_AT": timedelta(days=1),
    "LOGIN_THROTTLE_RATE": "10/min",
    # Tests run the demo under gunicorn with other options (durations in seconds), e.g.
    # DEMO_NILVA_SESSION='{"IDLE_TIMEOUT": 3, "LAST_ONLINE_UPDATE_INTERVAL": 1}'.
    **json.loads(os.environ.get("DEMO_NILVA_SESSION") or "{}"),
}
# DEMO_REDIS_STORE=1 (with REDIS_URL): sessions in the package's own Redis store, each worker
# keeping copies that Redis invalidates (no round trip on a warm request); =cluster: REDIS_URL
# names one node of a Redis Cluster.
if os.environ.get("DEMO_REDIS_STORE") and os.environ.get("REDIS_URL"):
    NILVA_SESSION["REDIS"] = {
        "URL": os.environ["REDIS_URL"],
        "CLUSTER": os.environ["DEMO_REDIS_STORE"] == "cluster",
        "KEY_PREFIX": "demo:",
    }

# OpenAPI (``pip install -e ".[openapi]"``): the schema at /api/schema/ and Swagger UI at
# /api/docs/, its assets served from drf-spectacular-sidecar (no CDN). Without the extra the demo
# runs as before, without these two URLs.
if importlib.util.find_spec("drf_spectacular") is not None:
    INSTALLED_APPS.append("drf_spectacular")
    REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "drf_spectacular.openapi.AutoSchema"
    SPECTACULAR_SETTINGS = {
        "TITLE": "nilva-session demo",
        "DESCRIPTION": (
            "Revocable, per-device sessions. Sign in with `POST /api/sessions/login/` (the demo"
            " user is printed by `./dev demo`), then **Authorize** with `Token <token>`; or sign"
            " in with `POST /api/sessions/token/` and authorize with the access token."
        ),
        "VERSION": "1",
        "SERVE_INCLUDE_SCHEMA": False,
        "SWAGGER_UI_DIST": "SIDECAR",
        "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
        "REDOC_DIST": "SIDECAR",
    }
    if importlib.util.find_spec("drf_spectacular_sidecar") is not None:
        INSTALLED_APPS.append("drf_spectacular_sidecar")

# Django Channels (``pip install -e ".[channels]"``): websockets at /ws/session/ (demo/asgi.py),
# closed on every worker when their session ends, through the channel layer: in memory for the
# one process of ``./dev demo``, channels-redis when REDIS_URL is set (DEMO_CHANNEL_REDIS_URL
# puts it on a Redis database of its own). With daphne installed, ``runserver`` (what ``./dev
# demo`` runs) serves the websockets too.
ASGI_APPLICATION = "demo.asgi.application"
if importlib.util.find_spec("channels") is not None:
    _channel_redis = os.environ.get("DEMO_CHANNEL_REDIS_URL") or (
        # channels-redis speaks to one Redis, not a cluster's node
        os.environ.get("REDIS_URL") if os.environ.get("DEMO_REDIS_STORE") != "cluster" else None
    )
    if _channel_redis and importlib.util.find_spec("channels_redis") is not None:
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [_channel_redis]},
            }
        }
    else:
        CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    if importlib.util.find_spec("daphne") is not None:
        INSTALLED_APPS.insert(0, "daphne")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"nilva_session": {"handlers": ["console"], "level": "INFO"}},
}
