"""The demo under an ASGI server (uvicorn, daphne): ``uvicorn demo.asgi:application``.

With Django Channels installed (``pip install -e ".[channels]"``), ``/ws/session/`` is a
websocket authenticated by nilva-session: the demo page opens it to hear at once that its
session was ended (close code 4001) instead of waiting for its next poll.
"""

import importlib.util
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
# First: it sets Django up, which the imports below need.
django_application = get_asgi_application()

if importlib.util.find_spec("channels") is None:
    application = django_application
else:
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    from nilva_session.channels import NilvaSessionAuthMiddleware

    class SessionConsumer(AsyncWebsocketConsumer):
        """Accepts a socket signed in with nilva-session and keeps it open; that is all.

        When the session ends, the middleware closes the socket (4001, with the reason): the
        page listens for that. A real consumer would send and receive its own messages here.
        """

        # No channel of its own on the layer: it receives nothing but its client's events
        # (Channels gives each consumer one, and a receive loop, unless told otherwise).
        channel_layer_alias = None

        async def connect(self):
            if self.scope["user"].is_authenticated:
                await self.accept()
            else:
                await self.close()  # before accepting: the handshake is refused (HTTP 403)

    application = ProtocolTypeRouter(
        {
            "http": django_application,
            "websocket": NilvaSessionAuthMiddleware(
                URLRouter([path("ws/session/", SessionConsumer.as_asgi())])
            ),
        }
    )
