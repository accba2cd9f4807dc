"""The page behind the "this wasn't me" link of a new-device email (plain Django, not DRF).

``GET`` only shows what the link would do, with a form; its ``POST`` (CSRF-checked) does it, once:
every session of the user ends (reason ``reported``), and with ``NOT_ME_SETS_UNUSABLE_PASSWORD``
the password stops working. A link that is forged, expired or already used changes nothing.
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from . import alerts, sessions
from .models import EndReason, SessionEvent, UserSession

TEMPLATE = "nilva_session/not_me.html"


def _page(request: HttpRequest, state: str, status: int, **context: Any) -> HttpResponse:
    response = render(request, TEMPLATE, {"state": state, **context}, status=status)
    response["Referrer-Policy"] = "no-referrer"  # the link's value must not leave in a Referer
    response["X-Robots-Tag"] = "noindex"
    return response


@method_decorator([never_cache, csrf_protect], name="dispatch")
class NotMeView(View):
    """``GET not-me/<token>/``: what the emailed link opens; shows a form, changes nothing."""

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        event = alerts.event_of_not_me_token(token)
        if event is None:
            return _page(request, "invalid", 400)
        if event.handled_at is not None:
            return _page(request, "used", 410)
        device = alerts.device_label(event.user_agent)
        return _page(request, "confirm", 200, event=event, device=device, token=token)


@method_decorator([never_cache, csrf_protect], name="dispatch")
class NotMeActView(View):
    """``POST not-me/`` with the link's ``token`` in the body: end every session of the user.

    The token travels in the body, not the path, so that no log of a refused POST (Django
    logs the path of a CSRF failure) holds a link that still works.
    """

    def post(self, request: HttpRequest) -> HttpResponse:
        token = request.POST.get("token", "")
        event = alerts.event_of_not_me_token(token) if len(token) <= 2048 else None
        if event is None:
            return _page(request, "invalid", 400)
        # One UPDATE claims the link: of two concurrent POSTs, one acts. The claim and the acts
        # commit together, so a failure leaves the link usable.
        with transaction.atomic():
            claimed = SessionEvent.objects.filter(pk=event.pk, handled_at=None)
            if not claimed.update(handled_at=timezone.now()):
                return _page(request, "used", 410)
            # The user's row before their sessions', as a sign-in under a session limit
            # takes them: two orders of the same locks would deadlock.
            users = get_user_model()._base_manager.select_for_update()
            users.filter(pk=cast(Any, event.user_id)).values_list("pk").first()
            mine = UserSession.objects.for_user(event.user_id)
            ended = sessions.revoke(mine, EndReason.REPORTED)
            password_reset = alerts.lock_password(event.user_id)
        sessions.logger.warning(
            "sign-in reported as not the user's: user=%s event=%s sessions_ended=%s",
            event.user_id,
            event.pk,
            ended,
        )
        return _page(request, "done", 200, ended=ended, password_reset=password_reset)
