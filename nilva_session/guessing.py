"""Throttling of token guessing: refused tokens are counted per client IP.

A fixed-window counter in the session cache, read in the same round trip as the session entry
(so a valid, cached session costs nothing extra). Once a client IP has sent
``INVALID_TOKEN_THROTTLE_RATE`` unknown tokens in the window, its further unknown tokens get 429
before the database is asked. A live cached session from the same IP still authenticates.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import lru_cache
from typing import Any

from rest_framework.throttling import SimpleRateThrottle

from . import cache
from .conf import session_settings
from .exceptions import TooManyInvalidTokens
from .store import get_store

logger = logging.getLogger("nilva_session.security")


#: Raised when a client IP sent too many unknown tokens; ``wait`` is the seconds until the
#: window ends (answered as 429 with ``Retry-After``).
GuessingThrottled = TooManyInvalidTokens


def _rate() -> tuple[int, int] | None:
    rate = session_settings.INVALID_TOKEN_THROTTLE_RATE
    return None if rate is None else _parse_rate(rate)


@lru_cache(maxsize=8)
def _parse_rate(rate: str) -> tuple[int, int] | None:
    # parse_rate reads nothing from self; a throttle instance would need a scope and a rate.
    num, period = SimpleRateThrottle.parse_rate(None, rate)  # type: ignore[arg-type]
    return (num, period) if num and period else None


def counter_key(ip: str | None, now: datetime) -> str | None:
    """Return the counter key of this client and window, or None when throttling is off."""
    rate = _rate()
    if rate is None:
        return None
    window = int(now.timestamp()) // rate[1]
    return f"{session_settings.SESSION_CACHE_PREFIX}invalid:{ip or 'unknown'}:{window}"


def check(failures: Any, now: datetime) -> None:
    """Raise :class:`GuessingThrottled` when the counter read is at the limit."""
    rate = _rate()
    if rate is None or not isinstance(failures, int) or failures < rate[0]:
        return
    wait = rate[1] - (now.timestamp() % rate[1])
    logger.warning("authentication throttled: too many invalid tokens")
    raise GuessingThrottled(wait)


def count(key: str | None, now: datetime) -> None:
    """Count one unknown token against ``key`` (no-op when throttling is off)."""
    rate = _rate()
    if key is None or rate is None:
        return
    cache.safely("count", 0, get_store().count, key, rate[1] + 1)
