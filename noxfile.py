"""The version matrix, lint and type checks; `.ci/run` runs all of them.

Interpreters come from the machine (pyenv); nothing is downloaded but packages from PyPI.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]

# The oldest versions pyproject.toml claims; the other rows take the newest releases.
OLDEST = [
    "djangorestframework==3.15.0",
    "djangorestframework-simplejwt==5.4.0",
    # the integrations' extras (async, ninja, channels)
    "adrf==0.1.9",
    "django-ninja==1.3.0",
    "channels==4.1.0",
    "channels-redis==4.2.0",
]
# The plain DRF install: none of the integrations' packages (their tests skip; the rest passes).
INTEGRATIONS = ["adrf", "django-ninja", "channels", "channels-redis", "daphne"]
MATRIX = [
    nox.param("3.10", "5.2", "oldest", id="py3.10-django5.2-oldest-drf-simplejwt-integrations"),
    nox.param("3.11", "5.2", "newest", id="py3.11-django5.2"),
    nox.param("3.11", "5.2", "bare", id="py3.11-django5.2-without-integrations"),
    nox.param("3.12", "6.0", "newest", id="py3.12-django6.0"),
    nox.param("3.13", "6.1", "newest", id="py3.13-django6.1"),
]
# The real-browser and wheel-install suites run once, in the main pass of .ci/run, not in every row.
MAIN_PASS_ONLY = ["--ignore=tests/test_browser.py", "--ignore=tests/test_packaging.py"]


@nox.session
@nox.parametrize(("python", "django", "deps"), MATRIX)
def tests(session: nox.Session, django: str, deps: str) -> None:
    session.install("-e", ".[test]", f"Django~={django}.0")
    if deps == "oldest":
        session.install(*OLDEST)
    if deps == "bare":
        session.run("python", "-m", "pip", "uninstall", "--yes", *INTEGRATIONS)
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)
    pytest_args = session.posargs or MAIN_PASS_ONLY
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args)


# The checkers' pinned versions live in pyproject.toml's `lint` extra.
LINT_EXTRA = nox.project.load_toml("pyproject.toml")["project"]["optional-dependencies"]["lint"]
RUFF = next(requirement for requirement in LINT_EXTRA if requirement.startswith("ruff"))


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install(RUFF)
    session.run("ruff", "--version")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    # The package with its dependencies (Django, DRF, simplejwt: simplejwt ships its own types),
    # the stubs, and drf-spectacular for nilva_session/openapi.py. mypy's django plugin loads
    # tests.settings, which needs nothing beyond those.
    session.install("-e", ".[lint]")
    session.run("mypy", "--version")
    session.run("mypy", "nilva_session")
