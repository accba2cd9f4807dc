"""The settings path of nilva-session 0.1.x: ``nilva_session.backends.<class>``."""

from .authentication import UserSessionDBJwtAuthentication, UserSessionDBTokenAuthentication

__all__ = ["UserSessionDBJwtAuthentication", "UserSessionDBTokenAuthentication"]
