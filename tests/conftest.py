"""Shared fixtures: users, clients, and sessions opened through the real login paths."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import caches
from rest_framework.test import APIClient

from nilva_session import sessions
from nilva_session.conf import session_settings
from nilva_session.store import get_store

PASSWORD = "correct horse battery staple"
DESKTOP_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
DESKTOP_UA_NEXT = DESKTOP_UA.replace("Chrome/120.0.0.0", "Chrome/121.0.0.0")
IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
FIREFOX_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"


@pytest.fixture(autouse=True)
def _clear_caches():
    for alias in caches:
        caches[alias].clear()
    if session_settings.REDIS is not None:  # the native store (NILVA_TEST_STORE=native)
        get_store().clear()
    yield
    for alias in caches:
        caches[alias].clear()
    if session_settings.REDIS is not None:
        get_store().clear()


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("alice", "alice@example.com", PASSWORD)


@pytest.fixture
def other_user(db):
    return get_user_model().objects.create_user("bob", "bob@example.com", PASSWORD)


@pytest.fixture
def api_client():
    """A client that sends a desktop browser's User-Agent and a fixed REMOTE_ADDR."""
    return APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")


class FakeRequest:
    """The two META keys sessions read; enough to open a session outside a view."""

    def __init__(self, user_agent: str = DESKTOP_UA, ip: str = "203.0.113.7") -> None:
        self.META = {"HTTP_USER_AGENT": user_agent, "REMOTE_ADDR": ip}


@pytest.fixture
def open_session():
    """Open a session as a login would.

    ``open_session(user, ua=..., ip=...) -> (session, token)``.
    """

    def _open(user, ua: str = DESKTOP_UA, ip: str = "203.0.113.7", **kwargs):
        return sessions.open_session(user, FakeRequest(ua, ip), **kwargs)

    return _open


@pytest.fixture
def token_client(user, open_session):
    """``(client, session, token)``: a client already carrying a fresh session's token."""
    session, token = open_session(user)
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client, session, token


@pytest.fixture
def clock(monkeypatch):
    """A frozen clock for nilva-session and the cache (``clock.advance(minutes=1)``)."""
    from .support.doubles import Clock

    return Clock(monkeypatch)


@pytest.fixture
def cache_spy(monkeypatch):
    """Counts the calls made on the real session cache (``cache_spy.calls``)."""
    from nilva_session import cache

    from .support.doubles import CacheSpy

    return CacheSpy(cache.get_cache(), monkeypatch)


@pytest.fixture
def capture_signal():
    """``capture_signal(signal) -> list``: the kwargs of each send while the test runs."""
    connected = []

    def _capture(signal):
        received = []

        def receiver(**kwargs):
            received.append(kwargs)

        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
        return received

    yield _capture
    for signal, receiver in connected:
        signal.disconnect(receiver)


@pytest.fixture
def signing_clock(monkeypatch):
    """Moves the clock ``django.core.signing`` reads (``time.time``), and only that one:
    ``signing_clock(days=8)``."""
    from datetime import timedelta
    from types import SimpleNamespace

    from django.core import signing

    real_time = signing.time.time
    state = SimpleNamespace(offset=0.0)
    monkeypatch.setattr(signing, "time", SimpleNamespace(time=lambda: real_time() + state.offset))

    def advance(**delta):
        state.offset += timedelta(**delta).total_seconds()

    return advance


class HopCounter:
    """Counts the worker-thread hops of ``nilva_session.aio`` (its ``sync_to_async`` calls)
    and makes them."""

    def __init__(self) -> None:
        self.hops = 0

    def __call__(self, func, *args, **kwargs):
        from asgiref.sync import sync_to_async

        self.hops += 1
        return sync_to_async(func, *args, **kwargs)


@pytest.fixture
def hops(monkeypatch):
    """``hops.hops``: how many times the async entry points handed a request to a thread."""
    from nilva_session import aio

    counter = HopCounter()
    monkeypatch.setattr(aio, "sync_to_async", counter)
    return counter
