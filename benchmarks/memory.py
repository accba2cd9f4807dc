"""``python -m benchmarks.memory``: what the native store's copies cost in a worker process.

Fills ``LocalCopies`` with 10,000 distinct session entries (Django's default user, a desktop
Chrome user agent) as the store does (unpickled from what Redis holds) and measures the Python
heap with ``tracemalloc``; then the prototypes ``codec.unpack`` keeps (at most
``codec.PROTOTYPES_MAX``). Prints bytes per session and per 10,000 sessions.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
import tracemalloc
import uuid

N = 10_000


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    os.environ.setdefault("BENCH_SQLITE_PATH", os.path.join(tempfile.mkdtemp(), "db.sqlite3"))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from benchmarks.harness import CLIENT_IP, DESKTOP_UA
    from nilva_session import cache, codec, sessions
    from nilva_session.tracking import COPY_OVERHEAD, Copy, LocalCopies

    call_command("migrate", verbosity=0)

    class Client:
        META = {"HTTP_USER_AGENT": DESKTOP_UA, "REMOTE_ADDR": CLIENT_IP}

    user = get_user_model().objects.create_user("memory", password="memory-password")  # noqa: S106
    user.last_login = timezone.now()
    session, _token = sessions.open_session(user, Client())
    raws = []
    for _ in range(N):
        session.id, session.last_online = uuid.uuid4(), timezone.now()
        raws.append(pickle.dumps(codec.pack(session, user, with_key=False), 5))
    copies = LocalCopies(N, 10**10)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, raw in enumerate(raws):
        key = cache.token_key(f"{i:064x}")
        size = len(raw) + len(key) + COPY_OVERHEAD
        copies.put(key, Copy(pickle.loads(raw), CLIENT_IP, time.monotonic() + 900, size, None))  # noqa: S301
    per_copy = (tracemalloc.get_traced_memory()[0] - before) / N
    before = tracemalloc.get_traced_memory()[0]
    kept = list(copies.copies.items())[: codec.PROTOTYPES_MAX]
    for key, copy in kept:
        codec.unpack(copy.entry, key[-64:])
    per_prototype = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    print(f"entry pickled: {len(raws[0])} bytes")
    print(
        f"copies: {per_copy:,.0f} bytes per session measured, {copies.bytes / N:,.0f} counted "
        f"against LOCAL_CACHE_MAX_BYTES; 10,000 sessions: {per_copy * N / 2**20:.1f} MiB"
    )
    print(
        f"prototypes: {per_prototype:,.0f} bytes per session; at most "
        f"{codec.PROTOTYPES_MAX:,}: {per_prototype * codec.PROTOTYPES_MAX / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
