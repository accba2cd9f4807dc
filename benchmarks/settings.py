"""Django settings of the benchmark project, chosen by environment variables.

``BENCH_DATABASE_URL`` (a PostgreSQL URL) or ``BENCH_SQLITE_PATH`` (a file) picks the database;
``BENCH_CACHE`` (``locmem``, ``redis`` for Django's own ``RedisCache``, ``django-redis``) and
``BENCH_REDIS_URL`` the cache. ``benchmarks/__main__.py`` sets them for each configuration.

Nothing here is tuned for nilva-session: every scheme runs behind the same handler, the same
(empty) middleware list and the same renderer, with its package's default settings.
"""

import os
from datetime import timedelta
from urllib.parse import unquote, urlparse

SECRET_KEY = "benchmarks-only-not-secret-but-long-enough-for-hs256-keys"  # noqa: S105
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchmarks.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "rest_framework.authtoken",
    "knox",
    "nilva_session",
]

# No middleware: an API project's session/CSRF/auth middleware would cost every scheme the same,
# and the baseline subtracts it anyway. Fewer moving parts, less noise.
MIDDLEWARE: list[str] = []

# Logins are counted (queries), not compared on hashing speed.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if os.environ.get("BENCH_DATABASE_URL"):
    _db = urlparse(os.environ["BENCH_DATABASE_URL"])
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(_db.path.lstrip("/")),
            "USER": unquote(_db.username or ""),
            "PASSWORD": unquote(_db.password or ""),
            "HOST": _db.hostname or "",
            "PORT": str(_db.port or ""),
            "CONN_MAX_AGE": None,  # persistent, as in production
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BENCH_SQLITE_PATH", "/tmp/nilva-bench.sqlite3"),  # noqa: S108
            "CONN_MAX_AGE": None,
        }
    }

_cache = os.environ.get("BENCH_CACHE", "locmem")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
if _cache == "redis":
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
elif _cache == "django-redis":
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Our keys only: the benchmark deletes what it wrote and nothing else in that Redis database.
CACHES["default"]["KEY_PREFIX"] = os.environ.get("BENCH_KEY_PREFIX", "nilva-bench")

REST_FRAMEWORK = {
    # What a project using nilva-session configures; the compared views set their own classes.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "nilva_session.backends.UserSessionDBTokenAuthentication",
        "nilva_session.backends.UserSessionDBJwtAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}

NILVA_SESSION = {
    # Defaults, except that the login benchmark logs in many times from one address.
    "LOGIN_THROTTLE_RATE": "100000/min",
}

# BENCH_STORE=native: the package's own Redis store with copies kept true by CLIENT TRACKING
# (BENCH_STORE_URL: one Redis, or a node of a Redis Cluster with BENCH_STORE_CLUSTER=1).
if os.environ.get("BENCH_STORE") == "native":
    NILVA_SESSION["REDIS"] = {
        "URL": os.environ.get("BENCH_STORE_URL", REDIS_URL),
        "CLUSTER": os.environ.get("BENCH_STORE_CLUSTER") == "1",
        "KEY_PREFIX": os.environ.get("BENCH_KEY_PREFIX", "nilva-bench") + ":store:",
    }
    # BENCH_LOCAL_CACHE=0: the native store without copies (one MGET per request).
    if os.environ.get("BENCH_LOCAL_CACHE") == "0":
        NILVA_SESSION["LOCAL_CACHE"] = False

SIMPLE_JWT = {
    # Long enough for one benchmark run; everything else is simplejwt's default (HS256).
    "ACCESS_TOKEN_LIFETIME": timedelta(hours=1),
}

SILENCED_SYSTEM_CHECKS = ["nilva_session.W001"]  # LocMem in the embedded configuration
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"nilva_session": {"level": "WARNING"}},
}
