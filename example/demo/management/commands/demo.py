"""``python example/manage.py demo``: migrate, create the demo user, print how to use it, serve."""

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password-123"


class Command(BaseCommand):
    help = "Set up and serve the nilva-session demo."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-serve", action="store_true", help="Set up and print, but do not start the server."
        )

    def handle(self, *args, **options):
        call_command("migrate", interactive=False, verbosity=0)
        users = get_user_model().objects
        user, created = users.get_or_create(username=DEMO_USERNAME)
        if created or not user.check_password(DEMO_PASSWORD):
            user.set_password(DEMO_PASSWORD)
            user.is_staff = user.is_superuser = True
            user.save()
        base = f"http://{options['host']}:{options['port']}"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "nilva-session demo",
                    f"  Open:      {base}/   (sign in from two browsers, see both sessions)",
                    f"  API:       {base}/api/sessions/",
                    *(
                        [f"  API docs:  {base}/api/docs/   (schema: {base}/api/schema/)"]
                        if apps.is_installed("drf_spectacular_sidecar")
                        else []
                    ),
                    f"  Admin:     {base}/admin/",
                    f"  User:      {DEMO_USERNAME}",
                    f"  Password:  {DEMO_PASSWORD}",
                    "",
                    "Try:",
                    f"  curl -s -X POST {base}/api/sessions/login/ "
                    f"-H 'Content-Type: application/json' "
                    f'-d \'{{"username": "{DEMO_USERNAME}", "password": "{DEMO_PASSWORD}"}}\'',
                    f"  curl -s {base}/api/sessions/active/ -H 'Authorization: Token <token>'",
                    "",
                ]
            )
        )
        if not options["no_serve"]:
            # insecure_serving: the page's CSS and script are served even with DJANGO_DEBUG=0.
            call_command(
                "runserver",
                f"{options['host']}:{options['port']}",
                use_reloader=False,
                insecure_serving=True,
            )
