"""Delete expired sessions and ended ones older than the retention period, in batches; and
security events older than ``EVENT_RETENTION`` and devices unused for ``NEW_DEVICE_MEMORY``."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q
from django.utils import timezone

from nilva_session import sessions
from nilva_session.conf import session_settings
from nilva_session.models import KnownDevice, SessionEvent, UserSession, UserSessionQuerySet


def stale_sessions(now: Any, retention: timedelta) -> UserSessionQuerySet:
    """Return the sessions to delete: active ones that can no longer authenticate (expired,
    past ``ABSOLUTE_LIFETIME``, idle: ``sessions.lapsed_q``), and those ended before
    ``now - retention`` (an ended session is kept that long, whatever its expiry)."""
    cutoff = now - retention
    ended_long_ago = Q(is_active=False) & (
        Q(ended_at__lt=cutoff) | Q(ended_at__isnull=True, last_online__lt=cutoff)
    )
    return UserSession.objects.filter((Q(is_active=True) & sessions.lapsed_q(now)) | ended_long_ago)


class Command(BaseCommand):
    help = (
        "Delete expired sessions, and ended sessions older than the retention period "
        "(NILVA_SESSION['REVOKED_RETENTION'] unless --retention-days is given), in batches; "
        "security events older than EVENT_RETENTION; devices unused for NEW_DEVICE_MEMORY."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--retention-days", type=float, default=None)
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        days = options["retention_days"]
        if days is not None and days < 0:
            raise CommandError("--retention-days must not be negative.")
        try:  # NaN, infinity or a span past year 1 cannot make a cutoff date
            retention = (
                timedelta(days=days) if days is not None else session_settings.REVOKED_RETENTION
            )
            stale = stale_sessions(timezone.now(), retention)
        except (ValueError, OverflowError):
            raise CommandError("--retention-days is out of range.") from None
        if options["dry_run"]:
            self.stdout.write(f"Would delete {stale.count()} sessions (dry run).")
            return
        total, batches, longest = 0, 0, 0.0
        while True:
            ids = list(stale.values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            started = time.perf_counter()
            deleted, _ = UserSession.objects.filter(pk__in=ids).delete()
            longest = max(longest, time.perf_counter() - started)
            total, batches = total + deleted, batches + 1
        self.stdout.write(
            f"Deleted {total} sessions in {batches} batches "
            f"(longest batch {longest * 1000:.1f} ms)."
        )
        old_events = SessionEvent.objects.filter(
            created_at__lt=timezone.now() - session_settings.EVENT_RETENTION
        )
        removed = 0
        while True:
            event_ids = list(old_events.values_list("pk", flat=True)[:batch_size])
            if not event_ids:
                break
            removed += SessionEvent.objects.filter(pk__in=event_ids).delete()[0]
        self.stdout.write(f"Deleted {removed} security events older than EVENT_RETENTION.")
        forgotten = KnownDevice.objects.filter(
            last_seen__lt=timezone.now() - session_settings.NEW_DEVICE_MEMORY
        ).delete()[0]
        self.stdout.write(f"Forgot {forgotten} devices unused for NEW_DEVICE_MEMORY.")
