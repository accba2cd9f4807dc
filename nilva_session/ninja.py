"""`Django Ninja <https://django-ninja.dev>`_: authentication classes, error answers, a router.

* :class:`TokenAuth` / :class:`AsyncTokenAuth` (``Authorization: Token <token>``) and
  :class:`JWTAuth` / :class:`AsyncJWTAuth` (``Authorization: Bearer <access token>``) are the
  DRF classes of :mod:`nilva_session.authentication` (and of :mod:`nilva_session.adrf` for the
  async ones) behind Ninja's auth protocol: the same header parsing, the same core, every rule.
  On success ``request.user`` is the user and ``request.auth`` the ``UserSession``
  (:func:`nilva_session.sessions.current_session` returns it too).
* Refusals are raised as :class:`Refusal`, a Ninja ``HttpError``: without anything else Ninja
  answers them with their status and ``{"detail": ...}``, never a 500. :func:`install` makes an
  API answer them as the DRF API does: ``{"detail", "code"}`` with ``WWW-Authenticate`` on 401
  and ``Retry-After`` on 429 (and the core's DRF errors raised in your own views, Ninja's "no
  credentials" 401 and Django's suspicious requests alike).
* :data:`router` (or :func:`build_router` for other auth classes): ``login/``, ``logout/``,
  ``logout/all/``, ``active/`` and ``active/{session_id}/``, answered by the code of the DRF
  views (:mod:`nilva_session.apis`): the login throttles, the failed-login signal, the session
  cap and the session rules are those of the DRF API, not copies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from typing import Annotated, Any, ClassVar, TypeVar, cast
from uuid import UUID

from django.contrib.auth import user_logged_out
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Router, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.security.base import SecuritySchema
from ninja.security.http import HttpAuthBase
from pydantic import Field, WithJsonSchema
from rest_framework import exceptions
from rest_framework.request import Request

from . import apis, sessions
from .adrf import AsyncJWTAuthentication, AsyncTokenAuthentication
from .authentication import UserSessionDBJwtAuthentication, UserSessionDBTokenAuthentication
from .jwt import simplejwt_settings
from .models import EndReason, UserSession
from .serializers import SessionSerializer

__all__ = [
    "AsyncJWTAuth",
    "AsyncTokenAuth",
    "JWTAuth",
    "Refusal",
    "SessionErrorOut",
    "SessionLoginIn",
    "SessionOut",
    "SessionTokenOut",
    "TokenAuth",
    "UserAgentOut",
    "build_router",
    "install",
    "refusal",
    "router",
]

#: The request attribute listing the challenges (``WWW-Authenticate``) of the auth classes that
#: found no credential of theirs: a 401 for no credential at all names every scheme tried.
CHALLENGES_ATTRIBUTE = "_nilva_session_challenges"

ViewT = TypeVar("ViewT", bound=Callable[..., Any])


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class Refusal(HttpError):
    """An error of nilva-session as Ninja's ``HttpError``.

    ``status_code`` and ``message`` (the detail) are what Ninja's own handler answers;
    ``data`` (``{"detail", "code", ...}``, the DRF API's body) and ``headers``
    (``WWW-Authenticate``, ``Retry-After``) are what :func:`install`'s handler adds.
    """

    def __init__(self, status_code: int, data: dict[str, Any], headers: dict[str, str]) -> None:
        super().__init__(status_code, str(data.get("detail", "")))
        self.data = data
        self.headers = headers
        self.code = str(data.get("code", ""))


def refusal(
    error: exceptions.APIException | SuspiciousOperation, challenge: str | None = None
) -> Refusal:
    """Return the :class:`Refusal` answering ``error`` as the DRF API answers it.

    The status, body and headers are made by :func:`nilva_session.apis.exception_handler`
    (so a refusal that ended a session stays ended under ``ATOMIC_REQUESTS``); ``challenge``
    is the ``WWW-Authenticate`` of a 401, as a DRF view gives its authentication header.
    """
    if challenge and isinstance(
        error, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)
    ):
        error.auth_header = challenge  # type: ignore[union-attr]  # as APIView passes it
    response = apis.exception_handler(error, {})
    if response is None:  # not an error DRF knows: not ours to answer
        raise error
    headers = {name: value for name, value in response.items() if name.lower() != "content-type"}
    return Refusal(response.status_code, dict(response.data), headers)


def _challenge(request: HttpRequest) -> str | None:
    """Return the ``WWW-Authenticate`` of the schemes tried on ``request``, or None."""
    tried: list[str] = getattr(request, CHALLENGES_ATTRIBUTE, [])
    return ", ".join(dict.fromkeys(tried)) or None


def install(api: NinjaAPI) -> NinjaAPI:
    """Make ``api`` answer nilva-session's errors as the DRF API does; return ``api``.

    Registers exception handlers for :class:`Refusal` (the body ``{"detail", "code"}`` and
    its headers), DRF's ``APIException`` (the core's errors raised in your own views, e.g.
    ``SessionLimitReached`` from ``sessions.open_session``), Ninja's ``AuthenticationError``
    (no credential: 401 ``not_authenticated`` with the ``WWW-Authenticate`` of the schemes
    tried) and Django's ``SuspiciousOperation`` (a body too large, too many fields: 400).
    Ninja's own request errors (400 for a body that is not JSON, 422 for a body of the wrong
    shape) are left as Ninja answers them everywhere.
    """

    def answer(request: HttpRequest, error: Refusal) -> HttpResponse:
        response = api.create_response(request, error.data, status=error.status_code)
        for name, value in error.headers.items():
            response[name] = value
        return response

    def drf_error(
        request: HttpRequest, error: exceptions.APIException | SuspiciousOperation
    ) -> HttpResponse:
        return answer(request, refusal(error, _challenge(request)))

    def no_credentials(request: HttpRequest, error: AuthenticationError) -> HttpResponse:
        # Ninja raises a bare AuthenticationError() (a plain Exception in older releases, an
        # HttpError saying "Unauthorized" in newer ones); a project's own keeps its words.
        words = str(error)
        replacement = exceptions.NotAuthenticated(
            None if words == str(AuthenticationError()) else words
        )
        replacement.status_code = getattr(error, "status_code", replacement.status_code)
        return drf_error(request, replacement)

    # Ninja types a handler's argument as "the exception or its class"; it passes instances.
    handlers: list[tuple[type[Exception], Any]] = [
        (Refusal, answer),
        (exceptions.APIException, drf_error),
        (SuspiciousOperation, drf_error),
        (AuthenticationError, no_credentials),
    ]
    for error_class, handler in handlers:
        api.add_exception_handler(error_class, handler)
    return api


# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------


class _SessionAuth(HttpAuthBase):
    """Base class: a DRF authentication class of nilva-session behind Ninja's auth protocol."""

    #: The DRF class that reads the header and asks the core. A subclass of it changes the
    #: rules as it does for DRF views (e.g. its ``check_user_agent``); a new instance per call.
    authentication_class: ClassVar[type[Any]]

    def challenge(self, request: HttpRequest) -> str:
        """Return the ``WWW-Authenticate`` value of this scheme (the DRF class's)."""
        return str(self.authentication_class().authenticate_header(request))

    def refused(self, request: HttpRequest, error: exceptions.APIException) -> Refusal:
        """Return the :class:`Refusal` to raise for the core's ``error``."""
        return refusal(error, self.challenge(request))

    def accepted(self, request: HttpRequest, found: tuple[Any, Any] | None) -> UserSession | None:
        """Return the session the DRF class authenticated (None: the header is not ours).

        Sets ``request.user`` (and ``request.auser``) to its user; Ninja sets ``request.auth``
        to the returned session.
        """
        if found is None:
            tried = getattr(request, CHALLENGES_ATTRIBUTE, [])
            setattr(request, CHALLENGES_ATTRIBUTE, [*tried, self.challenge(request)])
            return None
        user = found[0]

        async def auser() -> Any:
            return user

        request.user = user
        request.auser = auser
        return sessions.current_session(request)  # the core attached it to the request


class _SyncAuth(_SessionAuth):
    def __call__(self, request: HttpRequest) -> UserSession | None:
        return self.authenticate(request)

    def authenticate(self, request: HttpRequest) -> UserSession | None:
        """Return the ``UserSession`` of the credential, None if the header is not ours, or
        raise :class:`Refusal` (401, or 429 for a client sending many unknown tokens)."""
        try:
            found = self.authentication_class().authenticate(request)
        except exceptions.APIException as error:
            raise self.refused(request, error) from None
        return self.accepted(request, found)


class _AsyncAuth(_SessionAuth):
    async def __call__(self, request: HttpRequest) -> UserSession | None:
        return await self.authenticate(request)

    async def authenticate(self, request: HttpRequest) -> UserSession | None:
        """:meth:`_SyncAuth.authenticate` on the event loop (:mod:`nilva_session.aio`): a warm
        request makes no thread hop."""
        try:
            found = await self.authentication_class().authenticate(request)
        except exceptions.APIException as error:
            raise self.refused(request, error) from None
        return self.accepted(request, found)


# Ninja reads a scheme from ``openapi_security_schema``, which AuthBase.__init__ fills once from
# the ``openapi_*`` attributes; as a property it reads the settings whenever a schema is built
# (its setter drops AuthBase's static copy).


class _TokenScheme(_SessionAuth):
    """OpenAPI: an ``apiKey`` in the ``Authorization`` header (OpenAPI 3 has no other way for
    a keyword other than ``Bearer``; Swagger UI sends what is typed, ``Token <token>``)."""

    openapi_type = "apiKey"

    @property
    def openapi_security_schema(self) -> SecuritySchema:
        """Return this scheme's ``securitySchemes`` entry, for the settings as they are now."""
        keyword = self.authentication_class().get_keyword()
        description = (
            f"Opaque session token from `POST login/`, sent as `Authorization: {keyword} <token>`"
            f" (in Swagger UI's Authorize dialog, enter `{keyword} <token>`). A changed"
            " User-Agent suspends the session."
        )
        return SecuritySchema(
            "apiKey", **{"in": "header", "name": "Authorization", "description": description}
        )

    @openapi_security_schema.setter
    def openapi_security_schema(self, value: SecuritySchema) -> None:
        pass


class _JwtScheme(_SessionAuth):
    """OpenAPI: HTTP ``bearer``, format ``JWT`` (an ``apiKey`` header when simplejwt's
    ``AUTH_HEADER_TYPES`` / ``AUTH_HEADER_NAME`` say another keyword or header)."""

    @property
    def openapi_security_schema(self) -> SecuritySchema:
        """Return this scheme's ``securitySchemes`` entry, for the settings as they are now."""
        jwt_settings = simplejwt_settings()
        types = jwt_settings.AUTH_HEADER_TYPES
        keyword = types if isinstance(types, str) else types[0]
        meta_name = jwt_settings.AUTH_HEADER_NAME
        description = (
            "simplejwt access token bound to a session (from nilva-session's `token/` or"
            " `token/refresh/`): it stops working as soon as the session ends."
        )
        if keyword.lower() == "bearer" and meta_name == "HTTP_AUTHORIZATION":
            return SecuritySchema(
                "http", scheme="bearer", bearerFormat="JWT", description=description
            )
        header = meta_name.removeprefix("HTTP_").replace("_", "-").title()
        description += f" Sent as `{header}: {keyword} <token>`."
        return SecuritySchema(
            "apiKey", **{"in": "header", "name": header, "description": description}
        )

    @openapi_security_schema.setter
    def openapi_security_schema(self, value: SecuritySchema) -> None:
        pass


class TokenAuth(_TokenScheme, _SyncAuth):
    """``Authorization: Token <token>``, keyword ``AUTH_HEADER_PREFIX`` (read per request)."""

    authentication_class = UserSessionDBTokenAuthentication


class AsyncTokenAuth(_TokenScheme, _AsyncAuth):
    """:class:`TokenAuth` for async operations: the warm path on the event loop."""

    authentication_class = AsyncTokenAuthentication


class JWTAuth(_JwtScheme, _SyncAuth):
    """``Authorization: Bearer <access token>``: a simplejwt access token bound to a session."""

    authentication_class = UserSessionDBJwtAuthentication


class AsyncJWTAuth(_JwtScheme, _AsyncAuth):
    """:class:`JWTAuth` for async operations: the warm path on the event loop."""

    authentication_class = AsyncJWTAuthentication


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------

# Timestamps pass through as the DRF serializers wrote them (a datetime field would have Ninja
# write them again, to the millisecond): the same text as the DRF API's.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


class SessionLoginIn(Schema):
    """``{username, password}``; the lengths and the password are checked by DRF's
    ``LoginSerializer`` (400 ``invalid_credentials``)."""

    username: str
    password: str = Field(json_schema_extra={"format": "password"})


class SessionErrorOut(Schema):
    """Every error: ``detail`` for people, ``code`` for programs, ``errors`` per field (400)."""

    detail: str
    code: str
    errors: dict[str, Any] | None = None


class SessionTokenOut(Schema):
    """``POST login/``: the token (shown once) and the session it opened."""

    token: str = Field(description="Send as `Authorization: Token <token>`.")
    session_id: UUID
    expire_at: Timestamp | None


class UserAgentOut(Schema):
    """The session's user agent, parsed."""

    browser: str
    browser_version: str
    os: str
    os_version: str
    device_family: str
    device_brand: str
    device_model: str
    is_mobile: bool
    is_tablet: bool
    is_pc: bool
    is_bot: bool


class SessionOut(Schema):
    """One session as its user sees it (DRF's ``SessionSerializer``). Never includes the key."""

    session_id: UUID
    user_id: int | str
    user_agent_data: UserAgentOut
    last_online: Timestamp | None
    last_ip: str | None
    created_at: Timestamp
    expire_at: Timestamp | None
    is_current: bool
    is_active: bool
    ended_at: Timestamp | None
    end_reason: str | None


# --------------------------------------------------------------------------------------------
# Router
# --------------------------------------------------------------------------------------------


class _ParsedRequest(Request):
    """A DRF request over Ninja's whose body Ninja parsed already: what DRF's login view and
    its throttles (the per-username budget reads ``request.data``) are given."""

    def __init__(self, request: HttpRequest, data: dict[str, Any]) -> None:
        super().__init__(request)
        self._parsed = data

    @property
    def data(self) -> dict[str, Any]:
        return self._parsed


def _answered(view: ViewT) -> ViewT:
    """Return ``view`` raising the DRF errors of the code it calls as :class:`Refusal`."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            return view(request, *args, **kwargs)
        except (exceptions.APIException, SuspiciousOperation) as error:
            raise refusal(error, _challenge(request)) from None

    return cast(ViewT, wrapper)


def _require_session(request: HttpRequest) -> UserSession:
    """Return the session that authenticated ``request``, or raise 403 ``no_session``."""
    return apis.require_session(cast(Request, request))


def _ended(request: HttpRequest) -> HttpResponse:
    """Send ``user_logged_out`` for ``request``'s user; return the 204."""
    user = request.user
    user_logged_out.send(sender=user.__class__, request=request, user=user)
    return HttpResponse(status=204)


def build_router(
    auth: Sequence[Any] | None = None, *, tags: Sequence[str] = ("sessions",)
) -> Router:
    """Return a new router of the session endpoints; ``auth`` protects all but ``login/``.

    ``auth`` defaults to ``[TokenAuth(), JWTAuth()]``. Django Ninja 1.3 mounts a router on one
    API only: call this once per API.
    """
    protected = list(auth) if auth is not None else [TokenAuth(), JWTAuth()]
    router = Router(tags=list(tags))
    error = SessionErrorOut
    refused: dict[int, Any] = {401: error, 403: error, 429: error}

    @router.post(
        "login/",
        auth=None,
        response={200: SessionTokenOut, 400: error, 403: error, 429: error},
        summary="Sign in: a new session and its token",
        url_name="nilva-session-login",
    )
    @_answered
    def login(request: HttpRequest, credentials: SessionLoginIn) -> Any:
        """Check the password and open a session; the token is shown once.

        The code of the DRF API's `login/` answers: its throttles (`LOGIN_THROTTLE_RATE` per
        client IP and per username: 429 with `Retry-After`), its serializer (a wrong password
        sends `user_login_failed`: 400 `invalid_credentials`) and the session cap
        (`MAX_SESSIONS_PER_USER`: 403 `session_limit_reached` under `"refuse"`).
        """
        drf_request = _ParsedRequest(request, credentials.model_dump())
        view = apis.LoginApi()
        view.check_throttles(drf_request)
        return view.post(drf_request).data

    @router.post(
        "logout/",
        auth=protected,
        response={204: None, **refused},
        summary="End the current session",
        url_name="nilva-session-logout",
    )
    @_answered
    def logout(request: HttpRequest) -> HttpResponse:
        """End the session that made the request: every credential of it is refused next."""
        sessions.revoke([_require_session(request)], EndReason.LOGOUT)
        return _ended(request)  # as DRF's logout/

    @router.post(
        "logout/all/",
        auth=protected,
        response={204: None, **refused},
        summary="End every session of the user",
        url_name="nilva-session-logout-all",
    )
    @_answered
    def logout_all(request: HttpRequest) -> HttpResponse:
        """End every session of the user, the current one included."""
        sessions.revoke(UserSession.objects.for_user(request.user), EndReason.LOGOUT_ALL)
        return _ended(request)

    @router.get(
        "active/",
        auth=protected,
        response={200: list[SessionOut], **refused},
        summary="The user's active sessions",
        url_name="nilva-session-active",
    )
    @_answered
    def active(request: HttpRequest) -> Any:
        """The user's active sessions, most recent activity first (as DRF's `active/`)."""
        queryset = apis.listed_sessions(request.user)
        context = {"current_session_id": apis.current_session_id(cast(Request, request))}
        return SessionSerializer(queryset, many=True, context=context).data

    @router.delete(
        "active/{session_id}/",
        auth=protected,
        response={204: None, 404: error, **refused},
        summary="End one session of the user",
        url_name="nilva-session-end",
    )
    @_answered
    def end_session(request: HttpRequest, session_id: str) -> HttpResponse:
        """End one session of the user → 204; 404 for an id that is not one of theirs."""
        parsed = apis.parse_session_id(session_id)
        mine = UserSession.objects.for_user(request.user)
        found = mine.filter(pk=parsed).first() if parsed is not None else None
        if found is None:  # not theirs, or not an id: 404 either way, as DRF's active/<id>/
            raise exceptions.NotFound()
        sessions.revoke([found], EndReason.REVOKED)
        return HttpResponse(status=204)

    return router


#: The session endpoints, protected by ``[TokenAuth(), JWTAuth()]``:
#: ``api.add_router("sessions/", router)``.
router = build_router()
