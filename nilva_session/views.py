"""The page behind the "this wasn't me" link of a new-device email (plain Django, not DRF).

``GET`` only shows what the link would do, with a form; ``POST`` (CSRF-checked) does it, once:
every session of the user ends (reason ``reported``), and with ``NOT_ME_SETS_UNUSABLE_PASSWORD``
the password stops working. A link that is forged, expired or already used changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from . import alerts, clients, sessions
from .models import EndReason, SessionEvent, UserSession

TEMPLATE = "nilva_session/not_me.html"


def _page(request: HttpRequest, state: str, status: int, **context: Any) -> HttpResponse:
    response = render(request, TEMPLATE, {"state": state, **context}, status=status)
    response["Referrer-Policy"] = "no-referrer"  # the link's value must not leave in a Referer
    response["X-Robots-Tag"] = "noindex"
    return response


@method_decorator([never_cache, csrf_protect], name="dispatch")
class NotMeView(View):
    """``/not-me/<token>/``: confirm (GET) and end every session of the user (POST)."""

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        event = alerts.event_of_not_me_token(token)
        if event is None:
            return _page(request, "invalid", 400)
        if event.handled_at is not None:
            return _page(request, "used", 410)
        device = clients.summarize_user_agent(event.user_agent, translate=True)
        return _page(request, "confirm", 200, event=event, device=device)

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        event = alerts.event_of_not_me_token(token)
        if event is None:
            return _page(request, "invalid", 400)
        # One UPDATE claims the link: of two concurrent POSTs, one acts. The claim and the acts
        # commit together, so a failure leaves the link usable.
        with transaction.atomic():
            claimed = SessionEvent.objects.filter(pk=event.pk, handled_at=None)
            if not claimed.update(handled_at=timezone.now()):
                return _page(request, "used", 410)
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
