"""System checks for the ``NILVA_SESSION`` settings, one function per concern.

Ids are stable: ``nilva_session.E00x`` for errors, ``nilva_session.W00x`` for warnings.
"""

from __future__ import annotations

import math
import string
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .conf import DEFAULTS, DURATION_SETTINGS, USER_AGENT_CHECK_MODES, session_settings

MIN_TOKEN_BITS = 128
PREFIX_ALPHABET = frozenset(string.ascii_letters + string.digits + "_-")
PROCESS_LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
    "django.core.cache.backends.filebased.FileBasedCache",
)
STRING_SETTINGS = (
    "SESSION_CACHE_PREFIX",
    "SESSION_ID_CACHE_PREFIX",
    "SESSION_ID_CLAIM",
    "AUTH_HEADER_PREFIX",
)


def _setting(name: str) -> Any:
    return getattr(session_settings, name)


@register(Tags.security)
def check_expire_at(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    value = _setting("EXPIRE_AT")
    if value is None or (isinstance(value, timedelta) and value > timedelta(0)):
        return []
    return [
        Error(
            f"NILVA_SESSION['EXPIRE_AT'] must be a positive timedelta or None, not {value!r}.",
            hint="For example: EXPIRE_AT = timedelta(days=1).",
            id="nilva_session.E001",
        )
    ]


@register(Tags.security)
def check_token_size(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from .utils import MAX_BODY_LENGTH

    value = _setting("TOKEN_SIZE")
    bits = value * math.log2(62) if isinstance(value, int) and not isinstance(value, bool) else 0
    if bits >= MIN_TOKEN_BITS and value <= MAX_BODY_LENGTH:
        return []
    return [
        Error(
            f"NILVA_SESSION['TOKEN_SIZE'] is {value!r}: it must be a whole number of base62 "
            f"characters giving at least {MIN_TOKEN_BITS} bits (22 to {MAX_BODY_LENGTH}).",
            hint="The default, 43, gives 256 bits.",
            id="nilva_session.E002",
        )
    ]


@register()
def check_user_agent_mode(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    value = _setting("USER_AGENT_CHECK")
    if value in USER_AGENT_CHECK_MODES:
        return []
    return [
        Error(
            f"NILVA_SESSION['USER_AGENT_CHECK'] is {value!r}; "
            f"use one of: {', '.join(USER_AGENT_CHECK_MODES)}.",
            id="nilva_session.E003",
        )
    ]


@register(Tags.caches)
def check_cache_alias(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    alias = _setting("CACHE_ALIAS")
    if alias in settings.CACHES:
        return []
    return [
        Error(
            f"NILVA_SESSION['CACHE_ALIAS'] is {alias!r}, which is not a key of settings.CACHES.",
            id="nilva_session.E004",
        )
    ]


RATE_SETTINGS = ("LOGIN_THROTTLE_RATE", "INVALID_TOKEN_THROTTLE_RATE")


def _is_rate(value: Any) -> bool:
    from rest_framework.throttling import SimpleRateThrottle

    if value is None:
        return True
    try:
        # parse_rate reads nothing from self (see guessing._parse_rate).
        num, period = SimpleRateThrottle.parse_rate(None, value)  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return False
    return num is not None and num >= 1 and bool(period)


@register(Tags.security)
def check_throttle_rates(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [
        Error(
            f"NILVA_SESSION[{name!r}] is {_setting(name)!r}; use a DRF rate such as '5/min', "
            "or None to turn it off.",
            id="nilva_session.E005",
        )
        for name in RATE_SETTINGS
        if not _is_rate(_setting(name))
    ]


@register()
def check_token_prefix(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    value = _setting("TOKEN_PREFIX")
    if isinstance(value, str) and len(value) <= 16 and PREFIX_ALPHABET.issuperset(value):
        return []
    return [
        Error(
            f"NILVA_SESSION['TOKEN_PREFIX'] is {value!r}; use at most 16 characters "
            "from A-Z, a-z, 0-9, '_' and '-' (or '' for none).",
            id="nilva_session.E006",
        )
    ]


@register()
def check_durations(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [
        Error(
            f"NILVA_SESSION[{name!r}] must be a positive timedelta or number of seconds, "
            f"not {_setting(name)!r}.",
            id="nilva_session.E007",
        )
        for name in DURATION_SETTINGS
        if not (isinstance(_setting(name), timedelta) and _setting(name) > timedelta(0))
    ]


@register()
def check_user_agent_length(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    value = _setting("MAX_USER_AGENT_LENGTH")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return []
    return [
        Error(
            f"NILVA_SESSION['MAX_USER_AGENT_LENGTH'] must be a positive integer, not {value!r}.",
            id="nilva_session.E008",
        )
    ]


@register()
def check_strings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [
        Error(
            f"NILVA_SESSION[{name!r}] must be a non-empty string without spaces, "
            f"not {_setting(name)!r}.",
            id="nilva_session.E009",
        )
        for name in STRING_SETTINGS
        if not (isinstance(_setting(name), str) and _setting(name) and " " not in _setting(name))
    ]


@register(Tags.caches, deploy=False)
def check_shared_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    alias = _setting("CACHE_ALIAS")
    backend = settings.CACHES.get(alias, {}).get("BACKEND", "")
    if settings.DEBUG or backend not in PROCESS_LOCAL_CACHES:
        return []
    return [
        Warning(
            f"The cache {alias!r} used by nilva-session ({backend.rsplit('.', 1)[-1]}) is "
            "local to one process, and DEBUG is off.",
            hint="A session ended through one worker would stay usable on the others until "
            "SESSION_CACHE_TTL passes. Use a shared cache (Redis) in production, or set "
            "NILVA_SESSION['CACHE_ALIAS'] to one.",
            id="nilva_session.W001",
        )
    ]


@register()
def check_unknown_keys(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    unknown = sorted(set(session_settings.user_values()) - set(DEFAULTS))
    if not unknown:
        return []
    return [
        Warning(
            f"Unknown nilva-session setting(s): {', '.join(unknown)}; they are ignored.",
            hint="Check the spelling against the README's settings table.",
            id="nilva_session.W002",
        )
    ]


@register()
def check_jwt_authentication_class(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E014: JWT_AUTHENTICATION_CLASS must name our JWT class or a subclass of it.

    W003: DRF authenticates with another subclass of it than token/refresh/ applies.
    """
    from django.utils.module_loading import import_string
    from rest_framework.settings import api_settings

    from .authentication import UserSessionDBJwtAuthentication

    path = _setting("JWT_AUTHENTICATION_CLASS")
    try:
        named = import_string(path)
    except (ImportError, TypeError, ValueError, AttributeError):  # AttributeError: not a str
        named = None
    if not (isinstance(named, type) and issubclass(named, UserSessionDBJwtAuthentication)):
        return [
            Error(
                f"NILVA_SESSION['JWT_AUTHENTICATION_CLASS'] is {path!r}: it must be the dotted "
                "path of UserSessionDBJwtAuthentication or a subclass of it.",
                id="nilva_session.E014",
            )
        ]
    configured: list[Any] = list(api_settings.DEFAULT_AUTHENTICATION_CLASSES)  # classes, loaded
    others = [
        c
        for c in configured
        if isinstance(c, type) and issubclass(c, UserSessionDBJwtAuthentication) and c is not named
    ]
    return [
        Warning(
            f"DEFAULT_AUTHENTICATION_CLASSES lists {c.__module__}.{c.__qualname__}, but "
            f"token/refresh/ applies the rules of {path}.",
            hint="Set NILVA_SESSION['JWT_AUTHENTICATION_CLASS'] to the class DRF uses.",
            id="nilva_session.W003",
        )
        for c in others
    ]


def _optional_duration_ok(value: Any) -> bool:
    return value is None or (isinstance(value, timedelta) and value > timedelta(0))


@register(Tags.security)
def check_timeouts(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    idle, absolute = _setting("IDLE_TIMEOUT"), _setting("ABSOLUTE_LIFETIME")
    for name, value in (("IDLE_TIMEOUT", idle), ("ABSOLUTE_LIFETIME", absolute)):
        if not _optional_duration_ok(value):
            errors.append(
                Error(
                    f"NILVA_SESSION[{name!r}] must be a positive timedelta, seconds or None, "
                    f"not {value!r}.",
                    id="nilva_session.E010",
                )
            )
    interval = _setting("LAST_ONLINE_UPDATE_INTERVAL")
    if isinstance(idle, timedelta) and isinstance(interval, timedelta) and idle <= interval:
        errors.append(
            Error(
                "NILVA_SESSION['IDLE_TIMEOUT'] must be longer than LAST_ONLINE_UPDATE_INTERVAL: "
                "activity is recorded once per interval, so a shorter timeout cannot be told.",
                id="nilva_session.E010",
            )
        )
    if _setting("SLIDING_EXPIRY") and absolute is None:
        errors.append(
            Error(
                "NILVA_SESSION['SLIDING_EXPIRY'] needs ABSOLUTE_LIFETIME: a session kept in use "
                "would otherwise never expire.",
                hint="For example: ABSOLUTE_LIFETIME = timedelta(days=30).",
                id="nilva_session.E011",
            )
        )
    return errors


@register()
def check_session_limit(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from .conf import SESSION_LIMIT_POLICIES

    limit, policy = _setting("MAX_SESSIONS_PER_USER"), _setting("SESSION_LIMIT_POLICY")
    limit_ok = limit is None or (
        isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
    )
    if limit_ok and policy in SESSION_LIMIT_POLICIES:
        return []
    return [
        Error(
            f"NILVA_SESSION['MAX_SESSIONS_PER_USER'] ({limit!r}) must be a positive integer or "
            f"None, and SESSION_LIMIT_POLICY ({policy!r}) one of: "
            f"{', '.join(SESSION_LIMIT_POLICIES)}.",
            id="nilva_session.E012",
        )
    ]


@register(Tags.security)
def check_trusted_proxies(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    import ipaddress

    count, networks = _setting("TRUSTED_PROXY_COUNT"), _setting("TRUSTED_PROXIES")
    problems = []
    if not (isinstance(count, int) and not isinstance(count, bool) and count >= 0):
        problems.append(f"TRUSTED_PROXY_COUNT must be a whole number ≥ 0, not {count!r}")
    if isinstance(networks, str) or not isinstance(networks, (list, tuple)):
        problems.append(f"TRUSTED_PROXIES must be a list of networks, not {networks!r}")
    else:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except (TypeError, ValueError):
                problems.append(f"TRUSTED_PROXIES has {network!r}, which is not a network")
    if count and networks and not problems:
        problems.append("set TRUSTED_PROXY_COUNT or TRUSTED_PROXIES, not both")
    return [Error(f"NILVA_SESSION: {problem}.", id="nilva_session.E013") for problem in problems]
