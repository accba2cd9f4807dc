import importlib.util

from django.apps import apps
from django.contrib import admin
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from demo.views import SessionsPageView
from nilva_session.sessions import current_session


class WhoAmI(APIView):
    """``GET /api/whoami/``: the user and session behind the credential."""

    def get(self, request):
        session = current_session(request)
        return Response(
            {
                "user": request.user.get_username(),
                "session_id": str(session.pk) if session else None,
            }
        )


urlpatterns = [
    path("", SessionsPageView.as_view(), name="sessions-page"),
    path("admin/", admin.site.urls),
    path("api/sessions/", include("nilva_session.urls")),
    path("api/whoami/", WhoAmI.as_view(), name="whoami"),
]

# An adrf async view, when adrf is installed (the [async] extra).
if importlib.util.find_spec("adrf") is not None:
    from demo.async_views import AsyncWhoAmI

    urlpatterns.append(path("api/async/whoami/", AsyncWhoAmI.as_view(), name="async-whoami"))

# OpenAPI, when drf-spectacular is installed (demo/settings.py adds it): the schema and, with
# drf-spectacular-sidecar, Swagger UI with its assets served from this server.
if apps.is_installed("drf_spectacular"):
    from drf_spectacular.utils import extend_schema, inline_serializer
    from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
    from rest_framework import serializers

    from nilva_session.openapi import AUTHENTICATED_ERRORS

    whoami_schema = extend_schema(
        summary="The user and session behind the credential",
        description="The demo's example of a protected view of your own.",
        tags=["demo"],
        responses={
            200: inline_serializer(
                "WhoAmI",
                {
                    "user": serializers.CharField(),
                    "session_id": serializers.UUIDField(allow_null=True),
                },
            ),
            **AUTHENTICATED_ERRORS,
        },
    )
    whoami_schema(WhoAmI)
    if importlib.util.find_spec("adrf") is not None:
        whoami_schema(AsyncWhoAmI)
    urlpatterns.append(path("api/schema/", SpectacularAPIView.as_view(), name="schema"))
    if apps.is_installed("drf_spectacular_sidecar"):
        urlpatterns.append(
            path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs")
        )

# Django Ninja, when it is installed (the [ninja] extra): the session endpoints under
# /api/ninja/ (login/, logout/, logout/all/, active/, active/<id>/), an async protected endpoint
# of your own (/api/ninja/whoami), and Ninja's own OpenAPI schema and docs (/api/ninja/docs).
if importlib.util.find_spec("ninja") is not None:
    from ninja import NinjaAPI, Schema

    from nilva_session import ninja as nilva_ninja

    ninja_api = nilva_ninja.install(
        NinjaAPI(title="nilva-session demo (Django Ninja)", urls_namespace="ninja")
    )
    ninja_api.add_router("", nilva_ninja.router)

    class NinjaWhoAmI(Schema):
        user: str
        session_id: str

    @ninja_api.get(
        "whoami",
        auth=[nilva_ninja.AsyncTokenAuth(), nilva_ninja.AsyncJWTAuth()],
        response={200: NinjaWhoAmI, 401: nilva_ninja.SessionErrorOut},
        tags=["demo"],
    )
    async def ninja_whoami(request):
        """The user and session behind the credential, decided on the event loop."""
        return {"user": request.user.get_username(), "session_id": str(request.auth.pk)}

    urlpatterns.append(path("api/ninja/", ninja_api.urls))
