"""Export the security events kept in the database as JSON lines or CSV, for a SIEM."""

from __future__ import annotations

import csv
import json
import re
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from nilva_session.events import FIELDS, as_dict
from nilva_session.models import EventKind, SessionEvent

RELATIVE = re.compile(r"^(\d{1,6})([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def moment(value: str, now: datetime) -> datetime:
    """Return the time ``--since`` / ``--until`` name: ISO 8601, or ``30m`` / ``12h`` / ``7d``
    ago. A time without a zone is in ``TIME_ZONE``. Raises ``ValueError`` or ``OverflowError``
    (for a time the database cannot hold once in UTC)."""
    relative = RELATIVE.match(value.strip())
    if relative:
        amount, unit = relative.groups()
        return now - timedelta(**{UNITS[unit]: int(amount)})
    parsed = parse_datetime(value.strip())
    if parsed is None:
        raise ValueError(value)
    aware = parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)
    return aware.astimezone(dt_timezone.utc)


def csv_cell(value: Any) -> str:
    """Return a value as a CSV cell that a spreadsheet shows as text, never runs."""
    if value is None:
        return ""
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class Command(BaseCommand):
    help = (
        "Print the security events kept in the database (EVENT_HISTORY), oldest first, as JSON "
        "lines (one object per line) or CSV."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since", help="ISO 8601 time, or how long ago: 30m, 12h, 7d, 2w (default: 1d)."
        )
        parser.add_argument("--until", help="ISO 8601 time, or how long ago; default: now.")
        parser.add_argument(
            "--kind",
            action="append",
            choices=EventKind.values,
            help="Only this kind (repeat for several).",
        )
        parser.add_argument("--user", help="Only events of the user with this primary key.")
        parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
        parser.add_argument(
            "--after-id",
            type=int,
            default=None,
            help="Only events with a greater id (resume where the last export stopped).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        try:
            since = moment(options["since"] or "1d", now)
            until = moment(options["until"], now) if options["until"] else None
        except (ValueError, OverflowError):
            raise CommandError(
                "--since and --until take an ISO 8601 time or an age such as 30m, 12h, 7d."
            ) from None
        events = SessionEvent.objects.filter(created_at__gte=since).order_by("created_at", "id")
        if until is not None:
            events = events.filter(created_at__lt=until)
        if options["kind"]:
            events = events.filter(kind__in=options["kind"])
        if options["user"] is not None:
            events = events.filter(user_id=self._user_id(options["user"]))
        if options["after_id"] is not None:
            events = events.filter(pk__gt=options["after_id"])
        try:
            rows = events.iterator(chunk_size=2000)
            if options["format"] == "csv":
                self._csv(rows)
            else:
                for event in rows:
                    line = json.dumps(as_dict(event), ensure_ascii=False, default=str)
                    self.stdout.write(line)
        except (ValueError, TypeError, OverflowError):  # --user the user id column cannot hold
            raise CommandError("--user must be a user's primary key.") from None

    def _user_id(self, value: str) -> Any:
        """Return ``--user`` as a value of the user's primary key, or raise CommandError.

        Checked before the query: a filter on a value the field cannot hold raises as the
        queryset is built, and the CSV header would already be out when the query runs.
        """
        field = SessionEvent._meta.get_field("user").target_field
        try:
            return field.clean(value, None)
        except (ValidationError, ValueError, TypeError):
            raise CommandError("--user must be a user's primary key.") from None

    def _csv(self, rows: Any) -> None:
        writer = csv.writer(self.stdout, lineterminator="\n")
        # The csv module quotes only the line terminator's characters: a bare CR in a cell
        # (a user agent) would end the row for a reader, and start a cell it does not neutralise.
        quoted = csv.writer(self.stdout, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(FIELDS)
        for event in rows:
            record = as_dict(event)
            cells = [csv_cell(record[name]) for name in FIELDS]
            (quoted if any("\r" in cell for cell in cells) else writer).writerow(cells)
