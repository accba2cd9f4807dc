"""Login throttles: one budget per client IP, one per username (``LOGIN_THROTTLE_RATE``).

Each budget is an atomic counter in the session cache: a fixed window (the rate's period,
aligned to the clock) per key, opened with ``add`` and counted with ``incr``, which Redis
applies atomically. So a budget of N lets exactly N attempts through in a window, however many
requests arrive at once on however many workers; a refused one gets 429 with ``Retry-After``
(the seconds left in the window). The rate and the cache are read at call time. If the cache
fails, the throttles let the request through (and the failure is logged): an outage of Redis
must not lock every user out. A body that does not parse is the client's error and is raised.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle
from rest_framework.views import APIView

from . import cache, clients
from .conf import session_settings
from .store import get_store
from .utils import hash_data

security_logger = logging.getLogger("nilva_session.security")


class LoginThrottle(BaseThrottle):
    """Base class: ``LOGIN_THROTTLE_RATE`` on the session cache; ``None`` disables it.

    Subclasses say what is counted: :meth:`identify` returns the identity of one budget, and
    ``budget`` names the kind (``login/`` and ``token/`` share each kind's budgets).
    """

    scope = "nilva_session_login"
    budget = ""
    timer = staticmethod(time.time)

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def get_rate(self) -> str | None:
        """Return the DRF rate (``"5/min"``) of this throttle, or None for no limit."""
        rate: str | None = session_settings.LOGIN_THROTTLE_RATE
        return rate

    def identify(self, request: Request, view: APIView | None) -> str | None:
        """Return what this throttle counts for ``request`` to ``view`` (no limit when None)."""
        raise NotImplementedError

    def get_cache_key(self, request: Request, view: APIView | None) -> str | None:
        """Return the cache key of the budget ``request`` spends, or None when it spends none."""
        ident = self.identify(request, view)
        if ident is None:
            return None
        return f"throttle_{self.scope}_{self.budget}_{ident}"

    def allow_request(self, request: Request, view: APIView) -> bool:
        rate = self.get_rate()
        num_requests, duration = SimpleRateThrottle.parse_rate(self, rate)  # type: ignore[arg-type]
        if not num_requests or not duration:
            return True
        key = self.get_cache_key(request, view)  # reads the body: a ParseError is raised here
        if key is None:
            return True
        now = self.timer()
        window = int(now // duration)
        try:
            spent = _count(f"{key}:{window}", duration)
        except Exception as error:  # the cache is down: fail open, the DB path still works
            cache.errors.report("throttle", error)
            return True
        if spent <= num_requests:
            return True
        self.retry_after = max(1.0, (window + 1) * duration - now)
        security_logger.warning(
            "login throttled: %s, ip=%s", type(self).__name__, clients.client_ip(request)
        )
        return False

    def wait(self) -> float | None:
        """Return the seconds until the window of a refused request ends."""
        return self.retry_after


def _count(key: str, duration: int) -> int:
    """Count one attempt against ``key``; return the attempts counted in its window so far."""
    return get_store().count(key, duration + 1)


class LoginIPThrottle(LoginThrottle):
    """Counts login attempts per client IP address."""

    budget = "ip"

    def identify(self, request: Request, view: APIView | None) -> str | None:
        return clients.client_ip(request) or "unknown"


def normalize_username(value: Any) -> str | None:
    """Return the one spelling a login budget is kept under, or None for no username.

    The budget must not depend on how the username is written: a JSON number is the text
    DRF's ``CharField`` makes of it, surrounding whitespace is dropped (simplejwt's serializer
    trims it), then the user model's Unicode normalisation (NFKC) and case-folding apply.
    Merging spellings can only share a budget, never give a fresh one.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None  # refused by the serializer before any password check
    text = AbstractBaseUser.normalize_username(str(value).strip())
    return text.casefold() or None


class LoginUsernameThrottle(LoginThrottle):
    """Counts login attempts per username (hashed: any length or alphabet makes a safe key)."""

    #: The field holding the username. None: the ``username_field`` of the view's serializer
    #: (simplejwt's obtain serializer: the user model's ``USERNAME_FIELD``), or for a view
    #: without one ``"username"`` (our login) or, failing that, ``USERNAME_FIELD``.
    username_field: str | None = None
    budget = "user"

    def checked_field(self, view: APIView | None) -> str | None:
        """Return the field the view's serializer checks the password of, or None if unknown.

        The budget must be the one of the username that is checked: a view whose serializer
        reads ``email`` ignores a posted ``username``, which must then not pick the budget.
        """
        if self.username_field is not None:
            return self.username_field
        field = getattr(getattr(view, "serializer_class", None), "username_field", None)
        return field if isinstance(field, str) else None

    def get_username(self, data: Any, view: APIView | None = None) -> Any:
        """Return the username posted in ``data`` (may be anything; checked by the caller)."""
        if not hasattr(data, "get"):
            return None
        field = self.checked_field(view)
        if field is not None:
            return data.get(field)
        username = data.get("username")
        if username is None or username == "":
            username = data.get(get_user_model().USERNAME_FIELD)
        return username

    def identify(self, request: Request, view: APIView | None) -> str | None:
        username = normalize_username(self.get_username(request.data, view))
        return None if username is None else hash_data(username)


class ReauthenticationUserThrottle(LoginThrottle):
    """Counts password confirmations per signed-in user."""

    budget = "reauth"

    def identify(self, request: Request, view: APIView | None) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return str(request.user.pk)
