"""Every error nilva-session answers, one class per kind (simplejwt's style).

Each class has a ``status_code``, a ``default_detail`` for people and a ``default_code`` for
programs, and is answered as ``{"detail": ..., "code": ...}`` under any exception handler (the
detail is given to DRF as that dict). ``CATALOGUE`` lists them all: the OpenAPI description and
the README's table of codes are checked against it.
"""

from __future__ import annotations

import math
from typing import Any

from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy
from rest_framework import exceptions, status


class SessionError(exceptions.APIException):
    """Base class: ``detail`` and ``code`` may be given to override the defaults."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    default_detail: Any = _("Bad request.")
    default_code = "bad_request"

    def __init__(self, detail: Any = None, code: str | None = None) -> None:
        self.message = self.default_detail if detail is None else detail
        self.code = code or self.default_code
        # APIException's own __init__: DRF's Throttled takes ``wait`` first.
        exceptions.APIException.__init__(self, {"detail": self.message, "code": self.code})


# --- 401: the credential is refused (the core raises these) -----------------------------------


class SessionRefused(SessionError, exceptions.AuthenticationFailed):
    """Authentication refused; ``message`` is safe to show, ``code`` is machine-readable."""

    status_code = status.HTTP_401_UNAUTHORIZED
    # A context of its own: DRF's catalogues share the msgid, and DRF's Persian one (which wins
    # when rest_framework is listed first) says "invalid token header".
    default_detail = pgettext_lazy("nilva_session", "Invalid token.")
    default_code = "invalid_token"
    #: True when refusing ended the session (a suspension, idleness, a reused refresh token):
    #: that end must survive the request's rollback (``apis.keep_session_ends``).
    ends_session = False


class InvalidHeader(SessionRefused):
    # DRF's own msgids, so DRF's catalogues translate them in every language it has.
    default_detail = _("Invalid token header. No credentials provided.")
    default_code = "invalid_header"


class InvalidToken(SessionRefused):
    """A credential of the wrong shape, an unknown one, or one naming another user's session."""


class TokenNotValid(InvalidToken):
    """A validly signed JWT whose claims cannot be read (simplejwt's code)."""

    default_code = "token_not_valid"


class NoSessionId(SessionRefused):
    default_detail = _("Token contained no recognizable session id.")
    default_code = "no_session_id"


class SessionEnded(SessionRefused):
    default_detail = _("This session has ended. Please sign in again.")
    default_code = "session_ended"


class SessionExpired(SessionRefused):
    default_detail = _("This session has expired. Please sign in again.")
    default_code = "session_expired"


class SessionIdle(SessionRefused):
    ends_session = True  # see SessionRefused.ends_session

    default_detail = _("This session was idle for too long. Please sign in again.")
    default_code = "session_idle"


class UserInactive(SessionRefused):
    default_detail = _("User inactive or deleted.")
    default_code = "user_inactive"


class SessionSuspended(SessionRefused):
    ends_session = True  # see SessionRefused.ends_session

    default_detail = _(
        "This session was suspended because the client changed. Please sign in again."
    )
    default_code = "session_suspended"


class ClientAddressChanged(SessionSuspended):
    default_detail = _(
        "This session was suspended because the client's address changed. Please sign in again."
    )


class RefreshTokenReused(SessionRefused):
    """A retired refresh token came back: someone else holds a copy, so the session ended."""

    ends_session = True  # see SessionRefused.ends_session

    default_detail = _(
        "This refresh token was already used. The session has been ended; please sign in again."
    )
    default_code = "refresh_reused"


# --- 403 ----------------------------------------------------------------------------------------


class SessionLimitReached(SessionError, exceptions.PermissionDenied):
    """A login past ``MAX_SESSIONS_PER_USER`` under the ``"refuse"`` policy."""

    status_code = status.HTTP_403_FORBIDDEN
    default_detail = _("You are signed in on too many devices. Sign out of one and try again.")
    default_code = "session_limit_reached"


class NoSession(SessionError, exceptions.PermissionDenied):
    status_code = status.HTTP_403_FORBIDDEN
    default_detail = _("This request was not made with a session.")
    default_code = "no_session"


class ReauthenticationRequired(SessionError, exceptions.PermissionDenied):
    status_code = status.HTTP_403_FORBIDDEN
    default_detail = _("Please confirm your password to continue.")
    default_code = "reauthentication_required"


# --- 400 ----------------------------------------------------------------------------------------


class BadRequest(SessionError):
    """A request Django itself finds suspicious (other than the two below)."""


class RotationNotSupported(SessionError):
    default_detail = _(
        "Only an opaque token can be rotated; JWT clients get new tokens at token/refresh/."
    )
    default_code = "rotation_not_supported"


class InvalidParameter(SessionError):
    default_detail = _("A query parameter is not valid.")
    default_code = "invalid"


class UnknownParameter(SessionError):
    default_detail = _("Unknown query parameter; use token_id.")
    default_code = "unknown_parameter"


class TooManyFields(SessionError):
    default_detail = _("The request has too many fields.")
    default_code = "too_many_fields"


class RequestTooLarge(SessionError):
    default_detail = _("The request body is too large.")
    default_code = "request_too_large"


# --- 429 ----------------------------------------------------------------------------------------


class TooManyInvalidTokens(SessionError, exceptions.Throttled):
    """Too many unknown tokens from one client IP (``INVALID_TOKEN_THROTTLE_RATE``)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = _("Too many invalid tokens from this address.")
    default_code = "throttled"

    def __init__(self, wait: float | None = None) -> None:
        self.wait = None if wait is None else math.ceil(wait)  # DRF answers it as Retry-After
        super().__init__()


def _leaves(base: type[SessionError]) -> list[type[SessionError]]:
    found = []
    for sub in base.__subclasses__():
        found += [sub, *_leaves(sub)]
    return found


#: Every error class, in definition order: ``(status_code, default_code, class)``.
CATALOGUE: list[tuple[int, str, type[SessionError]]] = [
    (error.status_code, error.default_code, error) for error in _leaves(SessionError)
]
