"""Keep sessions in step with their users: a changed user is re-read, a deactivated one ended."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save, pre_delete

from . import sessions
from .models import EndReason, UserSession

# Saves that touch only these fields cannot change whether a session may authenticate.
HARMLESS_FIELDS = frozenset({"last_login"})


def user_saved(sender: Any, instance: Any, created: bool, update_fields: Any, **kwargs: Any) -> None:
    if created or (update_fields is not None and set(update_fields) <= HARMLESS_FIELDS):
        return
    if not getattr(instance, "is_active", True):
        sessions.revoke(UserSession.objects.for_user(instance), EndReason.USER_DEACTIVATED)
    else:
        sessions.invalidate_user(instance)


def user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    # The rows go with the user (CASCADE); their cached copies must not outlive them.
    sessions.invalidate_user(instance)


post_save.connect(user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="nilva_session_user_saved")
pre_delete.connect(user_deleted, sender=settings.AUTH_USER_MODEL, dispatch_uid="nilva_session_user_deleted")
