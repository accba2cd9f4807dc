"""System checks: each bad setting is reported under its stable id."""

from __future__ import annotations

import ast
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.checks import Error, Warning, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from nilva_session import checks, conf
from nilva_session.authentication import UserSessionDBJwtAuthentication

from .support.doubles import nilva_settings

LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
REDIS_CACHE = {
    "BACKEND": "django.core.cache.backends.redis.RedisCache",
    "LOCATION": "redis://127.0.0.1:6379",
}

pytestmark = [
    # W005's configurations override DATABASES (only its ATOMIC_REQUESTS flag, read by the check).
    pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning"),
    # Django 6.1's run_checks() checks every database by default: JSONField's check then asks
    # SQLite whether it supports JSON, a query.
    pytest.mark.django_db,
]


def nilva_ids(messages=None):
    """Ids of the nilva_session messages among ``messages`` (all registered checks by default)."""
    if messages is None:
        messages = run_checks()
    return sorted(m.id for m in messages if (m.id or "").startswith("nilva_session."))


def ids_with(**options):
    with override_settings(NILVA_SESSION=options):
        return nilva_ids()


# --- the default configuration --------------------------------------------------------------------


def test_default_configuration_has_no_nilva_session_errors():
    with override_settings(NILVA_SESSION={}, USER_SESSION={}):
        messages = [m for m in run_checks() if (m.id or "").startswith("nilva_session.")]
    assert not [m for m in messages if m.is_serious()]
    # Only the process-local cache warning may remain (LocMem in the test settings).
    assert {m.id for m in messages} <= {"nilva_session.W001"}


def test_test_settings_pass_the_check_command():
    # W001 is silenced in tests/settings.py; nothing else may be reported.
    call_command("check", "--fail-level", "WARNING")


def test_checks_are_registered():
    ids = ids_with(TOKEN_SIZE=16, USER_AGENT_CHECK="sometimes")
    assert "nilva_session.E002" in ids
    assert "nilva_session.E003" in ids


def test_check_command_fails_on_an_error():
    with (
        override_settings(NILVA_SESSION={"TOKEN_SIZE": 16}),
        pytest.raises(SystemCheckError, match=r"nilva_session\.E002"),
    ):
        call_command("check")


# --- E001 EXPIRE_AT -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [timedelta(days=1), timedelta(seconds=1), None])
def test_e001_accepts_positive_timedelta_or_none(value):
    assert "nilva_session.E001" not in ids_with(EXPIRE_AT=value)


@pytest.mark.parametrize(
    "value", [timedelta(0), timedelta(seconds=-1), 3600, "1 day", timedelta(days=-30)]
)
def test_e001_rejects_non_timedelta_or_non_positive(value):
    assert "nilva_session.E001" in ids_with(EXPIRE_AT=value)


# --- E002 TOKEN_SIZE ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [22, 43, 64, 256])
def test_e002_accepts_sizes_of_at_least_128_bits(value):
    assert "nilva_session.E002" not in ids_with(TOKEN_SIZE=value)


@pytest.mark.parametrize("value", [16, 21, 0, -43, "43", 43.0, True, None, 257])
def test_e002_rejects_short_or_non_integer_sizes(value):
    assert "nilva_session.E002" in ids_with(TOKEN_SIZE=value)


# --- E003 USER_AGENT_CHECK ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["family", "strict", "off"])
def test_e003_accepts_known_modes(value):
    assert "nilva_session.E003" not in ids_with(USER_AGENT_CHECK=value)


@pytest.mark.parametrize("value", ["sometimes", "FAMILY", "", None, False])
def test_e003_rejects_unknown_modes(value):
    assert "nilva_session.E003" in ids_with(USER_AGENT_CHECK=value)


# --- E004 CACHE_ALIAS -----------------------------------------------------------------------------


def test_e004_alias_missing_from_caches():
    assert "nilva_session.E004" in ids_with(CACHE_ALIAS="sessions")


def test_e004_alias_present_in_caches():
    caches = {"default": {"BACKEND": LOCMEM}, "sessions": {"BACKEND": LOCMEM}}
    with override_settings(CACHES=caches, NILVA_SESSION={"CACHE_ALIAS": "sessions"}):
        assert "nilva_session.E004" not in nilva_ids()


# --- E005 LOGIN_THROTTLE_RATE ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["5/min", "10/second", "100/hour", "1000/day", None])
def test_e005_accepts_drf_rates_and_none(value):
    assert "nilva_session.E005" not in ids_with(LOGIN_THROTTLE_RATE=value)


@pytest.mark.parametrize(
    "value", ["five per minute", "5/fortnight", "0/min", "/min", "5/", 5, "x/min"]
)
def test_e005_rejects_bad_rates(value):
    assert "nilva_session.E005" in ids_with(LOGIN_THROTTLE_RATE=value)


# --- E006 TOKEN_PREFIX ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nvs_", "", "my-app_", "A" * 16])
def test_e006_accepts_short_safe_prefixes(value):
    assert "nilva_session.E006" not in ids_with(TOKEN_PREFIX=value)


@pytest.mark.parametrize("value", ["has space", "A" * 17, "tok:", "tök_", None, 5])
def test_e006_rejects_bad_prefixes(value):
    assert "nilva_session.E006" in ids_with(TOKEN_PREFIX=value)


# --- E007 durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["SESSION_CACHE_TTL", "TOMBSTONE_TTL", "LAST_ONLINE_UPDATE_INTERVAL", "REVOKED_RETENTION"],
)
@pytest.mark.parametrize("value", [0, -5, timedelta(0), timedelta(minutes=-1), "15m", None, True])
def test_e007_rejects_bad_durations(name, value):
    assert "nilva_session.E007" in ids_with(**{name: value})


@pytest.mark.parametrize("value", [1, 0.5, timedelta(minutes=1)])
def test_e007_accepts_positive_seconds_or_timedelta(value):
    assert "nilva_session.E007" not in ids_with(SESSION_CACHE_TTL=value, TOMBSTONE_TTL=value)


def test_e007_names_each_bad_setting():
    with override_settings(NILVA_SESSION={"TOMBSTONE_TTL": 0, "REVOKED_RETENTION": -1}):
        errors = [m for m in checks.check_settings() if m.id == "nilva_session.E007"]
    assert len(errors) == 2
    assert "TOMBSTONE_TTL" in errors[0].msg + errors[1].msg
    assert "REVOKED_RETENTION" in errors[0].msg + errors[1].msg


# --- E008 MAX_USER_AGENT_LENGTH -------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, "512", 51.2, None, True])
def test_e008_rejects_bad_lengths(value):
    assert "nilva_session.E008" in ids_with(MAX_USER_AGENT_LENGTH=value)


def test_e008_accepts_positive_int():
    assert "nilva_session.E008" not in ids_with(MAX_USER_AGENT_LENGTH=1)


# --- E009 string settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["SESSION_CACHE_PREFIX", "SESSION_ID_CACHE_PREFIX", "SESSION_ID_CLAIM", "AUTH_HEADER_PREFIX"],
)
@pytest.mark.parametrize("value", ["", "with space", None, 7])
def test_e009_rejects_empty_or_spaced_strings(name, value):
    assert "nilva_session.E009" in ids_with(**{name: value})


def test_e009_accepts_plain_strings():
    ids = ids_with(
        SESSION_CACHE_PREFIX="a:",
        SESSION_ID_CACHE_PREFIX="b:",
        SESSION_ID_CLAIM="sid",
        AUTH_HEADER_PREFIX="Bearer2",
    )
    assert "nilva_session.E009" not in ids


# --- W001 process-local cache ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.cache.backends.dummy.DummyCache",
        "django.core.cache.backends.filebased.FileBasedCache",
    ],
)
def test_w001_process_local_cache_with_debug_off(backend, tmp_path):
    with override_settings(
        DEBUG=False, CACHES={"default": {"BACKEND": backend, "LOCATION": str(tmp_path)}}
    ):
        messages = checks.check_shared_cache()
        assert [m.id for m in messages] == ["nilva_session.W001"]
        assert isinstance(messages[0], Warning)
        assert "nilva_session.W001" in nilva_ids()


def test_w001_is_not_raised_with_debug_on():
    with override_settings(DEBUG=True, CACHES={"default": {"BACKEND": LOCMEM}}):
        assert checks.check_shared_cache() == []
        assert "nilva_session.W001" not in nilva_ids()


def test_w001_is_not_raised_for_redis():
    with override_settings(DEBUG=False, CACHES={"default": REDIS_CACHE}):
        assert checks.check_shared_cache() == []
        assert "nilva_session.W001" not in nilva_ids()


def test_w001_follows_cache_alias():
    caches = {"default": {"BACKEND": LOCMEM}, "shared": REDIS_CACHE}
    with override_settings(DEBUG=False, CACHES=caches):
        with override_settings(NILVA_SESSION={"CACHE_ALIAS": "shared"}):
            assert checks.check_shared_cache() == []
        with override_settings(NILVA_SESSION={"CACHE_ALIAS": "default"}):
            assert [m.id for m in checks.check_shared_cache()] == ["nilva_session.W001"]


def test_w001_is_reported_by_check_command_when_not_silenced():
    with (
        override_settings(
            SILENCED_SYSTEM_CHECKS=[], DEBUG=False, CACHES={"default": {"BACKEND": LOCMEM}}
        ),
        pytest.raises(SystemCheckError, match=r"nilva_session\.W001"),
    ):
        call_command("check", "--fail-level", "WARNING")


# --- W002 unknown keys ----------------------------------------------------------------------------


def test_w002_unknown_key_in_nilva_session():
    with override_settings(NILVA_SESSION={"TOKEN_SIZ": 43}):
        messages = checks.check_unknown_keys()
    assert [m.id for m in messages] == ["nilva_session.W002"]
    assert "TOKEN_SIZ" in messages[0].msg


def test_w002_unknown_key_in_legacy_dict():
    with override_settings(USER_SESSION={"CACHE_TIMEOUT": 5}, NILVA_SESSION={}):
        assert "nilva_session.W002" in nilva_ids()


def test_w002_not_raised_for_known_keys():
    with override_settings(USER_SESSION={"TOKEN_SIZE": 43}, NILVA_SESSION={"TOKEN_PREFIX": "x_"}):
        assert checks.check_unknown_keys() == []


# --- kinds ----------------------------------------------------------------------------------------


def test_setting_errors_are_errors_not_warnings():
    with override_settings(
        NILVA_SESSION={"EXPIRE_AT": 0, "TOKEN_SIZE": 16, "USER_AGENT_CHECK": "?"}
    ):
        messages = checks.check_settings()
    assert len(messages) == 3
    assert all(isinstance(m, Error) for m in messages)


def test_one_bad_setting_reports_only_its_own_id():
    ids = set(ids_with(TOKEN_PREFIX="has space")) - {"nilva_session.W001"}
    assert ids == {"nilva_session.E006"}


# --- E014 / W003 JWT_AUTHENTICATION_CLASS ---------------------------------------------------------


class OwnJwtAuthentication(UserSessionDBJwtAuthentication):
    pass


@pytest.mark.parametrize("path", ["no.such.Class", "nilva_session.backends", "builtins.dict", 5])
def test_e014_jwt_authentication_class_must_be_ours(path):
    with override_settings(NILVA_SESSION={"JWT_AUTHENTICATION_CLASS": path}):
        assert "nilva_session.E014" in nilva_ids()


def test_w003_drf_authenticates_with_another_subclass_than_refresh_applies():
    own = "tests.test_checks.OwnJwtAuthentication"
    with override_settings(REST_FRAMEWORK={"DEFAULT_AUTHENTICATION_CLASSES": [own]}):
        assert "nilva_session.W003" in nilva_ids()
        with override_settings(NILVA_SESSION={"JWT_AUTHENTICATION_CLASS": own}):
            assert not {"nilva_session.W003", "nilva_session.E014"} & set(nilva_ids())


def test_default_jwt_authentication_class_is_clean():
    assert not {"nilva_session.W003", "nilva_session.E014"} & set(nilva_ids())


# --- one catalogue of ids -------------------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"
BAD_VALUES = {
    "TOKEN_SIZE": 8,
    "TOKEN_PREFIX": "no spaces",
    "EXPIRE_AT": 0,
    "SESSION_CACHE_PREFIX": "",
    "SESSION_ID_CACHE_PREFIX": "a b",
    "SESSION_CACHE_TTL": -1,
    "TOMBSTONE_TTL": "soon",
    "SESSION_ID_CLAIM": None,
    "AUTH_HEADER_PREFIX": "",
    "USER_AGENT_CHECK": "loose",
    "LAST_ONLINE_UPDATE_INTERVAL": 0,
    "MAX_USER_AGENT_LENGTH": 0,
    "LOGIN_THROTTLE_RATE": "often",
    "REVOKED_RETENTION": -5,
    "IDLE_TIMEOUT": -1,
    "ABSOLUTE_LIFETIME": "long",
    "MAX_SESSIONS_PER_USER": 0,
    "SESSION_LIMIT_POLICY": "evict",
    "REAUTHENTICATION_MAX_AGE": 0,
    "TRUSTED_PROXY_COUNT": -1,
    "TRUSTED_PROXIES": ["not a network"],
    "INVALID_TOKEN_THROTTLE_RATE": "0/min",
    "LOCAL_CACHE_MAX_ENTRIES": 0,
    "LOCAL_CACHE_MAX_BYTES": -1,
    "LOCAL_CACHE_LEASE": 0,
    "REFRESH_REUSE_GRACE": -1,
    "REFRESH_GENERATION_CLAIM": "",
    "EVENT_RETENTION": timedelta(0),
    "NEW_DEVICE_RULE": "fingerprint",
    "NOT_ME_LINK_MAX_AGE": "a week",
    "NEW_DEVICE_MEMORY": 0,
}


@pytest.mark.parametrize("setting", [s for s in conf.SETTINGS if s.check_id], ids=lambda s: s.name)
def test_every_declared_setting_reports_its_own_id_for_a_bad_value(setting):
    with override_settings(NILVA_SESSION={setting.name: BAD_VALUES[setting.name]}):
        messages = [m for m in run_checks() if (m.id or "").startswith("nilva_session.E")]
    assert [m.id for m in messages] == [f"nilva_session.{setting.check_id}"]
    assert setting.name in messages[0].msg


# One configuration per catalogue id that is wrong in that way only (W001: LocMem, DEBUG off).
ONE_PROBLEM = {
    "E001": {"NILVA_SESSION": {"EXPIRE_AT": 3600}},
    "E002": {"NILVA_SESSION": {"TOKEN_SIZE": 21}},
    "E003": {"NILVA_SESSION": {"USER_AGENT_CHECK": "sometimes"}},
    "E004": {"NILVA_SESSION": {"CACHE_ALIAS": "sessions"}},
    "E005": {"NILVA_SESSION": {"INVALID_TOKEN_THROTTLE_RATE": "5/fortnight"}},
    "E006": {"NILVA_SESSION": {"TOKEN_PREFIX": "tok:"}},
    "E007": {"NILVA_SESSION": {"REAUTHENTICATION_MAX_AGE": timedelta(0)}},
    "E008": {"NILVA_SESSION": {"MAX_USER_AGENT_LENGTH": "512"}},
    "E009": {"NILVA_SESSION": {"AUTH_HEADER_PREFIX": "Bearer token"}},
    "E010": {"NILVA_SESSION": {"ABSOLUTE_LIFETIME": timedelta(days=-1)}},
    "E011": {"NILVA_SESSION": {"SLIDING_EXPIRY": True}},
    "E012": {"NILVA_SESSION": {"MAX_SESSIONS_PER_USER": True}},
    "E013": {"NILVA_SESSION": {"TRUSTED_PROXY_COUNT": 1, "TRUSTED_PROXIES": ["10.0.0.0/8"]}},
    "E014": {"NILVA_SESSION": {"JWT_AUTHENTICATION_CLASS": "builtins.dict"}},
    "E015": {"NILVA_SESSION": {"IDLE_TIMEOUT": timedelta(seconds=60)}},
    "E016": {"NILVA_SESSION": {"REDIS": "http://127.0.0.1:6379/0"}},
    "E017": {"NILVA_SESSION": {"REFRESH_REUSE_GRACE": timedelta(seconds=-5)}},
    "E018": {"NILVA_SESSION": {"NEW_DEVICE_RULE": "cookie"}},
    "E019": {"NILVA_SESSION": {"NEW_DEVICE_EMAIL": True, "EVENT_HISTORY": False}},
    "W001": {"DEBUG": False, "CACHES": {"default": {"BACKEND": LOCMEM}}},
    "W004": {
        "NILVA_SESSION": {
            "REDIS": {"URL": "redis://127.0.0.1:6379/0", "OPTIONS": {"socket_timeout": 0.1}}
        }
    },
    "W002": {"NILVA_SESSION": {"EXPIRES_AT": timedelta(days=1)}},
    "W005": {"DATABASES": {"default": {**settings.DATABASES["default"], "ATOMIC_REQUESTS": True}}},
    "W006": {"CHANNEL_LAYERS": {"websockets": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}},
    "W003": {
        "REST_FRAMEWORK": {
            "DEFAULT_AUTHENTICATION_CLASSES": ["tests.test_checks.OwnJwtAuthentication"]
        }
    },
}


def test_every_catalogue_id_has_a_configuration_below():
    assert sorted(ONE_PROBLEM) == sorted(checks.CHECKS)


@pytest.mark.parametrize("check_id", sorted(ONE_PROBLEM))
def test_each_id_names_one_problem_and_run_checks_reports_it(check_id):
    with override_settings(**ONE_PROBLEM[check_id]):
        messages = [m for m in run_checks() if (m.id or "").startswith("nilva_session.")]
    ids = {m.id for m in messages} - ({"nilva_session.W001"} if check_id != "W001" else set())
    assert ids == {f"nilva_session.{check_id}"}
    (message,) = [m for m in messages if m.id == f"nilva_session.{check_id}"]
    assert message.msg.endswith(f"{checks.CHECKS[check_id][0]}.")
    assert isinstance(message, Error if check_id.startswith("E") else Warning)


def test_catalogue_ids_are_unique_in_the_source():
    # A repeated key in a dict literal would silently replace the first problem.
    tree = ast.parse(Path(checks.__file__).read_text())
    (catalogue,) = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "CHECKS"
    ]
    keys = [key.value for key in catalogue.keys]
    assert len(keys) == len(set(keys)) == len(checks.CHECKS)


def test_every_declared_check_id_is_in_the_catalogue():
    declared = {s.check_id for s in conf.SETTINGS if s.check_id}
    assert declared <= set(checks.CHECKS)


def test_the_readme_check_table_is_the_catalogue():
    section = README.read_text().split("| id | when |", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^\| `nilva_session\.([EW]\d{3})` \|", section, re.MULTILINE)
    assert sorted(listed) == sorted(checks.CHECKS)
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize(
    ("name", "check_id"),
    [("check_token_size", "E002"), ("check_session_limit", "E012")],
)
def test_per_concern_names_report_only_their_ids(name, check_id):
    with override_settings(NILVA_SESSION={"TOKEN_SIZE": 8, "MAX_SESSIONS_PER_USER": 0}):
        assert [m.id for m in getattr(checks, name)()] == [f"nilva_session.{check_id}"]


def test_the_native_store_needs_redis_py_5_1(monkeypatch):
    import redis

    monkeypatch.setattr(redis, "__version__", "5.0.8")
    with override_settings(NILVA_SESSION={"REDIS": "redis://127.0.0.1:6379/0"}):
        ids = [m.id for m in run_checks() if (m.id or "").startswith("nilva_session.E")]
    assert ids == ["nilva_session.E016"]


def test_the_native_store_check_never_shows_the_url():
    with override_settings(NILVA_SESSION={"REDIS": "http://user:s3cret@127.0.0.1:6379/0"}):
        messages = [m for m in run_checks() if m.id == "nilva_session.E016"]
    assert len(messages) == 1
    assert "s3cret" not in messages[0].msg
    assert "s3cret" not in (messages[0].hint or "")


def test_w005_is_silent_with_nilva_sessions_exception_handler():
    atomic = {"default": {**settings.DATABASES["default"], "ATOMIC_REQUESTS": True}}
    handler = {
        **settings.REST_FRAMEWORK,
        "EXCEPTION_HANDLER": "nilva_session.apis.exception_handler",
    }
    with override_settings(DATABASES=atomic, REST_FRAMEWORK=handler):
        assert "nilva_session.W005" not in {m.id for m in run_checks()}
    with override_settings(DATABASES=atomic):
        assert "nilva_session.W005" in {m.id for m in run_checks()}


def test_w006_is_quiet_without_channel_layers_or_with_the_setting_off(settings):
    settings.CHANNEL_LAYERS = {"websockets": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with nilva_settings(CHANNEL_LAYER="websockets"):
        assert not checks.check_channel_layer()
    with nilva_settings(CHANNEL_LAYER=None):
        assert not checks.check_channel_layer()
    del settings.CHANNEL_LAYERS
    assert not checks.check_channel_layer()
