"""Login throttling: per client IP and per username, shared by login/ and token/, fail-open."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model, user_login_failed
from django.contrib.auth.backends import ModelBackend
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.test import override_settings
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from nilva_session.apis import TokenSessionObtainPairApi
from nilva_session.models import UserSession
from nilva_session.serializers import TokenSessionObtainPairSerializer
from nilva_session.throttling import LoginIPThrottle, LoginThrottle, LoginUsernameThrottle

from .conftest import DESKTOP_UA, PASSWORD

LOGIN_URL = "/api/sessions/login/"
TOKEN_URL = "/api/sessions/token/"
WHOAMI_URL = "/api/whoami/"
RATE = "3/min"
BUDGET = 3


class BrokenCache(LocMemCache):
    """A cache whose every operation fails, like a Redis that is down."""

    def _fail(self, *args, **kwargs):
        raise ConnectionError("cache is down")

    add = get = set = touch = delete = has_key = incr = decr = _fail
    get_many = set_many = delete_many = get_or_set = clear = _fail


BROKEN_CACHES = {"default": {"BACKEND": "tests.test_throttling.BrokenCache"}}


@pytest.fixture
def throttled():
    """Turn on ``LOGIN_THROTTLE_RATE = "3/min"`` for the test."""
    with override_settings(NILVA_SESSION={"LOGIN_THROTTLE_RATE": RATE}):
        yield


@pytest.fixture
def clock(monkeypatch):
    """A fake clock for the throttles: ``clock.advance(seconds)``; no sleeping."""

    class Clock:
        now = 1_700_000_000.0

        def advance(self, seconds: float) -> None:
            self.now += seconds

    fake = Clock()
    monkeypatch.setattr(LoginThrottle, "timer", staticmethod(lambda: fake.now))
    return fake


def client_from(ip: str) -> APIClient:
    return APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR=ip)


def attempt(
    client: APIClient,
    username: str,
    password: str = "wrong password",
    url: str = LOGIN_URL,
):
    return client.post(url, {"username": username, "password": password}, format="json")


def assert_throttled(response) -> None:
    assert response.status_code == 429, response.content
    assert isinstance(response.json().get("detail"), str)
    assert int(response["Retry-After"]) > 0
    assert int(response["Retry-After"]) <= 60


# --------------------------------------------------------------------------------------------
# per client IP
# --------------------------------------------------------------------------------------------


def test_ip_throttle_refuses_after_the_budget_across_usernames(db, throttled):
    client = client_from("198.51.100.1")

    answers = [attempt(client, f"user{i}").status_code for i in range(BUDGET)]
    refused = attempt(client, "yet-another-user")

    assert answers == [400] * BUDGET
    assert_throttled(refused)


def test_ip_throttle_refuses_even_correct_credentials(user, throttled):
    client = client_from("198.51.100.1")
    for i in range(BUDGET):
        attempt(client, f"user{i}")

    response = attempt(client, "alice", PASSWORD)

    assert_throttled(response)
    assert "token" not in response.json()
    assert not UserSession.objects.exists()


def test_successful_logins_count_against_the_budget(user, throttled):
    client = client_from("198.51.100.1")

    answers = [attempt(client, "alice", PASSWORD).status_code for _ in range(BUDGET)]

    assert answers == [200] * BUDGET
    assert_throttled(attempt(client, "alice", PASSWORD))
    assert UserSession.objects.count() == BUDGET


def test_ip_throttle_does_not_affect_other_ips(user, throttled):
    for i in range(BUDGET + 1):
        attempt(client_from("198.51.100.1"), f"user{i}")

    response = attempt(client_from("198.51.100.2"), "alice", PASSWORD)

    assert response.status_code == 200


def test_throttled_attempt_does_not_reach_authentication(user, throttled):
    client = client_from("198.51.100.1")
    for i in range(BUDGET):
        attempt(client, f"user{i}")
    failures = []

    def receiver(sender, **kwargs):
        failures.append(kwargs)

    user_login_failed.connect(receiver, weak=False)
    try:
        attempt(client, "alice")
    finally:
        user_login_failed.disconnect(receiver)

    assert failures == []


def test_budget_comes_back_after_the_window(user, throttled, clock):
    client = client_from("198.51.100.1")
    for i in range(BUDGET):
        attempt(client, f"user{i}")
    assert_throttled(attempt(client, "alice", PASSWORD))

    clock.advance(61)

    assert attempt(client, "alice", PASSWORD).status_code == 200


def test_budget_does_not_come_back_before_the_window(user, throttled, clock):
    clock.advance(60 - clock.now % 60)  # the start of a window (fixed: aligned to the clock)
    client = client_from("198.51.100.1")
    for i in range(BUDGET):
        attempt(client, f"user{i}")

    clock.advance(59)

    assert_throttled(attempt(client, "alice", PASSWORD))


def test_retry_after_is_the_rest_of_the_window(user, throttled, clock):
    clock.advance(60 - clock.now % 60 + 15)  # 15 s into a window
    client = client_from("198.51.100.1")
    for i in range(BUDGET):
        attempt(client, f"user{i}")
    refused = attempt(client, "alice", PASSWORD)
    assert_throttled(refused)
    assert int(refused["Retry-After"]) == 45


# --------------------------------------------------------------------------------------------
# per username
# --------------------------------------------------------------------------------------------


def test_username_throttle_refuses_after_the_budget_across_ips(user, throttled):
    answers = [
        attempt(client_from(f"198.51.100.{i + 1}"), "alice").status_code for i in range(BUDGET)
    ]

    refused = attempt(client_from("192.0.2.200"), "alice", PASSWORD)

    assert answers == [400] * BUDGET
    assert_throttled(refused)
    assert not UserSession.objects.exists()


def test_username_throttle_ignores_case(user, throttled):
    for i, name in enumerate(["alice", "ALICE", "Alice"]):
        attempt(client_from(f"198.51.100.{i + 1}"), name)

    assert_throttled(attempt(client_from("192.0.2.200"), "alice", PASSWORD))


def test_username_throttle_does_not_affect_other_usernames(user, other_user, throttled):
    for i in range(BUDGET + 1):
        attempt(client_from(f"198.51.100.{i + 1}"), "alice")

    response = attempt(client_from("192.0.2.200"), "bob", PASSWORD)

    assert response.status_code == 200


def test_username_throttle_key_does_not_contain_the_username():
    request = APIRequestFactory().post(LOGIN_URL, {"username": "alice@example.com"}, format="json")
    key = LoginUsernameThrottle().get_cache_key(Request(request, parsers=[JSONParser()]), None)

    assert key is not None
    assert "alice" not in key.lower()


def test_username_throttle_key_is_short_for_a_huge_username():
    request = APIRequestFactory().post(LOGIN_URL, {"username": "é" * 10_000}, format="json")

    key = LoginUsernameThrottle().get_cache_key(Request(request, parsers=[JSONParser()]), None)

    assert key is not None
    assert len(key) < 200
    assert key.isascii()


@pytest.mark.parametrize(
    "body",
    [{}, {"username": ""}, {"username": True}, {"username": ["alice"]}, ["alice"]],
    ids=["missing", "empty", "bool", "list", "list-body"],
)
def test_username_throttle_skips_requests_without_a_username_string(body):
    request = APIRequestFactory().post(LOGIN_URL, body, format="json")

    assert (
        LoginUsernameThrottle().get_cache_key(Request(request, parsers=[JSONParser()]), None)
        is None
    )


def test_ip_throttle_key_without_a_usable_address_is_shared():
    first = APIRequestFactory().post(LOGIN_URL, {}, format="json", REMOTE_ADDR="")
    second = APIRequestFactory().post(LOGIN_URL, {}, format="json", REMOTE_ADDR="not-an-ip")

    assert LoginIPThrottle().get_cache_key(first, None) == LoginIPThrottle().get_cache_key(
        second, None
    )


def test_ip_and_username_throttles_use_different_keys():
    request = Request(
        APIRequestFactory().post(
            LOGIN_URL, {"username": "198.51.100.1"}, format="json", REMOTE_ADDR="198.51.100.1"
        ),
        parsers=[JSONParser()],
    )

    assert LoginIPThrottle().get_cache_key(request, None) != LoginUsernameThrottle().get_cache_key(
        request, None
    )


# --------------------------------------------------------------------------------------------
# the rate setting
# --------------------------------------------------------------------------------------------


def test_rate_none_disables_throttling(user):
    with override_settings(NILVA_SESSION={"LOGIN_THROTTLE_RATE": None}):
        client = client_from("198.51.100.1")
        answers = [attempt(client, "alice").status_code for _ in range(BUDGET * 4)]
        last = attempt(client, "alice", PASSWORD)

    assert answers == [400] * (BUDGET * 4)
    assert last.status_code == 200


def test_rate_is_read_at_request_time(user):
    client = client_from("198.51.100.1")
    with override_settings(NILVA_SESSION={"LOGIN_THROTTLE_RATE": "10/min"}):
        answers = [attempt(client, "alice").status_code for _ in range(BUDGET)]

    with override_settings(NILVA_SESSION={"LOGIN_THROTTLE_RATE": RATE}):
        assert_throttled(attempt(client, "alice", PASSWORD))

    assert answers == [400] * BUDGET


# --------------------------------------------------------------------------------------------
# the JWT obtain view shares the login budget
# --------------------------------------------------------------------------------------------


def test_token_obtain_view_is_throttled(user, throttled):
    client = client_from("198.51.100.1")
    answers = [attempt(client, f"user{i}", url=TOKEN_URL).status_code for i in range(BUDGET)]

    refused = attempt(client, "alice", PASSWORD, url=TOKEN_URL)

    assert answers == [401] * BUDGET
    assert_throttled(refused)
    assert not UserSession.objects.exists()


def test_login_and_token_obtain_share_the_ip_budget(user, throttled):
    client = client_from("198.51.100.1")
    for i in range(BUDGET):
        attempt(client, f"user{i}")

    assert_throttled(attempt(client, "alice", PASSWORD, url=TOKEN_URL))


def test_login_and_token_obtain_share_the_username_budget(user, throttled):
    for i in range(BUDGET):
        attempt(client_from(f"198.51.100.{i + 1}"), "alice", url=TOKEN_URL)

    assert_throttled(attempt(client_from("192.0.2.200"), "alice", PASSWORD))


# --------------------------------------------------------------------------------------------
# a broken cache: fail open
# --------------------------------------------------------------------------------------------


def test_login_works_when_the_cache_is_down(user, throttled):
    with override_settings(CACHES=BROKEN_CACHES):
        client = client_from("198.51.100.1")
        answers = [attempt(client, "alice", PASSWORD) for _ in range(BUDGET + 2)]

    assert [a.status_code for a in answers] == [200] * (BUDGET + 2)
    assert UserSession.objects.count() == BUDGET + 2


def test_failed_login_is_400_not_500_when_the_cache_is_down(user, throttled):
    with override_settings(CACHES=BROKEN_CACHES):
        response = attempt(client_from("198.51.100.1"), "alice")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_credentials"


def test_token_from_login_works_when_the_cache_is_down(user, throttled):
    with override_settings(CACHES=BROKEN_CACHES):
        token = attempt(client_from("198.51.100.1"), "alice", PASSWORD).json()["token"]
        client = client_from("198.51.100.1")
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        response = client.get(WHOAMI_URL)

    assert response.status_code == 200
    assert response.json()["user"] == "alice"


def test_token_obtain_works_when_the_cache_is_down(user, throttled):
    with override_settings(CACHES=BROKEN_CACHES):
        response = attempt(client_from("198.51.100.1"), "alice", PASSWORD, url=TOKEN_URL)

    assert response.status_code == 200
    assert {"access", "refresh", "session_id"} <= set(response.json())


def test_broken_cache_is_really_broken():
    with override_settings(CACHES=BROKEN_CACHES), pytest.raises(ConnectionError):
        caches["default"].get("anything")


# --------------------------------------------------------------------------------------------
# bad bodies with throttling on
# --------------------------------------------------------------------------------------------


def test_non_json_body_gets_the_parse_error_with_throttling_on(user, throttled):
    response = client_from("198.51.100.1").post(
        LOGIN_URL, b"{not json", content_type="application/json"
    )

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_non_json_body_is_answered_the_same_with_and_without_throttling(user):
    def post():
        return client_from("198.51.100.9").post(
            LOGIN_URL, b"{not json", content_type="application/json"
        )

    unthrottled = post()
    with override_settings(NILVA_SESSION={"LOGIN_THROTTLE_RATE": RATE}):
        throttled_response = post()

    assert unthrottled.status_code == throttled_response.status_code == 400
    assert unthrottled.json() == throttled_response.json()


@pytest.mark.parametrize(
    "username",
    ["a" * 10_240, "ali\x00ce", "алиса", "\U0001f600"],
    ids=["10kB", "nul", "cyrillic", "emoji"],
)
def test_odd_usernames_are_400_not_500_with_throttling_on(user, throttled, username):
    response = attempt(client_from("198.51.100.1"), username)

    assert response.status_code == 400
    assert "detail" in response.json()


def test_username_budget_reads_the_user_models_username_field(monkeypatch):
    # simplejwt's obtain view posts USERNAME_FIELD (e.g. "email"), not "username".
    class EmailUser:
        USERNAME_FIELD = "email"

    monkeypatch.setattr("nilva_session.throttling.get_user_model", lambda: EmailUser)
    throttle = LoginUsernameThrottle()
    assert throttle.get_username({"email": "a@example.com"}) == "a@example.com"
    assert throttle.get_username({"username": "alice"}) == "alice"
    assert throttle.get_username({"password": "x"}) is None


# --------------------------------------------------------------------------------------------
# one budget per username, however it is written (JSON type, spaces, Unicode form, case)
# --------------------------------------------------------------------------------------------


def username_key(username, url=LOGIN_URL):
    request = APIRequestFactory().post(url, {"username": username}, format="json")
    return LoginUsernameThrottle().get_cache_key(Request(request, parsers=[JSONParser()]), None)


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        (5551234, "5551234"),
        (12.5, "12.5"),
        ("bob   ", "bob"),
        ("  bob", "bob"),
        ("\tbob\n", "bob"),
        ("BOB ", "bob"),
        ("\uff42\uff4f\uff42", "bob"),  # fullwidth: NFKC makes it "bob"
        ("Stra\u00dfe", "STRASSE"),  # case-folding, as before
    ],
)
def test_every_spelling_of_a_username_shares_its_budget(spelling, canonical):
    assert username_key(spelling) == username_key(canonical)
    assert username_key(spelling) is not None


@pytest.mark.parametrize("url", [LOGIN_URL, TOKEN_URL])
def test_a_json_number_spends_the_budget_of_that_username(db, url, throttled):
    UserModel = get_user_model()
    UserModel.objects.create_user("5551234", password=PASSWORD)
    reached = []
    receiver = lambda **kwargs: reached.append(1)  # noqa: E731
    user_login_failed.connect(receiver)
    try:
        answers = [
            attempt(client_from(f"198.51.100.{i + 1}"), 5551234, url=url).status_code
            for i in range(BUDGET * 3)
        ]
    finally:
        user_login_failed.disconnect(receiver)
    assert answers[:BUDGET] == [400 if url == LOGIN_URL else 401] * BUDGET
    assert set(answers[BUDGET:]) == {429}
    assert len(reached) == BUDGET  # only the budget reached the password check
    # ... and the string spelling, with the right password, is refused as well.
    assert_throttled(attempt(client_from("192.0.2.200"), "5551234", PASSWORD, url=url))


@pytest.mark.parametrize("url", [LOGIN_URL, TOKEN_URL])
def test_spaces_around_a_username_give_no_fresh_budget(user, url, throttled):
    for i in range(BUDGET):
        attempt(client_from(f"198.51.100.{i + 1}"), "alice", url=url)
    for n in range(1, 6):
        assert_throttled(attempt(client_from(f"203.0.113.{n}"), "alice" + " " * n, url=url))
    assert_throttled(attempt(client_from("192.0.2.200"), "alice   ", PASSWORD, url=url))
    assert not UserSession.objects.exists()


# --------------------------------------------------------------------------------------------
# token/ counts the field its serializer checks (USERNAME_FIELD), whatever else is posted
# --------------------------------------------------------------------------------------------


class EmailBackend(ModelBackend):
    """Signs in by e-mail, as a project whose ``USERNAME_FIELD`` is ``"email"`` would."""

    def authenticate(self, request, email=None, password=None, **kwargs):
        user = get_user_model().objects.filter(email=email).first()
        if user is not None and user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None


@pytest.fixture
def email_login(monkeypatch):
    """token/ as in a project with ``USERNAME_FIELD = "email"``: simplejwt reads ``email``."""
    monkeypatch.setattr(TokenSessionObtainPairSerializer, "username_field", "email")
    with override_settings(AUTHENTICATION_BACKENDS=["tests.test_throttling.EmailBackend"]):
        yield


def test_token_obtain_counts_the_serializers_username_field(user, throttled, email_login):
    # A "username" key the serializer ignores must not pick the budget: the e-mail is checked.
    reached = []
    receiver = lambda credentials, **kwargs: reached.append(credentials)  # noqa: E731
    user_login_failed.connect(receiver)
    try:
        answers = [
            client_from(f"198.51.100.{i + 1}")
            .post(
                TOKEN_URL,
                {"username": f"decoy{i}", "email": "alice@example.com", "password": "wrong"},
                format="json",
            )
            .status_code
            for i in range(BUDGET * 3)
        ]
    finally:
        user_login_failed.disconnect(receiver)
    right = client_from("192.0.2.200").post(
        TOKEN_URL,
        {"username": "decoy", "email": "alice@example.com", "password": PASSWORD},
        format="json",
    )

    assert answers == [401] * BUDGET + [429] * (BUDGET * 2)
    assert len(reached) == BUDGET  # only the budget reached the password check
    assert_throttled(right)
    assert not UserSession.objects.exists()


def test_token_obtain_reads_the_serializers_field_even_when_username_is_posted(email_login):
    request = Request(
        APIRequestFactory().post(
            TOKEN_URL, {"username": "decoy", "email": "Alice@Example.com "}, format="json"
        ),
        parsers=[JSONParser()],
    )

    key = LoginUsernameThrottle().get_cache_key(request, TokenSessionObtainPairApi())

    assert key is not None
    assert key == username_key("alice@example.com")


def test_email_login_is_really_checked_by_the_email_backend(user, email_login):
    # The fixture above is a working e-mail login, not a view that refuses everything.
    response = client_from("192.0.2.201").post(
        TOKEN_URL, {"email": "alice@example.com", "password": PASSWORD}, format="json"
    )

    assert response.status_code == 200, response.content


@pytest.mark.parametrize("url", [LOGIN_URL, TOKEN_URL])
@pytest.mark.parametrize(
    "spelling", ["ALICE", "\uff41\uff4c\uff49\uff43\uff45", " Alice\t"], ids=["case", "nfkc", "mix"]
)
def test_case_and_unicode_spellings_give_no_fresh_budget(user, throttled, url, spelling):
    reached = []
    receiver = lambda credentials, **kwargs: reached.append(credentials)  # noqa: E731
    for i in range(BUDGET):
        attempt(client_from(f"198.51.100.{i + 1}"), "alice", url=url)
    user_login_failed.connect(receiver)
    try:
        refused = attempt(client_from("203.0.113.9"), spelling, url=url)
    finally:
        user_login_failed.disconnect(receiver)

    assert_throttled(refused)
    assert reached == []


@pytest.mark.parametrize("url", [LOGIN_URL, TOKEN_URL])
@pytest.mark.parametrize("value", [True, None, ["alice"], {"a": 1}], ids=repr)
def test_a_username_of_no_string_type_never_reaches_the_password_check(db, throttled, url, value):
    # Spends no username budget (the IP budget still applies): the serializer refuses it.
    reached = []
    receiver = lambda credentials, **kwargs: reached.append(credentials)  # noqa: E731
    user_login_failed.connect(receiver)
    try:
        response = attempt(client_from("198.51.100.1"), value, url=url)
    finally:
        user_login_failed.disconnect(receiver)

    assert response.status_code == 400, response.content
    assert reached == []


def test_a_float_username_spends_the_budget_of_its_text(db, throttled):
    get_user_model().objects.create_user("12.5", password=PASSWORD)
    for i in range(BUDGET):
        attempt(client_from(f"198.51.100.{i + 1}"), 12.5, url=TOKEN_URL)

    assert_throttled(attempt(client_from("192.0.2.200"), "12.5", PASSWORD, url=TOKEN_URL))


class LapsingCache(LocMemCache):
    """A cache whose entry lapses once, between the throttle's ``add`` and its ``incr``."""

    lapses: list[str] = []  # the keys still to lapse; emptied as they do
    lapsed: list[str] = []

    def incr(self, key, delta=1, version=None):
        if key in self.lapses:
            self.lapses.remove(key)
            self.delete(key, version=version)
            self.lapsed.append(key)
        return super().incr(key, delta, version)


def test_an_entry_that_lapses_between_add_and_incr_still_counts_the_attempt(user, throttled, clock):
    request = Request(
        APIRequestFactory().post(LOGIN_URL, {"username": "alice"}, format="json"),
        parsers=[JSONParser()],
    )
    window = int(clock.now // 60)
    key = f"{LoginUsernameThrottle().get_cache_key(request, None)}:{window}"
    LapsingCache.lapses, LapsingCache.lapsed = [key], []
    with override_settings(CACHES={"default": {"BACKEND": "tests.test_throttling.LapsingCache"}}):
        answers = [attempt(client_from(f"198.51.100.{i + 1}"), "alice") for i in range(BUDGET)]
        refused = attempt(client_from("192.0.2.200"), "alice", PASSWORD)

    assert LapsingCache.lapsed == [key]  # the lapse happened, on the first attempt
    assert [a.status_code for a in answers] == [400] * BUDGET
    assert_throttled(refused)
