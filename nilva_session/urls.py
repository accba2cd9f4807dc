"""Routes of nilva-session; ``include("nilva_session.urls")`` under any prefix."""

from django.urls import path

from . import apis, views

app_name = "nilva_session"

urlpatterns = [
    path("login/", apis.LoginApi.as_view(), name="login"),
    path("logout/", apis.LogoutApi.as_view(), name="logout"),
    path("logout/all/", apis.LogoutAllApi.as_view(), name="logout-all"),
    path("reauthenticate/", apis.ReauthenticateApi.as_view(), name="reauthenticate"),
    path("rotate/", apis.RotateTokenApi.as_view(), name="rotate"),
    path("history/", apis.SessionHistoryApi.as_view(), name="history"),
    path("active/", apis.ListDestroyActiveSessionsApi.as_view(), name="active"),
    path("active/<str:session_id>/", apis.SessionDetailApi.as_view(), name="session-detail"),
    path("token/", apis.TokenSessionObtainPairApi.as_view(), name="token-obtain"),
    path("token/refresh/", apis.TokenSessionRefreshApi.as_view(), name="token-refresh"),
    path("token/logout/", apis.TokenSessionLogoutApi.as_view(), name="token-logout"),
    path("not-me/", views.NotMeActView.as_view(), name="not-me-act"),
    path("not-me/<str:token>/", views.NotMeView.as_view(), name="not-me"),
]
