"""The "this wasn't me" page (nilva_session.views.NotMeView), reached through the emailed link.

Each test signs in twice over HTTP, from two devices, so that the second sign-in sends the
new-device email; the link is read from that email and followed with a browser-like client
that enforces CSRF. Concurrency of two POSTs is covered by the PostgreSQL suite, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import quote, urlsplit

import pytest
from django.core import signing
from django.test import Client
from django.utils import translation
from rest_framework.test import APIClient

from nilva_session import alerts
from nilva_session.models import EndReason, SessionEvent, UserSession

from .conftest import DESKTOP_UA, FIREFOX_UA, IPHONE_UA, PASSWORD

LOGIN_URL = "/api/sessions/login/"
ACTIVE_URL = "/api/sessions/active/"
NOT_ME_PREFIX = "/api/sessions/not-me/"
LINK = re.compile(r"https?://\S+/not-me/[^/\s]+/")
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


# --------------------------------------------------------------------------------------------
# helpers and local fixtures
# --------------------------------------------------------------------------------------------


def login(username="alice", ua=DESKTOP_UA, ip="203.0.113.7"):
    client = APIClient(HTTP_USER_AGENT=ua, REMOTE_ADDR=ip)
    return client.post(LOGIN_URL, {"username": username, "password": PASSWORD}, format="json")


def signed_in(username="alice", ua=DESKTOP_UA, ip="203.0.113.7"):
    response = login(username, ua, ip)
    assert response.status_code == 200, response.content
    body = response.json()
    return SimpleNamespace(token=body["token"], ua=ua, ip=ip, session_id=body["session_id"])


def api_status(login_result) -> int:
    client = APIClient(HTTP_USER_AGENT=login_result.ua, REMOTE_ADDR=login_result.ip)
    client.credentials(HTTP_AUTHORIZATION=f"Token {login_result.token}")
    return client.get(ACTIVE_URL).status_code


def states(user) -> list[tuple[bool, str]]:
    rows = UserSession.objects.for_user(user).order_by("created_at")
    return list(rows.values_list("is_active", "end_reason"))


@dataclass
class Emailed:
    path: str  # of the link in the email
    event: SessionEvent
    desktop: SimpleNamespace  # alice's first sign-in
    phone: SimpleNamespace  # alice's sign-in from the new device, the one emailed about
    bob: SimpleNamespace  # another user's session

    def refreshed_event(self) -> SessionEvent:
        return SessionEvent.objects.get(pk=self.event.pk)


@pytest.fixture
def nilva(settings):
    """``nilva(KEY=value, ...)``: set NILVA_SESSION keys, keeping the test settings' others."""

    def _set(**options):
        settings.NILVA_SESSION = {**settings.NILVA_SESSION, **options}

    return _set


@pytest.fixture
def emailed(nilva, user, other_user, mailoutbox) -> Emailed:
    nilva(NEW_DEVICE_EMAIL=True)
    bob = signed_in("bob")
    desktop = signed_in("alice")
    assert mailoutbox == []
    phone = signed_in("alice", IPHONE_UA, "198.51.100.20")
    (message,) = mailoutbox
    assert message.to == ["alice@example.com"]
    (link,) = set(LINK.findall(message.body))
    path = urlsplit(link).path
    assert path.startswith(NOT_ME_PREFIX)
    event = SessionEvent.objects.get(kind="new_device")
    assert str(event.session_id) == phone.session_id
    return Emailed(path=path, event=event, desktop=desktop, phone=phone, bob=bob)


@pytest.fixture
def browser() -> Client:
    """What the user opens the link in: a client that enforces CSRF like a real browser."""
    return Client(enforce_csrf_checks=True, HTTP_USER_AGENT=FIREFOX_UA)


def confirm_page(browser: Client, path: str) -> str:
    """GET the link and return the CSRF form value of the confirmation page."""
    response = browser.get(path)
    assert response.status_code == 200, response.content
    (value,) = CSRF_INPUT.findall(response.content.decode())
    return value


def assert_page(response, status: int) -> str:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("text/html")
    assert response["Referrer-Policy"] == "no-referrer"
    cache_control = response["Cache-Control"]
    assert "no-cache" in cache_control
    assert "no-store" in cache_control
    return response.content.decode()


def token_of(path: str) -> str:
    return path.removeprefix(NOT_ME_PREFIX).rstrip("/")


def act(browser: Client, path: str, csrf: str | None = None):
    """POST the confirmation form of the link at ``path``: to ``not-me/``, the token in the
    body (as the page's form does), with the CSRF value when given."""
    form = {"token": token_of(path)}
    if csrf is not None:
        form["csrfmiddlewaretoken"] = csrf
    return browser.post(NOT_ME_PREFIX, form)


def assert_nothing_ended(emailed: Emailed, user, other_user) -> None:
    assert states(user) == [(True, ""), (True, "")]
    assert states(other_user) == [(True, "")]
    assert emailed.refreshed_event().handled_at is None
    assert not SessionEvent.objects.filter(kind="revoked").exists()
    assert api_status(emailed.desktop) == 200
    assert api_status(emailed.phone) == 200


# --------------------------------------------------------------------------------------------
# GET: the confirmation
# --------------------------------------------------------------------------------------------


def test_get_shows_a_confirmation_form_and_ends_nothing(emailed, browser, user, other_user):
    page = assert_page(browser.get(emailed.path), 200)
    # The form posts to not-me/ (the token in its body, never again in a path that a log of a
    # refused POST would show).
    assert re.search(r'<form method="post" action="\.\./">.*name="csrfmiddlewaretoken"', page, re.S)
    assert f'name="token" value="{token_of(emailed.path)}"' in page
    assert "End every session of your account?" in page
    assert "Mobile Safari 17 on iOS" in page  # the device of the reported sign-in
    assert "198.51.100.20" in page
    assert 'lang="en' in page
    assert 'dir="ltr"' in page
    assert browser.cookies["csrftoken"].value
    assert_nothing_ended(emailed, user, other_user)


def test_get_in_persian_is_right_to_left(emailed, browser):
    with translation.override("fa"):
        page = assert_page(browser.get(emailed.path), 200)
    assert 'lang="fa"' in page
    assert 'dir="rtl"' in page


# --------------------------------------------------------------------------------------------
# POST: ending every session
# --------------------------------------------------------------------------------------------


def test_post_without_the_csrf_token_is_403_and_ends_nothing(emailed, browser, user, other_user):
    assert act(browser, emailed.path).status_code == 403
    confirm_page(browser, emailed.path)  # with the cookie but without the form value
    assert act(browser, emailed.path).status_code == 403
    assert act(browser, emailed.path, "x" * 64).status_code == 403
    assert_nothing_ended(emailed, user, other_user)


def test_post_ends_every_session_of_the_user_only(emailed, browser, user, other_user):
    csrf = confirm_page(browser, emailed.path)
    page = assert_page(act(browser, emailed.path, csrf), 200)
    assert "Every session has been ended" in page
    assert "2 sessions were ended." in page
    assert "Change your password now" in page  # NOT_ME_SETS_UNUSABLE_PASSWORD is off

    assert states(user) == [(False, "reported"), (False, "reported")]
    assert states(other_user) == [(True, "")]
    assert emailed.refreshed_event().handled_at is not None
    revoked = SessionEvent.objects.filter(kind="revoked")
    assert sorted(str(e.session_id) for e in revoked) == sorted(
        [emailed.desktop.session_id, emailed.phone.session_id]
    )
    assert {(e.user_id, e.reason) for e in revoked} == {(user.pk, EndReason.REPORTED)}
    # The tokens of the ended sessions no longer authenticate; bob's still does.
    assert api_status(emailed.desktop) == 401
    assert api_status(emailed.phone) == 401
    assert api_status(emailed.bob) == 200
    # The password still works (it was not locked): the user can sign in again.
    assert login().status_code == 200


def test_a_used_link_is_410_and_does_nothing_more(emailed, browser, user):
    csrf = confirm_page(browser, emailed.path)
    assert act(browser, emailed.path, csrf).status_code == 200
    handled_at = emailed.refreshed_event().handled_at
    revoked = SessionEvent.objects.filter(kind="revoked").count()
    fresh = signed_in("alice")  # the user signs in again after reporting

    page = assert_page(act(browser, emailed.path, csrf), 410)
    assert "This link was already used" in page
    page = assert_page(browser.get(emailed.path), 410)
    assert "This link was already used" in page
    assert csrf not in page  # no form on a used link

    assert api_status(fresh) == 200
    assert UserSession.objects.get(pk=fresh.session_id).is_active
    assert emailed.refreshed_event().handled_at == handled_at
    assert SessionEvent.objects.filter(kind="revoked").count() == revoked


def test_an_expired_link_is_400_and_ends_nothing(emailed, browser, user, other_user, signing_clock):
    csrf = confirm_page(browser, emailed.path)  # opened in time ...
    signing_clock(days=7, seconds=1)  # ... and submitted after NOT_ME_LINK_MAX_AGE
    page = assert_page(act(browser, emailed.path, csrf), 400)
    assert "This link is not valid" in page
    page = assert_page(browser.get(emailed.path), 400)
    assert "csrfmiddlewaretoken" not in page
    assert_nothing_ended(emailed, user, other_user)


def test_a_link_followed_within_its_max_age_works(emailed, browser, signing_clock, user):
    signing_clock(days=7, seconds=-30)
    csrf = confirm_page(browser, emailed.path)
    assert act(browser, emailed.path, csrf).status_code == 200
    assert states(user) == [(False, "reported"), (False, "reported")]


def test_a_forged_link_is_400_and_ends_nothing(emailed, browser, user, other_user):
    csrf = confirm_page(browser, emailed.path)
    token = token_of(emailed.path)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    other_salt = signing.dumps(
        {"e": emailed.event.pk, "u": str(user.pk)}, salt="nilva_session.other"
    )
    other_user_claims = signing.dumps(
        {"e": emailed.event.pk, "u": str(other_user.pk)}, salt=alerts.NOT_ME_SALT
    )
    for value in (flipped, other_salt, other_user_claims):
        path = f"{NOT_ME_PREFIX}{value}/"
        assert_page(browser.get(path), 400)
        assert_page(act(browser, path, csrf), 400)
    assert_nothing_ended(emailed, user, other_user)


@pytest.mark.parametrize(
    "value",
    [
        "سلام",
        quote("سلام:دنیا:ی"),
        "x" * 4000,
        "a:b:c",
        "::",
        "%00",
        quote("\u202e\ufeff"),
        "eyJlIjoxfQ:1abcde:" + "A" * 43,
    ],
    ids=["persian", "persian-colons", "long", "colons", "empty-parts", "nul", "bidi", "shape"],
)
def test_a_garbage_link_is_400_never_500(emailed, browser, user, other_user, value):
    csrf = confirm_page(browser, emailed.path)
    path = f"{NOT_ME_PREFIX}{value}/"
    assert_page(browser.get(path), 400)
    assert_page(act(browser, path, csrf), 400)
    assert_nothing_ended(emailed, user, other_user)


def test_with_unusable_password_the_password_stops_working(nilva, emailed, browser, user):
    nilva(NOT_ME_SETS_UNUSABLE_PASSWORD=True)
    assert login().status_code == 200  # the password works before
    csrf = confirm_page(browser, emailed.path)
    page = assert_page(act(browser, emailed.path, csrf), 200)
    assert "Your password no longer works" in page
    assert "Change your password now" not in page
    assert "3 sessions were ended." in page
    user.refresh_from_db()
    assert not user.has_usable_password()
    response = login()
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_credentials"
    # Every session ended as reported (before the password change could end them otherwise).
    assert {reason for _active, reason in states(user)} == {"reported"}


def test_no_log_of_a_refused_post_holds_a_link_that_still_works(
    emailed, browser, user, other_user, caplog
):
    with caplog.at_level("DEBUG"):
        assert act(browser, emailed.path).status_code == 403  # no CSRF value: refused, logged
        assert browser.post(NOT_ME_PREFIX, {"token": "forged"}).status_code == 403
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert NOT_ME_PREFIX in logged  # Django did log the refusals ...
    assert token_of(emailed.path) not in logged  # ... by a path without the token
    assert_nothing_ended(emailed, user, other_user)
