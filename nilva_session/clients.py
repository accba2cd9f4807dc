"""What a request says about its client: IP address and user agent.

User agents are parsed by ua-parser (with its native resolver when ``ua-parser[regex]`` is
installed) and memoised, so listing many sessions parses each distinct string once.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from django.http import HttpRequest
from django.utils.translation import gettext
from ua_parser import parse

from .conf import session_settings

_TABLET_WORDS = ("ipad", "tablet", "kindle", "playbook", "nexus 7", "nexus 9", "nexus 10", "sm-t")
_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS"})


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Only the last this many characters and entries of X-Forwarded-For are read.
MAX_FORWARDED_LENGTH = 2048
MAX_FORWARDED_ENTRIES = 32


def parse_ip(raw: object) -> IPAddress | None:
    """Return a normalised IP address, or None for anything that is not one.

    IPv4-mapped IPv6 addresses are unpacked; an IPv6 zone ("%eth0") is dropped.
    """
    if not isinstance(raw, str) or not raw or len(raw) > 64:
        return None
    return _parse_ip(raw)


@lru_cache(maxsize=4096)
def _parse_ip(raw: str) -> IPAddress | None:
    # Memoised: every authenticated request parses REMOTE_ADDR (addresses are immutable).
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        # PostgreSQL's inet and a 39-character column cannot hold a zone.
        return ipaddress.IPv6Address(address.packed)
    return address


def _forwarded_chain(request: HttpRequest) -> list[str]:
    """Return the last ``MAX_FORWARDED_ENTRIES`` hops of ``X-Forwarded-For``, nearest last.

    The client writes the head of the header and each proxy appends to its tail, so only the
    tail is read: a long head (padding, or a client hiding behind many fake hops) can neither
    cost more work nor push the hops our proxies added out of view.
    """
    header = request.META.get("HTTP_X_FORWARDED_FOR") or ""
    if not isinstance(header, str):
        return []
    tail = header[-MAX_FORWARDED_LENGTH:]
    hops = tail.split(",")
    if len(tail) < len(header):
        hops = hops[1:]  # the first piece may be cut in the middle of an address
    return [hop.strip() for hop in hops][-MAX_FORWARDED_ENTRIES:]


def _trusted_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(net, strict=False) for net in session_settings.TRUSTED_PROXIES]


def client_ip(request: HttpRequest) -> str | None:
    """Return the client's IP address, or None when it cannot be known.

    ``REMOTE_ADDR`` by default. ``X-Forwarded-For`` is read only when the project says which
    proxies to trust: ``TRUSTED_PROXY_COUNT`` (that many proxies in front of Django) or
    ``TRUSTED_PROXIES`` (their networks). Entries added by an untrusted client are ignored,
    and nothing that is not an IP address is ever returned.
    """
    remote = parse_ip(request.META.get("REMOTE_ADDR"))
    if remote is None:
        return None
    networks, count = _trusted_networks(), session_settings.TRUSTED_PROXY_COUNT
    if not networks and not count:
        return str(remote)
    hops = [*_forwarded_chain(request), str(remote)]  # nearest hop last
    if networks:
        # Walk from the nearest hop outwards; the first address we do not trust is the client.
        client = remote
        for raw in reversed(hops):
            address = parse_ip(raw)
            if address is None:
                break
            client = address
            if not any(address in network for network in networks):
                break
        return str(client)
    candidate = parse_ip(hops[-(count + 1)] if len(hops) > count else hops[0])
    return str(candidate or remote)


def user_agent(request: HttpRequest) -> str:
    """Return the request's User-Agent cut to ``MAX_USER_AGENT_LENGTH``; "" when missing."""
    value = request.META.get("HTTP_USER_AGENT") or ""
    if not isinstance(value, str):
        return ""
    # Drop characters PostgreSQL text cannot hold (NUL) and other control characters.
    if not value.isprintable():
        value = "".join(ch for ch in value if ch.isprintable())
    return value[: session_settings.MAX_USER_AGENT_LENGTH]


@lru_cache(maxsize=2048)
def _parse(user_agent_string: str) -> Any:
    return parse(user_agent_string).with_defaults()


@lru_cache(maxsize=2048)
def _describe(user_agent_string: str) -> dict[str, Any]:
    result = _parse(user_agent_string)
    ua, os, device = result.user_agent, result.os, result.device
    lowered = user_agent_string.lower()
    is_tablet = any(word in lowered for word in _TABLET_WORDS) or (
        os.family == "Android" and "mobile" not in lowered
    )
    is_mobile = not is_tablet and (os.family in _MOBILE_OS or "mobile" in lowered)
    is_bot = device.family == "Spider"
    return {
        "browser": ua.family,
        "browser_version": ".".join(v for v in (ua.major, ua.minor) if v),
        "os": os.family,
        "os_version": ".".join(v for v in (os.major, os.minor) if v),
        "device_family": device.family,
        "device_brand": device.brand or "",
        "device_model": device.model or "",
        "is_mobile": is_mobile,
        "is_tablet": is_tablet,
        "is_pc": not (is_mobile or is_tablet or is_bot) and os.family != "Other",
        "is_bot": is_bot,
    }


def describe_user_agent(user_agent_string: str) -> dict[str, Any]:
    """Return a new dict describing a user agent (browser, OS, device and form factor)."""
    return dict(_describe(user_agent_string or ""))


def summarize_user_agent(user_agent_string: str, translate: bool = False) -> str:
    """Return a short human summary such as ``"Chrome 120 on Windows (Other)"``.

    English by default (it is stored and logged); ``translate=True`` for what a person reads
    in the active language (the admin).
    """
    data = _describe(user_agent_string or "")
    browser = " ".join(p for p in (data["browser"], data["browser_version"].split(".")[0]) if p)
    parts = {"browser": browser, "os": data["os"], "device": data["device_family"]}
    if translate:
        return gettext("%(browser)s on %(os)s (%(device)s)") % parts
    return "{browser} on {os} ({device})".format(**parts)


def same_family(stored: str, current: str) -> bool:
    """Return True when two user agents share browser, OS and device family."""
    a, b = _parse(stored or ""), _parse(current or "")
    return (a.user_agent.family, a.os.family, a.device.family) == (
        b.user_agent.family,
        b.os.family,
        b.device.family,
    )
