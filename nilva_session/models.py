"""The ``UserSession`` model: one row per login (device), the only source of truth.

The ``key`` column holds ``hash_data(token)``, never a token. Ending a session goes through
:func:`nilva_session.sessions.revoke` (``UserSession.objects.filter(...).revoke(reason)``), which
also keeps the cache honest.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import cache, clients
from .utils import new_key_digest, token_expire_at_generator


class EndReason(models.TextChoices):
    LOGOUT = "logout", _("Signed out")
    REVOKED = "revoked", _("Ended by the user")
    LOGOUT_ALL = "logout_all", _("Signed out everywhere")
    ADMIN = "admin", _("Ended by an administrator")
    USER_AGENT_CHANGED = "user_agent_changed", _("Suspended: user agent changed")
    PASSWORD_CHANGED = "password_changed", _("Password changed")
    USER_DEACTIVATED = "user_deactivated", _("User deactivated")
    REPLACED = "replaced", _("Replaced by a newer session")
    IDLE = "idle_timeout", _("Idle for too long")
    IP_CHANGED = "ip_changed", _("Suspended: client IP changed")
    REFRESH_REUSED = "refresh_reused", _("Ended: a retired refresh token was used again")
    REPORTED = "reported", _("Ended: the user reported a sign-in that was not theirs")


class UserSessionQuerySet(models.QuerySet["UserSession"]):
    def active(self, now: datetime | None = None) -> UserSessionQuerySet:
        """Return the live sessions: those that would authenticate at ``now`` (user aside).

        Active, not expired, within ``ABSOLUTE_LIFETIME`` and not idle past ``IDLE_TIMEOUT``:
        the rule of :func:`nilva_session.sessions.live`.
        """
        from .sessions import live

        return live(self, now)

    def for_user(self, user: Any) -> UserSessionQuerySet:
        """Return the sessions of ``user`` (a user instance or primary key)."""
        return self.filter(user_id=getattr(user, "pk", user))

    def revoke(self, reason: str = EndReason.REVOKED, detail: str | None = None) -> int:
        """End every active session in this queryset; return how many were ended.

        One SELECT of the ids, one UPDATE, cache tombstones before and after the commit,
        and the ``session_revoked`` signal.
        """
        from .sessions import revoke

        return revoke(self, reason=reason, detail=detail)

    def delete(self) -> tuple[int, dict[str, int]]:
        # A deleted live row must not stay usable through a cached copy.
        cache.bar_sessions(self.filter(is_active=True).values_list("id", "key"))
        return super().delete()


class UserSession(models.Model):
    id = models.UUIDField(_("ID"), primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="sessions",
        verbose_name=_("user"),
    )
    key = models.CharField(_("key"), max_length=64, unique=True, default=new_key_digest)
    expire_at = models.DateTimeField(
        _("expire at"), null=True, blank=True, default=token_expire_at_generator
    )
    is_active = models.BooleanField(_("active"), default=True)
    last_online = models.DateTimeField(_("last online"), auto_now=True)
    last_ip = models.GenericIPAddressField(
        _("last IP address"), unpack_ipv4=True, null=True, blank=True
    )
    user_agent = models.TextField(_("user agent"), blank=True, default="")
    detail = models.TextField(_("detail"), null=True, blank=True)  # noqa: DJ001 (0.1.x schema)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    authenticated_at = models.DateTimeField(
        _("authenticated at"),
        null=True,
        blank=True,
        help_text=_("When this session last proved the user's password."),
    )
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    end_reason = models.CharField(
        _("end reason"), max_length=32, blank=True, default="", choices=EndReason.choices
    )
    refresh_generation = models.PositiveIntegerField(
        _("refresh generation"),
        default=0,
        help_text=_("The generation of the session's current refresh token (JWT rotation)."),
    )
    refreshed_at = models.DateTimeField(_("refreshed at"), null=True, blank=True)
    device_digest = models.CharField(
        _("device digest"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("SHA-256 of what identifies the device (see NEW_DEVICE_RULE)."),
    )

    # Typed as the queryset so that its methods (active, for_user, revoke) are visible to type
    # checkers without the django-stubs plugin too; as_manager() copies them onto the manager.
    objects: ClassVar[UserSessionQuerySet] = UserSessionQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        db_table = "user_session"
        verbose_name = _("user session")
        verbose_name_plural = _("user sessions")
        indexes = [
            models.Index(fields=["user", "is_active"], name="user_session_user_active"),
            models.Index(fields=["expire_at"], name="user_session_expire_at"),
            models.Index(fields=["ended_at"], name="user_session_ended_at"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} · {clients.summarize_user_agent(self.user_agent)} · {self.id}"

    # Both are properties, as in nilva-session 0.1.x: code written for it reads
    # ``if session.is_expired:`` and ``session.user_agent_data["os"]``.
    @property
    def is_expired(self) -> bool:
        """True once ``expire_at`` has passed. Pure: reads nothing, writes nothing."""
        return self.is_expired_at(timezone.now())

    def is_expired_at(self, now: datetime) -> bool:
        """Return True if ``expire_at`` has passed at ``now`` (an aware datetime)."""
        return self.expire_at is not None and self.expire_at <= now

    @property
    def user_agent_data(self) -> dict[str, Any]:
        """The parsed user agent (``os``, ``browser``, ``device_*``, ...) as a new dict."""
        return clients.describe_user_agent(self.user_agent)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        # Model.delete() bypasses QuerySet.delete(): bar the cached copy here too.
        cache.bar_sessions([(self.pk, self.key)])
        return super().delete(*args, **kwargs)

    def revoke(self, reason: str = EndReason.REVOKED, detail: str | None = None) -> bool:
        """End this session; return True if it was active."""
        return UserSession.objects.filter(pk=self.pk).revoke(reason, detail) == 1

    @classmethod
    def get_cache_key(cls, key: str) -> str:
        """Return the cache key of the session whose ``key`` (token digest) is given."""
        return cache.token_key(key)

    @classmethod
    def get_cache_key_by_session_id(cls, session_id: uuid.UUID | str) -> str:
        """Return the cache key of the session with this id."""
        return cache.session_key(session_id)

    @classmethod
    def invalidate_cache(cls, key: str) -> None:
        """Keep the session with this ``key`` (token digest) out of the cache for a while."""
        cache.bar([cache.token_key(key)])

    @classmethod
    def invalidate_cache_by_session_id(cls, session_id: uuid.UUID | str) -> None:
        """Keep the session with this id out of the cache for a while."""
        cache.bar([cache.session_key(session_id)])


class KnownDevice(models.Model):
    """A device a user has signed in from (``NEW_DEVICE_RULE``), remembered past its sessions.

    Sessions are deleted by the cleanup soon after they end or expire; a device is remembered
    for ``NEW_DEVICE_MEMORY`` after its last sign-in, so that a sign-in is compared with the
    user's history rather than with the sessions that happen to be left.
    """

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("user"),
    )
    digest = models.CharField(_("device digest"), max_length=64)
    first_seen = models.DateTimeField(_("first seen"), default=timezone.now)
    last_seen = models.DateTimeField(_("last seen"), default=timezone.now, db_index=True)

    class Meta:
        db_table = "user_session_device"
        verbose_name = _("known device")
        verbose_name_plural = _("known devices")
        constraints = [
            models.UniqueConstraint(fields=["user", "digest"], name="user_session_device_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} · {self.digest[:8]}…"


class EventKind(models.TextChoices):
    LOGIN = "login", _("Signed in")
    LOGIN_FAILED = "login_failed", _("Sign-in failed")
    NEW_DEVICE = "new_device", _("Signed in on a new device")
    ROTATED = "rotated", _("Token rotated")
    REFRESH_REUSED = "refresh_reused", _("Retired refresh token used again")
    SUSPENDED = "suspended", _("Session suspended")
    REVOKED = "revoked", _("Session ended")


class SessionEvent(models.Model):
    """One security event: the history ``nilva_session_events`` exports (schema: ``events``).

    ``user`` keeps its id after the user is deleted (no database constraint), and
    ``session_id`` is not a foreign key: events outlive the sessions the cleanup deletes.
    """

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(_("time"), default=timezone.now, db_index=True)
    kind = models.CharField(_("kind"), max_length=32, choices=EventKind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        verbose_name=_("user"),
    )
    session_id = models.UUIDField(_("session"), null=True, blank=True)
    ip = models.GenericIPAddressField(_("IP address"), unpack_ipv4=True, null=True, blank=True)
    user_agent = models.TextField(_("user agent"), blank=True, default="")
    reason = models.CharField(_("reason"), max_length=32, blank=True, default="")
    data = models.JSONField(_("data"), default=dict, blank=True)
    handled_at = models.DateTimeField(
        _("handled at"),
        null=True,
        blank=True,
        help_text=_("When the user followed this event's “this wasn't me” link."),
    )

    class Meta:
        db_table = "user_session_event"
        verbose_name = _("session event")
        verbose_name_plural = _("session events")
        ordering = ("created_at", "id")
        indexes = [models.Index(fields=["user", "created_at"], name="user_session_event_user")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.kind} user={self.user_id}"
