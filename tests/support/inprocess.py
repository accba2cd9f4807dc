"""In-process tests on PostgreSQL + Redis: the session cache on a Redis database of our own.

The suite's ``REDIS_URL`` database (15) is shared with other test runs on the machine, whose
fixtures flush it between tests; these tests count writes and race threads, so they use
``NILVA_TEST_PRIVATE_REDIS_DB`` (default 14) with a key prefix unique to each test.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.test import override_settings

from nilva_session import cache

from .services import cache_settings, private_redis_url, require_redis

WRITE_METHODS = ("add", "set", "set_many", "delete", "delete_many", "incr", "decr", "touch")


@contextlib.contextmanager
def private_redis_cache(monkeypatch: Any) -> Iterator[Any]:
    """Point the session cache at our Redis database; yield the cache of this thread.

    Use it in a fixture of the test module (``with private_redis_cache(monkeypatch) as c``).
    """
    url = private_redis_url()
    require_redis(url)
    monkeypatch.setattr(cache, "errors", cache._ErrorLog())
    prefix = f"nilva-test-{uuid.uuid4().hex[:12]}"
    with override_settings(
        CACHES=cache_settings(url, key_prefix=prefix, timeout=2.0),
        NILVA_SESSION={**settings.NILVA_SESSION, "INVALID_TOKEN_THROTTLE_RATE": None},
    ):
        backend = cache.get_cache()
        assert backend.get("nothing") is None  # it answers (a failure here fails the test)
        try:
            yield backend
        finally:
            _delete_prefixed(url, prefix)


def _delete_prefixed(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class WriteCounter:
    """Counts the write calls made on one real cache object (and still makes them)."""

    def __init__(self, backend: Any, monkeypatch: Any) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        for name in WRITE_METHODS:
            monkeypatch.setattr(backend, name, self._wrap(name, getattr(backend, name)))

    def _wrap(self, name: str, method: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            first = args[0] if args else None
            keys = tuple(first) if isinstance(first, (dict, list, tuple)) else (str(first),)
            self.calls.append((name, keys))
            return method(*args, **kwargs)

        return counted

    def reset(self) -> None:
        self.calls.clear()
