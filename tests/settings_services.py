"""The same suite on the production parts: PostgreSQL + Redis.

``DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/test``; pytest-django creates and
drops ``test_<name>``) and ``REDIS_URL`` (default ``redis://127.0.0.1:6379/15``).
``NILVA_TEST_CACHE=django-redis`` uses django-redis instead of Django's own ``RedisCache``.
"""

import os
from urllib.parse import unquote, urlparse

from tests.settings import *  # noqa: F403

_db = urlparse(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(_db.path.lstrip("/")),
        "USER": unquote(_db.username or ""),
        "PASSWORD": unquote(_db.password or ""),
        "HOST": _db.hostname or "",
        "PORT": str(_db.port or ""),
    }
}

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
if os.environ.get("NILVA_TEST_CACHE") == "django-redis":
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    }
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }

SILENCED_SYSTEM_CHECKS: list[str] = []

# NILVA_TEST_STORE=native: the package's own Redis store (NILVA_SESSION["REDIS"], with copies in
# the process kept true by CLIENT TRACKING) on the same Redis, instead of the Django cache.
if os.environ.get("NILVA_TEST_STORE") == "native":
    NILVA_SESSION = {**globals().get("NILVA_SESSION", {}), "REDIS": REDIS_URL}
