"""Admin: ``UserSession`` read-only, with one action that ends sessions through ``revoke``;
``SessionEvent`` read-only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import clients, sessions
from .models import EndReason, SessionEvent, UserSession

if TYPE_CHECKING:
    _UserSessionAdminBase = admin.ModelAdmin[UserSession]
else:  # ModelAdmin is generic in django-stubs only: not subscriptable at runtime
    _UserSessionAdminBase = admin.ModelAdmin


class ReadOnly:
    """Nothing is added, changed or deleted through the admin: ends go through ``revoke``,
    and an audit trail is not edited."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ExpiredFilter(admin.SimpleListFilter):
    title = _("expired")
    parameter_name = "expired"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        # Expired, past the absolute lifetime or idle: the sessions authentication refuses.
        expired = sessions.lapsed_q(timezone.now())
        if self.value() == "yes":
            return queryset.filter(expired)
        if self.value() == "no":
            return queryset.exclude(expired)
        return queryset


@admin.register(UserSession)
class UserSessionAdmin(ReadOnly, _UserSessionAdminBase):
    list_display = (
        "id",
        "user",
        "is_active",
        "expire_at",
        "last_online",
        "last_ip",
        "client",
        "created_at",
        "detail",
    )
    list_filter = ("is_active", ExpiredFilter, "end_reason")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    ordering = ("-last_online",)
    exclude = ("key",)
    readonly_fields = (
        "id",
        "user",
        "key_digest",
        "is_active",
        "expire_at",
        "last_online",
        "last_ip",
        "user_agent",
        "client",
        "created_at",
        "authenticated_at",
        "ended_at",
        "end_reason",
        "detail",
    )
    actions = ["end_sessions"]

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return [f"user__{get_user_model().USERNAME_FIELD}", "last_ip"]

    @admin.display(description=_("client"))
    def client(self, session: UserSession) -> str:
        return clients.summarize_user_agent(session.user_agent, translate=True)

    @admin.display(description=_("key digest"))
    def key_digest(self, session: UserSession) -> str:
        # Eight hex digits identify a row when talking about it; they reveal nothing usable.
        return f"{session.key[:8]}…" if session.key else ""

    def has_end_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("nilva_session.change_usersession")

    @admin.action(description=_("End selected sessions"), permissions=["end"])
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[UserSession]) -> None:
        ended = sessions.revoke(queryset, EndReason.ADMIN)
        self.message_user(
            request,
            ngettext("Ended %d session.", "Ended %d sessions.", ended) % ended,
            messages.SUCCESS,
        )


if TYPE_CHECKING:
    _SessionEventAdminBase = admin.ModelAdmin[SessionEvent]
else:
    _SessionEventAdminBase = admin.ModelAdmin


@admin.register(SessionEvent)
class SessionEventAdmin(ReadOnly, _SessionEventAdminBase):
    """The security event history: read-only, as an audit trail must be."""

    list_display = ("created_at", "kind", "user", "session_id", "ip", "client", "why")
    list_filter = ("kind", "reason")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    readonly_fields = (
        "created_at",
        "kind",
        "user",
        "session_id",
        "ip",
        "user_agent",
        "client",
        "reason",
        "data",
        "handled_at",
    )

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return [f"user__{get_user_model().USERNAME_FIELD}", "ip", "=session_id"]

    @admin.display(description=_("client"))
    def client(self, event: SessionEvent) -> str:
        return clients.summarize_user_agent(event.user_agent, translate=True)

    @admin.display(description=_("reason"), ordering="reason")
    def why(self, event: SessionEvent) -> str:
        """The end reason's label (translated) for an end, the stored value otherwise."""
        if event.reason in EndReason.values:
            return str(EndReason(event.reason).label)
        return event.reason
