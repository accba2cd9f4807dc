"""Security events: one record per sign-in, failed sign-in, new device, rotation, reuse and end.

Every event is sent as the ``security_event`` signal and written as one record on the
``nilva_session.events`` logger (its message is the event as JSON); with ``EVENT_HISTORY`` it is
also a :class:`~nilva_session.models.SessionEvent` row, which ``manage.py nilva_session_events``
exports. The schema (:data:`FIELDS`, version :data:`SCHEMA_VERSION`) only ever gains fields.
No event holds a token, a digest or a password.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

from django.utils import timezone

from .conf import session_settings
from .models import EventKind, SessionEvent
from .signals import security_event

logger = logging.getLogger("nilva_session.events")

SCHEMA_VERSION = 1

#: The fields of an exported event, in order (the CSV columns).
FIELDS = ("id", "time", "kind", "user_id", "session_id", "ip", "user_agent", "reason", "data")

#: How much of a client-supplied text (a user agent, a username) an event keeps.
MAX_TEXT = 512

EVENT_BATCH_SIZE = 1000


def new(
    kind: EventKind | str,
    *,
    user_id: Any = None,
    session_id: Any = None,
    ip: str | None = None,
    user_agent: str = "",
    reason: str = "",
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> SessionEvent:
    """Return an unsaved event (give it to :func:`emit`)."""
    return SessionEvent(
        kind=str(kind),
        created_at=at or timezone.now(),
        user_id=user_id,
        session_id=session_id,
        ip=ip,
        user_agent=(user_agent or "")[:MAX_TEXT],
        reason=reason,
        data=data or {},
    )


def emit(events: Iterable[SessionEvent]) -> list[SessionEvent]:
    """Save (with ``EVENT_HISTORY``), signal and log events; return them.

    One INSERT per :data:`EVENT_BATCH_SIZE` events, none without history.
    """
    batch = list(events)
    if not batch:
        return batch
    if session_settings.EVENT_HISTORY:
        SessionEvent.objects.bulk_create(batch, batch_size=EVENT_BATCH_SIZE)
    for event in batch:
        security_event.send(sender=SessionEvent, event=event)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                json.dumps(as_dict(event), ensure_ascii=False, default=str), extra={"event": event}
            )
    return batch


def record(kind: EventKind | str, **fields: Any) -> SessionEvent:
    """Emit one event (see :func:`new` for the fields); return it."""
    return emit([new(kind, **fields)])[0]


def _utc_time(at: datetime) -> str:
    """Return ``at`` in UTC as ISO 8601 ending in ``Z`` (a naive time is in ``TIME_ZONE``)."""
    if timezone.is_naive(at):
        at = timezone.make_aware(at)
    return at.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z")


def as_dict(event: SessionEvent) -> dict[str, Any]:
    """Return the exported form of an event: the :data:`FIELDS`, JSON-ready, plus ``v``."""
    return {
        "v": SCHEMA_VERSION,
        "id": event.pk,
        "time": _utc_time(event.created_at),
        "kind": event.kind,
        "user_id": event.user_id,
        "session_id": str(event.session_id) if event.session_id else None,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "reason": event.reason,
        "data": event.data,
    }
