"""Signals sent by nilva-session.

``session_created``
    ``sender=UserSession``, ``session`` (the new row), ``request`` (or None).
``session_revoked``
    ``sender=UserSession``, ``session_ids`` (list of UUIDs that were active and are now ended),
    ``user_ids`` (their users' primary keys, same order), ``reason`` (an ``EndReason`` value).
``session_suspended``
    ``sender=UserSession``, ``session`` (the suspended row, already ended), ``reason``,
    ``request``. Sent when a rule such as the user-agent check ends a session during
    authentication; ``session_revoked`` is sent for it as well.
``refresh_token_reused``
    ``sender=UserSession``, ``session`` (already ended, reason ``refresh_reused``),
    ``request``: a retired refresh token was presented again (see "Refresh-token rotation").
``session_rotated``
    ``sender=UserSession``, ``session``, ``request``: the session's opaque token was replaced.
``new_device_login``
    ``sender=UserSession``, ``session`` (the new row), ``request``, ``event`` (the
    ``SessionEvent``): a sign-in from a device this user had not used (``NEW_DEVICE_RULE``).
``security_event``
    ``sender=SessionEvent``, ``event`` (a ``SessionEvent``, saved when ``EVENT_HISTORY`` is on):
    every security event, as ``manage.py nilva_session_events`` exports it.
"""

from django.dispatch import Signal

session_created = Signal()
session_revoked = Signal()
session_suspended = Signal()
refresh_token_reused = Signal()
session_rotated = Signal()
new_device_login = Signal()
security_event = Signal()
