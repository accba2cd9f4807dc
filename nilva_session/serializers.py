"""Serializers: the session listing, the token login and the simplejwt flows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.contrib.auth import authenticate, get_user_model, user_logged_in
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenObtainSerializer
from rest_framework_simplejwt.tokens import RefreshToken

from . import sessions
from .authentication import UserSessionDBJwtAuthentication
from .conf import session_settings
from .exceptions import SessionRefused
from .jwt import (
    PresentedRefreshToken,
    access_token_for_session,
    bind_to_session,
    generation_of,
    owner_of,
    simplejwt_settings,
    verified,
)
from .models import EndReason, UserSession

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class SessionSerializer(serializers.ModelSerializer[UserSession]):
    """One session as its user sees it. Never includes the key."""

    session_id = serializers.UUIDField(source="id", read_only=True)
    user_id = serializers.IntegerField(read_only=True)
    user_agent_data = serializers.DictField(read_only=True)
    is_current = serializers.SerializerMethodField()

    class Meta:
        model = UserSession
        fields = (
            "session_id",
            "user_id",
            "user_agent_data",
            "last_online",
            "last_ip",
            "created_at",
            "expire_at",
            "is_current",
            "is_active",
            "ended_at",
            "end_reason",
        )
        read_only_fields = fields

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        pk_field = UserSession._meta.get_field("user").target_field
        if pk_field.get_internal_type() not in ("AutoField", "BigAutoField", "IntegerField"):
            fields["user_id"] = serializers.CharField(read_only=True)
        return fields

    def get_is_current(self, session: UserSession) -> bool:
        return bool(session.pk == self.context.get("current_session_id"))


def _open_session_response(request: Any, user: Any) -> tuple[UserSession, str]:
    """Open a session for a user who just proved their password; send ``user_logged_in``.

    Past ``MAX_SESSIONS_PER_USER`` under ``"refuse"``: 403 ``session_limit_reached``.
    """
    session, token = sessions.open_session(user, request)
    user_logged_in.send(
        sender=user.__class__, request=getattr(request, "_request", request), user=user
    )
    return session, token


def _timestamp(value: Any) -> Any:
    return serializers.DateTimeField().to_representation(value) if value else None


def token_response(session: UserSession, token: str) -> dict[str, Any]:
    """Return the body that hands out an opaque token: ``{token, session_id, expire_at}``."""
    return {
        "token": token,
        "session_id": str(session.pk),
        "expire_at": _timestamp(session.expire_at),
    }


class LoginSerializer(serializers.Serializer[dict[str, Any]]):
    """``{username, password}`` checked by ``django.contrib.auth.authenticate``.

    ``validated_data`` after ``save()``: ``token`` (shown once), ``session_id``, ``expire_at``.
    """

    username = serializers.CharField(max_length=254, trim_whitespace=False)
    password = serializers.CharField(
        max_length=4096, trim_whitespace=False, write_only=True, style={"input_type": "password"}
    )

    default_error_messages = {
        "invalid_credentials": _("Unable to log in with provided credentials."),
    }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        request = self.context["request"]
        user = authenticate(
            getattr(request, "_request", request),
            username=attrs["username"],
            password=attrs["password"],
        )
        if user is None or not getattr(user, "is_active", True):
            self.fail("invalid_credentials")
        attrs["user"] = user
        return attrs

    def create(self, validated_data: dict[str, Any]) -> dict[str, Any]:
        session, token = _open_session_response(self.context["request"], validated_data["user"])
        return token_response(session, token)

    def to_representation(self, instance: dict[str, Any]) -> dict[str, Any]:
        return instance


class ReauthenticateSerializer(serializers.Serializer[UserSession]):
    """``{password}`` of the signed-in user; ``save()`` records it on the current session."""

    password = serializers.CharField(
        max_length=4096, trim_whitespace=False, write_only=True, style={"input_type": "password"}
    )

    default_error_messages = {"invalid_password": _("The password is not correct.")}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        request = self.context["request"]
        user = request.user
        confirmed = authenticate(
            getattr(request, "_request", request),
            username=user.get_username(),
            password=attrs["password"],
        )
        if confirmed is None or confirmed.pk != user.pk:
            self.fail("invalid_password")
        return attrs

    def save(self, **kwargs: Any) -> UserSession:
        session: UserSession = self.context["session"]
        sessions.confirm_authentication(session)
        return session


class TokenSessionObtainPairSerializer(TokenObtainSerializer):
    """simplejwt's obtain-pair that opens a ``UserSession`` and puts its id in both tokens.

    Returns ``access``, ``refresh``, ``session_id``, ``expire_at``.
    """

    token_class = RefreshToken

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        super().validate(attrs)
        user = cast("AbstractBaseUser", self.user)  # super().validate() refused a missing user
        session, _token = _open_session_response(self.context.get("request"), user)
        # get_token(), so claims added by a subclass (simplejwt's documented hook) are kept; it
        # makes a token_class, a RefreshToken.
        refresh = bind_to_session(cast(RefreshToken, self.get_token(user)), session)
        return {
            "access": str(access_token_for_session(refresh, session)),
            "refresh": str(refresh),
            "session_id": str(session.pk),
            "expire_at": _timestamp(session.expire_at),
        }


def jwt_authentication() -> UserSessionDBJwtAuthentication:
    """Return an instance of ``JWT_AUTHENTICATION_CLASS``: its rules apply to refresh tokens."""
    auth_class: type[UserSessionDBJwtAuthentication] = import_string(
        session_settings.JWT_AUTHENTICATION_CLASS
    )
    return auth_class()


def _verified_refresh(raw: str, token_class: type[RefreshToken] = RefreshToken) -> RefreshToken:
    try:
        return verified(token_class, raw)
    except TokenError as error:
        raise InvalidToken(error.args[0]) from None


def _retired(refresh: RefreshToken, generation: int) -> bool:
    """Return True if ``refresh`` names a live session that retired ``generation`` (the reuse
    rule, ``sessions.refresh_verdict``, judges it); False for anything else."""
    try:
        session_id = sessions.parse_session_id(refresh.get(session_settings.SESSION_ID_CLAIM))
    except SessionRefused:
        return False
    state = sessions.refresh_state(session_id)
    if state is None:
        return False
    verdict = sessions.refresh_verdict(generation, *state, timezone.now())
    return verdict in (sessions.RefreshVerdict.GRACE, sessions.RefreshVerdict.REUSED)


class TokenSessionRefreshSerializer(serializers.Serializer[Any]):
    """simplejwt refresh that refuses tokens of ended, expired, suspended or missing sessions.

    Honours ``ROTATE_REFRESH_TOKENS`` and ``BLACKLIST_AFTER_ROTATION``; rotation keeps the
    session. Each refresh token carries a generation: a rotation gives the next token the next
    one, and with ``DETECT_REFRESH_REUSE`` a retired token presented again ends the session
    (``sessions.advance_refresh``). Returns ``access`` (and ``refresh`` when rotating).
    """

    refresh = serializers.CharField(max_length=4096)
    access = serializers.CharField(read_only=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        jwt_settings = simplejwt_settings()
        rotate = jwt_settings.ROTATE_REFRESH_TOKENS
        detect = session_settings.DETECT_REFRESH_REUSE
        refresh = _verified_refresh(attrs["refresh"], PresentedRefreshToken)
        generation = generation_of(refresh)
        blacklisted = cast(PresentedRefreshToken, refresh).is_blacklisted()
        if blacklisted and not (detect and _retired(refresh, generation)):
            # Refused before the session is touched: a blacklisted token records no activity.
            raise InvalidToken(str(_("Token is blacklisted")))
        request = self.context.get("request")
        _user, session = jwt_authentication().authenticate_session(refresh, request)
        if detect:
            generation = sessions.advance_refresh(
                session, generation, request, blacklisted=blacklisted, rotate=rotate
            )
        data = {"access": str(access_token_for_session(refresh, session))}
        if jwt_settings.ROTATE_REFRESH_TOKENS:
            if jwt_settings.BLACKLIST_AFTER_ROTATION and hasattr(refresh, "blacklist"):
                refresh.blacklist()
            refresh.set_jti()
            refresh.set_exp()
            refresh.set_iat()
            bind_to_session(refresh, session, generation)  # before outstand(): the final token
            if hasattr(refresh, "outstand"):
                refresh.outstand()
            data["refresh"] = str(refresh)
        return data


def _is_user_id(value: Any) -> bool:
    """Return True if ``value`` could be a value of the user model's ``USER_ID_FIELD``."""
    if value is None or isinstance(value, (bool, list, dict)):
        return False
    field = get_user_model()._meta.get_field(simplejwt_settings().USER_ID_FIELD)
    try:
        field.to_python(value)  # type: ignore[union-attr]  # a concrete field, not a relation
    except (DjangoValidationError, TypeError, ValueError, OverflowError):
        return False
    return True


class TokenSessionBlacklistSerializer(serializers.Serializer[None]):
    """Logout for JWT clients: ends the refresh token's own session and blacklists the token."""

    refresh = serializers.CharField(max_length=4096, write_only=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        refresh = _verified_refresh(attrs["refresh"])
        owner = owner_of(refresh)
        session_id = sessions.parse_session_id(refresh.get(session_settings.SESSION_ID_CLAIM))
        if not _is_user_id(owner[1]):
            raise InvalidToken(str(_("Token contained no recognizable user identification")))
        attrs["refresh_token"], attrs["session_id"], attrs["owner"] = refresh, session_id, owner
        return attrs

    def save(self, **kwargs: Any) -> None:
        refresh: RefreshToken = self.validated_data["refresh_token"]
        session = UserSession.objects.select_related("user").filter(
            pk=self.validated_data["session_id"]
        )
        found = session.first()
        # The owner rule of every JWT path; another user's session: ends nothing, reveals nothing.
        if found is not None and sessions.owned_by(found.user, self.validated_data["owner"]):
            sessions.revoke(session, EndReason.LOGOUT)
        if hasattr(refresh, "blacklist"):
            refresh.blacklist()
