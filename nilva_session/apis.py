"""HTTP API. Every error is DRF's ``{"detail": ...}`` (plus ``code``, and ``errors`` per field)."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import user_logged_out
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.db import connections
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from . import exceptions as errors
from . import sessions
from .conf import session_settings
from .jwt import simplejwt_settings
from .models import EndReason, UserSession, UserSessionQuerySet
from .parsers import replace_json_parser
from .permissions import RecentlyAuthenticated
from .serializers import (
    LoginSerializer,
    ReauthenticateSerializer,
    SessionSerializer,
    TokenSessionBlacklistSerializer,
    TokenSessionObtainPairSerializer,
    TokenSessionRefreshSerializer,
    token_response,
)
from .throttling import LoginIPThrottle, LoginUsernameThrottle, ReauthenticationUserThrottle

MAX_IDS_PER_DELETE = 100


def _first_message(errors: Any) -> tuple[str, str]:
    """Return ``(field, message)`` of the first error in a DRF error structure."""
    field = ""
    while isinstance(errors, (dict, list)) and errors:
        if isinstance(errors, dict):
            field, errors = next(iter(errors.items()))
        else:
            errors = errors[0]
    return field, str(errors)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, so that every error is ``{"detail", "code"}``.

    Validation errors also keep the per-field messages under ``errors``; DRF's and simplejwt's
    own errors (404, 405, 415, 429, bad credentials) get their DRF code.
    """
    if isinstance(exc, SuspiciousOperation):
        # Django answers these (too many fields, a body too big) with its HTML 400 page.
        exc = _bad_request(exc)
    response = drf_exception_handler(exc, context)
    keep_session_ends(exc)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    data, codes = response.data, exc.get_codes()
    if isinstance(data, dict) and "detail" in data:
        if "code" not in data:
            _, code = _first_message(codes.get("detail") if isinstance(codes, dict) else codes)
            response.data = {**data, "code": code}
        return response
    field, message = _first_message(data)
    _, code = _first_message(codes)
    label = "" if field in ("", "non_field_errors") else f"{field}: "
    response.data = {"detail": f"{label}{message}", "code": code, "errors": data}
    return response


def keep_session_ends(exc: Exception) -> None:
    """Keep the session that refusing ``exc`` ended ended, under ``ATOMIC_REQUESTS`` too.

    DRF's handler rolls the request's transaction back on every API error; a refusal that
    ended a session (a suspension, idleness, a reused refresh token) would then leave it live.
    Authentication runs before the view, so that transaction holds only the end. Call it from
    your own ``EXCEPTION_HANDLER`` after DRF's (``nilva_session.checks`` W005 reminds you).
    """
    if not getattr(exc, "ends_session", False):
        return
    for connection in connections.all():
        if connection.settings_dict.get("ATOMIC_REQUESTS") and connection.in_atomic_block:
            connection.set_rollback(False)


def _bad_request(exc: SuspiciousOperation) -> errors.SessionError:
    """Return the 400 for a request Django finds suspicious; its message is not echoed."""
    if isinstance(exc, TooManyFieldsSent):
        return errors.TooManyFields()
    if isinstance(exc, RequestDataTooBig):
        return errors.RequestTooLarge()
    return errors.BadRequest()


class SessionAPIView(APIView):
    """Base view: nilva-session's error shape, and a JSON parser that never gives a 500."""

    def get_exception_handler(self) -> Any:
        return exception_handler

    def get_parsers(self) -> list[Any]:
        return replace_json_parser(super().get_parsers())


def _user_sessions(request: Request) -> UserSessionQuerySet:
    return UserSession.objects.for_user(request.user)


def listed_sessions(user: Any) -> UserSessionQuerySet:
    """Return the sessions ``GET active/`` lists for ``user``: live ones, most recent first."""
    return UserSession.objects.for_user(user).active().order_by("-last_online", "-created_at")


def current_session_id(request: Request) -> uuid.UUID | None:
    """Return the id of the session that authenticated ``request``, or None."""
    session = sessions.current_session(request)
    return session.pk if session is not None else None


def require_session(request: Request) -> UserSession:
    """Return the session that authenticated ``request``, or raise 403 ``no_session``."""
    session = sessions.current_session(request)
    if session is None:
        raise errors.NoSession()
    return session


def parse_session_id(value: str) -> uuid.UUID | None:
    """Return ``value`` as a session id, or None when it is not one."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


class LoginApi(SessionAPIView):
    """``POST {username, password}`` → 200 ``{token, session_id, expire_at}``; 400 on bad input."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginIPThrottle, LoginUsernameThrottle]
    serializer_class = LoginSerializer

    def post(self, request: Request) -> Response:
        serializer = self.serializer_class(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        serializer.save()
        return Response(serializer.data, status=status.HTTP_200_OK)


class LogoutApi(SessionAPIView):
    """``POST`` ends the session that made the request → 204."""

    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        sessions.revoke([require_session(request)], EndReason.LOGOUT)
        user_logged_out.send(
            sender=request.user.__class__, request=request._request, user=request.user
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutAllApi(SessionAPIView):
    """``POST`` ends every session of the user, the current one included → 204."""

    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        sessions.revoke(_user_sessions(request), EndReason.LOGOUT_ALL)
        user_logged_out.send(
            sender=request.user.__class__, request=request._request, user=request.user
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ListDestroyActiveSessionsApi(SessionAPIView):
    """``GET``: the user's active sessions, most recent activity first.

    ``DELETE ?token_id=<uuid>&token_id=...``: ends those sessions of the user (unknown ids and
    other users' ids change nothing and are not revealed). ``DELETE`` without ``token_id``
    ends every *other* session and keeps the current one. 204.
    """

    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        queryset = listed_sessions(request.user)
        serializer = SessionSerializer(
            queryset, many=True, context={"current_session_id": current_session_id(request)}
        )
        return Response(serializer.data)

    #: The query parameters ``DELETE`` reads; ``token_id[]`` is how axios and PHP spell a list.
    delete_parameters = ("token_id", "token_id[]")

    def delete(self, request: Request) -> Response:
        unknown = sorted(set(request.query_params) - set(self.delete_parameters))
        if unknown:
            # A misspelt parameter must not fall back to "no ids" = end every other session.
            shown = unknown[0] if len(unknown[0]) <= 40 else unknown[0][:40] + "…"
            raise errors.UnknownParameter(
                _("Unknown query parameter “%(name)s”; use token_id.") % {"name": shown}
            )
        raw_ids = [
            raw for name in self.delete_parameters for raw in request.query_params.getlist(name)
        ]
        if len(raw_ids) > MAX_IDS_PER_DELETE:
            message = _("Too many token_id values (at most %(limit)d).")
            raise errors.InvalidParameter(message % {"limit": MAX_IDS_PER_DELETE})
        ids = []
        for raw in raw_ids:
            parsed = parse_session_id(raw)
            if parsed is None:
                shown = raw if len(raw) <= 40 else raw[:40] + "…"
                raise errors.InvalidParameter(
                    _("token_id “%(value)s” is not a valid UUID.") % {"value": shown}
                )
            ids.append(parsed)
        if ids:
            sessions.revoke(_user_sessions(request).filter(pk__in=ids), EndReason.REVOKED)
        else:
            others = _user_sessions(request)
            current_id = current_session_id(request)
            if current_id is not None:
                others = others.exclude(pk=current_id)
            sessions.revoke(others, EndReason.REVOKED)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionHistoryApi(SessionAPIView):
    """``GET``: the user's most recent sessions, ended ones included, with why they ended."""

    permission_classes = [IsAuthenticated]
    limit = 100

    def get(self, request: Request) -> Response:
        queryset = _user_sessions(request).order_by("-created_at")[: self.limit]
        serializer = SessionSerializer(
            queryset, many=True, context={"current_session_id": current_session_id(request)}
        )
        return Response(serializer.data)


class ReauthenticateApi(SessionAPIView):
    """``POST {password}``: the current session proves the password again → 200.

    Sessions that did so within ``max_age`` pass the ``RecentlyAuthenticated`` permission.
    Throttled like login (per client IP and per user).
    """

    permission_classes = [IsAuthenticated]
    throttle_classes = [LoginIPThrottle, ReauthenticationUserThrottle]

    def post(self, request: Request) -> Response:
        session = require_session(request)
        serializer = ReauthenticateSerializer(
            data=request.data, context={"request": request, "session": session}
        )
        serializer.is_valid(raise_exception=True)
        serializer.save()
        at = session.authenticated_at
        data = {"session_id": str(session.pk), "authenticated_at": at and at.isoformat()}
        if session_settings.ROTATE_TOKEN_ON_REAUTHENTICATION and isinstance(
            request.auth, UserSession
        ):
            # ASVS 7.2.4: a new token once the password is proved again; the old one ends here.
            data["token"] = sessions.rotate_token(session, request)
        return Response(data)


class RotateTokenApi(SessionAPIView):
    """``POST``: a new opaque token for the current session; the old one is refused from now.

    200 ``{token, session_id, expire_at}`` (as ``login/``). Only within
    ``REAUTHENTICATION_MAX_AGE`` of a password proof (login or ``reauthenticate/``): else 403
    ``reauthentication_required``, so a stolen token cannot rotate the real client out. A
    request made with a JWT gets 400 ``rotation_not_supported`` (JWT clients rotate at
    ``token/refresh/``).
    """

    permission_classes = [IsAuthenticated, RecentlyAuthenticated]

    def post(self, request: Request) -> Response:
        session = require_session(request)
        if not isinstance(request.auth, UserSession):
            raise errors.RotationNotSupported()
        token = sessions.rotate_token(session, request)
        return Response(token_response(session, token))


class SessionDetailApi(SessionAPIView):
    """``GET`` one session of the user; ``DELETE`` ends it (204). 404 when it is not theirs."""

    permission_classes = [IsAuthenticated]

    def _get_session(self, request: Request, session_id: str) -> UserSession:
        parsed = parse_session_id(session_id)
        session = _user_sessions(request).filter(pk=parsed).first() if parsed else None
        if session is None:
            raise exceptions.NotFound()
        return session

    def get(self, request: Request, session_id: str) -> Response:
        session = self._get_session(request, session_id)
        context = {"current_session_id": current_session_id(request)}
        return Response(SessionSerializer(session, context=context).data)

    def delete(self, request: Request, session_id: str) -> Response:
        sessions.revoke([self._get_session(request, session_id)], EndReason.REVOKED)
        return Response(status=status.HTTP_204_NO_CONTENT)


class _JwtApi(SessionAPIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    serializer_class: Any = None
    success_status: int = status.HTTP_200_OK
    www_authenticate_realm = "api"

    def get_authenticate_header(self, request: Request) -> str:
        # As simplejwt's own views: refused credentials are 401 (with WWW-Authenticate), not 403.
        header_type = simplejwt_settings().AUTH_HEADER_TYPES[0]
        return f'{header_type} realm="{self.www_authenticate_realm}"'

    def post(self, request: Request) -> Response:
        serializer = self.serializer_class(data=request.data, context={"request": request})
        try:
            serializer.is_valid(raise_exception=True)
            if self.success_status == status.HTTP_204_NO_CONTENT:
                serializer.save()
                return Response(status=self.success_status)
        except TokenError as error:
            raise InvalidToken(error.args[0]) from None
        return Response(serializer.validated_data, status=self.success_status)


class TokenSessionObtainPairApi(_JwtApi):
    """``POST {username, password}`` → ``{access, refresh, session_id, expire_at}``."""

    throttle_classes = [LoginIPThrottle, LoginUsernameThrottle]
    serializer_class = TokenSessionObtainPairSerializer


class TokenSessionRefreshApi(_JwtApi):
    """``POST {refresh}`` → ``{access}`` (and ``refresh`` when rotating); 401 for ended sessions."""

    serializer_class = TokenSessionRefreshSerializer


class TokenSessionLogoutApi(_JwtApi):
    """``POST {refresh}`` ends that refresh token's session and blacklists the token → 204."""

    serializer_class = TokenSessionBlacklistSerializer
    success_status = status.HTTP_204_NO_CONTENT
