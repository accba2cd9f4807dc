"""tests.settings plus simplejwt's ``token_blacklist`` app.

simplejwt decides at import time whether tokens get ``blacklist()``/``outstand()``, so the tests
that need the app (``tests/test_jwt_blacklist.py``) run in a process started with these settings;
``tests/test_jwt.py`` starts that process.
"""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "rest_framework_simplejwt.token_blacklist"]
