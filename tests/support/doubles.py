"""Test doubles shared by the suite: a frozen clock, a cache spy, settings overrides.

Real parts stay real: the spy counts the calls made on the real cache object and still makes
them; the clock moves Django's ``timezone.now`` and the caches' expiry together.
"""

from __future__ import annotations

import functools
import time
from datetime import timedelta
from types import SimpleNamespace

from django.conf import settings
from django.core.cache.backends import base as cache_backends_base
from django.core.cache.backends import locmem
from django.core.cache.backends.locmem import LocMemCache
from django.test import override_settings
from django.utils import timezone

from nilva_session import cache

READ_METHODS = ("get", "get_many", "has_key")
WRITE_METHODS = (
    "add",
    "set",
    "set_many",
    "delete",
    "delete_many",
    "touch",
    "incr",
    "decr",
    "clear",
)


class CacheSpy:
    """Counts the calls made on the real cache object, without changing what they do.

    Only outermost calls count: ``BaseCache.get_many`` calling ``self.get`` per key is one call.
    """

    def __init__(self, backend, monkeypatch) -> None:
        self.calls: list[str] = []
        self._depth = 0
        for name in READ_METHODS + WRITE_METHODS:
            monkeypatch.setattr(backend, name, self._wrap(name, getattr(backend, name)))

    def _wrap(self, name, method):
        @functools.wraps(method)
        def spy(*args, **kwargs):
            if self._depth == 0:
                self.calls.append(name)
            self._depth += 1
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1

        return spy

    @property
    def writes(self) -> list[str]:
        return [name for name in self.calls if name in WRITE_METHODS]

    def reset(self) -> None:
        self.calls.clear()


def redis_client(backend=None):
    """The redis-py client behind a Redis cache backend (Django's or django-redis), else None."""
    backend = cache.get_cache() if backend is None else backend
    if isinstance(backend, LocMemCache):
        return None
    django_client = getattr(backend, "_cache", None)  # django.core.cache.backends.redis
    if hasattr(django_client, "get_client"):
        return django_client.get_client(write=True)
    django_redis_client = getattr(backend, "client", None)  # django_redis.cache.RedisCache
    if hasattr(django_redis_client, "get_client"):
        return django_redis_client.get_client(write=True)
    return None


def _age_redis_keys(client, seconds: float) -> None:
    """Let ``seconds`` pass for every key of the Redis DB: shorten each TTL, drop what expires.

    Redis expires keys by its own clock, which a fake clock cannot move; this does what that
    much real time would have done. Keys without a TTL are left alone, as Redis would.
    """
    elapsed_ms = round(seconds * 1000)
    for key in list(client.scan_iter(count=1000)):
        left_ms = client.pttl(key)
        if left_ms < 0:  # -1: no expiry; -2: already gone
            continue
        if left_ms <= elapsed_ms:
            client.delete(key)
        else:
            client.pexpire(key, left_ms - elapsed_ms)


class Clock:
    """A frozen clock for ``django.utils.timezone.now`` and for the cache's expiry.

    ``advance()`` moves both; ``advance(cache=False)`` moves only Django's clock, so cached
    entries stay where they are. LocMemCache reads the patched clock; on Redis, which expires
    keys by its own clock, ``advance()`` shortens the TTL of every key in the test DB by the
    same amount (and deletes the keys whose TTL runs out).
    """

    def __init__(self, monkeypatch) -> None:
        self.start = timezone.now()
        self.offset = timedelta(0)
        self.cache_offset = timedelta(0)
        start_ts = time.time()
        cache_time = SimpleNamespace(time=lambda: start_ts + self.cache_offset.total_seconds())
        monkeypatch.setattr(timezone, "now", lambda: self.start + self.offset)
        # BaseCache computes expiry times, LocMemCache compares them: both read this clock.
        monkeypatch.setattr(cache_backends_base, "time", cache_time)
        monkeypatch.setattr(locmem, "time", cache_time)

    def now(self):
        return self.start + self.offset

    def advance(self, *, cache: bool = True, **delta) -> None:
        self.offset += timedelta(**delta)
        if cache:
            self.cache_offset += timedelta(**delta)
            client = redis_client()
            if client is not None:
                _age_redis_keys(client, timedelta(**delta).total_seconds())


def nilva_settings(**options):
    """``override_settings`` of ``NILVA_SESSION`` keys, keeping the test settings' others."""
    return override_settings(NILVA_SESSION={**settings.NILVA_SESSION, **options})
