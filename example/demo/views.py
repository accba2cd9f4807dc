"""The demo page: a plain Django view that serves HTML, CSS and a small script.

The page needs no Django login. Its script signs in through the package's token API
(``POST /api/sessions/login/``) and sends ``Authorization: Token …`` on every call, so no
cookie and no CSRF token is involved.
"""

from django.conf import settings
from django.views.generic import TemplateView

from demo.management.commands.demo import DEMO_PASSWORD, DEMO_USERNAME


class SessionsPageView(TemplateView):
    """``GET /``: sign in, then "Where you're signed in"."""

    template_name = "demo/index.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        # The demo credentials are printed by ``./dev demo``; show them on the page only while
        # the demo runs with DEBUG on (its default), never on a deployment with DEBUG off.
        if settings.DEBUG:
            context["demo_credentials"] = {"username": DEMO_USERNAME, "password": DEMO_PASSWORD}
        return context
