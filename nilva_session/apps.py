from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class NilvaSessionConfig(AppConfig):
    name = "nilva_session"
    label = "nilva_session"
    verbose_name = _("User sessions")
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import checks, receivers  # noqa: F401  (registers checks and signal receivers)
