"""The ``UserSession`` model, its QuerySet and its cache helpers."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, models
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from nilva_session import cache, clients, sessions, utils
from nilva_session.models import EndReason, UserSession
from tests.conftest import DESKTOP_UA, IPHONE_UA, FakeRequest

IPAD_UA = (
    "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
ANDROID_PHONE_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"
)
ANDROID_TABLET_UA = (
    "Mozilla/5.0 (Linux; Android 12; SM-T870) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
UA_DATA_KEYS = {
    "os",
    "device_brand",
    "device_model",
    "device_family",
    "browser",
    "is_mobile",
    "is_tablet",
}


def make_session(user, **fields):
    fields.setdefault("key", utils.hash_data(utils.token_generator()))
    fields.setdefault("user_agent", DESKTOP_UA)
    fields.setdefault("last_ip", "203.0.113.7")
    return UserSession.objects.create(user=user, **fields)


def field(name):
    return UserSession._meta.get_field(name)


# --- Meta and fields ------------------------------------------------------------------------------


def test_table_name_is_user_session():
    assert UserSession._meta.db_table == "user_session"
    assert UserSession._meta.app_label == "nilva_session"


def test_verbose_names():
    assert str(UserSession._meta.verbose_name) == "user session"
    assert str(UserSession._meta.verbose_name_plural) == "user sessions"


def test_id_is_a_uuid_primary_key():
    id_field = field("id")
    assert isinstance(id_field, models.UUIDField)
    assert id_field.primary_key
    assert id_field.default is uuid.uuid4
    assert not id_field.editable


def test_user_is_a_cascading_fk_with_related_name_sessions():
    user_field = field("user")
    assert isinstance(user_field, models.ForeignKey)
    assert user_field.related_model is get_user_model()
    assert user_field.remote_field.related_name == "sessions"
    assert user_field.remote_field.on_delete is models.CASCADE
    assert user_field.remote_field.model._meta.label == settings.AUTH_USER_MODEL


def test_key_is_a_unique_64_char_column_defaulting_to_a_digest():
    key_field = field("key")
    assert isinstance(key_field, models.CharField)
    assert key_field.max_length == 64
    assert key_field.unique
    default = key_field.get_default()
    assert len(default) == 64
    assert set(default) <= set("0123456789abcdef")
    assert key_field.get_default() != default


def test_expire_at_is_nullable_and_defaults_to_the_configured_lifetime():
    expire_field = field("expire_at")
    assert isinstance(expire_field, models.DateTimeField)
    assert expire_field.null
    assert expire_field.blank
    default = expire_field.get_default()
    assert timezone.is_aware(default)
    assert abs(default - (timezone.now() + timedelta(days=1))) < timedelta(seconds=5)


def test_remaining_0_1_x_fields():
    assert isinstance(field("is_active"), models.BooleanField)
    assert field("is_active").default is True
    assert isinstance(field("last_online"), models.DateTimeField)
    assert field("last_online").auto_now
    assert isinstance(field("created_at"), models.DateTimeField)
    assert field("created_at").auto_now_add
    last_ip = field("last_ip")
    assert isinstance(last_ip, models.GenericIPAddressField)
    assert last_ip.unpack_ipv4
    assert last_ip.null
    assert isinstance(field("user_agent"), models.TextField)
    assert field("user_agent").default == ""
    assert isinstance(field("detail"), models.TextField)
    assert field("detail").null


def test_audit_fields():
    assert field("authenticated_at").null
    assert field("ended_at").null
    end_reason = field("end_reason")
    assert end_reason.default == ""
    assert {value for value, _ in end_reason.choices} == set(EndReason.values)
    assert max(len(v) for v in EndReason.values) <= end_reason.max_length


def test_indexes():
    names = {index.name for index in UserSession._meta.indexes}
    assert names == {
        "user_session_user_active",
        "user_session_expire_at",
        "user_session_ended_at",
    }


@pytest.mark.django_db
def test_created_session_without_request_data_is_valid(user):
    session = UserSession.objects.create(user=user)
    session.refresh_from_db()
    assert session.user_agent == ""
    assert session.last_ip is None
    assert session.is_active
    assert len(session.key) == 64
    assert user.sessions.get() == session


@pytest.mark.django_db
def test_ipv4_mapped_address_is_stored_unpacked(user):
    session = make_session(user, last_ip="::ffff:203.0.113.9")
    session.full_clean()
    assert session.last_ip == "203.0.113.9"


@pytest.mark.django_db
def test_str_shows_no_key(user):
    session = make_session(user)
    text = str(session)
    assert session.key not in text
    assert str(session.id) in text
    assert "Chrome" in text


# --- is_expired -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_is_expired_true_after_expiry_without_queries(user, django_assert_num_queries):
    session = make_session(user, expire_at=timezone.now() - timedelta(seconds=1))
    with django_assert_num_queries(0):
        assert session.is_expired is True


@pytest.mark.django_db
def test_is_expired_false_before_expiry_without_queries(user, django_assert_num_queries):
    session = make_session(user, expire_at=timezone.now() + timedelta(hours=1))
    with django_assert_num_queries(0):
        assert session.is_expired is False


@pytest.mark.django_db
def test_session_without_expiry_never_expires(user, django_assert_num_queries):
    session = make_session(user, expire_at=None)
    with django_assert_num_queries(0):
        assert session.is_expired is False
        assert session.is_expired_at(timezone.now() + timedelta(days=365 * 100)) is False


@pytest.mark.django_db
def test_is_expired_writes_nothing(user):
    session = make_session(user, expire_at=timezone.now() - timedelta(days=1))
    before = UserSession.objects.values_list("last_online", "is_active").get(pk=session.pk)
    assert session.is_expired
    assert UserSession.objects.values_list("last_online", "is_active").get(pk=session.pk) == before


@pytest.mark.django_db
def test_is_expired_accepts_an_explicit_now(user):
    expire_at = timezone.now() + timedelta(hours=1)
    session = make_session(user, expire_at=expire_at)
    assert not session.is_expired_at(expire_at - timedelta(microseconds=1))
    assert session.is_expired_at(expire_at)
    assert session.is_expired_at(expire_at + timedelta(seconds=1))


def test_is_expired_compares_aware_datetimes_across_time_zones():
    from zoneinfo import ZoneInfo

    expire_at = timezone.now() + timedelta(minutes=30)
    session = UserSession(expire_at=expire_at.astimezone(ZoneInfo("Asia/Tehran")))
    assert not session.is_expired
    assert session.is_expired_at(
        expire_at.astimezone(ZoneInfo("America/New_York")) + timedelta(minutes=1)
    )


@pytest.mark.django_db
def test_is_expired_and_user_agent_data_read_as_attributes_as_in_0_1_x(user):
    """Code written for nilva-session 0.1.x: both are properties there."""
    live = make_session(user, expire_at=timezone.now() + timedelta(hours=1), user_agent=DESKTOP_UA)
    ended = make_session(user, expire_at=timezone.now() - timedelta(seconds=1))
    if live.is_expired:
        pytest.fail("a live session reads as expired")
    assert ended.is_expired
    assert live.is_expired == False  # noqa: E712 (0.1.x code compares)
    assert live.user_agent_data["os"] == "Windows"
    assert "browser" in live.user_agent_data
    assert isinstance(type(live).__dict__["is_expired"], property)
    assert isinstance(type(live).__dict__["user_agent_data"], property)


def test_is_expired_on_unsaved_instance_is_pure():
    assert UserSession(expire_at=None).is_expired is False
    assert UserSession(expire_at=timezone.now() - timedelta(seconds=1)).is_expired is True


# --- user_agent_data ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (
            DESKTOP_UA,
            {"os": "Windows", "browser": "Chrome", "is_mobile": False, "is_tablet": False},
        ),
        (
            IPHONE_UA,
            {
                "os": "iOS",
                "device_brand": "Apple",
                "device_family": "iPhone",
                "is_mobile": True,
                "is_tablet": False,
            },
        ),
        (
            IPAD_UA,
            {
                "os": "iOS",
                "device_brand": "Apple",
                "device_family": "iPad",
                "is_mobile": False,
                "is_tablet": True,
            },
        ),
        (
            ANDROID_PHONE_UA,
            {
                "os": "Android",
                "device_model": "Pixel 8",
                "browser": "Chrome Mobile",
                "is_mobile": True,
                "is_tablet": False,
            },
        ),
        (ANDROID_TABLET_UA, {"os": "Android", "is_mobile": False, "is_tablet": True}),
        (
            "",
            {
                "os": "Other",
                "browser": "Other",
                "device_family": "Other",
                "is_mobile": False,
                "is_tablet": False,
            },
        ),
    ],
    ids=["desktop", "iphone", "ipad", "android-phone", "android-tablet", "empty"],
)
def test_user_agent_data(ua, expected):
    data = UserSession(user_agent=ua).user_agent_data
    assert set(data) >= UA_DATA_KEYS
    assert {k: data[k] for k in expected} == expected
    assert isinstance(data["is_mobile"], bool)
    assert isinstance(data["is_tablet"], bool)


def test_user_agent_data_is_a_fresh_dict():
    session = UserSession(user_agent=DESKTOP_UA)
    session.user_agent_data["os"] = "tampered"
    assert session.user_agent_data["os"] == "Windows"


@pytest.mark.django_db
def test_listing_many_sessions_parses_each_distinct_user_agent_once(
    user, django_assert_num_queries
):
    agents = [DESKTOP_UA + " list-test", IPHONE_UA + " list-test", ANDROID_PHONE_UA + " list-test"]
    UserSession.objects.bulk_create(
        UserSession(
            user=user, key=utils.hash_data(utils.token_generator()), user_agent=agents[i % 3]
        )
        for i in range(100)
    )
    clients._parse.cache_clear()
    clients._describe.cache_clear()
    with django_assert_num_queries(1):
        data = [s.user_agent_data for s in UserSession.objects.for_user(user)]
    assert len(data) == 100
    assert clients._parse.cache_info().misses == 3
    assert clients._describe.cache_info().misses == 3
    assert clients._describe.cache_info().hits == 97


# --- QuerySet -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_active_keeps_only_active_unexpired_sessions(user):
    now = timezone.now()
    live = make_session(user, expire_at=now + timedelta(hours=1))
    forever = make_session(user, expire_at=None)
    make_session(user, expire_at=now - timedelta(seconds=1))
    make_session(user, is_active=False, expire_at=now + timedelta(hours=1))
    make_session(user, is_active=False, expire_at=None)
    assert set(UserSession.objects.active()) == {live, forever}


@pytest.mark.django_db
def test_active_accepts_a_reference_time(user):
    now = timezone.now()
    soon = make_session(user, expire_at=now + timedelta(minutes=5))
    later = make_session(user, expire_at=now + timedelta(hours=5))
    assert set(UserSession.objects.active(now + timedelta(hours=1))) == {later}
    assert set(UserSession.objects.active(now)) == {soon, later}


@pytest.mark.django_db
def test_for_user_accepts_instance_or_pk(user, other_user):
    mine = make_session(user)
    make_session(other_user)
    assert list(UserSession.objects.for_user(user)) == [mine]
    assert list(UserSession.objects.for_user(user.pk)) == [mine]


@pytest.mark.django_db
def test_for_user_and_active_chain(user, other_user):
    mine = make_session(user)
    make_session(user, is_active=False)
    make_session(other_user)
    assert list(UserSession.objects.for_user(user).active()) == [mine]
    assert list(UserSession.objects.active().for_user(user)) == [mine]


@pytest.mark.django_db
def test_revoke_ends_active_sessions_with_reason(user):
    first, second = make_session(user), make_session(user)
    before = timezone.now()
    ended = UserSession.objects.for_user(user).revoke(EndReason.LOGOUT_ALL)
    assert ended == 2
    for session in (first, second):
        session.refresh_from_db()
        assert not session.is_active
        assert session.end_reason == "logout_all"
        assert session.ended_at >= before
        assert session.detail == "Signed out everywhere"


@pytest.mark.django_db
def test_revoke_leaves_ended_sessions_alone(user):
    old = make_session(user, is_active=False, end_reason=EndReason.LOGOUT, detail="old")
    live = make_session(user)
    assert UserSession.objects.for_user(user).revoke(EndReason.ADMIN) == 1
    old.refresh_from_db()
    live.refresh_from_db()
    assert (old.end_reason, old.detail, old.ended_at) == ("logout", "old", None)
    assert live.end_reason == "admin"


@pytest.mark.django_db
def test_revoke_of_nothing_returns_zero(user):
    assert UserSession.objects.for_user(user).revoke("admin") == 0


@pytest.mark.django_db
def test_revoke_touches_only_the_queryset(user, other_user):
    mine, theirs = make_session(user), make_session(other_user)
    UserSession.objects.for_user(user).revoke()
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert not mine.is_active
    assert mine.end_reason == EndReason.REVOKED
    assert theirs.is_active
    assert theirs.end_reason == ""


@pytest.mark.django_db
def test_revoke_with_custom_detail(user):
    session = make_session(user)
    UserSession.objects.filter(pk=session.pk).revoke(
        EndReason.PASSWORD_CHANGED, detail="reset by support"
    )
    session.refresh_from_db()
    assert session.detail == "reset by support"


@pytest.mark.django_db
def test_instance_revoke_returns_whether_it_was_active(user):
    session = make_session(user)
    assert session.revoke(EndReason.LOGOUT) is True
    assert session.revoke(EndReason.LOGOUT) is False


@pytest.mark.django_db
def test_queryset_revoke_refuses_a_warm_cached_token(token_client):
    client, session, _ = token_client
    assert client.get("/api/whoami/").status_code == 200
    assert client.get("/api/whoami/").status_code == 200  # served from the cache
    UserSession.objects.filter(pk=session.pk).revoke(EndReason.LOGOUT)
    assert client.get("/api/whoami/").status_code == 401


@pytest.mark.django_db
def test_queryset_delete_refuses_a_warm_cached_token(token_client):
    client, session, _ = token_client
    assert client.get("/api/whoami/").status_code == 200
    UserSession.objects.filter(pk=session.pk).delete()
    assert client.get("/api/whoami/").status_code == 401


@pytest.mark.django_db
def test_instance_delete_refuses_a_warm_cached_token(token_client):
    client, session, _ = token_client
    assert client.get("/api/whoami/").status_code == 200
    session.delete()
    assert not UserSession.objects.filter(pk=session.pk).exists()
    assert client.get("/api/whoami/").status_code == 401


# --- cache helpers --------------------------------------------------------------------------------


def test_get_cache_key_uses_the_digest_and_prefix():
    digest = utils.hash_data("x")
    assert UserSession.get_cache_key(digest) == f"nilva_session:t:{digest}"
    with override_settings(NILVA_SESSION={"SESSION_CACHE_PREFIX": "app:t:"}):
        assert UserSession.get_cache_key(digest) == f"app:t:{digest}"


def test_get_cache_key_honours_the_legacy_prefix():
    with override_settings(
        USER_SESSION={"SESSION_CACHE_PREFIX": "user_session:"}, NILVA_SESSION={}
    ):
        assert UserSession.get_cache_key("abc").startswith("user_session:")


def test_get_cache_key_by_session_id_accepts_uuid_or_string():
    session_id = uuid.uuid4()
    key = UserSession.get_cache_key_by_session_id(session_id)
    assert key.startswith("nilva_session:s:")
    assert session_id.hex in key
    assert UserSession.get_cache_key_by_session_id(str(session_id)) == key
    with override_settings(NILVA_SESSION={"SESSION_ID_CACHE_PREFIX": "app:s:"}):
        assert UserSession.get_cache_key_by_session_id(session_id).startswith("app:s:")


def test_token_and_id_keys_differ():
    session_id = uuid.uuid4()
    assert UserSession.get_cache_key(session_id.hex) != UserSession.get_cache_key_by_session_id(
        session_id
    )


@pytest.mark.django_db
def test_cache_keys_name_the_entries_the_protocol_writes(token_client):
    client, session, token = token_client
    assert client.get("/api/whoami/").status_code == 200
    store = cache.get_store()
    assert store.get(UserSession.get_cache_key(session.key)) is not None
    assert UserSession.get_cache_key(session.key) != UserSession.get_cache_key(token)
    assert store.get(UserSession.get_cache_key(token)) is None


def _queries_for(client):
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/api/whoami/")
    assert response.status_code == 200
    return len(captured.captured_queries)


@pytest.mark.django_db
def test_invalidate_cache_makes_the_next_request_read_the_db(token_client):
    client, session, _ = token_client
    _queries_for(client)  # fills the cache
    assert _queries_for(client) == 0
    UserSession.invalidate_cache(session.key)
    assert cache.get_store().get(UserSession.get_cache_key(session.key)) == cache.TOMBSTONE
    assert _queries_for(client) >= 1


@pytest.mark.django_db
def test_invalidate_cache_of_another_key_leaves_the_session_cached(token_client):
    client, _session, _ = token_client
    _queries_for(client)
    UserSession.invalidate_cache(utils.hash_data("someone else"))
    assert _queries_for(client) == 0


@pytest.mark.django_db
def test_invalidate_cache_by_session_id_makes_the_next_lookup_read_the_db(user, open_session):
    session, _ = open_session(user)
    client = sessions.Client.of(FakeRequest())

    def lookup_queries():
        with CaptureQueriesContext(connection) as captured:
            found_user, found = sessions.authenticate_session_id(session.pk, client)
        assert found.pk == session.pk
        assert found_user.pk == user.pk
        return len(captured.captured_queries)

    lookup_queries()
    assert lookup_queries() == 0
    UserSession.invalidate_cache_by_session_id(session.pk)
    assert (
        cache.get_store().get(UserSession.get_cache_key_by_session_id(session.pk))
        == cache.TOMBSTONE
    )
    assert lookup_queries() >= 1


@pytest.mark.django_db
def test_invalidated_session_is_still_accepted_from_the_db(token_client):
    client, session, _ = token_client
    _queries_for(client)
    UserSession.invalidate_cache(session.key)
    UserSession.invalidate_cache_by_session_id(session.pk)
    # Invalidating is not ending: the session stays valid, only re-read.
    assert client.get("/api/whoami/").json()["session_id"] == str(session.pk)
