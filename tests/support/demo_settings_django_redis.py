"""The demo project's settings with django-redis in place of Django's ``RedisCache``.

The gunicorn tests use it when the suite itself runs with ``NILVA_TEST_CACHE=django-redis``, so
both Redis backends are proven with real worker processes. Everything else is ``demo.settings``.
"""

import os

from demo.settings import *  # noqa: F403

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": os.environ["REDIS_URL"],
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
}
