"""The demo page ("Where you're signed in", issue 9) in a real browser.

Playwright for Python drives Debian's Chromium (``apt-get install chromium``; never
``playwright install``) against pytest-django's ``live_server`` with the demo app installed
(``tests/settings_browser.py``). Those settings differ from the suite's, so in the normal run
``test_browser_suite_passes_in_its_own_process`` starts ``pytest tests/test_browser.py
--ds=tests.settings_browser`` and fails if anything there fails or skips. Without Chromium (or
Playwright) the tests fail when ``CI`` is set and are skipped otherwise.

Screenshots of every step go to ``artifacts/browser/``, the README pictures too
(``TestDemoPage.test_readme_screenshots``). A test never writes to the repository: ``./dev
screenshots`` sets ``NILVA_SCREENSHOTS_DIR=docs`` to renew ``docs/demo.png`` and
``docs/demo-phone.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings

from tests.conftest import DESKTOP_UA, IPHONE_UA, PASSWORD
from tests.support.subsuite import assert_suite_passes

try:
    from playwright.sync_api import expect
except ImportError:  # require_browser() says so
    expect = None

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "browser"
# Where the README pictures go: artifacts/ unless ``./dev screenshots`` names docs/.
PICTURES = ROOT / os.environ.get("NILVA_SCREENSHOTS_DIR", "artifacts/browser/readme")
CHROMIUM = os.environ.get("NILVA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IPAD_UA = IPHONE_UA.replace("iPhone; CPU iPhone OS", "iPad; CPU OS")
DESKTOP = {"width": 1000, "height": 760}
PHONE = {"width": 390, "height": 844}
ENDED_ELSEWHERE = "ended on another device"
PICTURE_TIME = datetime(2026, 3, 12, 9, 30, tzinfo=dt_timezone.utc)
IN_BROWSER_PROCESS = "demo" in settings.INSTALLED_APPS  # tests.settings_browser


def require_browser() -> None:
    """Fail under CI, skip elsewhere, when Chromium or Playwright is missing."""
    problems = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        problems.append(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("Playwright is not installed (pip install -e '.[test]')")
    if not problems:
        return
    message = "; ".join(problems)
    if os.environ.get("CI"):
        pytest.fail(f"browser tests need a browser under CI: {message}", pytrace=False)
    pytest.skip(message)


class TestBrowserSuite:
    """The normal run: the browser tests, in a process with the demo app installed."""

    __test__ = not IN_BROWSER_PROCESS

    def test_browser_suite_passes_in_its_own_process(self):
        require_browser()
        assert_suite_passes("tests.settings_browser", "tests/test_browser.py")


# ------------------------------------------------------------------------------------------
# In the browser process
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


class Device:
    """One browser context (a "device"): its page, and the JS errors seen on it."""

    def __init__(self, browser, url, name, user_agent, ip, viewport, clock=False):
        self.name = name
        self.context = browser.new_context(
            user_agent=user_agent,
            viewport=viewport,
            device_scale_factor=1,
            is_mobile=viewport["width"] < 600,
            has_touch=viewport["width"] < 600,
            locale="en-US",
            timezone_id="UTC",
            color_scheme="light",
            extra_http_headers={"X-Forwarded-For": ip},
        )
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.on("console", self._console)
        if clock is True:
            self.page.clock.install()
        elif clock:
            self.page.clock.install(time=clock)
        self.page.goto(url)

    def _console(self, message):
        # A refused request is logged by Chromium itself ("Failed to load resource: 401");
        # anything else at error level (a script error, a CSP refusal) is a bug of the page.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    def sign_in(self, username, password=PASSWORD):
        page = self.page
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()

    def shot(self, name, full_page=True):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=full_page)

    def focus(self):
        """The window gets focus back: the page reloads the list (waits for the answer)."""
        with self.page.expect_response(lambda r: r.url.endswith("/active/")):
            self.page.evaluate("window.dispatchEvent(new Event('focus'))")

    def attempt_sign_in(self, username, password=PASSWORD):
        """Sign in and return the answer of `login/` (a Playwright Response)."""
        with self.page.expect_response(lambda r: r.url.endswith("/login/")) as answer:
            self.sign_in(username, password)
        return answer.value

    # Locators
    @property
    def message(self):
        return self.page.get_by_role("status")

    @property
    def cards(self):
        return self.page.locator("#session-list > li")

    def card(self, text):
        return self.cards.filter(has_text=text)

    @property
    def sign_in_heading(self):
        return self.page.get_by_role("heading", name="Sign in")

    @property
    def sessions_heading(self):
        return self.page.get_by_role("heading", name="Where you're signed in")


def opened_devices(browser, url):
    """Yield ``open_device(name, user_agent, ip, viewport=DESKTOP, clock=False) -> Device`` on
    the page at ``url``; then close them, and fail if any saw a JS error."""
    opened: list[Device] = []

    def open_device(name, user_agent, ip, viewport=DESKTOP, clock=False):
        device = Device(browser, url + "/", name, user_agent, ip, viewport, clock)
        opened.append(device)
        return device

    yield open_device
    errors = {device.name: device.errors for device in opened if device.errors}
    for device in opened:
        device.context.close()
    assert not errors, errors


@pytest.fixture
def devices(browser, live_server):
    """``devices(name, user_agent, ip, viewport=DESKTOP, clock=False) -> Device``."""
    yield from opened_devices(browser, live_server.url)


def token_of(device):
    return device.page.evaluate("sessionStorage.getItem('nilva-session-demo:token')")


class TestDemoPage:
    """The scenarios of issue 9, each with fresh browser contexts."""

    __test__ = IN_BROWSER_PROCESS

    def test_page_is_a_plain_view_with_local_assets(self):
        from django.test import Client

        response = Client().get("/")
        html = response.content.decode()

        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/html")
        assert "/api/sessions/login/" in html
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from elsewhere
        for asset in ("demo.css", "demo.js", "favicon.svg"):
            assert f"/static/demo/{asset}" in html

    def test_two_devices_see_each_other_and_one_ends_the_other(self, devices, user):
        from nilva_session.models import UserSession

        desktop = devices("desktop", DESKTOP_UA, "203.0.113.7")
        expect(desktop.sign_in_heading).to_be_visible()
        desktop.shot("01-sign-in")
        desktop.sign_in("alice")
        expect(desktop.sessions_heading).to_be_visible()
        expect(desktop.cards).to_have_count(1)

        phone = devices("phone", IPHONE_UA, "198.51.100.23", viewport=PHONE)
        phone.sign_in("alice")
        expect(phone.cards).to_have_count(2)

        # The window gets focus back: the desktop's list now has the phone.
        desktop.focus()
        expect(desktop.cards).to_have_count(2)
        mine = desktop.card("This device")
        expect(mine).to_have_count(1)
        expect(mine).to_contain_text("Chrome on Windows")
        expect(mine).to_contain_text("Desktop · Chrome 120.0 · Windows 10")
        expect(mine).to_contain_text("203.0.113.7")
        expect(mine.locator(".badge")).to_have_text("This device")
        expect(mine.get_by_role("button")).to_have_accessible_name("Sign out of this device")
        other = desktop.card("Mobile Safari on iOS")
        expect(other).to_contain_text("Phone · Apple iPhone · Mobile Safari 17.0 · iOS 17.0")
        expect(other).to_contain_text("198.51.100.23")
        expect(other).not_to_contain_text("This device")
        expect(desktop.page.locator(".badge")).to_have_count(1)
        last_active = other.locator("time").first
        expect(last_active).to_have_text("just now")
        expect(last_active).to_have_attribute("title", re.compile(r"\d{4}.*\d{1,2}:\d{2}:\d{2}"))
        expect(desktop.card("Mobile Safari on iOS").locator(".device-icon use")).to_have_attribute(
            "href", "#icon-phone"
        )
        expect(mine.locator(".device-icon use")).to_have_attribute("href", "#icon-desktop")
        # ... and the phone sees the same two, with its own badge.
        expect(phone.card("This device")).to_contain_text("Mobile Safari on iOS")
        desktop.shot("02-desktop-two-sessions")
        phone.shot("02-phone-two-sessions")

        desktop.page.get_by_role("button", name="Sign out Mobile Safari on iOS").click()
        expect(desktop.message).to_have_text("Signed out Mobile Safari on iOS.")
        expect(desktop.cards).to_have_count(1)
        expect(
            desktop.page.get_by_role("button", name="Sign out of all other sessions")
        ).to_be_hidden()
        phone_session = UserSession.objects.get(user=user, user_agent=IPHONE_UA)
        assert not phone_session.is_active
        assert phone_session.end_reason == "revoked"
        desktop.shot("03-desktop-after-ending-phone")

        # The phone's next action (here: its window gets focus) lands on the sign-in form.
        phone.focus()
        expect(phone.sign_in_heading).to_be_visible()
        expect(phone.message).to_contain_text(ENDED_ELSEWHERE)
        expect(phone.cards).to_have_count(0)
        assert token_of(phone) is None
        phone.shot("04-phone-ended-elsewhere")

    def test_sign_out_of_all_other_sessions(self, devices, user):
        from nilva_session.models import UserSession

        first = devices("first", DESKTOP_UA, "203.0.113.7")
        first.sign_in("alice")
        expect(first.cards).to_have_count(1)
        second = devices("second", IPHONE_UA, "198.51.100.23", viewport=PHONE)
        second.sign_in("alice")
        expect(second.cards).to_have_count(2)
        # The third one's timers are fake, to show the periodic refresh without waiting for it.
        third = devices("third", IPAD_UA, "192.0.2.44", clock=True)
        third.sign_in("alice")
        expect(third.cards).to_have_count(3)
        expect(third.card("This device")).to_contain_text("Tablet · Apple iPad")
        first.focus()
        expect(first.cards).to_have_count(3)

        first.page.get_by_role("button", name="Sign out of all other sessions").click()
        expect(first.message).to_have_text("Signed out of all other sessions.")
        expect(first.cards).to_have_count(1)
        expect(first.card("This device")).to_contain_text("Chrome on Windows")
        first.shot("05-first-after-sign-out-of-others")

        # The second one's next action is a click: it lands on the sign-in form.
        second.page.get_by_role("button", name="Sign out Chrome on Windows").click()
        expect(second.sign_in_heading).to_be_visible()
        expect(second.message).to_contain_text(ENDED_ELSEWHERE)
        second.shot("06-second-ended-elsewhere")

        # The third one does nothing; its periodic refresh (every ~10 s) notices.
        expect(third.sessions_heading).to_be_visible()
        third.page.clock.fast_forward("00:11")
        expect(third.sign_in_heading).to_be_visible()
        expect(third.message).to_contain_text(ENDED_ELSEWHERE)
        third.shot("07-third-ended-elsewhere")

        # The first one stays signed in, alone; the other two were not brought back.
        first.focus()
        expect(first.sessions_heading).to_be_visible()
        expect(first.cards).to_have_count(1)
        assert UserSession.objects.filter(user=user, is_active=True).count() == 1

        # Signing out of this device: POST logout/.
        first.page.get_by_role("button", name="Sign out of this device").click()
        expect(first.sign_in_heading).to_be_visible()
        expect(first.message).to_have_text("You signed out on this device.")
        assert token_of(first) is None
        assert not UserSession.objects.filter(user=user, is_active=True).exists()
        assert UserSession.objects.filter(user=user, end_reason="logout").count() == 1

    def test_wrong_password_is_said_in_plain_words(self, devices, user):
        device = devices("desktop", DESKTOP_UA, "203.0.113.7")
        device.sign_in("alice", "not the password")

        expect(device.message).to_have_text("Wrong username or password.")
        expect(device.sign_in_heading).to_be_visible()
        expect(device.page.get_by_label("Password")).to_be_focused()
        expect(device.page.get_by_label("Password")).to_have_value("")
        assert token_of(device) is None
        device.shot("08-wrong-password")

        device.sign_in("alice")
        expect(device.sessions_heading).to_be_visible()
        expect(device.message).to_be_hidden()

    def test_throttled_sign_in_says_when_to_try_again(self, devices, user, settings):
        settings.NILVA_SESSION = {**settings.NILVA_SESSION, "LOGIN_THROTTLE_RATE": "2/min"}
        device = devices("desktop", DESKTOP_UA, "203.0.113.7")
        for _ in range(2):
            assert device.attempt_sign_in("alice", "not the password").status == 400
            expect(device.message).to_have_text("Wrong username or password.")

        answer = device.attempt_sign_in("alice", PASSWORD)
        retry_after = answer.headers["retry-after"]

        assert answer.status == 429
        # The window may end within a second: the page then says "1 second" (CI saw it once).
        unit = "second" if retry_after == "1" else "seconds"
        wanted = f"Too many attempts, try again in {retry_after} {unit}."
        expect(device.message).to_have_text(wanted)
        expect(device.sign_in_heading).to_be_visible()
        device.shot("09-throttled")

    def test_a_token_used_from_another_browser_is_suspended(self, devices, user, live_server):
        from nilva_session.models import UserSession

        desktop = devices("desktop", DESKTOP_UA, "203.0.113.7")
        desktop.sign_in("alice")
        expect(desktop.cards).to_have_count(1)
        stolen = token_of(desktop)

        # Another browser replays the token (sessionStorage set before the page loads).
        thief = devices("thief", IPHONE_UA, "192.0.2.99")
        thief.page.add_init_script(
            f"sessionStorage.setItem('nilva-session-demo:token', {stolen!r});"
        )
        thief.page.goto(live_server.url + "/")

        expect(thief.sign_in_heading).to_be_visible()
        expect(thief.message).to_have_text(
            "This session was suspended because your browser or network changed. "
            "Please sign in again."
        )
        assert UserSession.objects.get(user=user).end_reason == "user_agent_changed"
        thief.shot("10-suspended")
        # Suspending ended the session: the owner's next action says it was ended elsewhere.
        desktop.focus()
        expect(desktop.message).to_contain_text(ENDED_ELSEWHERE)

    def test_text_from_the_api_is_never_parsed_as_html(self, devices, db):
        from django.contrib.auth import get_user_model

        name = '<img id="injected" src="x" onerror="window.pwned = 1">'
        get_user_model().objects.create_user(name, password=PASSWORD)
        device = devices("desktop", DESKTOP_UA, "203.0.113.7")
        device.sign_in(name)

        expect(device.page.locator("#summary")).to_have_text(
            f"Signed in as {name} · 1 active session"
        )
        assert device.page.locator("#injected").count() == 0
        assert device.page.evaluate("window.pwned") is None

    def test_phone_width_has_no_horizontal_scrolling(self, devices, user):
        phone = devices("phone", IPHONE_UA, "198.51.100.23", viewport=PHONE)
        expect(phone.sign_in_heading).to_be_visible()
        assert phone.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        phone.shot("11-phone-sign-in")
        devices("desktop", DESKTOP_UA, "203.0.113.7").sign_in("alice")
        phone.sign_in("alice")
        expect(phone.cards).to_have_count(2)

        assert phone.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        button = phone.page.get_by_role("button", name="Sign out of all other sessions")
        assert button.bounding_box()["width"] > PHONE["width"] * 0.8  # full width on a phone
        phone.shot("12-phone-sessions")

    def test_readme_screenshots(self, devices, user):
        """``docs/demo.png`` (desktop) and ``docs/demo-phone.png`` (390 px), three sessions.

        Only for the pictures, the sessions' times are moved to the days before a fixed moment,
        and the two browsers' clocks start at that moment: the pictures show a spread of
        times, and they come out the same on every run (no change to commit).
        """
        from nilva_session.models import UserSession

        now = PICTURE_TIME
        desktop = devices("desktop", DESKTOP_UA, "203.0.113.7", clock=now)
        desktop.sign_in("alice")
        phone = devices("phone", IPHONE_UA, "198.51.100.23", viewport=PHONE, clock=now)
        phone.sign_in("alice")
        tablet = devices("tablet", IPAD_UA, "192.0.2.44")
        tablet.sign_in("alice")
        expect(tablet.cards).to_have_count(3)
        for ua, since in (
            (IPHONE_UA, timedelta(days=2, hours=3)),
            (IPAD_UA, timedelta(days=6, hours=1)),
            (DESKTOP_UA, timedelta(hours=1, minutes=12)),
        ):
            UserSession.objects.filter(user=user, user_agent=ua).update(created_at=now - since)

        def last_active(ago):
            for ua, delta in ago.items():
                UserSession.objects.filter(user=user, user_agent=ua).update(last_online=now - delta)

        last_active({IPHONE_UA: timedelta(minutes=2), IPAD_UA: timedelta(hours=5)})
        desktop.focus()
        expect(desktop.card("Mobile Safari on iOS").locator("time").first).to_have_text(
            "2 minutes ago"
        )
        PICTURES.mkdir(parents=True, exist_ok=True)
        desktop.page.set_viewport_size({"width": 920, "height": 400})  # the page's own height
        desktop.page.screenshot(path=PICTURES / "demo.png", full_page=True)
        # Seen from the phone, the phone is the one active just now.
        last_active({IPHONE_UA: timedelta(0), DESKTOP_UA: timedelta(minutes=4)})
        phone.focus()
        expect(phone.cards).to_have_count(3)
        expect(phone.card("Chrome on Windows").locator("time").first).to_have_text("4 minutes ago")
        phone.page.screenshot(path=PICTURES / "demo-phone.png", full_page=True)
        shutil.copy(PICTURES / "demo.png", ARTIFACTS / "13-readme-desktop.png")
        shutil.copy(PICTURES / "demo-phone.png", ARTIFACTS / "13-readme-phone.png")

        for picture in ("demo.png", "demo-phone.png"):
            assert (PICTURES / picture).stat().st_size < 300_000, picture


# ------------------------------------------------------------------------------------------
# The page over ASGI, with its websocket (Django Channels)
# ------------------------------------------------------------------------------------------


@pytest.fixture
def asgi_server(transactional_db):
    """The demo's ASGI application (demo/asgi.py: HTTP and the websocket at /ws/session/) under
    uvicorn, in a thread of this process (its database and in-memory channel layer); its URL.

    pytest-django's ``live_server`` speaks WSGI only: no websockets.
    """
    import threading

    import uvicorn
    from demo.asgi import application
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    from tests.support.services import free_port, wait_until

    port = free_port()
    config = uvicorn.Config(
        ASGIStaticFilesHandler(application),
        host="127.0.0.1",
        port=port,
        lifespan="off",
        ws="auto",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, what="uvicorn to start")
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", port=port)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def asgi_devices(browser, asgi_server):
    """``devices``, on the page served by :func:`asgi_server`."""
    yield from opened_devices(browser, asgi_server.url)


class TestLiveEnd:
    """Issue 15: the page hears at once, through its websocket, that its session ended."""

    __test__ = IN_BROWSER_PROCESS

    def test_a_session_ended_elsewhere_is_shown_at_once(self, asgi_devices, asgi_server, user):
        from tests.support.processes import call

        # The page's timers are fake and never run: its 10 s poll cannot be what notices.
        desktop = asgi_devices("desktop", DESKTOP_UA, "203.0.113.7", clock=True)
        desktop.sign_in("alice")
        expect(desktop.cards).to_have_count(1)
        expect(desktop.page.locator("#app")).to_have_attribute("data-live", "open")

        # Another client of the same user ends the page's session through the HTTP API.
        login = call(
            asgi_server.port,
            "POST",
            "/api/sessions/login/",
            body={"username": "alice", "password": PASSWORD},
        )
        assert login.status == 200, login.body
        other = {"Authorization": f"Token {login.body['token']}"}
        listed = call(asgi_server.port, "GET", "/api/sessions/active/", headers=other)
        (page_session,) = [s["session_id"] for s in listed.body if not s["is_current"]]
        ended = call(
            asgi_server.port, "DELETE", f"/api/sessions/active/{page_session}/", headers=other
        )
        assert ended.status == 204, ended.body

        expect(desktop.message).to_contain_text(ENDED_ELSEWHERE, timeout=2_000)
        shown_after = time.monotonic() - ended.done
        print(f"\nthe page showed the end {shown_after * 1000:.0f} ms after the DELETE's answer")
        assert shown_after < 1.0
        expect(desktop.sign_in_heading).to_be_visible()
        expect(desktop.page.locator("#app")).to_have_attribute("data-live", "closed")
        assert token_of(desktop) is None
        desktop.shot("14-ended-elsewhere-live")

    def test_signing_out_on_this_device_is_not_news_from_the_socket(self, asgi_devices, user):
        desktop = asgi_devices("desktop", DESKTOP_UA, "203.0.113.7")
        desktop.sign_in("alice")
        expect(desktop.page.locator("#app")).to_have_attribute("data-live", "open")

        desktop.page.get_by_role("button", name="Sign out of this device").click()

        expect(desktop.sign_in_heading).to_be_visible()
        expect(desktop.message).to_have_text("You signed out on this device.")
        expect(desktop.page.locator("#app")).to_have_attribute("data-live", "closed")

    def test_the_page_over_wsgi_opens_no_websocket_and_polls(self, devices, user):
        desktop = devices("desktop", DESKTOP_UA, "203.0.113.7")
        desktop.sign_in("alice")
        expect(desktop.cards).to_have_count(1)

        assert desktop.page.locator("#app").get_attribute("data-websocket-url") is None
        assert desktop.page.locator("#app").get_attribute("data-live") is None
