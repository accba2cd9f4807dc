"""OpenAPI 3 description of nilva-session's API, for drf-spectacular (optional).

``pip install "nilva-session[openapi]"`` and set DRF's ``DEFAULT_SCHEMA_CLASS`` to
``drf_spectacular.openapi.AutoSchema``; nothing else is needed. This module is imported by
:meth:`nilva_session.apps.NilvaSessionConfig.ready` only when ``drf_spectacular`` can be imported,
and it is the only module of the package that imports drf-spectacular: without it installed,
nilva-session imports and runs exactly as before.

How the schema gets attached, and why no view carries a decorator
---------------------------------------------------------------
``apis.py`` has no ``@extend_schema``: a decorator there would need drf-spectacular (or a no-op
stand-in) at import time of the views. Instead, every declaration lives here, in drf-spectacular's
own extension points, which it discovers by subclassing and applies only while it generates a
schema:

* :class:`OpenApiAuthenticationExtension` subclasses describe the two authentication classes:
  ``UserSessionDBTokenAuthentication`` as an ``apiKey`` in the ``Authorization`` header with the
  keyword of the class (``AUTH_HEADER_PREFIX``, ``Token`` by default), and
  ``UserSessionDBJwtAuthentication`` as HTTP ``bearer`` with format ``JWT`` (simplejwt's
  ``AUTH_HEADER_TYPES``/``AUTH_HEADER_NAME``; another keyword than ``Bearer`` becomes an ``apiKey``
  header, as OpenAPI 3.0 knows only ``bearer``). Both read the settings when the schema is built.
* :class:`OpenApiViewExtension` subclasses (``view_replacement``) hand drf-spectacular, for the
  time of one generation, a throw-away subclass of each view with ``extend_schema_view`` applied:
  summaries, request bodies, the ``token_id`` and ``session_id`` parameters, and every response
  with its status code, including the error shape ``{"detail", "code", "errors"}``. The real view
  classes are never modified.
* :class:`OpenApiSerializerExtension` subclasses give the request serializers a description for
  API users (not their docstrings) and spell out ``SessionSerializer``'s ``user_agent_data`` and
  ``end_reason`` (``""`` while the session is active).

So there is no no-op shim to keep in step with drf-spectacular's decorators, and nothing in the
package but ``apps.py`` (``importlib.util.find_spec("drf_spectacular")``) knows this module
exists. The extensions also match subclasses of the views and authentication classes. To change
what is documented, register your own extension for the same class with ``priority = 1``
(drf-spectacular picks the highest priority). :data:`AUTHENTICATED_ERRORS` documents the errors
of your own views behind nilva-session's authentication.
"""

from __future__ import annotations

from typing import Any, ClassVar

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiViewExtension,
)
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers

from .apis import MAX_IDS_PER_DELETE
from .models import EndReason
from .serializers import (
    LoginSerializer,
    ReauthenticateSerializer,
    SessionSerializer,
    TokenSessionObtainPairSerializer,
)

TAGS = ["sessions"]

# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------


class SessionTokenScheme(OpenApiAuthenticationExtension):
    """``Authorization: Token <token>``: an ``apiKey`` header (OpenAPI 3.0 has no other way)."""

    target_class = "nilva_session.authentication.UserSessionDBTokenAuthentication"
    match_subclasses = True
    name = "sessionTokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        authenticator = self.target() if isinstance(self.target, type) else self.target
        keyword = authenticator.get_keyword()
        definition = build_bearer_security_scheme_object(
            header_name="HTTP_AUTHORIZATION", token_prefix=keyword
        )
        definition["description"] = (
            f"Opaque session token from `POST login/`, sent as `Authorization: {keyword} <token>`"
            f" (in Swagger UI's Authorize dialog, enter `{keyword} <token>`). Every request"
            " must come from the same kind of browser or client as the login: a changed"
            " User-Agent suspends the session."
        )
        return definition


class SessionJwtScheme(OpenApiAuthenticationExtension):
    """simplejwt access token bound to a session: HTTP bearer, format JWT."""

    target_class = "nilva_session.authentication.UserSessionDBJwtAuthentication"
    match_subclasses = True
    name = "sessionJwtAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        from rest_framework_simplejwt import settings as simplejwt_settings

        jwt_settings = simplejwt_settings.api_settings  # rebound when SIMPLE_JWT changes
        header_types = jwt_settings.AUTH_HEADER_TYPES
        if isinstance(header_types, str):
            header_types = (header_types,)
        definition = build_bearer_security_scheme_object(
            header_name=jwt_settings.AUTH_HEADER_NAME,
            token_prefix=header_types[0],
            bearer_format="JWT",
        )
        definition["description"] = (
            "simplejwt access token from `POST token/` or `POST token/refresh/`, bound to a"
            " session: it stops working as soon as the session ends."
        )
        return definition


# drf-spectacular names a scheme's component after one class: the adrf classes (subclasses of
# the above, same header) get schemes of their own, or every view would warn of a collision.
class AsyncSessionTokenScheme(SessionTokenScheme):
    target_class = "nilva_session.adrf.AsyncTokenAuthentication"
    name = "asyncSessionTokenAuth"
    priority = 1


class AsyncSessionJwtScheme(SessionJwtScheme):
    target_class = "nilva_session.adrf.AsyncJWTAuthentication"
    name = "asyncSessionJwtAuth"
    priority = 1


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------


class SessionErrorSerializer(serializers.Serializer[Any]):
    """Every error: `detail` for people, `code` for programs, `errors` per field (400)."""

    detail = serializers.CharField(help_text="What went wrong, in words.")
    code = serializers.CharField(
        help_text=(
            "Machine-readable reason, e.g. `invalid_credentials`, `session_ended`,"
            " `token_not_valid`; DRF's own code on generic errors (`not_found`, `throttled`)."
        ),
    )
    # A field named like Serializer.errors: DRF's metaclass takes declared fields off the class.
    errors = serializers.DictField(  # type: ignore[assignment]
        required=False, help_text="Validation errors only: the messages of each field."
    )


class UserAgentDataSerializer(serializers.Serializer[Any]):
    """The session's user agent, parsed."""

    browser = serializers.CharField()
    browser_version = serializers.CharField()
    os = serializers.CharField()
    os_version = serializers.CharField()
    device_family = serializers.CharField()
    device_brand = serializers.CharField()
    device_model = serializers.CharField()
    is_mobile = serializers.BooleanField()
    is_tablet = serializers.BooleanField()
    is_pc = serializers.BooleanField()
    is_bot = serializers.BooleanField()


class SessionTokenSerializer(serializers.Serializer[Any]):
    """`POST login/`: the token (shown once) and the session it opened."""

    token = serializers.CharField(help_text="Send as `Authorization: Token <token>`.")
    session_id = serializers.UUIDField()
    expire_at = serializers.DateTimeField(
        allow_null=True, help_text="When the session expires; null when it never does."
    )


class SessionTokenPairSerializer(serializers.Serializer[Any]):
    """`POST token/`: a simplejwt access/refresh pair bound to a new session."""

    access = serializers.CharField()
    refresh = serializers.CharField()
    session_id = serializers.UUIDField()
    expire_at = serializers.DateTimeField(allow_null=True)


class RefreshTokenSerializer(serializers.Serializer[Any]):
    """A refresh token from `POST token/`."""

    refresh = serializers.CharField(max_length=4096)


class RefreshedTokensSerializer(serializers.Serializer[Any]):
    """`POST token/refresh/`: a new access token for the same session."""

    access = serializers.CharField()
    refresh = serializers.CharField(
        required=False, help_text="Only with `ROTATE_REFRESH_TOKENS`: the next refresh token."
    )


class ReauthenticationSerializer(serializers.Serializer[Any]):
    """`POST reauthenticate/`: the session that just proved the password, and when."""

    session_id = serializers.UUIDField()
    authenticated_at = serializers.DateTimeField()
    token = serializers.CharField(
        required=False,
        help_text="Only with `ROTATE_TOKEN_ON_REAUTHENTICATION` and an opaque token: the"
        " session's new token; the one that made this request no longer works.",
    )


class _SerializerSchema(OpenApiSerializerExtension):
    """Base: the serializer as drf-spectacular maps it, with a description for API users."""

    match_subclasses = True
    description = ""

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_serializer(
            self.target, direction, bypass_extensions=True
        )
        schema["description"] = self.description
        return schema


class LoginRequestSchema(_SerializerSchema):
    target_class = "nilva_session.serializers.LoginSerializer"
    description = "Credentials, checked by the project's authentication backends."


class ReauthenticateRequestSchema(_SerializerSchema):
    target_class = "nilva_session.serializers.ReauthenticateSerializer"
    description = "The signed-in user's password."


class TokenObtainRequestSchema(_SerializerSchema):
    target_class = "nilva_session.serializers.TokenSessionObtainPairSerializer"
    description = "Credentials (the user model's `USERNAME_FIELD` and `password`)."


class SessionSchema(_SerializerSchema):
    """``SessionSerializer`` with ``user_agent_data`` spelled out and a blank ``end_reason``."""

    target_class = "nilva_session.serializers.SessionSerializer"
    description = "One session (device) of the user. Never includes the token."

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = super().map_serializer(auto_schema, direction)
        properties = schema.get("properties", {})
        if "user_agent_data" in properties:
            component = auto_schema.resolve_serializer(UserAgentDataSerializer, direction)
            properties["user_agent_data"] = component.ref
        if "end_reason" in properties:
            # The model's choices, or "" while the session has not ended.
            properties["end_reason"] = {
                "type": "string",
                "enum": [*EndReason.values, ""],
                "readOnly": True,
                "description": "Why the session ended; empty while it is active.",
            }
        return schema


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=SessionErrorSerializer, description=description)


NO_CONTENT = OpenApiResponse(description="Done. No body.")
INVALID_INPUT = error(
    "Invalid input: a missing or malformed field (`code` of the field's error, `errors` per"
    " field), or a body that is not valid JSON."
)


def codes_of(status_code: int) -> str:
    """Return the codes nilva-session answers with ``status_code``, from its error catalogue."""
    from .exceptions import CATALOGUE

    found = dict.fromkeys(code for status, code, _ in CATALOGUE if status == status_code)
    return ", ".join(f"`{code}`" for code in found)


UNAUTHENTICATED = error(
    f"No credential, or a refused one: {codes_of(401)}; and simplejwt's `token_not_valid`,"
    " `password_changed` (`CHECK_REVOKE_TOKEN`) for JWTs."
)
FORBIDDEN = error(
    "Refused by a permission, or by the project's other authentication classes (DRF answers"
    " 403 instead of 401 when the first authentication class sends no WWW-Authenticate)."
)
NO_SESSION = error(
    "`no_session`: the request is authenticated, but not through a session (another"
    " authentication class)."
)
THROTTLED = error(
    "Throttled (the project's DRF throttles, or too many unknown tokens from this client:"
    " `INVALID_TOKEN_THROTTLE_RATE`); `Retry-After` says when to try again."
)
PROJECT_THROTTLED = error(
    "Throttled by the project's DRF throttles; `Retry-After` says when to try again."
)
LOGIN_THROTTLED = error(
    "Too many attempts from this IP address or for this username (`LOGIN_THROTTLE_RATE`);"
    " `Retry-After` says when to try again."
)
SESSION_LIMIT = error(
    "`session_limit_reached`: the user has `MAX_SESSIONS_PER_USER` active sessions and"
    " `SESSION_LIMIT_POLICY` is `refuse`."
)
NOT_FOUND = error("No such session among the user's sessions.")
UNSUPPORTED_MEDIA_TYPE = error(
    "The body's `Content-Type` is missing or not one of the request body's media types."
)

#: The errors of any view behind nilva-session's authentication; for your own views too:
#: ``@extend_schema(responses={200: MySerializer, **AUTHENTICATED_ERRORS})``.
AUTHENTICATED_ERRORS = {401: UNAUTHENTICATED, 403: FORBIDDEN, 429: THROTTLED}

SESSION_ID = OpenApiParameter(
    "session_id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="The `session_id` of one of the user's sessions.",
)
TOKEN_ID = OpenApiParameter(
    "token_id",
    {
        "type": "array",
        "items": {"type": "string", "format": "uuid"},
        "maxItems": MAX_IDS_PER_DELETE,
    },
    OpenApiParameter.QUERY,
    required=False,
    style="form",
    explode=True,
    description=(
        "Sessions to end (repeat the parameter; at most 100). Ids that are unknown or not the"
        " user's change nothing. Without it, every session but the current one ends."
        " `token_id[]` is accepted as the same parameter; any other parameter is refused"
        " (400 `unknown_parameter`), so a misspelt one never ends every other session."
    ),
)


def operation(**kwargs: Any) -> dict[str, Any]:
    return {"tags": TAGS, **kwargs}


# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------


class _ViewSchema(OpenApiViewExtension):
    """Base: ``methods`` maps a view method to its ``extend_schema`` arguments."""

    match_subclasses = True
    methods: ClassVar[dict[str, dict[str, Any]]] = {}

    def view_replacement(self) -> Any:
        view = type(
            self.target.__name__,
            (self.target,),
            {"__module__": self.target.__module__, "__doc__": self.target.__doc__},
        )
        decorators = {method: extend_schema(**kwargs) for method, kwargs in self.methods.items()}
        return extend_schema_view(**decorators)(view)


class LoginSchema(_ViewSchema):
    target_class = "nilva_session.apis.LoginApi"
    methods: ClassVar[dict[str, dict[str, Any]]] = {
        "post": operation(
            operation_id="sessions_login",
            summary="Sign in: open a session and get its token",
            description=(
                "Checks the credentials with `django.contrib.auth.authenticate` and opens a"
                " session for this client (IP address, user agent). The token is shown once."
                " Throttled per client IP and per username."
            ),
            request=LoginSerializer,
            responses={
                200: SessionTokenSerializer,
                400: error(
                    "`invalid_credentials`, or a missing or malformed field (`errors` per field)."
                ),
                403: SESSION_LIMIT,
                415: UNSUPPORTED_MEDIA_TYPE,
                429: LOGIN_THROTTLED,
            },
        )
    }


class LogoutSchema(_ViewSchema):
    target_class = "nilva_session.apis.LogoutApi"
    methods: ClassVar[dict[str, dict[str, Any]]] = {
        "post": operation(
            operation_id="sessions_logout",
            summary="Sign out: end the session that makes the request",
            description="Ends the session of the credential that makes the request (reason"
            " `logout`). Its token, or its access and refresh tokens, stop working at once.",
            request=None,
            responses={204: NO_CONTENT, **AUTHENTICATED_ERRORS, 403: NO_SESSION},
        )
    }


class LogoutAllSchema(_ViewSchema):
    target_class = "nilva_session.apis.LogoutAllApi"
    methods: ClassVar[dict[str, dict[str, Any]]] = {
        "post": operation(
            operation_id="sessions_logout_all",
            summary="Sign out everywhere: end every session of the user, this one included",
            description="Ends every session of the user (reason `logout_all`), opaque-token"
            " and JWT ones alike, the one making the request included.",
            request=None,
            responses={204: NO_CONTENT, **AUTHENTICATED_ERRORS},
        )
    }


class ActiveSessionsSchema(_ViewSchema):
    target_class = "nilva_session.apis.ListDestroyActiveSessionsApi"
    methods: ClassVar[dict[str, dict[str, Any]]] = {
        "get": operation(
            operation_id="sessions_active_list",
            summary="Where you are signed in: the user's active sessions",
            description=(
                "Only the requesting user's active, unexpired sessions, most recent activity"
                " first; the one making the request has `is_current: true`."
            ),
            responses={200: SessionSerializer(many=True), **AUTHENTICATED_ERRORS},
        ),
        "delete": operation(
            operation_id="sessions_active_end",
            summary="End some sessions, or every other session",
            description=(
                "With `token_id`: ends those sessions of the user (the current one too, if"
                " named). Without: ends every session but the current one."
            ),
            parameters=[TOKEN_ID],
            responses={
                204: NO_CONTENT,
                400: error(
                    "A `token_id` is not a UUID, more than 100 were given (`invalid`), a query"
                    " parameter other than `token_id` / `token_id[]` (`unknown_parameter`), or"
                    " over 1,000 query fields (`too_many_fields`)."
                ),
                **AUTHENTICATED_ERRORS,
            },
        ),
    }


class SessionDetailSchema(_ViewSchema):
    target_class = "nilva_session.apis.SessionDetailApi"
    methods: ClassVar[dict[str, dict[str, Any]]] = {
        "get": operation(
            operation_id="sessions_retrieve",
            summary="One session of the user",
            description="404 when the id is not one of the user's sessions.",
            parameters=[SESSION_ID],
            responses={200: SessionSerializer, **AUTHENTICATED_ERRORS, 404: NOT_FOUND},
        ),
        "delete": operation(
            operation_id="sessions_end",
            summary="End one session of the user",
            description="Ends the session (reason `revoked`); the current one too, if named."
            " 404 when the id is not one of the user's sessions.",
            parameters=[SESSION_ID],
            responses={204: NO_CONTENT, **AUTHENTICATED_ERRORS, 404: NOT_FOUND},
        ),
    }


class SessionHistorySchema(_ViewSchema):
    target_class = "nilva_session.apis.SessionHistoryApi"
    methods: ClassVar[dict[str, dict[str, Any]]] = {
        "get": operation(
            operation_id="sessions_history",
            summary="Recent sessions, ended ones included",
            description=(
                "The user's 100 most recent sessions, newest first, with `is_active`,"
                " `ended_at` and `end_reason`."
            ),
            responses={200: SessionSerializer(many=True), **AUTHENTICATED_ERRORS},
        )
    }


class ReauthenticateSchema(_ViewSchema):
    target_class = "nilva_session.apis.ReauthenticateApi"
    methods: ClassVar[dict[str, dict[str, Any]]] = {
        "post": operation(
            operation_id="sessions_reauthenticate",
            summary="Confirm the password for a sensitive operation",
            description=(
                "Records on the current session that it proved the password now; views"
                " protected by `RecentlyAuthenticated` answer 403 `reauthentication_required`"
                " when that is too long ago. Throttled per client IP and per user."
            ),
            request=ReauthenticateSerializer,
            responses={
                200: ReauthenticationSerializer,
                400: error("`invalid_password`, or a missing or malformed `password`."),
                401: UNAUTHENTICATED,
                403: NO_SESSION,
                415: UNSUPPORTED_MEDIA_TYPE,
                429: error(
                    "Too many password confirmations from this IP address or by this user"
                    " (`LOGIN_THROTTLE_RATE`), or too many unknown tokens from this client;"
                    " `Retry-After` says when to try again."
                ),
            },
        )
    }


class RotateTokenSchema(_ViewSchema):
    target_class = "nilva_session.apis.RotateTokenApi"
    methods: ClassVar[dict[str, dict[str, Any]]] = {
        "post": operation(
            operation_id="sessions_rotate",
            summary="Rotate: a new opaque token for this session",
            description=(
                "Issues a new token for the session that makes the request and retires the"
                " one it was made with: from the next request on, on every worker, the old"
                " token is refused (`invalid_token`). The session, its history and expiry"
                " stay. The new token is shown once. Only within `REAUTHENTICATION_MAX_AGE` of"
                " the session's last password proof (its login or `reauthenticate/`)."
            ),
            request=None,
            responses={
                200: SessionTokenSerializer,
                400: error("`rotation_not_supported`: the request was made with a JWT."),
                **AUTHENTICATED_ERRORS,
                403: error(
                    "`reauthentication_required`: the password was last proved longer ago than"
                    " `REAUTHENTICATION_MAX_AGE` (confirm it at `reauthenticate/`), or"
                    " `no_session`."
                ),
            },
        )
    }


class TokenObtainSchema(_ViewSchema):
    target_class = "nilva_session.apis.TokenSessionObtainPairApi"
    methods: ClassVar[dict[str, dict[str, Any]]] = {
        "post": operation(
            operation_id="sessions_token_obtain",
            summary="Sign in with JWTs: open a session and get an access/refresh pair",
            description=(
                "simplejwt's obtain-pair bound to a new session: both tokens carry the"
                " session id and stop working when it ends. Throttled like `login/`."
            ),
            request=TokenSessionObtainPairSerializer,
            responses={
                200: SessionTokenPairSerializer,
                400: INVALID_INPUT,
                401: error(
                    "Wrong credentials or an inactive user (simplejwt's answer, code"
                    " `no_active_account`)."
                ),
                403: SESSION_LIMIT,
                415: UNSUPPORTED_MEDIA_TYPE,
                429: LOGIN_THROTTLED,
            },
        )
    }


class TokenRefreshSchema(_ViewSchema):
    target_class = "nilva_session.apis.TokenSessionRefreshApi"
    methods: ClassVar[dict[str, dict[str, Any]]] = {
        "post": operation(
            operation_id="sessions_token_refresh",
            summary="New access token for the refresh token's session",
            description=(
                "The session is checked as for an access token: a refresh token of an ended,"
                " expired or suspended session is refused. With `ROTATE_REFRESH_TOKENS` the"
                " answer also holds the next refresh token, for the same session."
            ),
            request=RefreshTokenSerializer,
            responses={
                200: RefreshedTokensSerializer,
                400: INVALID_INPUT,
                401: error(
                    "Invalid or expired refresh token (`token_not_valid`), or its session is"
                    " over: `session_ended`, `session_expired`, `invalid_token`, ...;"
                    " `refresh_reused`: with rotation, a retired refresh token was presented"
                    " again, and its session has just been ended."
                ),
                415: UNSUPPORTED_MEDIA_TYPE,
                429: PROJECT_THROTTLED,
            },
        )
    }


class TokenLogoutSchema(_ViewSchema):
    target_class = "nilva_session.apis.TokenSessionLogoutApi"
    methods: ClassVar[dict[str, dict[str, Any]]] = {
        "post": operation(
            operation_id="sessions_token_logout",
            summary="Sign out with JWTs: end the refresh token's session",
            description=(
                "Ends the session named by the refresh token (and blacklists the token when"
                " simplejwt's blacklist app is installed). A session that already ended is"
                " still 204."
            ),
            request=RefreshTokenSerializer,
            responses={
                204: NO_CONTENT,
                400: INVALID_INPUT,
                401: error("Invalid, expired or forged refresh token (`token_not_valid`)."),
                415: UNSUPPORTED_MEDIA_TYPE,
                429: PROJECT_THROTTLED,
            },
        )
    }
