from django.contrib import admin
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from nilva_session.sessions import current_session


class WhoAmI(APIView):
    """A protected view: who is asking, and through which session."""

    def get(self, request):
        session = current_session(request)
        return Response(
            {
                "user": request.user.get_username(),
                "session_id": str(session.pk) if session else None,
            }
        )


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/sessions/", include("nilva_session.urls")),
    path("api/whoami/", WhoAmI.as_view(), name="whoami"),
]
