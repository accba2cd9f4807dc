"""Settings: read at call time, legacy ``USER_SESSION`` honoured, durations in seconds."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.test import override_settings

from nilva_session import conf
from nilva_session.conf import DEFAULTS, session_settings

LEGACY_VALUES = {
    "TOKEN_SIZE": 30,
    "EXPIRE_AT": timedelta(hours=3),
    "SESSION_CACHE_PREFIX": "legacy_session:",
    "SESSION_ID_CACHE_PREFIX": "legacy_session_by_id:",
    "SESSION_CACHE_TTL": timedelta(minutes=7),
    "SESSION_ID_CLAIM": "sid",
}


def test_defaults_apply_when_nothing_is_configured():
    with override_settings(NILVA_SESSION={}, USER_SESSION={}):
        assert session_settings.TOKEN_SIZE == 43
        assert session_settings.TOKEN_PREFIX == "nvs_"
        assert timedelta(days=1) == session_settings.EXPIRE_AT
        assert session_settings.USER_AGENT_CHECK == "family"
        assert session_settings.CACHE_ALIAS == "default"


def test_project_settings_override_defaults():
    # tests/settings.py sets LOGIN_THROTTLE_RATE to None; the default is "5/min".
    assert session_settings.LOGIN_THROTTLE_RATE is None
    assert DEFAULTS["LOGIN_THROTTLE_RATE"] == "5/min"


def test_override_settings_changes_values_without_reload():
    assert session_settings.TOKEN_SIZE == 43
    with override_settings(NILVA_SESSION={"TOKEN_SIZE": 50}):
        assert session_settings.TOKEN_SIZE == 50
    assert session_settings.TOKEN_SIZE == 43


def test_nested_overrides_are_followed_in_both_directions():
    with override_settings(NILVA_SESSION={"USER_AGENT_CHECK": "strict"}):
        assert session_settings.USER_AGENT_CHECK == "strict"
        with override_settings(NILVA_SESSION={"USER_AGENT_CHECK": "off"}):
            assert session_settings.USER_AGENT_CHECK == "off"
        assert session_settings.USER_AGENT_CHECK == "strict"
    assert session_settings.USER_AGENT_CHECK == "family"


def test_pytest_django_settings_fixture_is_followed(settings):
    settings.NILVA_SESSION = {"TOKEN_PREFIX": "abc_"}
    assert session_settings.TOKEN_PREFIX == "abc_"


def test_changing_caches_reloads_settings_too():
    assert session_settings.TOKEN_SIZE  # builds the merged dict
    with override_settings(
        CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    ):
        assert session_settings._merged is None


@pytest.mark.parametrize(("name", "value"), sorted(LEGACY_VALUES.items()))
def test_legacy_user_session_keys_are_honoured(name, value):
    with override_settings(USER_SESSION={name: value}, NILVA_SESSION={}):
        assert getattr(session_settings, name) == value


def test_legacy_user_session_dict_with_all_keys():
    with override_settings(USER_SESSION=dict(LEGACY_VALUES), NILVA_SESSION={}):
        for name, value in LEGACY_VALUES.items():
            assert getattr(session_settings, name) == value


def test_legacy_cache_ttl_in_seconds_as_0_1_x_wrote_it():
    with override_settings(USER_SESSION={"SESSION_CACHE_TTL": 60 * 60}, NILVA_SESSION={}):
        assert timedelta(hours=1) == session_settings.SESSION_CACHE_TTL


def test_nilva_session_wins_over_legacy_dict():
    with override_settings(
        USER_SESSION={"TOKEN_SIZE": 30, "SESSION_ID_CLAIM": "sid"},
        NILVA_SESSION={"TOKEN_SIZE": 64},
    ):
        assert session_settings.TOKEN_SIZE == 64
        # A key only the legacy dict sets still applies.
        assert session_settings.SESSION_ID_CLAIM == "sid"


def test_legacy_dict_change_alone_reloads():
    assert session_settings.SESSION_ID_CLAIM == "session_id"
    with override_settings(USER_SESSION={"SESSION_ID_CLAIM": "legacy"}):
        assert session_settings.SESSION_ID_CLAIM == "legacy"
    assert session_settings.SESSION_ID_CLAIM == "session_id"


def test_non_dict_settings_are_ignored():
    with override_settings(USER_SESSION="nonsense", NILVA_SESSION=None):
        assert DEFAULTS["TOKEN_SIZE"] == session_settings.TOKEN_SIZE


@pytest.mark.parametrize("name", conf.DURATION_SETTINGS)
def test_durations_may_be_given_in_seconds(name):
    with override_settings(NILVA_SESSION={name: 90}):
        assert getattr(session_settings, name) == timedelta(seconds=90)


def test_durations_accept_float_seconds():
    with override_settings(NILVA_SESSION={"TOMBSTONE_TTL": 1.5}):
        assert timedelta(seconds=1.5) == session_settings.TOMBSTONE_TTL


def test_durations_given_as_timedelta_are_kept():
    with override_settings(NILVA_SESSION={"REVOKED_RETENTION": timedelta(days=3)}):
        assert timedelta(days=3) == session_settings.REVOKED_RETENTION


def test_boolean_duration_is_not_taken_for_seconds():
    # True is an int in Python; it must stay invalid (the checks report it) rather than 1 s.
    with override_settings(NILVA_SESSION={"TOMBSTONE_TTL": True}):
        assert session_settings.TOMBSTONE_TTL is True


def test_seconds_helper_returns_whole_seconds_at_least_one():
    with override_settings(NILVA_SESSION={"SESSION_CACHE_TTL": timedelta(minutes=2)}):
        assert session_settings.seconds("SESSION_CACHE_TTL") == 120
    with override_settings(NILVA_SESSION={"TOMBSTONE_TTL": 0.2}):
        assert session_settings.seconds("TOMBSTONE_TTL") == 1


def test_expire_at_none_means_no_expiry():
    with override_settings(NILVA_SESSION={"EXPIRE_AT": None}):
        assert session_settings.EXPIRE_AT is None


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="NOT_A_SETTING"):
        session_settings.NOT_A_SETTING  # noqa: B018


def test_unknown_key_in_dict_is_not_exposed():
    with override_settings(NILVA_SESSION={"TYPO_SETTING": 1}):
        with pytest.raises(AttributeError):
            session_settings.TYPO_SETTING  # noqa: B018
        assert "TYPO_SETTING" in session_settings.user_values()


def test_user_values_lists_only_what_the_project_set():
    with override_settings(USER_SESSION={"TOKEN_SIZE": 30}, NILVA_SESSION={"TOKEN_PREFIX": "x_"}):
        assert session_settings.user_values() == {"TOKEN_SIZE": 30, "TOKEN_PREFIX": "x_"}


# --- each setting declared once ------------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_table(header: str) -> list[list[str]]:
    section = README.read_text().split(header, 1)[1].split("\n\n", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def test_every_setting_is_declared_once_with_a_meaning_and_a_validator():
    names = [setting.name for setting in conf.SETTINGS]
    assert len(names) == len(set(names))
    assert list(conf.DEFAULTS) == names
    for setting in conf.SETTINGS:
        assert setting.doc.strip(), setting.name
        assert callable(setting.valid), setting.name
        assert setting.valid(setting.default), f"{setting.name}'s default is not valid"


def test_the_readme_settings_table_is_the_declarations():
    rows = readme_table("| setting | default | meaning |")
    assert [(r[0].strip("`"), r[1].strip("`"), r[2]) for r in rows] == conf.settings_reference()


def test_the_readme_names_the_legacy_keys():
    sentence = README.read_text().split("The 0.1.x dict `USER_SESSION` and its keys (", 1)[1]
    named = tuple(key.strip("` \n") for key in sentence.split(")", 1)[0].split(","))
    assert named == conf.LEGACY_KEYS == tuple(LEGACY_VALUES)


def test_duration_lists_follow_the_validators():
    assert conf.DURATION_SETTINGS == (
        "SESSION_CACHE_TTL",
        "TOMBSTONE_TTL",
        "LOCAL_CACHE_LEASE",
        "LAST_ONLINE_UPDATE_INTERVAL",
        "REVOKED_RETENTION",
        "REAUTHENTICATION_MAX_AGE",
        "REFRESH_REUSE_GRACE",
        "EVENT_RETENTION",
        "NEW_DEVICE_MEMORY",
        "NOT_ME_LINK_MAX_AGE",
    )
    assert conf.OPTIONAL_DURATION_SETTINGS == ("IDLE_TIMEOUT", "ABSOLUTE_LIFETIME")


@pytest.mark.parametrize("name", conf.OPTIONAL_DURATION_SETTINGS)
def test_optional_durations_may_be_given_in_seconds_or_none(name):
    with override_settings(NILVA_SESSION={name: 90}):
        assert getattr(session_settings, name) == timedelta(seconds=90)
    with override_settings(NILVA_SESSION={name: None}):
        assert getattr(session_settings, name) is None
