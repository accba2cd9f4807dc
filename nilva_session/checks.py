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


@register()
def check_login_throttle_rate(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from rest_framework.throttling import SimpleRateThrottle

    value = _setting("LOGIN_THROTTLE_RATE")
    try:
        if value is not None:
            num, period = SimpleRateThrottle.parse_rate(None, value)  # type: ignore[arg-type]
            if num is None or num < 1 or not period:
                raise ValueError(value)
        return []
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return [
            Error(
                f"NILVA_SESSION['LOGIN_THROTTLE_RATE'] is {value!r}; use a DRF rate such as "
                "'5/min', or None to turn login throttling off.",
                id="nilva_session.E005",
            )
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
