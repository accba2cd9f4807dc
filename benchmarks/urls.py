"""One tiny DRF view, mounted once per authentication scheme, plus nilva-session's own API.

With adrf installed (the ``async`` extra), the same view as an adrf async view under
``async/`` (``benchmarks/asyncpath.py``, ``benchmarks/asyncload.py``).
"""

from django.core.cache import caches
from django.urls import include, path
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework.authentication import TokenAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import (
    JWTAuthentication,
    JWTStatelessUserAuthentication,
)

from nilva_session.backends import (
    UserSessionDBJwtAuthentication,
    UserSessionDBTokenAuthentication,
)


class Hello(APIView):
    """``{"ok": true}``: the smallest useful protected view."""

    def get(self, request):
        return Response({"ok": True})


SMALL_KEY = "bench:small"


class CacheGet(APIView):
    """The baseline view plus one ``cache.get``: what one cache read costs inside a request."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request):
        caches["default"].get(SMALL_KEY)
        return Response({"ok": True})


def protected(*authentication_classes):
    return Hello.as_view(
        authentication_classes=list(authentication_classes), permission_classes=[IsAuthenticated]
    )


urlpatterns = [
    path("base/", Hello.as_view(authentication_classes=[], permission_classes=[AllowAny])),
    path("ours/token/", protected(UserSessionDBTokenAuthentication)),
    path("ours/jwt/", protected(UserSessionDBJwtAuthentication)),
    path("drf/token/", protected(TokenAuthentication)),
    path("knox/", protected(KnoxTokenAuthentication)),
    path("simplejwt/", protected(JWTAuthentication)),
    path("simplejwt/stateless/", protected(JWTStatelessUserAuthentication)),
    path("floor/cache-get/", CacheGet.as_view()),
    path("api/sessions/", include("nilva_session.urls")),
]

try:
    from adrf.views import APIView as AsyncAPIView
except ImportError:  # the async rows need adrf; the rest of the benchmark does not
    AsyncAPIView = None

if AsyncAPIView is not None:
    from nilva_session.adrf import AsyncJWTAuthentication, AsyncTokenAuthentication

    class AsyncHello(AsyncAPIView):
        """``{"ok": true}`` from an ``async def`` handler: :class:`Hello` for adrf."""

        async def get(self, request):
            return Response({"ok": True})

    def aprotected(*authentication_classes):
        return AsyncHello.as_view(
            authentication_classes=list(authentication_classes),
            permission_classes=[IsAuthenticated],
        )

    urlpatterns += [
        path(
            "async/base/",
            AsyncHello.as_view(authentication_classes=[], permission_classes=[AllowAny]),
        ),
        path("async/token/", aprotected(AsyncTokenAuthentication)),
        path("async/jwt/", aprotected(AsyncJWTAuthentication)),
        # adrf accepts sync classes too (it calls them in the thread it runs ``initial`` in)
        path("async/token-sync-class/", aprotected(UserSessionDBTokenAuthentication)),
    ]
