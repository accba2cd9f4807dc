import importlib.util

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class NilvaSessionConfig(AppConfig):
    name = "nilva_session"
    label = "nilva_session"
    verbose_name = _("User sessions")
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import checks, receivers  # noqa: F401  (registers checks and signal receivers)

        # OpenAPI (the "openapi" extra): drf-spectacular finds its extensions by subclassing,
        # so importing the module registers them. Without drf-spectacular, nothing happens.
        if importlib.util.find_spec("drf_spectacular") is not None:
            from . import openapi  # noqa: F401

        # Django Channels (the "channels" extra): importing the module connects the receivers
        # that close an ended session's websockets on every worker, whichever process ends it.
        if importlib.util.find_spec("channels") is not None:
            from . import channels  # noqa: F401
