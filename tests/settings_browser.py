"""tests.settings plus the demo project's page: the browser tests of ``tests/test_browser.py``.

The demo app (``example/demo``) is added with its URLs, templates and static files, and
``django.contrib.staticfiles`` so that pytest-django's ``live_server`` serves the CSS and
script. ``tests/test_browser.py`` runs itself in a process started with these settings.
"""

import os
import sys
from pathlib import Path

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, NILVA_SESSION

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "example"
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))

INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.staticfiles", "demo"]
ROOT_URLCONF = "demo.urls"
STATIC_URL = "/static/"

# Each browser context sends X-Forwarded-For as if a proxy stood in front of the server, so
# the sessions show different (documentation-range) IP addresses, as real devices would.
NILVA_SESSION = {**NILVA_SESSION, "TRUSTED_PROXY_COUNT": 1}

# The websocket test serves the demo over ASGI in this process (demo/asgi.py): one process,
# so the in-memory channel layer carries the end of a session to its socket.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Playwright's sync API keeps an asyncio event loop running in the test's thread, which makes
# Django refuse ORM calls from the test body and from the database fixtures' teardown
# ("You cannot call this from an async context"). The test code is synchronous; allow it.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
