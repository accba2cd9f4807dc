"""Write amplification on PostgreSQL + Redis: a busy session costs no writes.

1,000 authenticated requests on one session within ``LAST_ONLINE_UPDATE_INTERVAL`` make at most
one UPDATE (none when the login itself was the last activity), and no cache write after the
first request's fill. SQL is counted with ``CaptureQueriesContext``; cache writes with a counter
around the real Redis cache's ``add``/``set``/``set_many``/``delete``… (the calls still happen).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from nilva_session import cache
from nilva_session.jwt import access_token_for_session, refresh_token_for_session
from nilva_session.models import UserSession
from tests.support.services import DJANGO_CACHE_ONLY

from .conftest import DESKTOP_UA
from .support.inprocess import WriteCounter, private_redis_cache
from .support.services import SERVICES

pytestmark = [*SERVICES, pytest.mark.django_db]


@pytest.fixture
def redis_cache(monkeypatch):
    """The session cache on our own Redis database (see tests/support/inprocess.py)."""
    with private_redis_cache(monkeypatch) as backend:
        yield backend


REQUESTS = 1000
IP = "203.0.113.7"


def credential(kind: str, session: UserSession, token: str, user) -> str:
    if kind == "token":
        return f"Token {token}"
    refresh = refresh_token_for_session(session, user)
    return f"Bearer {access_token_for_session(refresh, session)}"


def statements(queries, verb: str) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(verb)]


@DJANGO_CACHE_ONLY
@pytest.mark.parametrize("kind", ["token", "jwt"])
@pytest.mark.parametrize("last_activity", ["at_login", "before_the_interval"])
def test_a_thousand_requests_make_at_most_one_update_and_no_cache_write(
    redis_cache, user, open_session, monkeypatch, kind, last_activity
):
    session, token = open_session(user, ip=IP)
    if last_activity == "before_the_interval":
        UserSession.objects.filter(pk=session.pk).update(
            last_online=timezone.now() - timedelta(minutes=5)
        )
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR=IP)
    client.credentials(HTTP_AUTHORIZATION=credential(kind, session, token, user))
    writes = WriteCounter(redis_cache, monkeypatch)

    with CaptureQueriesContext(connection) as first_queries:
        first = client.get("/api/whoami/")
    assert first.status_code == 200
    first_writes = list(writes.calls)
    writes.reset()
    statuses = set()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(REQUESTS - 1):
            response = client.get("/api/whoami/")
            statuses.add(response.status_code)
    assert statuses == {200}

    all_queries = [*first_queries.captured_queries, *queries.captured_queries]
    updates = statements(all_queries, "UPDATE")
    print(
        f"\n{kind}/{last_activity}: {REQUESTS} requests -> {len(all_queries)} SQL "
        f"({len(updates)} UPDATE), cache writes: first request {[w[0] for w in first_writes]}, "
        f"then {len(writes.calls)}"
    )
    expected_updates = 0 if last_activity == "at_login" else 1
    assert len(updates) == expected_updates, updates
    assert all('"user_session"' in sql and '"is_active"' in sql for sql in updates)
    # The first request fills the entry (and marks the activity it wrote); nothing after it.
    entry_key = cache.session_key(session.pk) if kind == "jwt" else cache.token_key(session.key)
    assert ("add", (f"{entry_key}",)) in first_writes
    assert {name for name, _keys in first_writes} == {"add"}
    assert len(first_writes) == 1 + expected_updates
    assert writes.calls == []
    # ... and the 999 warm requests made no SQL at all.
    assert queries.captured_queries == []
    assert len(first_queries.captured_queries) == 1 + expected_updates
