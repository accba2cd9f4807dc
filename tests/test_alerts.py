"""New-device sign-in alerts (nilva_session.alerts): devices, "seen before", the email, the link.

Everything of nilva-session is real here: logins go through the HTTP API, emails through
Django's locmem backend, links through django.core.signing. The only doubles are a location
resolver, a failing email backend and the clock signing reads, all defined in this module.
"""

from __future__ import annotations

import io
import logging
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.mail.backends.base import BaseEmailBackend
from django.urls import resolve
from django.utils import translation
from rest_framework.test import APIClient

from nilva_session import alerts
from nilva_session.models import EndReason, KnownDevice, SessionEvent, UserSession
from nilva_session.signals import new_device_login

from .conftest import DESKTOP_UA, DESKTOP_UA_NEXT, FIREFOX_UA, IPHONE_UA, PASSWORD

LOGIN_URL = "/api/sessions/login/"
TOKEN_URL = "/api/sessions/token/"
ACTIVE_URL = "/api/sessions/active/"
HOME_IP = "203.0.113.7"
RULES = ("user_agent", "user_agent_and_network")
ARABIC_SCRIPT = re.compile("[\u0600-\u06ff\ufb50-\ufdff\ufe70-\ufeff]")
LINK = re.compile(r"https?://[^\s\"<>]+/not-me/[^/\s\"<>]+/")


# --------------------------------------------------------------------------------------------
# doubles named by dotted path in settings (LOCATION_RESOLVER, EMAIL_BACKEND)
# --------------------------------------------------------------------------------------------

RESOLVED: list[str] = []


def resolve_tehran(ip):
    RESOLVED.append(ip)
    return "Tehran, Iran"


def resolve_nothing(ip):
    return None


def resolve_broken(ip):
    raise RuntimeError("the location database is unreachable")


class BrokenEmailBackend(BaseEmailBackend):
    """An email backend whose SMTP server is down."""

    def send_messages(self, email_messages):
        raise ConnectionRefusedError("SMTP server down")


# --------------------------------------------------------------------------------------------
# helpers and local fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
def nilva(settings):
    """``nilva(KEY=value, ...)``: set NILVA_SESSION keys, keeping the test settings' others."""

    def _set(**options):
        settings.NILVA_SESSION = {**settings.NILVA_SESSION, **options}

    return _set


@pytest.fixture(autouse=True)
def _forget_resolved():
    RESOLVED.clear()
    yield
    RESOLVED.clear()


def login(
    ua: str | None = DESKTOP_UA,
    ip: str = HOME_IP,
    url: str = LOGIN_URL,
    username: str = "alice",
    **extra,
):
    """POST credentials like a client on ``ua`` at ``ip`` would; return the response."""
    headers = {"REMOTE_ADDR": ip, **extra}
    if ua is not None:
        headers["HTTP_USER_AGENT"] = ua
    client = APIClient(**headers)
    return client.post(url, {"username": username, "password": PASSWORD}, format="json")


def session_of(response) -> UserSession:
    assert response.status_code == 200, response.content
    return UserSession.objects.get(pk=response.json()["session_id"])


def new_device_events(user=None):
    events = SessionEvent.objects.filter(kind="new_device")
    return events.filter(user_id=user.pk) if user is not None else events


def html_of(message) -> str:
    (html, mimetype), *_ = message.alternatives
    assert mimetype == "text/html"
    return html


# --------------------------------------------------------------------------------------------
# device_digest / network_of
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_a_browser_update_is_the_same_device(nilva, rule):
    nilva(NEW_DEVICE_RULE=rule)
    assert alerts.device_digest(DESKTOP_UA, HOME_IP) == alerts.device_digest(
        DESKTOP_UA_NEXT, HOME_IP
    )


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("other_ua", [FIREFOX_UA, IPHONE_UA], ids=["other-browser", "other-os"])
def test_another_browser_or_os_is_another_device(nilva, rule, other_ua):
    nilva(NEW_DEVICE_RULE=rule)
    assert alerts.device_digest(DESKTOP_UA, HOME_IP) != alerts.device_digest(other_ua, HOME_IP)


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("203.0.113.7", "203.0.200.1", True),  # same /16
        ("203.0.113.7", "203.1.113.7", False),  # next /16
        ("203.0.113.7", "198.51.100.1", False),
        ("2001:db8:1::1", "2001:db8:ffff::2", True),  # same /32
        ("2001:db8::1", "2001:db9::1", False),  # next /32
        ("::ffff:203.0.113.7", "203.0.5.5", True),  # IPv4-mapped is the IPv4 address
        ("203.0.113.7", "2001:db8::1", False),
    ],
)
def test_network_rule_compares_the_16_or_32_around_the_address(nilva, first, second, same):
    nilva(NEW_DEVICE_RULE="user_agent_and_network")
    digests = alerts.device_digest(DESKTOP_UA, first), alerts.device_digest(DESKTOP_UA, second)
    assert (digests[0] == digests[1]) is same


def test_network_of_is_the_16_or_32_around_the_address():
    assert alerts.network_of("203.0.113.7") == "203.0.0.0/16"
    assert alerts.network_of("2001:db8:1:2::3") == "2001:db8::/32"
    assert alerts.network_of("::ffff:198.51.100.1") == "198.51.0.0/16"
    assert alerts.network_of(None) == alerts.network_of("not an ip") == ""


@pytest.mark.parametrize("other_ip", ["198.51.100.1", "2001:db8::1", None])
def test_user_agent_rule_ignores_the_network(nilva, other_ip):
    nilva(NEW_DEVICE_RULE="user_agent")
    assert alerts.device_digest(DESKTOP_UA, HOME_IP) == alerts.device_digest(DESKTOP_UA, other_ip)
    # ... but still tells devices apart.
    assert alerts.device_digest(DESKTOP_UA, HOME_IP) != alerts.device_digest(IPHONE_UA, HOME_IP)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("ua", ["", None, "\x00\x01", "x" * 5000])
@pytest.mark.parametrize("ip", [None, "", "not-an-ip", "999.1.1.1", "fe80::1%eth0"])
def test_a_missing_user_agent_or_address_never_raises(nilva, rule, ua, ip):
    nilva(NEW_DEVICE_RULE=rule)
    digest = alerts.device_digest(ua, ip)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)


def test_rule_none_has_no_digest_and_no_new_device_event(nilva, user, capture_signal):
    nilva(NEW_DEVICE_RULE=None, NEW_DEVICE_EMAIL=True)
    assert alerts.device_digest(DESKTOP_UA, HOME_IP) == ""
    signals = capture_signal(new_device_login)
    first = session_of(login(DESKTOP_UA))
    second = session_of(login(IPHONE_UA, "198.51.100.1"))
    assert first.device_digest == second.device_digest == ""
    assert not new_device_events().exists()
    assert SessionEvent.objects.filter(kind="login").count() == 2  # the logins were recorded
    assert signals == []


def test_login_without_user_agent_or_address_works_and_is_one_device(user, capture_signal):
    signals = capture_signal(new_device_login)
    first = session_of(login(ua=None, ip=""))
    assert first.device_digest  # computed from nothing: "Other" everywhere, no network
    session_of(login(ua=None, ip=""))
    assert signals == []
    # A real browser after that is a new device.
    session_of(login(DESKTOP_UA))
    assert len(signals) == 1


# --------------------------------------------------------------------------------------------
# seen_before
# --------------------------------------------------------------------------------------------


def test_seen_before_is_none_for_a_user_without_sessions(user, other_user, open_session):
    open_session(other_user)  # another user's sessions are not this user's
    assert alerts.seen_before(user, alerts.device_digest(DESKTOP_UA, HOME_IP)) is None


def test_first_session_is_not_an_alert(user, open_session, capture_signal):
    signals = capture_signal(new_device_login)
    session, _token = open_session(user, ua=IPHONE_UA, ip="198.51.100.1")
    assert session.device_digest == alerts.device_digest(IPHONE_UA, "198.51.100.1")
    assert not new_device_events().exists()
    assert signals == []


def test_seen_before_true_for_a_known_device_false_for_another(user, other_user, open_session):
    open_session(user, ua=DESKTOP_UA, ip=HOME_IP)
    open_session(other_user, ua=IPHONE_UA, ip=HOME_IP)
    assert alerts.seen_before(user, alerts.device_digest(DESKTOP_UA_NEXT, "203.0.1.1")) is True
    assert alerts.seen_before(user, alerts.device_digest(IPHONE_UA, HOME_IP)) is False
    assert alerts.seen_before(user, alerts.device_digest(DESKTOP_UA, "198.51.100.1")) is False
    # A user instance or a primary key.
    assert alerts.seen_before(user.pk, alerts.device_digest(DESKTOP_UA, HOME_IP)) is True


def test_an_ended_session_still_counts_as_seen(user, open_session):
    session, _token = open_session(user)
    UserSession.objects.filter(pk=session.pk).revoke(EndReason.LOGOUT)
    assert alerts.seen_before(user, alerts.device_digest(DESKTOP_UA, HOME_IP)) is True


def make_legacy(session: UserSession) -> None:
    """Make a row look like one stored before device digests existed (and its user's devices
    unknown, as before this release)."""
    UserSession.objects.filter(pk=session.pk).update(device_digest="")
    KnownDevice.objects.filter(user_id=session.user_id).delete()


def test_sessions_without_a_digest_are_compared_by_user_agent_and_ip(user, open_session):
    session, _token = open_session(user, ua=DESKTOP_UA, ip=HOME_IP)
    make_legacy(session)
    assert alerts.seen_before(user, alerts.device_digest(DESKTOP_UA_NEXT, "203.0.9.9")) is True
    assert alerts.seen_before(user, alerts.device_digest(IPHONE_UA, HOME_IP)) is False
    assert alerts.seen_before(user, alerts.device_digest(DESKTOP_UA, "198.51.100.1")) is False


def test_legacy_rows_are_compared_alongside_digested_ones(user, open_session):
    old_desktop, _ = open_session(user, ua=DESKTOP_UA, ip=HOME_IP)
    open_session(user, ua=IPHONE_UA, ip=HOME_IP)  # has a digest, of another device
    make_legacy(old_desktop)
    assert alerts.seen_before(user, alerts.device_digest(DESKTOP_UA, HOME_IP)) is True
    assert alerts.seen_before(user, alerts.device_digest(FIREFOX_UA, HOME_IP)) is False


def test_only_the_most_recent_legacy_rows_are_compared(user, open_session, clock):
    open_session(user, ua=DESKTOP_UA, ip=HOME_IP)  # the oldest
    for _ in range(alerts.LEGACY_ROWS_COMPARED):
        clock.advance(seconds=1)
        open_session(user, ua=IPHONE_UA, ip=HOME_IP)
    UserSession.objects.for_user(user).update(device_digest="")
    KnownDevice.objects.filter(user=user).delete()
    assert alerts.seen_before(user, alerts.device_digest(IPHONE_UA, HOME_IP)) is True
    assert alerts.seen_before(user, alerts.device_digest(DESKTOP_UA, HOME_IP)) is False
    # One row fewer and the oldest is compared again.
    UserSession.objects.filter(user_agent=IPHONE_UA).order_by("created_at").first().delete()
    assert alerts.seen_before(user, alerts.device_digest(DESKTOP_UA, HOME_IP)) is True


def test_login_after_a_legacy_session_alerts_only_for_another_device(user, open_session):
    session, _ = open_session(user, ua=DESKTOP_UA, ip=HOME_IP)
    make_legacy(session)
    session_of(login(DESKTOP_UA_NEXT))
    assert not new_device_events().exists()
    session_of(login(IPHONE_UA))
    assert new_device_events().count() == 1


# --------------------------------------------------------------------------------------------
# over HTTP: events and the new_device_login signal
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [LOGIN_URL, TOKEN_URL], ids=["opaque", "jwt"])
def test_first_ever_login_sends_nothing(user, capture_signal, url):
    signals = capture_signal(new_device_login)
    session = session_of(login(DESKTOP_UA, url=url))
    assert session.device_digest == alerts.device_digest(DESKTOP_UA, HOME_IP)
    assert signals == []
    assert not new_device_events().exists()


@pytest.mark.parametrize("url", [LOGIN_URL, TOKEN_URL], ids=["opaque", "jwt"])
def test_sign_in_from_a_new_device_is_signalled_once_and_recorded(user, capture_signal, url):
    signals = capture_signal(new_device_login)
    session_of(login(DESKTOP_UA))
    session_of(login(DESKTOP_UA_NEXT, "203.0.88.1", url=url))  # updated browser, same network
    assert signals == []

    session = session_of(login(IPHONE_UA, "198.51.100.20", url=url))
    assert len(signals) == 1
    (sent,) = signals
    event = new_device_events().get()
    assert sent["sender"] is UserSession
    assert sent["session"].pk == session.pk
    assert sent["event"].pk == event.pk
    assert sent["request"] is not None
    assert event.user_id == user.pk
    assert event.session_id == session.pk
    assert event.ip == "198.51.100.20"
    assert event.user_agent == IPHONE_UA
    assert event.handled_at is None

    session_of(login(IPHONE_UA, "198.51.100.21", url=url))  # the same device again
    assert len(signals) == 1
    assert new_device_events().count() == 1


def test_another_network_is_a_new_device_under_the_default_rule(user, capture_signal):
    signals = capture_signal(new_device_login)
    session_of(login(DESKTOP_UA, HOME_IP))
    session_of(login(DESKTOP_UA, "198.51.100.1"))
    assert len(signals) == 1


def test_another_network_is_not_a_new_device_under_the_user_agent_rule(nilva, user, capture_signal):
    nilva(NEW_DEVICE_RULE="user_agent")
    signals = capture_signal(new_device_login)
    session_of(login(DESKTOP_UA, HOME_IP))
    session_of(login(DESKTOP_UA, "198.51.100.1"))
    assert signals == []
    session_of(login(FIREFOX_UA, "198.51.100.1"))
    assert len(signals) == 1


def test_new_devices_are_per_user(user, other_user, capture_signal):
    signals = capture_signal(new_device_login)
    session_of(login(DESKTOP_UA, username="alice"))
    session_of(login(IPHONE_UA, username="bob"))  # bob's first: nothing
    session_of(login(IPHONE_UA, username="alice"))  # alice's new device, known to bob
    assert [sent["session"].user_id for sent in signals] == [user.pk]


def test_without_event_history_the_signal_is_sent_and_nothing_stored(
    nilva, user, capture_signal, mailoutbox
):
    # NEW_DEVICE_EMAIL needs EVENT_HISTORY (system check E019): the link names a stored event.
    nilva(EVENT_HISTORY=False, NEW_DEVICE_EMAIL=True)
    signals = capture_signal(new_device_login)
    session_of(login(DESKTOP_UA))
    session_of(login(IPHONE_UA))
    assert len(signals) == 1
    assert signals[0]["event"].kind == "new_device"
    assert not SessionEvent.objects.exists()
    assert mailoutbox == []


# --------------------------------------------------------------------------------------------
# the email
# --------------------------------------------------------------------------------------------


def test_no_email_unless_new_device_email_is_set(user, capture_signal, mailoutbox):
    signals = capture_signal(new_device_login)
    session_of(login(DESKTOP_UA))
    session_of(login(FIREFOX_UA))
    assert len(signals) == 1  # it was a new device ...
    assert mailoutbox == []  # ... and NEW_DEVICE_EMAIL is off by default


def test_the_email_names_the_device_the_ip_and_links_to_the_not_me_page(nilva, user, mailoutbox):
    nilva(NEW_DEVICE_EMAIL=True)
    session_of(login(DESKTOP_UA))
    assert mailoutbox == []  # the first login is not an alert
    session_of(login(FIREFOX_UA, "198.51.100.20"))

    (message,) = mailoutbox
    html = html_of(message)
    assert message.to == ["alice@example.com"]
    for part in (message.subject, message.body, html):
        assert "Firefox 121 on Windows" in part
    assert "\n" not in message.subject
    for part in (message.body, html):
        assert "198.51.100.20" in part
        assert "Location" not in part  # no GEOIP_PATH: the default resolver knows nothing

    (link,) = set(LINK.findall(message.body))
    assert LINK.findall(html) == [link]
    assert link.startswith("http://testserver/api/sessions/not-me/")
    match = resolve(urlsplit(link).path)
    assert match.view_name == "nilva_session:not-me"
    event = alerts.event_of_not_me_token(match.kwargs["token"])
    assert event == new_device_events().get()
    assert event.user_agent == FIREFOX_UA

    session_of(login(FIREFOX_UA, "198.51.100.21"))  # the same device again
    assert len(mailoutbox) == 1


def test_the_email_of_a_jwt_sign_in(nilva, user, mailoutbox):
    nilva(NEW_DEVICE_EMAIL=True)
    session_of(login(DESKTOP_UA))
    session_of(login(IPHONE_UA, "198.51.100.20", url=TOKEN_URL))
    (message,) = mailoutbox
    assert "Mobile Safari 17 on iOS" in message.subject
    assert LINK.search(message.body)


def test_no_email_for_a_user_without_an_address(nilva, db, mailoutbox, capture_signal):
    nilva(NEW_DEVICE_EMAIL=True)
    get_user_model().objects.create_user("carol", "", PASSWORD)
    signals = capture_signal(new_device_login)
    session_of(login(DESKTOP_UA, username="carol"))
    session_of(login(IPHONE_UA, username="carol"))
    assert len(signals) == 1
    assert mailoutbox == []


def test_the_location_appears_when_a_resolver_knows_it(nilva, user, mailoutbox):
    nilva(NEW_DEVICE_EMAIL=True, LOCATION_RESOLVER="tests.test_alerts.resolve_tehran")
    session_of(login(DESKTOP_UA))
    session_of(login(FIREFOX_UA, "198.51.100.20"))
    (message,) = mailoutbox
    assert "Location: Tehran, Iran" in message.body
    assert "Tehran, Iran" in html_of(message)
    assert RESOLVED == ["198.51.100.20"]


@pytest.mark.parametrize(
    "resolver",
    [
        "tests.test_alerts.resolve_broken",
        "tests.test_alerts.resolve_nothing",
        "tests.test_alerts.no_such_resolver",
        "no_such_module.resolve",
    ],
)
def test_a_resolver_that_fails_breaks_nothing_and_gives_no_location(
    nilva, user, mailoutbox, resolver
):
    nilva(NEW_DEVICE_EMAIL=True, LOCATION_RESOLVER=resolver)
    session_of(login(DESKTOP_UA))
    response = login(FIREFOX_UA, "198.51.100.20")
    assert response.status_code == 200
    (message,) = mailoutbox
    assert "198.51.100.20" in message.body
    assert "Location" not in message.body
    assert "Location" not in html_of(message)


def test_location_of_uses_the_resolver_and_never_raises(nilva):
    nilva(LOCATION_RESOLVER="tests.test_alerts.resolve_tehran")
    assert alerts.location_of("198.51.100.20") == "Tehran, Iran"
    assert alerts.location_of(None) is None  # no address: the resolver is not asked
    assert RESOLVED == ["198.51.100.20"]
    nilva(LOCATION_RESOLVER="tests.test_alerts.resolve_broken")
    assert alerts.location_of("198.51.100.20") is None
    nilva(LOCATION_RESOLVER=None)
    assert alerts.location_of("198.51.100.20") is None


def test_the_default_resolver_knows_nothing_without_geoip_path(settings):
    assert not getattr(settings, "GEOIP_PATH", None)
    assert alerts.geoip_location("198.51.100.20") is None
    settings.GEOIP_PATH = "/nonexistent/geoip"  # no database there (or no geoip2): still None
    assert alerts.geoip_location("198.51.100.20") is None


def maxmind_city_database(directory) -> None:
    """Write a tiny GeoLite2-City database (MaxMind's format, by mmdb-writer) into ``directory``:
    198.51.100.0/24 is Tehran, Iran; nothing else is known."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    record = {
        "city": {"names": {"en": "Tehran"}},
        "country": {"iso_code": "IR", "names": {"en": "Iran"}},
        "continent": {"code": "AS", "names": {"en": "Asia"}},
        "location": {"latitude": 35.7, "longitude": 51.4, "time_zone": "Asia/Tehran"},
    }
    writer.insert_network(IPSet(["198.51.100.0/24"]), record)
    writer.to_db_file(str(directory / "GeoLite2-City.mmdb"))


def test_the_default_resolver_reads_a_maxmind_database(settings, tmp_path):
    maxmind_city_database(tmp_path)
    settings.GEOIP_PATH = str(tmp_path)
    assert alerts.geoip_location("198.51.100.20") == "Tehran, Iran"
    assert alerts.geoip_location("203.0.113.7") is None  # not in the database
    assert alerts.geoip_location("::1") is None


def test_the_emailed_location_comes_from_the_database(nilva, user, settings, tmp_path, mailoutbox):
    maxmind_city_database(tmp_path)
    settings.GEOIP_PATH = str(tmp_path)
    nilva(NEW_DEVICE_EMAIL=True)
    session_of(login(DESKTOP_UA))
    session_of(login(FIREFOX_UA, "198.51.100.20"))
    (message,) = mailoutbox
    assert "Tehran, Iran" in message.body
    assert "Tehran, Iran" in html_of(message)


def assert_persian(message) -> None:
    html = html_of(message)
    assert 'dir="rtl"' in html
    assert 'lang="fa"' in html
    # The device summary ("%(browser)s on %(os)s (%(device)s)" -> "... روی ...") and "IP address"
    # are translated in the shipped catalogue already; the sentences of the email are being
    # translated now, so they are not asserted here.
    assert ARABIC_SCRIPT.search(message.subject)
    assert ARABIC_SCRIPT.search(message.body)
    assert "Firefox 121" in message.subject


def test_the_email_is_in_the_language_of_the_request(nilva, settings, user, mailoutbox):
    nilva(NEW_DEVICE_EMAIL=True)
    settings.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.locale.LocaleMiddleware",
        *settings.MIDDLEWARE[1:],
    ]
    session_of(login(DESKTOP_UA))
    session_of(login(FIREFOX_UA, "198.51.100.20", HTTP_ACCEPT_LANGUAGE="fa"))
    session_of(login(IPHONE_UA, "192.0.2.1", HTTP_ACCEPT_LANGUAGE="en"))
    persian, english = mailoutbox
    assert_persian(persian)
    html = html_of(english)
    assert 'dir="ltr"' in html
    assert 'lang="en"' in html
    assert not ARABIC_SCRIPT.search(english.subject + english.body + html)


def test_without_a_request_language_the_email_is_in_the_active_language(nilva, user, mailoutbox):
    nilva(NEW_DEVICE_EMAIL=True)
    session_of(login(DESKTOP_UA))
    with translation.override("fa"):
        session_of(login(FIREFOX_UA, "198.51.100.20"))
    (message,) = mailoutbox
    assert_persian(message)


def test_the_request_language_wins_over_the_active_one(nilva, user, open_session, rf, mailoutbox):
    open_session(user)
    session, _token = open_session(user, ua=FIREFOX_UA, ip="198.51.100.20")
    event = new_device_events().get()
    nilva(NEW_DEVICE_EMAIL=True)
    request = rf.get("/")
    request.LANGUAGE_CODE = "fa"  # what LocaleMiddleware sets
    with translation.override("en"):
        assert alerts.email_new_device(session, user, event, request) is True
    (message,) = mailoutbox
    assert_persian(message)


def test_a_failing_email_backend_never_fails_the_sign_in(
    nilva, settings, user, capture_signal, caplog
):
    nilva(NEW_DEVICE_EMAIL=True)
    settings.EMAIL_BACKEND = "tests.test_alerts.BrokenEmailBackend"
    signals = capture_signal(new_device_login)
    session_of(login(DESKTOP_UA))
    with caplog.at_level(logging.ERROR, logger="nilva_session.security"):
        response = login(FIREFOX_UA, "198.51.100.20")
    assert response.status_code == 200
    token = response.json()["token"]
    assert len(signals) == 1
    assert new_device_events().count() == 1
    assert any("new-device email not sent" in r.getMessage() for r in caplog.records)
    # The session it opened works.
    client = APIClient(HTTP_USER_AGENT=FIREFOX_UA, REMOTE_ADDR="198.51.100.20")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(ACTIVE_URL).status_code == 200


def test_a_host_not_in_allowed_hosts_never_fails_the_sign_in(
    nilva, settings, user, mailoutbox, caplog
):
    # Without CommonMiddleware nothing checks the Host before the login view; the link of the
    # email is built from it (build_absolute_uri raises DisallowedHost).
    nilva(NEW_DEVICE_EMAIL=True)
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.endswith(".CommonMiddleware")]
    session_of(login(DESKTOP_UA))
    with caplog.at_level(logging.ERROR, logger="nilva_session.security"):
        response = login(FIREFOX_UA, "198.51.100.20", HTTP_HOST="evil.example")
    assert response.status_code == 200, response.content
    assert new_device_events().count() == 1
    assert mailoutbox == []  # no email with a link to a host the project does not serve
    assert any("new-device email not sent" in r.getMessage() for r in caplog.records)


def test_email_new_device_says_whether_it_sent(nilva, user, open_session, rf, mailoutbox):
    open_session(user)
    session, _token = open_session(user, ua=IPHONE_UA, ip="198.51.100.20")  # email is off
    event = new_device_events().get()
    request = rf.get("/", HTTP_HOST="example.com")
    assert alerts.email_new_device(session, user, event, request) is False
    nilva(NEW_DEVICE_EMAIL=True)
    assert alerts.email_new_device(session, user, event, request) is True
    assert alerts.email_new_device(session, user, event, None) is True  # a relative link
    first, without_request = mailoutbox
    assert "http://example.com/api/sessions/not-me/" in first.body
    assert "\n/api/sessions/not-me/" in without_request.body
    unsaved = SessionEvent(kind="new_device", user_id=user.pk)
    assert alerts.email_new_device(session, user, unsaved, request) is False
    assert len(mailoutbox) == 2


# --------------------------------------------------------------------------------------------
# the "this wasn't me" token
# --------------------------------------------------------------------------------------------


@pytest.fixture
def new_device_event(user, open_session):
    open_session(user)
    open_session(user, ua=IPHONE_UA, ip="198.51.100.20")
    return new_device_events().get()


def test_a_token_names_its_event(new_device_event):
    token = alerts.not_me_token(new_device_event)
    assert alerts.event_of_not_me_token(token) == new_device_event


def flip_last(value: str) -> str:
    return value[:-1] + ("A" if value[-1] != "A" else "B")


def test_a_forged_token_names_nothing(new_device_event):
    token = alerts.not_me_token(new_device_event)
    claims = {"e": new_device_event.pk, "u": str(new_device_event.user_id)}
    forged = [
        "",
        "garbage",
        ":::",
        flip_last(token),
        signing.dumps(claims, salt="another.salt"),
        signing.dumps(claims),  # no salt
        signing.dumps(claims, key="another secret key", salt=alerts.NOT_ME_SALT),
        signing.dumps(claims, salt=alerts.NOT_ME_SALT, compress=True)[1:],
        "ى" * 40,
        "a" * 20_000,
    ]
    for value in forged:
        assert alerts.event_of_not_me_token(value) is None, value


def test_a_token_whose_payload_was_changed_names_nothing(new_device_event, other_user):
    token = alerts.not_me_token(new_device_event)
    payload, rest = token.split(":", 1)
    tampered = signing.b64_encode(
        signing.JSONSerializer().dumps({"e": new_device_event.pk, "u": str(other_user.pk)})
    ).decode()
    assert payload != tampered
    assert alerts.event_of_not_me_token(f"{tampered}:{rest}") is None


def test_a_validly_signed_token_of_another_user_names_nothing(new_device_event, other_user):
    claims = {"e": new_device_event.pk, "u": str(other_user.pk)}
    assert alerts.event_of_not_me_token(signing.dumps(claims, salt=alerts.NOT_ME_SALT)) is None
    # The same claims with the right user do name it: the user check is what refused it.
    claims["u"] = str(new_device_event.user_id)
    value = signing.dumps(claims, salt=alerts.NOT_ME_SALT)
    assert alerts.event_of_not_me_token(value) == new_device_event


def test_a_token_of_another_kind_of_event_names_nothing(new_device_event):
    login_event = SessionEvent.objects.filter(kind="login").first()
    assert login_event is not None
    assert alerts.event_of_not_me_token(alerts.not_me_token(login_event)) is None


@pytest.mark.parametrize(
    "claims",
    [
        {"e": 10**6, "u": "1"},  # no such event
        {"e": 10**30, "u": "1"},  # too big for the database
        {"e": "x", "u": "1"},
        {"e": None, "u": "1"},
        {"e": [1], "u": "1"},
        {"u": "1"},
        {},
        "a string",
        [1, 2],
        None,
    ],
    ids=repr,
)
def test_a_signed_token_with_odd_claims_names_nothing(new_device_event, claims):
    assert alerts.event_of_not_me_token(signing.dumps(claims, salt=alerts.NOT_ME_SALT)) is None


def test_a_token_expires_after_not_me_link_max_age(new_device_event, signing_clock):
    token = alerts.not_me_token(new_device_event)
    signing_clock(days=7, seconds=-5)
    assert alerts.event_of_not_me_token(token) == new_device_event
    signing_clock(seconds=10)
    assert alerts.event_of_not_me_token(token) is None


def test_not_me_link_max_age_is_read_when_the_link_is_followed(
    nilva, new_device_event, signing_clock
):
    token = alerts.not_me_token(new_device_event)
    signing_clock(minutes=10)
    assert alerts.event_of_not_me_token(token) == new_device_event
    nilva(NOT_ME_LINK_MAX_AGE=timedelta(minutes=5))
    assert alerts.event_of_not_me_token(token) is None


# --------------------------------------------------------------------------------------------
# lock_password
# --------------------------------------------------------------------------------------------


def test_lock_password_does_nothing_by_default(user, open_session):
    session, _token = open_session(user)
    assert alerts.lock_password(user.pk) is False
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    assert UserSession.objects.get(pk=session.pk).is_active


def test_lock_password_makes_the_password_unusable(nilva, user, open_session):
    nilva(NOT_ME_SETS_UNUSABLE_PASSWORD=True)
    session, _token = open_session(user)
    assert alerts.lock_password(user.pk) is True
    user.refresh_from_db()
    assert not user.has_usable_password()
    response = login(DESKTOP_UA)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_credentials"
    # Saving the password is a password change: the user's sessions end with it.
    ended = UserSession.objects.get(pk=session.pk)
    assert not ended.is_active
    assert ended.end_reason == EndReason.PASSWORD_CHANGED


def test_lock_password_of_an_unknown_user(nilva, db):
    nilva(NOT_ME_SETS_UNUSABLE_PASSWORD=True)
    assert alerts.lock_password(10**6) is False


# --------------------------------------------------------------------------------------------
# what the client writes never becomes the email's words
# --------------------------------------------------------------------------------------------

THIEF_UA = (
    "Your IT team verified this sign-in - no action needed, do not click below"
    "/1.0 CFNetwork/1.0 Darwin/20.0"
)


def test_a_browser_name_written_by_the_client_is_not_quoted_in_the_email(nilva, user, mailoutbox):
    from nilva_session import clients

    assert "do not click" in clients.describe_user_agent(THIEF_UA)["browser"]  # ua-parser's
    nilva(NEW_DEVICE_EMAIL=True)
    session_of(login(DESKTOP_UA))
    session_of(login(THIEF_UA, "198.51.100.20"))
    (message,) = mailoutbox
    for part in (message.subject, message.body, html_of(message)):
        assert "click" not in part
        assert "IT team" not in part
    assert "Other" in message.subject


@pytest.mark.parametrize(
    ("agent", "label"),
    [
        (FIREFOX_UA, "Firefox 121 on Windows (Other)"),
        (IPHONE_UA, "Mobile Safari 17 on iOS (iPhone)"),
        ("", "Other on Other (Other)"),
    ],
)
def test_device_label(agent, label):
    assert alerts.device_label(agent) == label


def test_the_subject_is_plain_text_not_html_escaped():
    from django.template.loader import render_to_string

    subject = render_to_string(
        "nilva_session/email/new_device_subject.txt", {"device": "Tom & Jerry's <App>"}
    )
    assert "Tom & Jerry's <App>" in subject


# --------------------------------------------------------------------------------------------
# devices outlive their sessions
# --------------------------------------------------------------------------------------------


def test_devices_are_remembered_after_the_cleanup_deletes_their_sessions(user, clock):
    from django.core.management import call_command

    session_of(login(DESKTOP_UA))
    clock.advance(days=2)  # the session (EXPIRE_AT 1 day) expires; the cleanup deletes it
    call_command("nilva_session_cleanup", stdout=io.StringIO())
    assert not UserSession.objects.exists()

    session_of(login(DESKTOP_UA))  # the user's own laptop, the next day: not new
    assert not new_device_events().exists()
    session_of(login(FIREFOX_UA, "198.51.100.20"))  # a stranger: new, though no session is left
    assert new_device_events().count() == 1


def test_a_sign_in_remembers_its_device_once_and_refreshes_its_last_use(user, clock):
    session_of(login(DESKTOP_UA))
    first = KnownDevice.objects.get(user=user)
    clock.advance(days=3)
    session_of(login(DESKTOP_UA_NEXT))  # a browser update: the same device
    again = KnownDevice.objects.get(user=user)
    assert (again.pk, again.first_seen) == (first.pk, first.first_seen)
    assert again.last_seen - first.last_seen == timedelta(days=3)


def test_the_cleanup_forgets_devices_unused_for_new_device_memory(nilva, user, clock):
    from django.core.management import call_command

    session_of(login(DESKTOP_UA))
    nilva(NEW_DEVICE_MEMORY=timedelta(days=30))
    clock.advance(days=29)
    call_command("nilva_session_cleanup", stdout=io.StringIO())
    assert KnownDevice.objects.filter(user=user).exists()
    clock.advance(days=2)
    call_command("nilva_session_cleanup", stdout=io.StringIO())
    assert not KnownDevice.objects.filter(user=user).exists()
