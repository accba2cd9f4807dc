"""The admin: read-only listing, no raw token or full digest shown, ending through revoke."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from nilva_session.admin import UserSessionAdmin
from nilva_session.models import EndReason, UserSession
from tests.conftest import IPHONE_UA

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:nilva_session_usersession_changelist")
ADD = reverse("admin:nilva_session_usersession_add")


def change_url(session):
    return reverse("admin:nilva_session_usersession_change", args=[session.pk])


def delete_url(session):
    return reverse("admin:nilva_session_usersession_delete", args=[session.pk])


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def admin_client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def staff_client(*codenames):
    staff = get_user_model().objects.create_user(
        f"staff-{'-'.join(codenames) or 'none'}", password="pw", is_staff=True
    )
    staff.user_permissions.set(
        Permission.objects.filter(content_type__app_label="nilva_session", codename__in=codenames)
    )
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def sessions_present(user, other_user, open_session):
    """Three sessions: alice on desktop, alice on iPhone (ended by admin), bob (expired)."""
    desktop, desktop_token = open_session(user, ip="203.0.113.7")
    phone, phone_token = open_session(user, ua=IPHONE_UA, ip="198.51.100.23")
    phone.revoke(EndReason.ADMIN)
    expired, expired_token = open_session(
        other_user, ip="192.0.2.99", expire_at=timezone.now() - timedelta(hours=1)
    )
    return {
        "desktop": desktop,
        "phone": phone,
        "expired": expired,
        "tokens": [desktop_token, phone_token, expired_token],
    }


def listed(response):
    assert response.status_code == 200
    return {session.pk for session in response.context["cl"].result_list}


def action_names(response):
    form = response.context.get("action_form")
    if form is None:
        return set()
    return {value for value, _ in form.fields["action"].choices if value}


# --- changelist -----------------------------------------------------------------------------------


def test_admin_class_is_registered_for_the_model():
    assert isinstance(site._registry[UserSession], UserSessionAdmin)


def test_changelist_loads_with_sessions(admin_client, sessions_present):
    response = admin_client.get(CHANGELIST)
    assert listed(response) == {s.pk for k, s in sessions_present.items() if k != "tokens"}


def test_changelist_shows_browser_and_os_summary(admin_client, sessions_present):
    content = admin_client.get(CHANGELIST).content.decode()
    assert "Chrome 120 on Windows" in content
    assert "Mobile Safari 17 on iOS (iPhone)" in content


def test_changelist_query_count_does_not_grow_with_rows(
    admin_client, user, open_session, django_assert_max_num_queries
):
    for _ in range(30):
        open_session(user)
    with django_assert_max_num_queries(15):
        assert admin_client.get(CHANGELIST).status_code == 200


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("is_active__exact=1", {"desktop", "expired"}),
        ("is_active__exact=0", {"phone"}),
        ("expired=yes", {"expired"}),
        ("expired=no", {"desktop", "phone"}),
        ("end_reason__exact=admin", {"phone"}),
        ("end_reason__exact=logout", set()),
    ],
)
def test_filters(admin_client, sessions_present, query, expected):
    response = admin_client.get(f"{CHANGELIST}?{query}")
    assert listed(response) == {sessions_present[name].pk for name in expected}


def test_expired_filter_no_includes_sessions_without_expiry(admin_client, user, open_session):
    session, _ = open_session(user)
    UserSession.objects.filter(pk=session.pk).update(expire_at=None)
    assert listed(admin_client.get(f"{CHANGELIST}?expired=no")) == {session.pk}
    assert listed(admin_client.get(f"{CHANGELIST}?expired=yes")) == set()


def test_expired_filter_is_the_rule_authentication_applies(admin_client, user, open_session):
    """Idle past IDLE_TIMEOUT or past ABSOLUTE_LIFETIME counts as expired, as on a request."""
    live, _ = open_session(user)
    idle, _ = open_session(user)
    capped, _ = open_session(user)
    at_expiry, _ = open_session(user)
    now = timezone.now()
    UserSession.objects.filter(pk=idle.pk).update(last_online=now - timedelta(minutes=11))
    UserSession.objects.filter(pk=capped.pk).update(created_at=now - timedelta(days=3))
    UserSession.objects.filter(pk=at_expiry.pk).update(expire_at=now)
    options = {"IDLE_TIMEOUT": timedelta(minutes=10), "ABSOLUTE_LIFETIME": timedelta(days=2)}
    with override_settings(NILVA_SESSION=options):
        assert listed(admin_client.get(f"{CHANGELIST}?expired=yes")) == {
            idle.pk,
            capped.pk,
            at_expiry.pk,
        }
        assert listed(admin_client.get(f"{CHANGELIST}?expired=no")) == {live.pk}


def test_search_by_username(admin_client, sessions_present):
    response = admin_client.get(CHANGELIST, {"q": "bob"})
    assert listed(response) == {sessions_present["expired"].pk}


def test_search_by_ip(admin_client, sessions_present):
    response = admin_client.get(CHANGELIST, {"q": "198.51.100.23"})
    assert listed(response) == {sessions_present["phone"].pk}


@pytest.mark.parametrize(
    "term",
    [
        "%",
        "_",
        "' OR 1=1 --",
        '"unterminated',
        "\\",
        "<script>alert(1)</script>",
        "::ffff:",
        "ü" * 50,
        "x" * 5000,
    ],
)
def test_garbage_search_does_not_fail(admin_client, sessions_present, term):
    # LIKE wildcards are escaped, quotes are data: nothing matches, nothing fails.
    assert listed(admin_client.get(CHANGELIST, {"q": term})) == set()


@pytest.mark.parametrize(
    "query",
    [
        "expired=maybe",
        "end_reason__exact=nonsense",
        "is_active__exact=maybe",
        "created_at__year=abc",
        "o=abc",
    ],
)
def test_bad_filter_values_do_not_fail(admin_client, sessions_present, query):
    assert admin_client.get(f"{CHANGELIST}?{query}").status_code in (200, 302)


def test_search_by_raw_token_finds_nothing(admin_client, sessions_present):
    token = sessions_present["tokens"][0]
    assert listed(admin_client.get(CHANGELIST, {"q": token})) == set()


def test_changelist_is_refused_to_a_non_staff_user(user, sessions_present):
    client = Client()
    client.force_login(user)
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


# --- no add, no delete, read-only change view -----------------------------------------------------


def test_add_is_forbidden(admin_client):
    assert admin_client.get(ADD).status_code == 403
    assert admin_client.post(ADD, {"user": 1}).status_code == 403


def test_no_add_link_on_changelist(admin_client, sessions_present):
    assert ADD not in admin_client.get(CHANGELIST).content.decode()


def test_delete_is_forbidden(admin_client, sessions_present):
    session = sessions_present["desktop"]
    assert admin_client.post(delete_url(session), {"post": "yes"}).status_code == 403
    assert UserSession.objects.filter(pk=session.pk).exists()


def test_bulk_delete_action_is_not_offered(admin_client, sessions_present):
    names = action_names(admin_client.get(CHANGELIST))
    assert "delete_selected" not in names
    assert names == {"end_sessions"}


def test_change_view_is_read_only(admin_client, sessions_present):
    session = sessions_present["desktop"]
    response = admin_client.get(change_url(session))
    assert response.status_code == 200
    content = response.content.decode()
    assert 'name="_save"' not in content
    for name in ("is_active", "expire_at", "user_agent", "last_ip", "detail", "user", "key"):
        assert f'name="{name}"' not in content
    assert session.user_agent in content


def test_change_view_post_changes_nothing(admin_client, sessions_present):
    session = sessions_present["desktop"]
    response = admin_client.post(
        change_url(session),
        {"is_active": "", "detail": "hacked", "user_agent": "x", "_save": "Save"},
    )
    assert response.status_code == 403
    session.refresh_from_db()
    assert session.is_active
    assert session.detail is None


def test_change_view_shows_a_truncated_digest(admin_client, sessions_present):
    session = sessions_present["desktop"]
    content = admin_client.get(change_url(session)).content.decode()
    assert f"{session.key[:8]}…" in content
    assert session.key not in content
    assert session.key[:9] not in content


def test_no_full_digest_or_raw_token_anywhere(admin_client, sessions_present):
    pages = [CHANGELIST, f"{CHANGELIST}?is_active__exact=0", f"{CHANGELIST}?expired=yes"]
    for name in ("desktop", "phone", "expired"):
        session = sessions_present[name]
        pages += [
            change_url(session),
            reverse("admin:nilva_session_usersession_history", args=[session.pk]),
        ]
    digests = [
        UserSession.objects.get(pk=sessions_present[n].pk).key
        for n in ("desktop", "phone", "expired")
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        content = response.content.decode()
        for secret in digests + sessions_present["tokens"]:
            assert secret not in content, page
        for token in sessions_present["tokens"]:
            assert token[4:20] not in content, page


# --- the action -----------------------------------------------------------------------------------


def end_selected(client, *sessions):
    return client.post(
        CHANGELIST,
        {"action": "end_sessions", "index": 0, "_selected_action": [str(s.pk) for s in sessions]},
        follow=True,
    )


def test_end_action_ends_selected_sessions_with_reason_admin(admin_client, user, open_session):
    first, _ = open_session(user)
    second, _ = open_session(user)
    untouched, _ = open_session(user)
    response = end_selected(admin_client, first, second)
    assert response.status_code == 200
    assert "Ended 2 sessions." in response.content.decode()
    for session in (first, second):
        session.refresh_from_db()
        assert not session.is_active
        assert session.end_reason == EndReason.ADMIN
        assert session.ended_at is not None
    untouched.refresh_from_db()
    assert untouched.is_active


def test_end_action_counts_only_active_sessions(admin_client, sessions_present):
    response = end_selected(admin_client, sessions_present["desktop"], sessions_present["phone"])
    assert "Ended 1 session." in response.content.decode()


def test_end_action_refuses_a_warm_cached_token(admin_client, token_client):
    client, session, _ = token_client
    assert client.get("/api/whoami/").status_code == 200
    assert client.get("/api/whoami/").status_code == 200  # now from the cache
    end_selected(admin_client, session)
    assert client.get("/api/whoami/").status_code == 401


def test_end_action_goes_through_revoke(admin_client, user, open_session, monkeypatch):
    from nilva_session import sessions as sessions_module

    calls = []
    real_revoke = sessions_module.revoke

    def spy(queryset, reason=EndReason.REVOKED, detail=None):
        calls.append(reason)
        return real_revoke(queryset, reason, detail)

    monkeypatch.setattr(sessions_module, "revoke", spy)
    session, _ = open_session(user)
    end_selected(admin_client, session)
    assert calls == [EndReason.ADMIN]


def test_view_only_staff_sees_sessions_but_not_the_action(sessions_present):
    client = staff_client("view_usersession")
    response = client.get(CHANGELIST)
    assert len(listed(response)) == 3
    assert "end_sessions" not in action_names(response)


def test_view_only_staff_cannot_post_the_action(sessions_present):
    client = staff_client("view_usersession")
    end_selected(client, sessions_present["desktop"])
    sessions_present["desktop"].refresh_from_db()
    assert sessions_present["desktop"].is_active


def test_staff_with_change_permission_gets_the_action(sessions_present):
    client = staff_client("view_usersession", "change_usersession")
    response = client.get(CHANGELIST)
    assert "end_sessions" in action_names(response)
    end_selected(client, sessions_present["desktop"])
    sessions_present["desktop"].refresh_from_db()
    assert sessions_present["desktop"].end_reason == EndReason.ADMIN


def test_staff_without_any_permission_is_refused(sessions_present):
    client = staff_client()
    assert client.get(CHANGELIST).status_code == 403


# --------------------------------------------------------------------------------------------
# SessionEvent: the security event history
# --------------------------------------------------------------------------------------------

EVENTS = reverse("admin:nilva_session_sessionevent_changelist")


def test_event_changelist_lists_events_read_only(admin_client, sessions_present):
    from nilva_session.models import SessionEvent

    response = admin_client.get(EVENTS)
    assert response.status_code == 200
    page = response.content.decode()
    assert SessionEvent.objects.filter(kind="login").count() == 3
    assert "Signed in" in page
    assert "Ended by an administrator" in page
    assert reverse("admin:nilva_session_sessionevent_add") not in page
    event = SessionEvent.objects.first()
    detail = admin_client.get(reverse("admin:nilva_session_sessionevent_change", args=[event.pk]))
    assert detail.status_code == 200
    assert b'name="kind"' not in detail.content  # no form field: nothing can be changed
    gone = reverse("admin:nilva_session_sessionevent_delete", args=[event.pk])
    assert admin_client.post(gone, {"post": "yes"}).status_code == 403
    assert SessionEvent.objects.filter(pk=event.pk).exists()


def test_event_changelist_survives_a_deleted_user(admin_client, user, open_session):
    from nilva_session.models import SessionEvent

    open_session(user)
    user_id = user.pk
    user.delete()
    assert SessionEvent.objects.filter(user_id=user_id).exists()
    assert admin_client.get(EVENTS).status_code == 200


@pytest.mark.parametrize("term", ["alice", "203.0.113.7", "not-a-uuid", "💥" * 50, "%00"])
def test_event_search_never_fails(admin_client, sessions_present, term):
    assert admin_client.get(EVENTS, {"q": term}).status_code == 200


def test_event_search_by_session_id(admin_client, sessions_present):
    from nilva_session.models import SessionEvent

    event = SessionEvent.objects.filter(kind="login").first()
    page = admin_client.get(EVENTS, {"q": str(event.session_id)}).content.decode()
    assert "1 session event" in page
