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
            {"user": request.user.get_username(), "session_id": str(session.pk) if session else None}
        )


urlpatterns = [
    path("", SessionsPageView.as_view(), name="sessions-page"),
    path("admin/", admin.site.urls),
    path("api/sessions/", include("nilva_session.urls")),
    path("api/whoami/", WhoAmI.as_view(), name="whoami"),
]
