"""Token generation, token format checks and hashing.

A token is ``TOKEN_PREFIX`` + ``TOKEN_SIZE`` random base62 characters + a 6-character base62
CRC32 checksum of everything before it. The checksum is not a secret: it lets authentication
refuse a mistyped or forged token before any cache or database access, and lets secret scanners
recognise a leaked token without false positives. Randomness comes from :mod:`secrets` only.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import zlib
from datetime import datetime, timedelta

from django.utils import timezone

from .conf import session_settings

BASE62 = string.digits + string.ascii_letters
CHECKSUM_LENGTH = 6
# Bodies shorter than this carry under 128 bits; longer than this are not ours.
MIN_BODY_LENGTH = 22
MAX_BODY_LENGTH = 256
_BASE62_SET = frozenset(BASE62)


def random_token_generator(size: int) -> str:
    """Return ``size`` random base62 characters from the operating system's CSPRNG."""
    return "".join(secrets.choice(BASE62) for _ in range(size))


def _checksum(text: str) -> str:
    value = zlib.crc32(text.encode("ascii"))
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        value, remainder = divmod(value, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits))


def token_generator() -> str:
    """Return a new raw token: prefix, random body, checksum."""
    prefix: str = session_settings.TOKEN_PREFIX
    head = prefix + random_token_generator(session_settings.TOKEN_SIZE)
    return head + _checksum(head)


def is_well_formed_token(token: str) -> bool:
    """Return True when ``token`` has the configured prefix, a sane body and a valid checksum.

    This costs a few microseconds and touches neither the cache nor the database.
    """
    prefix = session_settings.TOKEN_PREFIX
    body_length = len(token) - len(prefix) - CHECKSUM_LENGTH
    if not token.startswith(prefix) or not MIN_BODY_LENGTH <= body_length <= MAX_BODY_LENGTH:
        return False
    if not _BASE62_SET.issuperset(token[len(prefix) :]):
        return False
    head, checksum = token[:-CHECKSUM_LENGTH], token[-CHECKSUM_LENGTH:]
    return secrets.compare_digest(_checksum(head), checksum)


_LEGACY_ALPHABET = frozenset(string.ascii_lowercase + string.digits)


def is_legacy_token(token: str) -> bool:
    """Return True for the shape of a nilva-session 0.1.x token: 50 to 64 characters of a-z0-9."""
    return 50 <= len(token) <= 64 and _LEGACY_ALPHABET.issuperset(token)


def hash_data(data: str) -> str:
    """Return the SHA-256 hex digest (64 characters) of ``data``; this is what the DB stores."""
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def new_key_digest() -> str:
    """Return the digest of a fresh token nobody holds: a safe default for ``UserSession.key``."""
    return hash_data(token_generator())


def token_expire_at_generator() -> datetime | None:
    """Return the expiry of a session opened now (aware datetime).

    None when ``EXPIRE_AT`` is None.
    """
    lifetime: timedelta | None = session_settings.EXPIRE_AT
    if lifetime is None:
        return None
    return timezone.now() + lifetime
