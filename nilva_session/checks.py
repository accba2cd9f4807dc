"""System checks for the ``NILVA_SESSION`` settings.

``CHECKS`` is the catalogue (django-axes' style): each id names one problem, and ids are
stable, ``nilva_session.E0xx`` for errors, ``W0xx`` for warnings. :func:`check_settings` checks
every setting's value against its declaration in ``conf.SETTINGS``; each rule between settings,
or between a setting and the rest of the project, has a function of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .conf import (
    DEFAULTS,
    MAX_PREFIX_LENGTH,
    MIN_TOKEN_BITS,
    NEW_DEVICE_RULES,
    SESSION_LIMIT_POLICIES,
    SETTINGS,
    USER_AGENT_CHECK_MODES,
    non_negative_int,
    positive_duration,
    redis_config,
    session_settings,
    trusted_proxies,
)
from .utils import MAX_BODY_LENGTH, MIN_BODY_LENGTH

Check = Callable[..., list[CheckMessage]]

PROCESS_LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
    "django.core.cache.backends.filebased.FileBasedCache",
)

#: id: (the problem, a hint or None). A message reads "<what is set>: <the problem>."
CHECKS: dict[str, tuple[str, str | None]] = {
    "E001": ("must be a positive timedelta or None", "For example: timedelta(days=1)."),
    "E002": (
        f"must be a whole number of base62 characters giving at least {MIN_TOKEN_BITS} bits "
        f"({MIN_BODY_LENGTH} to {MAX_BODY_LENGTH})",
        "The default, 43, gives 256 bits.",
    ),
    "E003": (f"must be one of: {', '.join(USER_AGENT_CHECK_MODES)}", None),
    "E004": ("must be a key of settings.CACHES", None),
    "E005": ("must be a DRF rate such as '5/min', or None to turn it off", None),
    "E006": (
        f"must be at most {MAX_PREFIX_LENGTH} characters from A-Z, a-z, 0-9, '_' and '-'",
        "Use '' for no prefix.",
    ),
    "E007": ("must be a positive timedelta or number of seconds", None),
    "E008": ("must be a positive integer", None),
    "E009": ("must be a non-empty string without spaces", None),
    "E010": ("must be a positive timedelta, a positive number of seconds, or None", None),
    "E011": (
        "must be set when SLIDING_EXPIRY is on, or a session kept in use never expires",
        "For example: ABSOLUTE_LIFETIME = timedelta(days=30).",
    ),
    "E012": (
        "MAX_SESSIONS_PER_USER must be a positive integer or None, and SESSION_LIMIT_POLICY "
        f"one of: {', '.join(SESSION_LIMIT_POLICIES)}",
        None,
    ),
    "E013": (
        "TRUSTED_PROXY_COUNT must be a whole number >= 0 and TRUSTED_PROXIES a list of "
        "networks, and only one of them may be set",
        None,
    ),
    "E014": ("must be the dotted path of UserSessionDBJwtAuthentication or a subclass", None),
    "E015": (
        "must be longer than LAST_ONLINE_UPDATE_INTERVAL (activity is recorded once per "
        "interval, so a shorter timeout cannot be told)",
        None,
    ),
    "E016": (
        "must be None, a redis://, rediss:// or unix:// URL, or a dict of URL, CLUSTER, "
        "SENTINELS, SERVICE_NAME, SENTINEL_OPTIONS, KEY_PREFIX and OPTIONS, and redis-py 5.1 "
        "or later must be installed",
        'pip install "nilva-session[redis]"; see the README, "Redis: the native store".',
    ),
    "E017": ("must be a timedelta or a number of seconds, 0 or more", None),
    "E018": (f"must be one of: {', '.join(NEW_DEVICE_RULES)}, or None", None),
    "E019": (
        'needs EVENT_HISTORY: the "this wasn\'t me" link is checked against the history',
        "Set NILVA_SESSION['EVENT_HISTORY'] = True, or turn NEW_DEVICE_EMAIL off.",
    ),
    "W001": (
        "the cache is local to one process, and DEBUG is off",
        "A session ended through one worker would stay usable on the others until "
        "SESSION_CACHE_TTL passes. Use a shared cache (Redis) in production, or set "
        "NILVA_SESSION['CACHE_ALIAS'] to one.",
    ),
    "W002": ("not nilva-session settings; ignored", "Check the spelling against the README."),
    "W004": (
        "is longer than the Redis socket timeout",
        "A revoke waits at most the socket timeout for a Redis that stopped answering; a copy "
        "trusted longer than that could outlive the revoke. Lower LOCAL_CACHE_LEASE or raise "
        "OPTIONS['socket_timeout'].",
    ),
    "W005": (
        "ATOMIC_REQUESTS is on and DRF's EXCEPTION_HANDLER is not nilva-session's",
        "A session ended while refusing a request (a user-agent or IP suspension, idleness, a "
        "reused refresh token) is rolled back with the request by DRF's handler and stays "
        "live. Set REST_FRAMEWORK['EXCEPTION_HANDLER'] = 'nilva_session.apis.exception_handler',"
        " or call nilva_session.apis.keep_session_ends(exc) in yours (then silence W005).",
    ),
    "W006": (
        "names no entry of CHANNEL_LAYERS",
        "Ending a session then closes none of its websockets (nilva_session.channels). Set "
        "NILVA_SESSION['CHANNEL_LAYER'] to an alias of CHANNEL_LAYERS, or None to say so.",
    ),
    "W003": (
        "token/refresh/ applies the rules of another JWT class than DRF authenticates with",
        "Set NILVA_SESSION['JWT_AUTHENTICATION_CLASS'] to the class DRF uses.",
    ),
}


def _setting(name: str) -> Any:
    return getattr(session_settings, name)


def _is(name: str) -> str:
    return f"NILVA_SESSION[{name!r}] is {_setting(name)!r}"


def _report(check_id: str, subject: str) -> CheckMessage:
    problem, hint = CHECKS[check_id]
    kind = Error if check_id.startswith("E") else Warning
    return kind(f"{subject}: {problem}.", hint=hint, id=f"nilva_session.{check_id}")


def _reported_if(bad: Any, check_id: str, subject: str) -> list[CheckMessage]:
    return [_report(check_id, subject)] if bad else []


@register(Tags.security)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every setting's value against its declaration, under that declaration's id."""
    return [
        _report(s.check_id, _is(s.name))
        for s in SETTINGS
        if s.check_id and not s.valid(_setting(s.name))
    ]


@register(Tags.security)
def check_idle_timeout(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    idle, interval = _setting("IDLE_TIMEOUT"), _setting("LAST_ONLINE_UPDATE_INTERVAL")
    too_short = positive_duration(idle) and positive_duration(interval) and idle <= interval
    return _reported_if(too_short, "E015", _is("IDLE_TIMEOUT"))


@register(Tags.security)
def check_sliding_expiry(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    uncapped = _setting("SLIDING_EXPIRY") and _setting("ABSOLUTE_LIFETIME") is None
    return _reported_if(uncapped, "E011", _is("ABSOLUTE_LIFETIME"))


@register(Tags.security)
def check_proxy_conflict(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    count, networks = _setting("TRUSTED_PROXY_COUNT"), _setting("TRUSTED_PROXIES")
    both = non_negative_int(count) and trusted_proxies(networks) and count and networks
    return _reported_if(both, "E013", f"{_is('TRUSTED_PROXY_COUNT')}, TRUSTED_PROXIES {networks!r}")


@register(Tags.security)
def check_new_device_email(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    unverifiable = _setting("NEW_DEVICE_EMAIL") and not _setting("EVENT_HISTORY")
    return _reported_if(unverifiable, "E019", _is("NEW_DEVICE_EMAIL"))


@register(Tags.caches)
def check_cache_alias(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    missing = _setting("CACHE_ALIAS") not in settings.CACHES
    return _reported_if(missing, "E004", _is("CACHE_ALIAS"))


@register(Tags.caches, deploy=False)
def check_shared_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    backend = settings.CACHES.get(_setting("CACHE_ALIAS"), {}).get("BACKEND", "")
    local = not settings.DEBUG and backend in PROCESS_LOCAL_CACHES
    return _reported_if(local, "W001", f"{_is('CACHE_ALIAS')}, a {backend.rsplit('.', 1)[-1]}")


@register(Tags.caches)
def check_redis(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E016: ``REDIS`` is malformed or redis-py is missing; W004: the lease outlasts a timeout."""
    config = _setting("REDIS")
    if config is None:
        return []
    try:
        import redis

        major, minor = (int(part) for part in redis.__version__.split(".")[:2])
        usable = (major, minor) >= (5, 1) and redis_config(config)
    except (ImportError, ValueError):  # missing, or a version string we cannot read
        usable = False
    if not usable:  # the value is not shown: a URL may carry a password
        return [_report("E016", "NILVA_SESSION['REDIS']")]
    from .redis_store import DEFAULT_OPTIONS, options_of

    timeout = {**DEFAULT_OPTIONS, **options_of(config).get("OPTIONS", {})}.get("socket_timeout")
    lease = _setting("LOCAL_CACHE_LEASE")
    long_lease = (
        _setting("LOCAL_CACHE")
        and positive_duration(lease)
        and (timeout is None or lease.total_seconds() > timeout)
    )
    return _reported_if(long_lease, "W004", _is("LOCAL_CACHE_LEASE"))


@register()
def check_unknown_keys(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    unknown = sorted(set(session_settings.user_values()) - set(DEFAULTS))
    return _reported_if(unknown, "W002", f"NILVA_SESSION or USER_SESSION has {', '.join(unknown)}")


@register()
def check_jwt_authentication_class(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E014: the class is not ours or a subclass; W003: DRF authenticates with another one."""
    from django.utils.module_loading import import_string
    from rest_framework.settings import api_settings

    from .authentication import UserSessionDBJwtAuthentication as Ours

    try:
        named = import_string(_setting("JWT_AUTHENTICATION_CLASS"))
    except (ImportError, TypeError, ValueError, AttributeError):  # AttributeError: not a str
        named = None
    if not (isinstance(named, type) and issubclass(named, Ours)):
        return [_report("E014", _is("JWT_AUTHENTICATION_CLASS"))]
    classes: list[Any] = list(api_settings.DEFAULT_AUTHENTICATION_CLASSES)  # loaded classes
    return [
        _report("W003", f"DEFAULT_AUTHENTICATION_CLASSES lists {c.__module__}.{c.__qualname__}")
        for c in classes
        if isinstance(c, type) and issubclass(c, Ours) and c is not named
    ]


# Not Tags.database: Django runs those only when it is given databases to check (6.1 too).
@register(Tags.security)
def check_atomic_requests(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from rest_framework.settings import api_settings

    from .apis import exception_handler

    atomic = [alias for alias, db in settings.DATABASES.items() if db.get("ATOMIC_REQUESTS")]
    ours = api_settings.EXCEPTION_HANDLER is exception_handler
    return _reported_if(atomic and not ours, "W005", f"DATABASES {atomic!r}")


@register()
def check_channel_layer(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W006: Channels layers are configured, but not the one ``CHANNEL_LAYER`` names."""
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    alias = _setting("CHANNEL_LAYER")
    return _reported_if(
        layers and alias is not None and alias not in layers, "W006", _is("CHANNEL_LAYER")
    )


# The per-concern names callers use (tests/test_security.py), over the functions above.
VALUE_CHECKS = (check_settings, check_idle_timeout, check_sliding_expiry, check_proxy_conflict)


def _reporting(*ids: str) -> Check:
    """A check giving only the messages of ``ids``."""
    wanted = {f"nilva_session.{check_id}" for check_id in ids}

    def check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
        return [m for concern in VALUE_CHECKS for m in concern() if m.id in wanted]

    return check


check_token_size = _reporting("E002")
check_timeouts = _reporting("E010", "E011", "E015")
check_session_limit = _reporting("E012")
check_trusted_proxies = _reporting("E013")
