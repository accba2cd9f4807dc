"""Login throttles: one budget per client IP, one per username (``LOGIN_THROTTLE_RATE``).

Both are DRF throttles, so a refused attempt gets 429 with ``Retry-After``. They read the rate
and the cache at call time. If the cache fails they let the request through (and the failure
is logged): an outage of Redis must not lock every user out.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.core.cache import BaseCache
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from . import cache, clients
from .conf import session_settings
from .utils import hash_data

security_logger = logging.getLogger("nilva_session.security")


class LoginThrottle(SimpleRateThrottle):
    """Base class: ``LOGIN_THROTTLE_RATE`` on the session cache; ``None`` disables it."""

    scope = "nilva_session_login"

    @property
    def cache(self) -> BaseCache:  # type: ignore[override]  # DRF's is a class attribute
        return cache.get_cache()

    def get_rate(self) -> str | None:
        rate: str | None = session_settings.LOGIN_THROTTLE_RATE
        return rate

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            allowed = super().allow_request(request, view)
        except APIException:  # e.g. a body that does not parse: the client's error, not the cache's
            raise
        except Exception as error:  # the cache is down: fail open, the DB path still works
            cache.errors.report("throttle", error)
            return True
        if not allowed:
            security_logger.warning(
                "login throttled: %s, ip=%s", type(self).__name__, clients.client_ip(request)
            )
        return allowed


class LoginIPThrottle(LoginThrottle):
    """Counts login attempts per client IP address."""

    def get_cache_key(self, request: Request, view: APIView) -> str:
        ip = clients.client_ip(request) or "unknown"
        return self.cache_format % {"scope": self.scope + "_ip", "ident": ip}


class LoginUsernameThrottle(LoginThrottle):
    """Counts login attempts per username (hashed: any length or alphabet makes a safe key)."""

    #: The field holding the username; None means ``"username"`` (our login) or, failing
    #: that, the user model's ``USERNAME_FIELD`` (what simplejwt's obtain view posts).
    username_field: str | None = None

    def get_username(self, data: Any) -> Any:
        """Return the username posted in ``data`` (may be anything; checked by the caller)."""
        if not hasattr(data, "get"):
            return None
        if self.username_field is not None:
            return data.get(self.username_field)
        return data.get("username") or data.get(get_user_model().USERNAME_FIELD)

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        username = self.get_username(request.data)
        if not isinstance(username, str) or not username:
            return None
        ident = hash_data(username.casefold())
        return self.cache_format % {"scope": self.scope + "_user", "ident": ident}


class ReauthenticationUserThrottle(LoginThrottle):
    """Counts password confirmations per signed-in user."""

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope + "_reauth", "ident": request.user.pk}
