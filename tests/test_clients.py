"""Client IP and user-agent handling."""

from __future__ import annotations

import pytest
from django.test import RequestFactory, override_settings

from nilva_session import clients
from nilva_session.clients import (
    client_ip,
    describe_user_agent,
    same_family,
    summarize_user_agent,
    user_agent,
)
from tests.conftest import DESKTOP_UA, DESKTOP_UA_NEXT, FIREFOX_UA, IPHONE_UA

IPAD_UA = (
    "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
ANDROID_PHONE_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"
)


def request_with(**meta):
    request = RequestFactory().get("/")
    request.META.pop("REMOTE_ADDR", None)
    request.META.pop("HTTP_USER_AGENT", None)
    request.META.update(meta)
    return request


# --- client_ip ------------------------------------------------------------------------------------


def test_ipv4_is_returned():
    assert client_ip(request_with(REMOTE_ADDR="203.0.113.7")) == "203.0.113.7"


def test_ipv6_is_returned_in_compressed_form():
    assert client_ip(request_with(REMOTE_ADDR="2001:db8::1")) == "2001:db8::1"
    assert (
        client_ip(request_with(REMOTE_ADDR="2001:0DB8:0000:0000:0000:0000:0000:0001"))
        == "2001:db8::1"
    )


def test_ipv4_mapped_ipv6_is_unpacked():
    assert client_ip(request_with(REMOTE_ADDR="::ffff:203.0.113.7")) == "203.0.113.7"
    assert client_ip(request_with(REMOTE_ADDR="::ffff:cb00:7107")) == "203.0.113.7"


def test_ipv6_zone_is_dropped():
    # Python's socket layer reports link-local peers as "fe80::1%eth0"; a database inet
    # column (and the 39-character column of other databases) cannot store the zone.
    assert client_ip(request_with(REMOTE_ADDR="fe80::1%eth0")) == "fe80::1"


def test_surrounding_whitespace_is_ignored():
    assert client_ip(request_with(REMOTE_ADDR=" 203.0.113.7 ")) == "203.0.113.7"


def test_missing_remote_addr_gives_none():
    assert client_ip(request_with()) is None


@pytest.mark.parametrize("value", ["", None, 12345, b"203.0.113.7", ["203.0.113.7"]])
def test_empty_or_non_string_remote_addr_gives_none(value):
    assert client_ip(request_with(REMOTE_ADDR=value)) is None


@pytest.mark.parametrize(
    "value",
    [
        "not-an-ip",
        "unknown",
        "203.0.113.7, 10.0.0.1",
        "203.0.113.256",
        "203.0.113",
        "2001:db8:::1",
        "203.0.113.7:8080",
        "<script>alert(1)</script>",
        "localhost",
        "\x00",
    ],
)
def test_garbage_gives_none(value):
    assert client_ip(request_with(REMOTE_ADDR=value)) is None


def test_huge_value_gives_none():
    assert client_ip(request_with(REMOTE_ADDR="1" * 100_000)) is None
    assert client_ip(request_with(REMOTE_ADDR="203.0.113.7" + " " * 100)) is None


def test_forwarded_headers_are_not_trusted():
    request = request_with(REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert client_ip(request) == "203.0.113.7"


# --- user_agent -----------------------------------------------------------------------------------


def test_user_agent_is_returned_as_sent():
    assert user_agent(request_with(HTTP_USER_AGENT=DESKTOP_UA)) == DESKTOP_UA


def test_missing_user_agent_gives_empty_string():
    assert user_agent(request_with()) == ""


@pytest.mark.parametrize("value", [None, "", 42, b"curl/8"])
def test_empty_or_non_string_user_agent_gives_empty_string(value):
    assert user_agent(request_with(HTTP_USER_AGENT=value)) == ""


def test_user_agent_is_cut_to_max_length():
    assert user_agent(request_with(HTTP_USER_AGENT="a" * 5000)) == "a" * 512


def test_user_agent_max_length_is_read_at_call_time():
    with override_settings(NILVA_SESSION={"MAX_USER_AGENT_LENGTH": 10}):
        assert user_agent(request_with(HTTP_USER_AGENT=DESKTOP_UA)) == DESKTOP_UA[:10]


def test_nul_and_control_characters_are_dropped():
    value = "Mozilla\x00/5.0\r\n (X11;\x1b[31m Linux)\x7f\t"
    assert user_agent(request_with(HTTP_USER_AGENT=value)) == "Mozilla/5.0 (X11;[31m Linux)"


def test_control_characters_are_dropped_before_cutting():
    with override_settings(NILVA_SESSION={"MAX_USER_AGENT_LENGTH": 5}):
        assert user_agent(request_with(HTTP_USER_AGENT="\x00\x00\x00abcdefgh")) == "abcde"


def test_non_ascii_printable_characters_are_kept():
    assert user_agent(request_with(HTTP_USER_AGENT="Bröwser/1.0")) == "Bröwser/1.0"


def test_user_agent_of_only_control_characters_is_empty():
    assert user_agent(request_with(HTTP_USER_AGENT="\x00\x01\x02")) == ""


# --- same_family ----------------------------------------------------------------------------------


def test_same_family_for_a_browser_update():
    assert same_family(DESKTOP_UA, DESKTOP_UA_NEXT)


def test_same_family_for_identical_strings():
    assert same_family(IPHONE_UA, IPHONE_UA)


def test_different_browser_is_not_same_family():
    assert not same_family(DESKTOP_UA, FIREFOX_UA)


def test_different_device_is_not_same_family():
    assert not same_family(IPHONE_UA, IPAD_UA)


def test_different_os_is_not_same_family():
    assert not same_family(DESKTOP_UA, ANDROID_PHONE_UA)


def test_empty_user_agents():
    assert same_family("", "")
    assert same_family(None, "")
    assert not same_family("", DESKTOP_UA)


# --- summarize_user_agent / describe_user_agent ---------------------------------------------------


def test_summary_of_desktop_chrome():
    assert summarize_user_agent(DESKTOP_UA) == "Chrome 120 on Windows (Other)"


def test_summary_of_iphone():
    assert summarize_user_agent(IPHONE_UA) == "Mobile Safari 17 on iOS (iPhone)"


def test_summary_of_empty_user_agent():
    assert summarize_user_agent("") == "Other on Other (Other)"
    assert summarize_user_agent(None) == "Other on Other (Other)"


def test_summary_of_junk_does_not_fail():
    assert summarize_user_agent("\x00" * 10 + "x" * 1000).endswith("(Other)")


def test_describe_returns_a_fresh_dict_each_time():
    first = describe_user_agent(DESKTOP_UA)
    first["browser"] = "tampered"
    assert describe_user_agent(DESKTOP_UA)["browser"] == "Chrome"


def test_describe_marks_bots():
    data = describe_user_agent(
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    )
    assert data["is_bot"] is True
    assert data["is_pc"] is False
    assert data["is_mobile"] is False


def test_describe_desktop_is_pc():
    data = describe_user_agent(DESKTOP_UA)
    assert data["is_pc"] is True
    assert data["os_version"] == "10"
    assert data["browser_version"] == "120.0"


def test_parsing_is_memoised():
    clients._parse.cache_clear()
    clients._describe.cache_clear()
    ua = DESKTOP_UA + " unique-for-memo-test"
    for _ in range(5):
        summarize_user_agent(ua)
        describe_user_agent(ua)
        same_family(ua, ua)
    assert clients._parse.cache_info().misses == 1


# --- X-Forwarded-For behind trusted proxies ----------------------------------------------------

PADDED_HEADS = [
    "a" * 5000,  # junk head over MAX_FORWARDED_LENGTH
    ", ".join(["6.6.6.6"] * 1000),  # many fake hops: longer than MAX_FORWARDED_LENGTH
    "x" * (clients.MAX_FORWARDED_LENGTH - 5),  # cut falls inside the junk, right before the tail
    "6" * 100_000,
]


@pytest.mark.parametrize("head", PADDED_HEADS, ids=["junk", "hops", "edge", "huge"])
@pytest.mark.parametrize(
    "options",
    [{"TRUSTED_PROXY_COUNT": 1}, {"TRUSTED_PROXIES": ["10.0.0.0/8"]}],
    ids=["count", "networks"],
)
def test_a_long_forwarded_head_cannot_hide_the_client(head, options):
    # The client writes the head; our proxy (10.0.0.2) appends the address it saw.
    request = request_with(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=f"{head}, 198.51.100.4")
    with override_settings(NILVA_SESSION=options):
        assert clients.client_ip(request) == "198.51.100.4"


@override_settings(NILVA_SESSION={"TRUSTED_PROXY_COUNT": 2})
def test_a_long_forwarded_head_keeps_every_trusted_hop():
    tail = "198.51.100.4, 10.0.0.9"  # client as seen by the first proxy, then the first proxy
    request = request_with(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="a" * 9000 + ", " + tail)
    assert clients.client_ip(request) == "198.51.100.4"


@override_settings(NILVA_SESSION={"TRUSTED_PROXIES": ["10.0.0.0/8"]})
def test_an_address_cut_by_the_length_limit_is_not_read():
    # "2001:db8::1234" cut after "2001:" leaves "db8::1234", itself a valid address: it must not
    # be taken for the client. Trusted hops padded with spaces fill the rest of the limit.
    kept = "db8::1234"
    hops = ("," + " " * 60 + "10.0.0.7") * 28
    first = "," + " " * (clients.MAX_FORWARDED_LENGTH - len(kept) - len(hops) - 9) + "10.0.0.7"
    header = "2001:" + kept + first + hops
    assert header[-clients.MAX_FORWARDED_LENGTH :].split(",")[0] == kept
    assert clients.parse_ip(kept) is not None
    request = request_with(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=header)
    assert clients.client_ip(request) == "10.0.0.7"
