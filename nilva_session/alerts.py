"""New-device sign-in alerts: what a device is, whether a user used it before, the email.

A *device* is what ``NEW_DEVICE_RULE`` names: the browser, OS and device family of the user
agent (versions aside, so an update is not a new device), and with ``"user_agent_and_network"``
also the client's network (the IPv4 /16 or IPv6 /32 around its address, roughly its provider
and region). Each sign-in remembers the SHA-256 of its device (a :class:`KnownDevice`, kept
``NEW_DEVICE_MEMORY`` after the device's last sign-in; the session stores it too, as
``device_digest``); a sign-in from a device the user has no record of is from a new device. A
user's first sign-in is not an alert: there is nothing to compare it with.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core import signing
from django.core.mail import EmailMultiAlternatives
from django.db.models import Count, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.module_loading import import_string
from django.utils.translation import gettext

from . import clients
from .conf import session_settings
from .models import KnownDevice, SessionEvent, UserSession
from .utils import hash_data

logger = logging.getLogger("nilva_session.security")

NETWORK_PREFIX = {4: 16, 6: 32}
NOT_ME_SALT = "nilva_session.not_me"
#: How many of a user's sessions from before device digests existed are compared one by one.
LEGACY_ROWS_COMPARED = 50


def device_digest(user_agent: str, ip: str | None) -> str:
    """Return the digest of the device a client is on under ``NEW_DEVICE_RULE`` ("" when off)."""
    rule = session_settings.NEW_DEVICE_RULE
    if rule is None:
        return ""
    parsed = clients.describe_user_agent(user_agent)
    parts = [parsed["browser"], parsed["os"], parsed["device_family"]]
    if rule == "user_agent_and_network":
        parts.append(network_of(ip))
    return hash_data("\x1f".join(parts))


def network_of(ip: str | None) -> str:
    """Return the network of ``ip`` a device rule compares ("" for no address)."""
    address = clients.parse_ip(ip) if ip else None
    if address is None:
        return ""
    prefix = NETWORK_PREFIX[address.version]
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def seen_before(user: Any, digest: str) -> bool | None:
    """Return whether ``user`` signed in from this device before; None if never from any.

    One query on the known devices (:class:`KnownDevice`). A user none of whose devices is known
    yet (history from before this release) is compared with their kept sessions instead, by user
    agent and IP (at most :data:`LEGACY_ROWS_COMPARED` of them, the most recent): one query more.
    """
    known = KnownDevice.objects.filter(user=user).aggregate(
        total=Count("pk"), same=Count("pk", filter=Q(digest=digest))
    )
    if known["same"]:
        return True
    if known["total"]:
        return False
    rows = UserSession.objects.for_user(user).order_by("-created_at")
    kept = list(rows.values_list("device_digest", "user_agent", "last_ip")[:LEGACY_ROWS_COMPARED])
    if not kept:
        return None
    return any(
        stored == digest or (not stored and device_digest(agent, ip) == digest)
        for stored, agent, ip in kept
    )


def remember(user: Any, digest: str, now: datetime) -> None:
    """Record that ``user`` signed in from this device at ``now`` (one upsert)."""
    KnownDevice.objects.bulk_create(
        [KnownDevice(user=user, digest=digest, first_seen=now, last_seen=now)],
        update_conflicts=True,
        unique_fields=["user", "digest"],
        update_fields=["last_seen"],
    )


#: What a browser, OS or device name shown in an email may look like. ua-parser copies some
#: names out of the User-Agent itself, which the client writes: a longer or odder name would let
#: whoever signed in write a sentence into the user's email ("…verified, do not click").
SHOWN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*(?: [A-Za-z0-9._+-]+){0,2}")
SHOWN_NAME_LENGTH = 24


def device_label(user_agent: str) -> str:
    """Return "Firefox 121 on Windows (Other)" for an email or a page, in the active language;
    a name that does not look like a product name reads "Other"."""
    data = clients.describe_user_agent(user_agent)
    major = data["browser_version"].split(".")[0]
    names = {"browser": data["browser"], "os": data["os"], "device": data["device_family"]}
    for key, name in names.items():
        if len(name) > SHOWN_NAME_LENGTH or not SHOWN_NAME.fullmatch(name):
            names[key] = "Other"
    if names["browser"] != "Other" and major.isdigit():
        names["browser"] = f"{names['browser']} {major}"
    return gettext("%(browser)s on %(os)s (%(device)s)") % names


def location_of(ip: str | None) -> str | None:
    """Return a place name for ``ip`` from ``LOCATION_RESOLVER``, or None (never raises)."""
    path = session_settings.LOCATION_RESOLVER
    if not path or not ip:
        return None
    try:
        resolver = import_string(path)
        place = resolver(ip)
    except Exception:  # a lookup must never break a sign-in
        logger.warning("location lookup failed", exc_info=True)
        return None
    return str(place) if place else None


def geoip_location(ip: str) -> str | None:
    """The default ``LOCATION_RESOLVER``: "City, Country" from Django's ``GeoIP2``, or None.

    Needs ``geoip2`` (``pip install "nilva-session[geoip]"``) and a MaxMind database under
    ``settings.GEOIP_PATH``; without them it returns None. No database is bundled.
    """
    from django.conf import settings

    if not getattr(settings, "GEOIP_PATH", None):
        return None
    try:
        from django.contrib.gis.geoip2 import GeoIP2

        city = GeoIP2().city(ip)
    except Exception:  # no geoip2, no database, an address it does not know
        return None
    names = [city.get("city"), city.get("country_name")]
    return ", ".join(name for name in names if name) or None


def not_me_token(event: SessionEvent) -> str:
    """Return the signed, timestamped value of the "this wasn't me" link of a new-device event."""
    return signing.dumps({"e": event.pk, "u": str(event.user_id)}, salt=NOT_ME_SALT)


def event_of_not_me_token(value: str) -> SessionEvent | None:
    """Return the new-device event a link names, or None if the link is forged or too old."""
    max_age = session_settings.NOT_ME_LINK_MAX_AGE
    try:
        claims = signing.loads(value, salt=NOT_ME_SALT, max_age=max_age)
        event = SessionEvent.objects.get(pk=int(claims["e"]), kind="new_device")
    except (signing.BadSignature, SessionEvent.DoesNotExist, KeyError, TypeError, ValueError):
        return None
    except OverflowError:
        return None
    if str(event.user_id) != str(claims.get("u")):
        return None
    return event


def lock_password(user_id: Any) -> bool:
    """With ``NOT_ME_SETS_UNUSABLE_PASSWORD``, make the user's password unusable; return True
    if it was done (saving it ends their sessions too, as every password change does)."""
    if not session_settings.NOT_ME_SETS_UNUSABLE_PASSWORD:
        return False
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    if user is None:
        return False
    user.set_unusable_password()
    user.save(update_fields=["password"])
    return True


def email_new_device(session: UserSession, user: Any, event: SessionEvent, request: Any) -> bool:
    """Send the new-device email (``NEW_DEVICE_EMAIL``); return True if one was sent.

    In the request's language (the client the user just signed in on), else ``LANGUAGE_CODE``.
    Nothing failing here (the email backend, the request's host, a template) fails the sign-in:
    the session is already open; the failure is logged and no email is sent.
    """
    address = getattr(user, user.get_email_field_name(), "") if user is not None else ""
    if not session_settings.NEW_DEVICE_EMAIL or not address or event.pk is None:
        return False
    try:
        message = _new_device_message(session, user, event, request, address)
        message.send()
    except Exception:
        logger.exception("new-device email not sent: user=%s", event.user_id)
        return False
    return True


def _new_device_message(
    session: UserSession, user: Any, event: SessionEvent, request: Any, address: str
) -> EmailMultiAlternatives:
    path = reverse("nilva_session:not-me", args=[not_me_token(event)])
    # build_absolute_uri() raises DisallowedHost for a Host not in ALLOWED_HOSTS.
    build_absolute_uri = getattr(request, "build_absolute_uri", None)
    link = build_absolute_uri(path) if build_absolute_uri is not None else path
    language = getattr(request, "LANGUAGE_CODE", None) or translation.get_language()
    with translation.override(language):
        context = {
            "user": user,
            "when": timezone.localtime(event.created_at),
            "device": device_label(session.user_agent),
            "ip": session.last_ip,
            "location": location_of(session.last_ip),
            "link": link,
            "link_expires": _expiry_of(event.created_at),
        }
        subject = render_to_string("nilva_session/email/new_device_subject.txt", context)
        text = render_to_string("nilva_session/email/new_device.txt", context)
        html = render_to_string("nilva_session/email/new_device.html", context)
    message = EmailMultiAlternatives(" ".join(subject.split()), text, to=[address])
    message.attach_alternative(html, "text/html")
    return message


def _expiry_of(created_at: datetime) -> datetime:
    return timezone.localtime(created_at + session_settings.NOT_ME_LINK_MAX_AGE)
