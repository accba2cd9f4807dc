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
"""

from django.dispatch import Signal

session_created = Signal()
session_revoked = Signal()
session_suspended = Signal()
