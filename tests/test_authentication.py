"""The opaque-token DRF class: header parsing, client details, request.auth, the user-agent check.

Malformed headers are refused like DRF's ``TokenAuthentication`` does, before any cache or
database access, and nothing ever answers 500.
"""

from __future__ import annotations

from contextlib import suppress

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from nilva_session import clients, sessions
from nilva_session.apis import LoginApi
from nilva_session.backends import UserSessionDBTokenAuthentication
from nilva_session.models import EndReason, UserSession
from nilva_session.signals import session_revoked, session_suspended
from nilva_session.utils import BASE62, is_legacy_token, is_well_formed_token, token_generator

from .conftest import DESKTOP_UA, DESKTOP_UA_NEXT, FIREFOX_UA, IPHONE_UA, PASSWORD
from .support.doubles import nilva_settings
from .urls import WhoAmI

WHOAMI_URL = "/api/whoami/"
LOGIN_URL = "/api/sessions/login/"

NO_CREDENTIALS = "Invalid token header. No credentials provided."
SPACES = "Invalid token header. Token string should not contain spaces."
INVALID_CHARACTERS = "Invalid token header. Token string should not contain invalid characters."
INVALID_TOKEN = "Invalid token."


def session_rows() -> list[dict]:
    return list(UserSession.objects.order_by("pk").values())


def drf_request(authorization=None, **meta) -> Request:
    """A DRF request from the shared client's browser that only knows the token class."""
    if authorization is not None:
        meta["HTTP_AUTHORIZATION"] = authorization
    meta.setdefault("HTTP_USER_AGENT", DESKTOP_UA)
    meta.setdefault("REMOTE_ADDR", "203.0.113.7")
    return Request(
        APIRequestFactory().get(WHOAMI_URL, **meta),
        authenticators=[UserSessionDBTokenAuthentication()],
    )


def with_bad_checksum(token: str) -> str:
    last = token[-1]
    return token[:-1] + ("a" if last != "a" else "b")


# --------------------------------------------------------------------------------------------
# the Authorization header
# --------------------------------------------------------------------------------------------


def test_no_header_is_401_with_www_authenticate(db, api_client):
    response = api_client.get(WHOAMI_URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "detail" in response.json()


@nilva_settings(AUTH_HEADER_PREFIX="Session")
def test_www_authenticate_follows_the_keyword_setting(db, api_client):
    assert api_client.get(WHOAMI_URL)["WWW-Authenticate"] == "Session"


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Bearer abc.def.ghi", "Tokens abc", "Digest x=y", "", "Token2 abc"],
)
def test_other_keyword_returns_none_without_touching_anything(
    db, header, cache_spy, django_assert_num_queries
):
    with django_assert_num_queries(0):
        assert UserSessionDBTokenAuthentication().authenticate(drf_request(header)) is None
    assert cache_spy.calls == []


def test_missing_header_returns_none(db):
    assert UserSessionDBTokenAuthentication().authenticate(drf_request()) is None


def test_keyword_is_case_insensitive(token_client, api_client):
    _client, session, token = token_client
    response = api_client.get(WHOAMI_URL, HTTP_AUTHORIZATION=f"TOKEN {token}")
    assert response.status_code == 200
    assert response.json()["session_id"] == str(session.pk)


@nilva_settings(AUTH_HEADER_PREFIX="Session")
def test_keyword_follows_the_setting(token_client, api_client):
    _client, _session, token = token_client
    assert UserSessionDBTokenAuthentication().authenticate(drf_request(f"Token {token}")) is None
    assert api_client.get(WHOAMI_URL, HTTP_AUTHORIZATION=f"Session {token}").status_code == 200


def test_keyword_attribute_of_a_subclass_wins(token_client):
    _client, session, token = token_client

    class BearerToken(UserSessionDBTokenAuthentication):
        keyword = "Bearer"

    assert BearerToken().authenticate(drf_request(f"Token {token}")) is None
    _user, auth = BearerToken().authenticate(drf_request(f"Bearer {token}"))
    assert auth.pk == session.pk


MALFORMED = {
    "keyword only": ("Token", NO_CREDENTIALS),
    "empty token": ("Token ", NO_CREDENTIALS),
    "only whitespace after keyword": ("Token    ", NO_CREDENTIALS),
    "token with spaces": ("Token abc def", SPACES),
    "three parts": ("Token nvs_abc nvs_def", SPACES),
    "non-UTF-8 bytes": ("Token \xff\xfe", INVALID_CHARACTERS),
    "latin-1 accent": ("Token t\xf6k\xe9n", INVALID_CHARACTERS),
    "non-latin-1 text": ("Token \u4ee4\u724c", INVALID_TOKEN),
    "10 kB token": ("Token " + "a" * 10240, INVALID_TOKEN),
    "10 kB of base62 after the prefix": ("Token nvs_" + "Ab9" * 3400, INVALID_TOKEN),
    "short token": ("Token nvs_abc123", INVALID_TOKEN),
    "wrong prefix": ("Token xyz_" + "a" * 49, INVALID_TOKEN),
    "NUL byte": ("Token nvs_\x00abc", INVALID_TOKEN),
    "SQL in the token": ("Token ';DROP/**/TABLE/**/user_session;--", INVALID_TOKEN),
}


@pytest.mark.parametrize(("header", "detail"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_header_is_401_before_any_db_or_cache_access(
    token_client, api_client, header, detail, cache_spy, django_assert_num_queries
):
    before = session_rows()
    cache_spy.reset()
    with django_assert_num_queries(0):
        response = api_client.get(WHOAMI_URL, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["detail"] == detail
    assert cache_spy.calls == []
    assert session_rows() == before


def test_bad_checksum_is_401_before_any_db_or_cache_access(
    token_client, api_client, cache_spy, django_assert_num_queries
):
    _client, _session, token = token_client
    forged = with_bad_checksum(token)
    assert forged.startswith("nvs_")
    before = session_rows()
    cache_spy.reset()
    with django_assert_num_queries(0):
        response = api_client.get(WHOAMI_URL, HTTP_AUTHORIZATION=f"Token {forged}")
    assert response.status_code == 401
    assert response.json() == {"detail": INVALID_TOKEN, "code": "invalid_token"}
    assert cache_spy.calls == []
    assert session_rows() == before


def test_header_given_as_bytes_is_parsed(token_client):
    _client, session, token = token_client
    _user, auth = UserSessionDBTokenAuthentication().authenticate(
        drf_request(f"Token {token}".encode())
    )
    assert auth.pk == session.pk


def test_well_formed_unknown_token_is_401_and_changes_nothing(token_client, api_client):
    before = session_rows()
    response = api_client.get(WHOAMI_URL, HTTP_AUTHORIZATION=f"Token {token_generator()}")
    assert response.status_code == 401
    assert response.json() == {"detail": INVALID_TOKEN, "code": "invalid_token"}
    assert session_rows() == before


def test_token_of_another_session_is_not_confused(user, other_user, open_session, api_client):
    open_session(user)
    theirs, their_token = open_session(other_user)
    response = api_client.get(WHOAMI_URL, HTTP_AUTHORIZATION=f"Token {their_token}")
    assert response.json() == {"user": "bob", "session_id": str(theirs.pk)}


# --------------------------------------------------------------------------------------------
# property: any header value is None or AuthenticationFailed; malformed means no query
# --------------------------------------------------------------------------------------------


def _token_part(value) -> str | None:
    """The token a header carries when its keyword is ours, as the class would decode it."""
    raw = value
    if isinstance(value, str):
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:
            raw = value.encode("utf-8")
    parts = raw.split()
    if len(parts) != 2 or parts[0].lower() != b"token":
        return None
    try:
        return parts[1].decode()
    except UnicodeError:
        return None


def _acceptable_shape(token: str | None) -> bool:
    return token is not None and (is_well_formed_token(token) or is_legacy_token(token))


HEADER_VALUES = st.one_of(
    st.text(),
    st.binary(),
    st.builds("{} {}".format, st.sampled_from(["Token", "token", "TOKEN", "Bearer"]), st.text()),
    st.builds(lambda body: b"Token " + body, st.binary()),
    st.builds("Token nvs_{}".format, st.text(alphabet=BASE62, min_size=15, max_size=300)),
    st.builds("Token {}".format, st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789")),
)


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=HEADER_VALUES)
def test_any_header_returns_none_or_raises_authentication_failed(value, cache_spy):
    request = drf_request(value)
    cache_spy.reset()
    with CaptureQueriesContext(connection) as queries, suppress(AuthenticationFailed):
        assert UserSessionDBTokenAuthentication().authenticate(request) is None
    if not _acceptable_shape(_token_part(value)):
        assert len(queries) == 0, value
        assert cache_spy.calls == [], value


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_character_change_of_a_token_is_refused_without_a_query(data, cache_spy):
    token = token_generator()
    position = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    # The same number of choices whatever the token, so hypothesis can replay the draws.
    replacement = data.draw(st.sampled_from([c for c in BASE62 if c != token[position]]))
    forged = token[:position] + replacement + token[position + 1 :]
    cache_spy.reset()
    with CaptureQueriesContext(connection) as queries, pytest.raises(AuthenticationFailed):
        UserSessionDBTokenAuthentication().authenticate(drf_request(f"Token {forged}"))
    assert len(queries) == 0
    assert cache_spy.calls == []


# --------------------------------------------------------------------------------------------
# request.auth and current_session
# --------------------------------------------------------------------------------------------


def test_authenticate_returns_the_user_and_the_session(user, token_client):
    _client, session, token = token_client
    authenticated_user, auth = UserSessionDBTokenAuthentication().authenticate(
        drf_request(f"Token {token}")
    )
    assert authenticated_user.pk == user.pk
    assert isinstance(auth, UserSession)
    assert auth.pk == session.pk


@pytest.mark.parametrize("temperature", ["cold", "warm"])
def test_request_auth_is_the_session_and_current_session_returns_it(token_client, temperature):
    _client, session, token = token_client
    if temperature == "warm":
        drf_request(f"Token {token}").user  # noqa: B018  (fills the cache)
    request = drf_request(f"Token {token}")
    current = sessions.current_session(request)  # authenticates lazily
    assert isinstance(request.auth, UserSession)
    assert request.auth.pk == session.pk
    assert current is request.auth
    assert request.user.get_username() == "alice"


def test_current_session_is_none_without_credentials(db):
    request = drf_request()
    assert sessions.current_session(request) is None
    assert request.auth is None


# --------------------------------------------------------------------------------------------
# clients without a User-Agent or REMOTE_ADDR, IPv6
# --------------------------------------------------------------------------------------------


def _bare_request(method: str, path: str, **kwargs):
    """A request with neither REMOTE_ADDR nor HTTP_USER_AGENT in META."""
    request = getattr(APIRequestFactory(), method)(path, **kwargs)
    request.META.pop("REMOTE_ADDR", None)
    request.META.pop("HTTP_USER_AGENT", None)
    return request


def test_login_and_requests_without_user_agent_or_remote_addr(user):
    login = LoginApi.as_view()(
        _bare_request(
            "post", LOGIN_URL, data={"username": "alice", "password": PASSWORD}, format="json"
        )
    )
    assert login.status_code == 200
    session = UserSession.objects.get(pk=login.data["session_id"])
    assert session.user_agent == ""
    assert session.last_ip is None

    for _ in range(2):  # cold, then warm
        request = _bare_request(
            "get", WHOAMI_URL, HTTP_AUTHORIZATION=f"Token {login.data['token']}"
        )
        response = WhoAmI.as_view()(request)
        assert response.status_code == 200
        assert response.data["session_id"] == str(session.pk)
    assert UserSession.objects.get(pk=session.pk).is_active


@pytest.mark.parametrize(
    ("remote_addr", "stored"),
    [
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("not-an-ip", None),
        ("", None),
    ],
)
def test_login_stores_the_client_ip_normalised(user, api_client, remote_addr, stored):
    response = api_client.post(
        LOGIN_URL,
        {"username": "alice", "password": PASSWORD},
        format="json",
        REMOTE_ADDR=remote_addr,
    )
    assert response.status_code == 200
    session = UserSession.objects.get(pk=response.json()["session_id"])
    assert session.last_ip == stored
    whoami = api_client.get(
        WHOAMI_URL, HTTP_AUTHORIZATION=f"Token {response.json()['token']}", REMOTE_ADDR=remote_addr
    )
    assert whoami.status_code == 200


def test_ipv6_requests_authenticate_and_record_the_address(user, open_session, api_client):
    session, token = open_session(user, ip="2001:db8::1")
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    for _ in range(2):  # cold, then warm
        assert api_client.get(WHOAMI_URL, REMOTE_ADDR="2001:db8::1").status_code == 200
    assert api_client.get(WHOAMI_URL, REMOTE_ADDR="2001:db8::2").status_code == 200
    assert UserSession.objects.get(pk=session.pk).last_ip == "2001:db8::2"


def test_ipv4_mapped_address_is_the_same_client_as_plain_ipv4(
    user, open_session, api_client, django_assert_num_queries
):
    session, token = open_session(user, ip="::ffff:203.0.113.9")
    assert UserSession.objects.get(pk=session.pk).last_ip == "203.0.113.9"
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    api_client.get(WHOAMI_URL, REMOTE_ADDR="203.0.113.9")  # fills the cache
    with django_assert_num_queries(0):  # same address: no activity write
        assert api_client.get(WHOAMI_URL, REMOTE_ADDR="::ffff:203.0.113.9").status_code == 200


# --------------------------------------------------------------------------------------------
# USER_AGENT_CHECK
# --------------------------------------------------------------------------------------------


def _request_with(client, user_agent):
    return client.get(WHOAMI_URL, HTTP_USER_AGENT=user_agent)


@pytest.mark.parametrize("temperature", ["cold", "warm"])
def test_family_accepts_a_version_bump_and_stores_it(token_client, temperature):
    client, session, _token = token_client
    if temperature == "warm":
        assert client.get(WHOAMI_URL).status_code == 200
    assert _request_with(client, DESKTOP_UA_NEXT).status_code == 200
    row = UserSession.objects.get(pk=session.pk)
    assert row.is_active
    assert row.user_agent == DESKTOP_UA_NEXT
    assert _request_with(client, DESKTOP_UA_NEXT).status_code == 200


@pytest.mark.parametrize("new_user_agent", [FIREFOX_UA, IPHONE_UA], ids=["browser", "device"])
@pytest.mark.parametrize("temperature", ["cold", "warm"])
def test_family_suspends_on_a_browser_or_device_change(
    token_client, capture_signal, new_user_agent, temperature
):
    client, session, _token = token_client
    if temperature == "warm":
        assert client.get(WHOAMI_URL).status_code == 200
    suspended = capture_signal(session_suspended)
    revoked = capture_signal(session_revoked)

    response = _request_with(client, new_user_agent)

    assert response.status_code == 401
    assert response.json()["code"] == "session_suspended"
    row = UserSession.objects.get(pk=session.pk)
    assert row.is_active is False
    assert row.end_reason == EndReason.USER_AGENT_CHANGED
    old, new = (clients.summarize_user_agent(ua) for ua in (DESKTOP_UA, new_user_agent))
    assert row.detail == f"User agent changed from {old} to {new}."
    assert "Chrome 120" in row.detail
    assert ("Firefox 121" if new_user_agent == FIREFOX_UA else "iOS") in row.detail
    assert row.user_agent == DESKTOP_UA
    assert len(suspended) == 1
    assert suspended[0]["session"].pk == session.pk
    assert suspended[0]["reason"] == EndReason.USER_AGENT_CHANGED
    assert suspended[0]["request"] is not None
    assert revoked[0]["session_ids"] == [session.pk]


def test_suspended_session_stays_ended_for_the_original_client(token_client):
    client, _session, _token = token_client
    assert client.get(WHOAMI_URL).status_code == 200
    assert _request_with(client, FIREFOX_UA).status_code == 401
    response = client.get(WHOAMI_URL)  # back to the original user agent
    assert response.status_code == 401
    assert response.json()["code"] == "session_ended"


@nilva_settings(USER_AGENT_CHECK="strict")
@pytest.mark.parametrize("new_user_agent", [DESKTOP_UA_NEXT, FIREFOX_UA, IPHONE_UA, ""])
def test_strict_suspends_on_any_change(token_client, capture_signal, new_user_agent):
    client, session, _token = token_client
    suspended = capture_signal(session_suspended)
    response = _request_with(client, new_user_agent)
    assert response.status_code == 401
    assert response.json()["code"] == "session_suspended"
    row = UserSession.objects.get(pk=session.pk)
    assert (row.is_active, row.end_reason) == (False, EndReason.USER_AGENT_CHANGED)
    assert len(suspended) == 1


@nilva_settings(USER_AGENT_CHECK="strict")
def test_strict_accepts_the_same_user_agent(token_client):
    client, _session, _token = token_client
    for _ in range(2):
        assert client.get(WHOAMI_URL).status_code == 200


@nilva_settings(USER_AGENT_CHECK="off")
@pytest.mark.parametrize("new_user_agent", [DESKTOP_UA_NEXT, FIREFOX_UA, IPHONE_UA, ""])
def test_off_ignores_any_change(token_client, capture_signal, new_user_agent):
    client, session, _token = token_client
    suspended = capture_signal(session_suspended)
    assert _request_with(client, new_user_agent).status_code == 200
    row = UserSession.objects.get(pk=session.pk)
    assert row.is_active
    assert row.user_agent == DESKTOP_UA
    assert suspended == []


def test_check_user_agent_can_be_overridden(token_client):
    _client, session, token = token_client

    class AnyClient(UserSessionDBTokenAuthentication):
        def check_user_agent(self, session, request):
            return None

    request = drf_request(f"Token {token}", HTTP_USER_AGENT=IPHONE_UA)
    _user, auth = AnyClient().authenticate(request)
    assert auth.pk == session.pk
    assert UserSession.objects.get(pk=session.pk).is_active


def test_missing_user_agent_after_a_browser_login_suspends(token_client):
    _client, session, token = token_client
    request = _bare_request("get", WHOAMI_URL, HTTP_AUTHORIZATION=f"Token {token}")
    assert WhoAmI.as_view()(request).status_code == 401
    assert UserSession.objects.get(pk=session.pk).end_reason == EndReason.USER_AGENT_CHANGED
