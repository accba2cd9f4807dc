"""Settings for nilva-session, read at call time.

All options live in one dict, ``NILVA_SESSION``. The dict name of nilva-session 0.1.x,
``USER_SESSION``, is still read; a key set in ``NILVA_SESSION`` wins over the same key there.

``session_settings.NAME`` returns the effective value. The merged dict is rebuilt whenever
Django's ``setting_changed`` signal names one of the two dicts (``override_settings`` sends it),
so nothing is ever bound at import time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

SETTINGS_NAME = "NILVA_SESSION"
LEGACY_SETTINGS_NAME = "USER_SESSION"

DEFAULTS: dict[str, Any] = {
    # Characters of randomness in a token (base62, ~5.95 bits each): 43 gives 256 bits.
    "TOKEN_SIZE": 43,
    # Fixed text in front of every token so secret scanners can recognise a leaked one.
    "TOKEN_PREFIX": "nvs_",
    # Lifetime of a new session (timedelta), or None for sessions that never expire.
    "EXPIRE_AT": timedelta(days=1),
    # Cache key prefixes: entries looked up by token digest, and by session id.
    "SESSION_CACHE_PREFIX": "nilva_session:t:",
    "SESSION_ID_CACHE_PREFIX": "nilva_session:s:",
    # How long an active session stays cached (timedelta or seconds).
    "SESSION_CACHE_TTL": timedelta(minutes=15),
    # How long a revoke keeps the cache from being filled again (timedelta or seconds).
    "TOMBSTONE_TTL": timedelta(seconds=60),
    # The JWT claim that carries the session id.
    "SESSION_ID_CLAIM": "session_id",
    # Which entry of settings.CACHES holds sessions (use a shared one in production).
    "CACHE_ALIAS": "default",
    # Keyword of the Authorization header for opaque tokens.
    "AUTH_HEADER_PREFIX": "Token",
    # "family" (browser, OS or device family change suspends), "strict" (any change), "off".
    "USER_AGENT_CHECK": "family",
    # Minimum time between two writes of last_online for one session (timedelta or seconds).
    "LAST_ONLINE_UPDATE_INTERVAL": timedelta(seconds=60),
    # User agents are cut to this many characters before they are stored or compared.
    "MAX_USER_AGENT_LENGTH": 512,
    # DRF rate for login attempts, applied per client IP and per username.
    "LOGIN_THROTTLE_RATE": "5/min",
    # How long ended sessions are kept before the cleanup command deletes them.
    "REVOKED_RETENTION": timedelta(days=30),
    # Accept tokens issued by nilva-session 0.1.x (50-64 characters of a-z0-9, no checksum).
    "ACCEPT_LEGACY_TOKENS": True,
    # Refuse a session unused for longer than this (timedelta), or None.
    "IDLE_TIMEOUT": None,
    # Push expire_at forward by EXPIRE_AT on activity (at most once per update interval).
    "SLIDING_EXPIRY": False,
    # No session lives longer than this after its login (timedelta), or None. Required with
    # SLIDING_EXPIRY; without it, expire_at (never extended) is already the absolute limit.
    "ABSOLUTE_LIFETIME": None,
    # Most active sessions one user may have (None: no limit), and what a login past it does:
    # "end_least_recent" ends the least recently used session, "refuse" answers 4xx.
    "MAX_SESSIONS_PER_USER": None,
    "SESSION_LIMIT_POLICY": "end_least_recent",
    # Default max_age of the RecentlyAuthenticated permission.
    "REAUTHENTICATION_MAX_AGE": timedelta(minutes=15),
    # Read X-Forwarded-For only behind this many trusted proxies, or from these networks.
    "TRUSTED_PROXY_COUNT": 0,
    "TRUSTED_PROXIES": (),
    # DRF rate of refused tokens per client IP before further attempts get 429; None = off.
    "INVALID_TOKEN_THROTTLE_RATE": "60/min",
    # End every other session of a user whose password changes.
    "END_SESSIONS_ON_PASSWORD_CHANGE": True,
    # Suspend a session whose client IP changes (off by default: mobile clients roam).
    "BIND_IP": False,
    # The JWT authentication class whose rules (check_user_agent ...) token/refresh/ applies.
    "JWT_AUTHENTICATION_CLASS": "nilva_session.backends.UserSessionDBJwtAuthentication",
}

SESSION_LIMIT_POLICIES = ("end_least_recent", "refuse")

USER_AGENT_CHECK_MODES = ("family", "strict", "off")

# Settings that may be given in seconds as well as a timedelta.
DURATION_SETTINGS = (
    "REAUTHENTICATION_MAX_AGE",
    "SESSION_CACHE_TTL",
    "TOMBSTONE_TTL",
    "LAST_ONLINE_UPDATE_INTERVAL",
    "REVOKED_RETENTION",
)

# Durations that may also be None (off).
OPTIONAL_DURATION_SETTINGS = ("IDLE_TIMEOUT", "ABSOLUTE_LIFETIME")


def _as_timedelta(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


class SessionSettings:
    """Attribute access to the effective settings; unknown names raise ``AttributeError``."""

    def __init__(self) -> None:
        self._merged: dict[str, Any] | None = None

    def user_values(self) -> dict[str, Any]:
        """Return the keys the project set, legacy dict first, ``NILVA_SESSION`` on top."""
        values: dict[str, Any] = {}
        for name in (LEGACY_SETTINGS_NAME, SETTINGS_NAME):
            given = getattr(settings, name, None) or {}
            if isinstance(given, dict):
                values.update(given)
        return values

    def _load(self) -> dict[str, Any]:
        merged = dict(DEFAULTS)
        merged.update({k: v for k, v in self.user_values().items() if k in DEFAULTS})
        for name in (*DURATION_SETTINGS, *OPTIONAL_DURATION_SETTINGS):
            merged[name] = _as_timedelta(merged[name])
        return merged

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown nilva-session setting: {name!r}")
        merged = self._merged
        if merged is None:
            merged = self._merged = self._load()
        value = merged[name]
        if self._merged is merged:  # not reloaded meanwhile
            # Read per request: later reads find it on the instance (``reload`` forgets it).
            self.__dict__[name] = value
        return value

    def reload(self) -> None:
        self._merged = None
        for name in DEFAULTS:
            self.__dict__.pop(name, None)

    def seconds(self, name: str) -> int:
        """Return a duration setting as whole seconds (at least 1), for cache timeouts."""
        return max(1, int(getattr(self, name).total_seconds()))


session_settings = SessionSettings()


@receiver(setting_changed)
def _reload_settings(*, setting: str, **kwargs: Any) -> None:
    if setting in (SETTINGS_NAME, LEGACY_SETTINGS_NAME, "CACHES"):
        session_settings.reload()
