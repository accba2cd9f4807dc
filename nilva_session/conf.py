"""Settings for nilva-session, read at call time.

All options live in one dict, ``NILVA_SESSION``. The dict name of nilva-session 0.1.x,
``USER_SESSION``, is still read; a key set in ``NILVA_SESSION`` wins over the same key there.

Each setting is declared once, in ``SETTINGS``: its default, the values it takes (a validator,
and the system check id reported when the validator refuses a value) and its meaning (the
README's settings table, which a test compares with :func:`settings_reference`). ``DEFAULTS``
and the lists of duration and legacy keys are derived from it.

``session_settings.NAME`` returns the effective value. The merged dict is rebuilt whenever
Django's ``setting_changed`` signal names one of the two dicts (``override_settings`` sends it),
so nothing is ever bound at import time.
"""

from __future__ import annotations

import ipaddress
import math
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

SETTINGS_NAME = "NILVA_SESSION"
LEGACY_SETTINGS_NAME = "USER_SESSION"

MIN_TOKEN_BITS = 128
MAX_PREFIX_LENGTH = 16
PREFIX_ALPHABET = frozenset(string.ascii_letters + string.digits + "_-")
SESSION_LIMIT_POLICIES = ("end_least_recent", "refuse")
USER_AGENT_CHECK_MODES = ("family", "strict", "off")
NEW_DEVICE_RULES = ("user_agent", "user_agent_and_network")

# --- validators: each says whether its setting accepts an effective value ------------------------


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_duration(value: Any) -> bool:
    """A positive timedelta, or a positive number of seconds (``_load`` converts those)."""
    value = _as_timedelta(value)
    return isinstance(value, timedelta) and value > timedelta(0)


def non_negative_duration(value: Any) -> bool:
    """A timedelta or a number of seconds, zero or more (``_load`` converts the seconds)."""
    value = _as_timedelta(value)
    return isinstance(value, timedelta) and value >= timedelta(0)


def optional_positive_duration(value: Any) -> bool:
    return value is None or positive_duration(value)


def positive_timedelta_or_none(value: Any) -> bool:
    """``EXPIRE_AT``: a timedelta (seconds are not converted for it), or None."""
    return value is None or (isinstance(value, timedelta) and value > timedelta(0))


def token_size(value: Any) -> bool:
    from .utils import MAX_BODY_LENGTH

    return _whole(value) and value * math.log2(62) >= MIN_TOKEN_BITS and value <= MAX_BODY_LENGTH


def prefix_chars(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= MAX_PREFIX_LENGTH
        and PREFIX_ALPHABET.issuperset(value)
    )


def non_blank_string(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and " " not in value


def rate_or_none(value: Any) -> bool:
    from rest_framework.throttling import SimpleRateThrottle

    if value is None:
        return True
    try:  # parse_rate reads nothing from self (see guessing._parse_rate)
        num, period = SimpleRateThrottle.parse_rate(None, value)  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return False
    return num is not None and num >= 1 and bool(period)


def positive_int(value: Any) -> bool:
    return _whole(value) and value > 0


def optional_positive_int(value: Any) -> bool:
    return value is None or positive_int(value)


def non_negative_int(value: Any) -> bool:
    return _whole(value) and value >= 0


def trusted_proxies(value: Any) -> bool:
    """A list or tuple of IP networks (``"10.0.0.0/8"``, ``"fd00::/8"``, single addresses)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        return False
    try:
        for network in value:
            ipaddress.ip_network(network, strict=False)
    except (TypeError, ValueError):
        return False
    return True


REDIS_KEYS = frozenset(
    {"URL", "CLUSTER", "SENTINELS", "SERVICE_NAME", "SENTINEL_OPTIONS", "KEY_PREFIX", "OPTIONS"}
)
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def redis_config(value: Any) -> bool:
    """``REDIS``: None, a URL, or a dict with a URL or Sentinels (see redis_store)."""
    if value is None:
        return True
    if isinstance(value, str):
        value = {"URL": value}
    if not isinstance(value, dict) or not REDIS_KEYS.issuperset(value):
        return False
    url, sentinels = value.get("URL"), value.get("SENTINELS")
    if sentinels is not None:
        listed = isinstance(sentinels, (list, tuple)) and len(sentinels) > 0
        return listed and isinstance(value.get("SERVICE_NAME"), str) and not value.get("CLUSTER")
    options = value.get("OPTIONS", {})
    return (
        isinstance(url, str)
        and url.startswith(REDIS_URL_SCHEMES)
        and isinstance(options, dict)
        and isinstance(value.get("KEY_PREFIX", ""), str)
    )


def choice(*choices: str | None) -> Callable[[Any], bool]:
    return lambda value: value in choices


def any_value(value: Any) -> bool:
    """A flag, or a setting whose rule involves more than its value (its own check in checks)."""
    return True


@dataclass(frozen=True)
class Setting:
    """One setting: its default, the values it takes, the check id refusing others, its meaning."""

    name: str
    default: Any
    valid: Callable[[Any], bool]
    check_id: str  # reported by checks.check_settings when ``valid`` refuses the value; or ""
    doc: str  # the meaning, as the README's settings table gives it
    legacy: bool = False  # a key of the 0.1.x dict USER_SESSION


# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting("TOKEN_SIZE", 43, token_size, "E002", legacy=True,
            doc="random base62 characters per token (43 ≈ 256 bits; at least 22 = 128 bits)"),
    Setting("TOKEN_PREFIX", "nvs_", prefix_chars, "E006",
            doc="text in front of every token (A-Z a-z 0-9 `_` `-`, ≤ 16); "
            "changing it ends existing tokens"),
    Setting("EXPIRE_AT", timedelta(days=1), positive_timedelta_or_none, "E001", legacy=True,
            doc="lifetime of a new session; `None` = never expires"),
    Setting("SESSION_CACHE_PREFIX", "nilva_session:t:", non_blank_string, "E009", legacy=True,
            doc="cache key prefix for lookups by token digest"),
    Setting("SESSION_ID_CACHE_PREFIX", "nilva_session:s:", non_blank_string, "E009", legacy=True,
            doc="cache key prefix for lookups by session id (JWT)"),
    Setting("SESSION_CACHE_TTL", timedelta(minutes=15), positive_duration, "E007", legacy=True,
            doc="how long an active session stays cached (timedelta or seconds)"),
    Setting("TOMBSTONE_TTL", timedelta(minutes=1), positive_duration, "E007",
            doc="how long a revoke keeps the cache from being refilled"),
    Setting("SESSION_ID_CLAIM", "session_id", non_blank_string, "E009", legacy=True,
            doc="JWT claim that carries the session id"),
    Setting("CACHE_ALIAS", "default", any_value, "",  # checks.check_cache_alias: E004
            doc="the entry of `CACHES` used for sessions and login throttling "
            "(unless `REDIS` is set)"),
    Setting("REDIS", None, any_value, "",  # checks.check_redis: E016, W004 (URLs hold passwords)
            doc="the native Redis store instead of `CACHE_ALIAS`: a URL, or a dict for "
            'Cluster and Sentinel (see "Redis: the native store")'),
    Setting("LOCAL_CACHE", True, any_value, "",
            doc="with `REDIS`: keep session entries in each process, invalidated by Redis "
            "(`CLIENT TRACKING`): no round trip on a warm request"),
    Setting("LOCAL_CACHE_MAX_ENTRIES", 10000, positive_int, "E008",
            doc="most sessions each process keeps copies of"),
    Setting("LOCAL_CACHE_MAX_BYTES", 16 * 1024 * 1024, positive_int, "E008",
            doc="most bytes of copies each process keeps"),
    Setting("LOCAL_CACHE_LEASE", timedelta(milliseconds=500), positive_duration, "E007",
            doc="copies are served only while Redis answered within this time "
            "(at most the Redis socket timeout, W004)"),
    Setting("AUTH_HEADER_PREFIX", "Token", non_blank_string, "E009",
            doc="keyword of the `Authorization` header for opaque tokens"),
    Setting("USER_AGENT_CHECK", "family", choice(*USER_AGENT_CHECK_MODES), "E003",
            doc='`"family"`, `"strict"` or `"off"` (see the security model)'),
    Setting("LAST_ONLINE_UPDATE_INTERVAL", timedelta(minutes=1), positive_duration, "E007",
            doc="at most one `last_online` write per session per interval"),
    Setting("MAX_USER_AGENT_LENGTH", 512, positive_int, "E008",
            doc="user agents are cut to this length before storing and comparing"),
    Setting("LOGIN_THROTTLE_RATE", "5/min", rate_or_none, "E005",
            doc="DRF rate per client IP and per username for `login/` and `token/`; `None` = off"),
    Setting("REVOKED_RETENTION", timedelta(days=30), positive_duration, "E007",
            doc="how long the cleanup command keeps ended sessions"),
    Setting("ACCEPT_LEGACY_TOKENS", True, any_value, "",
            doc='accept tokens issued by nilva-session 0.1.x (see "Upgrading")'),
    Setting("IDLE_TIMEOUT", None, optional_positive_duration, "E010",
            doc="refuse (and end, reason `idle_timeout`) a session unused for longer; "
            "must exceed `LAST_ONLINE_UPDATE_INTERVAL`"),
    Setting("SLIDING_EXPIRY", False, any_value, "",  # checks.check_sliding_expiry: E011
            doc="push `expire_at` to now + `EXPIRE_AT` on activity (at most once per interval); "
            "needs `ABSOLUTE_LIFETIME`"),
    Setting("ABSOLUTE_LIFETIME", None, optional_positive_duration, "E010",
            doc="no session outlives login + this, sliding or not; `expire_at` is capped at login"),
    Setting("MAX_SESSIONS_PER_USER", None, optional_positive_int, "E012",
            doc="most active sessions per user (`None`: no limit)"),
    Setting("SESSION_LIMIT_POLICY", "end_least_recent", choice(*SESSION_LIMIT_POLICIES), "E012",
            doc="past the limit: end the least recently used session (`replaced`), "
            'or `"refuse"` the login (403 `session_limit_reached`)'),
    Setting("REAUTHENTICATION_MAX_AGE", timedelta(minutes=15), positive_duration, "E007",
            doc="default age accepted by the `RecentlyAuthenticated` permission"),
    Setting("TRUSTED_PROXY_COUNT", 0, non_negative_int, "E013",
            doc="number of trusted proxies in front of Django; "
            "the client IP is read from `X-Forwarded-For` that many hops back"),
    Setting("TRUSTED_PROXIES", (), trusted_proxies, "E013",
            doc='or: networks of trusted proxies (e.g. `["10.0.0.0/8"]`); '
            "the first untrusted hop is the client"),
    Setting("INVALID_TOKEN_THROTTLE_RATE", "60/min", rate_or_none, "E005",
            doc="unknown tokens per client IP before further unknown tokens get 429 "
            "without a DB lookup; `None` = off"),
    Setting("END_SESSIONS_ON_PASSWORD_CHANGE", True, any_value, "",
            doc="a password change ends every other session of the user (`password_changed`)"),
    Setting("BIND_IP", False, any_value, "",
            doc="suspend a session whose client IP changes (`ip_changed`)"),
    Setting("JWT_AUTHENTICATION_CLASS", "nilva_session.backends.UserSessionDBJwtAuthentication",
            any_value, "",  # checks.check_jwt_authentication_class: E014, W003
            doc="the JWT class whose rules (`check_user_agent`) `token/refresh/` applies"),
    Setting("DETECT_REFRESH_REUSE", True, any_value, "",
            doc="with simplejwt's `ROTATE_REFRESH_TOKENS`: a retired refresh token presented "
            "again ends its session (`refresh_reused`)"),
    Setting("REFRESH_REUSE_GRACE", timedelta(seconds=5), non_negative_duration, "E017",
            doc="the refresh token just retired is still accepted this long (two tabs "
            "refreshing at once); `0` = never"),
    Setting("REFRESH_GENERATION_CLAIM", "refresh_gen", non_blank_string, "E009",
            doc="JWT claim of a refresh token that carries its generation"),
    Setting("ROTATE_TOKEN_ON_REAUTHENTICATION", False, any_value, "",
            doc="`reauthenticate/` also issues a new opaque token and retires the old one"),
    Setting("EVENT_HISTORY", True, any_value, "",
            doc="keep security events in the database (`nilva_session_events` exports them)"),
    Setting("EVENT_RETENTION", timedelta(days=90), positive_duration, "E007",
            doc="how long the cleanup command keeps security events"),
    Setting("NEW_DEVICE_RULE", "user_agent_and_network", choice(*NEW_DEVICE_RULES, None), "E018",
            doc='what makes a device new: `"user_agent"` (browser, OS and device family) or '
            '`"user_agent_and_network"` (also the IPv4 /16 or IPv6 /32 network); `None` = off'),
    Setting("NEW_DEVICE_MEMORY", timedelta(days=365), positive_duration, "E007",
            doc="how long a device is remembered after its last sign-in (the cleanup command "
            "forgets older ones)"),
    Setting("NEW_DEVICE_EMAIL", False, any_value, "",  # checks.check_new_device_email: E019
            doc="email the user on a sign-in from a new device, with a \"this wasn't me\" link"),
    Setting("NOT_ME_LINK_MAX_AGE", timedelta(days=7), positive_duration, "E007",
            doc="how long the \"this wasn't me\" link works (it works once)"),
    Setting("NOT_ME_SETS_UNUSABLE_PASSWORD", False, any_value, "",
            doc="the \"this wasn't me\" link also makes the password unusable (a reset is then "
            "the way back in)"),
    Setting("CHANNEL_LAYER", "default", any_value, "",
            doc="with Django Channels: the `CHANNEL_LAYERS` alias through which ending a "
            "session closes its open websockets on every worker; `None` = off"),
    Setting("LOCATION_RESOLVER", "nilva_session.alerts.geoip_location", any_value, "",
            doc="dotted path of a function `f(ip)` giving a place name (or None) for the "
            "new-device email; "
            "the default uses Django's `GeoIP2` when `GEOIP_PATH` is set; `None` = off"),
)
# fmt: on

DEFAULTS: dict[str, Any] = {setting.name: setting.default for setting in SETTINGS}

# Durations that may be given in seconds as well as a timedelta; the optional ones may be None.
DURATION_SETTINGS = tuple(
    s.name for s in SETTINGS if s.valid in (positive_duration, non_negative_duration)
)
OPTIONAL_DURATION_SETTINGS = tuple(
    s.name for s in SETTINGS if s.valid is optional_positive_duration
)

# The keys nilva-session 0.1.x read from USER_SESSION (any key is read there now).
LEGACY_KEYS = tuple(s.name for s in SETTINGS if s.legacy)


def settings_reference() -> list[tuple[str, str, str]]:
    """Return ``(name, default, meaning)`` of every setting, in order: the README's table."""
    return [(s.name, _shown(s.default), s.doc) for s in SETTINGS]


def _shown(value: Any) -> str:
    if isinstance(value, timedelta) and value < timedelta(seconds=1):
        return f"timedelta(milliseconds={value // timedelta(milliseconds=1)})"
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
            if seconds % size == 0:
                return f"timedelta({unit}={seconds // size})"
        return f"timedelta(seconds={seconds})"
    return repr(value).replace("'", '"')


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
