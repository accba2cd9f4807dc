"""``GET /api/async/whoami/``: an adrf async view, authenticated on the event loop.

Mounted by demo/urls.py when adrf is installed (``pip install "nilva-session[async]"``).
"""

from adrf.views import APIView
from rest_framework.response import Response

from nilva_session.adrf import AsyncJWTAuthentication, AsyncTokenAuthentication
from nilva_session.sessions import current_session


class AsyncWhoAmI(APIView):
    """The user and session behind the credential, from an ``async def`` handler."""

    authentication_classes = [AsyncTokenAuthentication, AsyncJWTAuthentication]

    async def get(self, request):
        session = current_session(request)
        return Response(
            {
                "user": request.user.get_username(),
                "session_id": str(session.pk) if session else None,
            }
        )
