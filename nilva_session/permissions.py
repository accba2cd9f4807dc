"""DRF permissions built on sessions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from .conf import session_settings
from .exceptions import ReauthenticationRequired
from .sessions import current_session


class RecentlyAuthenticated(BasePermission):
    """Allow only sessions that proved the password within ``max_age`` (ASVS 7.5.1, 7.5.3).

    Use as ``permission_classes = [IsAuthenticated, RecentlyAuthenticated]`` or with your own
    age: ``RecentlyAuthenticated.with_max_age(timedelta(minutes=5))``. Otherwise 403 with
    ``{"detail": ..., "code": "reauthentication_required"}``; the client re-confirms with
    ``POST reauthenticate/`` and retries.
    """

    #: None means the ``REAUTHENTICATION_MAX_AGE`` setting, read per request.
    max_age: timedelta | None = None

    @classmethod
    def with_max_age(cls, max_age: timedelta) -> type[RecentlyAuthenticated]:
        """Return a subclass with its own ``max_age``."""
        return type(
            f"RecentlyAuthenticatedWithin{int(max_age.total_seconds())}s",
            (cls,),
            {"max_age": max_age},
        )

    def get_max_age(self) -> timedelta:
        default: timedelta = session_settings.REAUTHENTICATION_MAX_AGE
        return default if self.max_age is None else self.max_age

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False  # DRF answers 401 as for IsAuthenticated, not "confirm your password"
        session = current_session(request)
        proved = session.authenticated_at if session is not None else None
        if proved is None or timezone.now() - proved > self.get_max_age():
            raise ReauthenticationRequired()
        return True
