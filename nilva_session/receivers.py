"""Keep sessions in step with their users.

A changed user is re-read on the next request, a deactivated one has every session ended, and a
password change ends every session but the one kept with ``sessions.keep_session``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import get_hasher, identify_hasher
from django.contrib.auth.signals import user_login_failed
from django.db.models.signals import post_init, post_save, pre_delete, pre_save

from . import clients, events, sessions
from .conf import session_settings
from .models import EndReason, EventKind, UserSession

# Saves that touch only these fields cannot change whether a session may authenticate.
HARMLESS_FIELDS = frozenset({"last_login"})
PASSWORD_ATTRIBUTE = "_nilva_session_password"  # noqa: S105 (an attribute name, not a password)


def _loaded_password(user: Any) -> str | None:
    # Read the instance dict: a deferred password (a user rebuilt from the cache) stays unloaded.
    password: str | None = user.__dict__.get("password")
    return password


def user_initialised(sender: Any, instance: Any, **kwargs: Any) -> None:
    setattr(instance, PASSWORD_ATTRIBUTE, _loaded_password(instance))


def user_saving(sender: Any, instance: Any, **kwargs: Any) -> None:
    # A user loaded without its password (deferred) that now has one: fetch what it was.
    if instance.pk is None or getattr(instance, PASSWORD_ATTRIBUTE, None) is not None:
        return
    if _loaded_password(instance) is not None:
        stored = (
            type(instance)._base_manager.filter(pk=instance.pk).values_list("password", flat=True)
        )
        setattr(instance, PASSWORD_ATTRIBUTE, stored.first())


def _rehashed(instance: Any, update_fields: Any, before: str, after: str) -> bool:
    """True for Django's hash upgrade at login (``check_password``'s setter), not a new password.

    The setter saves only the password, clears ``_password`` (which ``set_password`` sets), and
    runs only when the stored hash is outdated for the preferred hasher.
    """
    if update_fields is None or set(update_fields) != {"password"}:
        return False
    if getattr(instance, "_password", None) is not None:
        return False
    try:
        old = identify_hasher(before)
    except ValueError:  # unusable or unknown: whatever replaced it is a change
        return False
    preferred = get_hasher("default")
    if not (old.algorithm != preferred.algorithm or preferred.must_update(before)):
        return False
    # The upgrade writes a usable, current hash of the preferred hasher; anything else
    # (set_unusable_password(), another hasher) is a change.
    try:
        new = identify_hasher(after)
    except ValueError:
        return False
    return new.algorithm == preferred.algorithm and not preferred.must_update(after)


def _password_changed(instance: Any, update_fields: Any) -> bool:
    if update_fields is not None and "password" not in update_fields:
        return False
    before, after = getattr(instance, PASSWORD_ATTRIBUTE, None), _loaded_password(instance)
    if before is None or after is None or before == after:
        return False
    return not _rehashed(instance, update_fields, before, after)


def user_saved(
    sender: Any, instance: Any, created: bool, update_fields: Any, **kwargs: Any
) -> None:
    changed = not created and _password_changed(instance, update_fields)
    setattr(instance, PASSWORD_ATTRIBUTE, _loaded_password(instance))
    if created or (update_fields is not None and set(update_fields) <= HARMLESS_FIELDS):
        return
    if not getattr(instance, "is_active", True):
        sessions.revoke(UserSession.objects.for_user(instance), EndReason.USER_DEACTIVATED)
        return
    if changed and session_settings.END_SESSIONS_ON_PASSWORD_CHANGE:
        kept = sessions.kept_session_id(instance)
        others = UserSession.objects.for_user(instance).exclude(pk=kept)
        sessions.revoke(others, EndReason.PASSWORD_CHANGED)
    sessions.invalidate_user(instance)


def user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    # The rows go with the user (CASCADE); their cached copies must not outlive them.
    sessions.invalidate_user(instance)


def login_failed(sender: Any, credentials: Any = None, request: Any = None, **kwargs: Any) -> None:
    # A security event (login/, token/, reauthenticate/ and any other authenticate() call).
    # Neither the username (users type passwords into it) nor the credentials are logged or
    # kept: the event names the account only when the username is one (its id).
    has_meta = request is not None and hasattr(request, "META")
    ip = clients.client_ip(request) if has_meta else None
    sessions.logger.info("login failed: ip=%s", ip)
    events.record(
        EventKind.LOGIN_FAILED,
        user_id=_named_user_id(credentials),
        ip=ip,
        user_agent=clients.user_agent(request) if has_meta else "",
    )


def _named_user_id(credentials: Any) -> Any:
    """Return the id of the user whose username the failed credentials gave, or None."""
    user_model = get_user_model()
    username = (credentials or {}).get(user_model.USERNAME_FIELD)
    if not isinstance(username, str) or not username or len(username) > 254:
        return None
    try:
        return (
            user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username})
            .values_list("pk", flat=True)
            .first()
        )
    except (ValueError, TypeError):  # a username the field cannot hold
        return None


USER = settings.AUTH_USER_MODEL
user_login_failed.connect(login_failed, dispatch_uid="nilva_session_login_failed")
post_init.connect(user_initialised, sender=USER, dispatch_uid="nilva_session_user_initialised")
pre_save.connect(user_saving, sender=USER, dispatch_uid="nilva_session_user_saving")
post_save.connect(user_saved, sender=USER, dispatch_uid="nilva_session_user_saved")
pre_delete.connect(user_deleted, sender=USER, dispatch_uid="nilva_session_user_deleted")
