"""Packaging: the sdist and wheel build, hold what they must, and the wheel works when installed.

The sources are the checkout's files that git would commit (tracked, plus untracked files that
are not ignored), copied to a temporary directory, so a build never writes into the checkout.
``python -m build`` makes the sdist and then the wheel *from the sdist* (an isolated build:
setuptools comes from the package index). The wheel is installed with its dependencies into a
fresh virtualenv, and the demo project (a copy of ``example/``) runs its checks, migrations and
a few requests against it, from a directory where the checkout is not importable.

Network: the build and the install need the package index (pip's cache makes reruns fast).
Without it the tests are skipped, or fail when ``CI`` is set. They run once, on the default
settings; the PostgreSQL + Redis passes skip them (nothing here depends on the backends).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from .support.services import services_active

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "nilva_session"
DEMO_USER, DEMO_PASSWORD = "demo", "demo-password-123"
BUILD_TIMEOUT = 300
INVALID_TOKEN_FA = "توکن نامعتبر است."

# What pip or build print when the package index cannot be reached.
OFFLINE_SIGNS = (
    "Temporary failure in name resolution",
    "Name or service not known",
    "NewConnectionError",
    "Network is unreachable",
    "No matching distribution found for setuptools",
)


@pytest.fixture(autouse=True)
def _default_settings_only():
    if services_active():
        pytest.skip("packaging runs in the default (SQLite + local memory) pass only")


def pyproject_version() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python 3.10
        match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
        assert match, "no version in pyproject.toml"
        return match.group(1)
    return str(tomllib.loads(text)["project"]["version"])


def source_files() -> list[str]:
    """The checkout's files as git would commit them; every file when git is unavailable."""
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        listed = subprocess.run(
            [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return sorted(name for name in listed.split("\0") if name and (ROOT / name).is_file())
    skip = {".git", ".venv", ".nox", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache"}
    return sorted(
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*")
        if path.is_file() and not skip.intersection(path.relative_to(ROOT).parts)
    )


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: nothing that points back at the checkout."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "PYTHONPATH",
            "PYTHONHOME",
            "PYTHONSTARTUP",
            "VIRTUAL_ENV",
            "DJANGO_SETTINGS_MODULE",
            "DATABASE_URL",
            "REDIS_URL",
        }
    }
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONIOENCODING="utf-8", **extra)
    return env


def run(cmd: list[str], cwd: Path, timeout: float = BUILD_TIMEOUT, **env: str) -> str:
    """Run ``cmd``; return its output. Skip when the package index is unreachable (not on CI)."""
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        if not os.environ.get("CI") and any(sign in output for sign in OFFLINE_SIGNS):
            pytest.skip(f"the package index is unreachable: {' '.join(cmd[:4])}")
        pytest.fail(f"{' '.join(cmd)} exited {result.returncode}:\n{output[-6000:]}")
    return result.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """``(sdist, wheel)`` built by ``python -m build`` from a copy of the sources."""
    if services_active():
        pytest.skip("packaging runs in the default (SQLite + local memory) pass only")
    base = tmp_path_factory.mktemp("packaging")
    src, out = base / "src", base / "dist"
    for name in source_files():
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    run([sys.executable, "-m", "build", "--outdir", str(out), str(src)], cwd=base)
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1, sdists
    assert len(wheels) == 1, wheels
    return sdists[0], wheels[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory, dists):
    """The python of a fresh virtualenv with the wheel (and its dependencies) installed."""
    _sdist, wheel = dists
    base = tmp_path_factory.mktemp("installed")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=base)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], cwd=base)
    return python


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A copy of ``example/`` without its database."""
    target = tmp_path_factory.mktemp("demo") / "example"
    shutil.copytree(
        ROOT / "example", target, ignore=shutil.ignore_patterns("__pycache__", "db.sqlite3*")
    )
    return target


def package_files() -> set[str]:
    """The package's files in the checkout (as git sees them), bytecode aside."""
    return {
        name
        for name in source_files()
        if name.startswith(f"{PACKAGE}/") and not name.endswith((".pyc", ".pyo"))
    }


# --------------------------------------------------------------------------------------------
# what the distributions hold
# --------------------------------------------------------------------------------------------


def test_the_distributions_are_named_after_the_version(dists):
    sdist, wheel = dists
    version = pyproject_version()
    assert sdist.name == f"nilva_session-{version}.tar.gz"
    assert wheel.name == f"nilva_session-{version}-py3-none-any.whl"


def test_the_wheel_holds_the_package_and_only_the_package(dists):
    _sdist, wheel = dists
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"nilva_session-{pyproject_version()}.dist-info/METADATA").decode()
    expected = package_files()  # modules, migrations, locale files, py.typed, templates, static
    assert expected - names == set()
    for required in (
        f"{PACKAGE}/py.typed",
        f"{PACKAGE}/locale/fa/LC_MESSAGES/django.po",
        f"{PACKAGE}/locale/fa/LC_MESSAGES/django.mo",
        f"{PACKAGE}/migrations/0001_initial.py",
        f"{PACKAGE}/management/commands/nilva_session_cleanup.py",
    ):
        assert required in names
    migrations = {n for n in names if re.fullmatch(rf"{PACKAGE}/migrations/\d{{4}}_\w+\.py", n)}
    on_disk = {
        f"{PACKAGE}/migrations/{p.name}" for p in (ROOT / PACKAGE / "migrations").glob("0*.py")
    }
    assert migrations == on_disk
    dist_info = f"nilva_session-{pyproject_version()}.dist-info/"
    strays = {n for n in names if not n.startswith((f"{PACKAGE}/", dist_info))}
    assert strays == set()  # no tests/, example/, benchmarks/, docs/
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert f"{dist_info}licenses/LICENSE" in names
    assert f"Version: {pyproject_version()}" in metadata
    assert "License-Expression: MIT" in metadata
    for requirement in ("Django>=5.2", "djangorestframework>=3.15", "ua-parser<2,>=1.0"):
        assert f"Requires-Dist: {requirement}" in metadata


def test_the_sdist_holds_the_package_and_its_documents(dists):
    sdist, _wheel = dists
    prefix = f"nilva_session-{pyproject_version()}/"
    with tarfile.open(sdist) as archive:
        names = {name[len(prefix) :] for name in archive.getnames() if name.startswith(prefix)}
    assert package_files() - names == set()
    for document in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "PKG-INFO"):
        assert document in names
    # The test suite needs a checkout; it is not shipped in part.
    assert not {n for n in names if n.split("/")[0] in ("tests", "example", "benchmarks")}
    assert not any("__pycache__" in n for n in names)


# --------------------------------------------------------------------------------------------
# the installed wheel
# --------------------------------------------------------------------------------------------


def test_the_installed_wheel_is_what_python_imports(installed, tmp_path):
    probe = (
        "import json, sys, sysconfig, nilva_session;"
        "print(json.dumps({'version': nilva_session.__version__,"
        " 'file': nilva_session.__file__, 'purelib': sysconfig.get_paths()['purelib'],"
        " 'path': sys.path}))"
    )
    found = json.loads(run([str(installed), "-c", probe], cwd=tmp_path, timeout=60))
    assert found["version"] == pyproject_version()
    assert Path(found["file"]).resolve().is_relative_to(Path(found["purelib"]).resolve())
    assert not any(entry and Path(entry).resolve().is_relative_to(ROOT) for entry in found["path"])


def test_the_plain_install_has_none_of_the_integrations_packages(installed, tmp_path, dists):
    """``pip install nilva-session`` brings no adrf, Ninja or Channels; each is an extra."""
    probe = (
        "import importlib.util, json;"
        "print(json.dumps([n for n in ('adrf', 'ninja', 'channels', 'channels_redis', 'daphne')"
        " if importlib.util.find_spec(n)]))"
    )
    assert json.loads(run([str(installed), "-c", probe], cwd=tmp_path, timeout=60)) == []
    _sdist, wheel = dists
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"nilva_session-{pyproject_version()}.dist-info/METADATA").decode()
    for extra, requirement in (
        ("async", "adrf>=0.1.9"),
        ("ninja", "django-ninja>=1.3"),
        ("channels", "channels>=4.1"),
    ):
        assert f'Requires-Dist: {requirement}; extra == "{extra}"' in metadata


def manage(installed: Path, demo: Path, *args: str) -> str:
    return run([str(installed), "manage.py", *args], cwd=demo, timeout=120)


def test_the_demo_checks_and_migrates_against_the_installed_wheel(installed, demo):
    manage(installed, demo, "check", "--deploy", "--fail-level", "ERROR")
    manage(installed, demo, "migrate", "--noinput")
    assert "No changes detected" in manage(
        installed, demo, "makemigrations", "--check", "--dry-run"
    )
    applied = manage(installed, demo, "showmigrations", "nilva_session")
    migrations = sorted(p.stem for p in (ROOT / PACKAGE / "migrations").glob("0*.py"))
    for name in migrations:
        assert f"[X] {name}" in applied


REQUESTS = f"""
import json
from django.test import Client

import nilva_session

client = Client(SERVER_NAME="localhost", HTTP_USER_AGENT="packaging-test")
login = client.post(
    "/api/sessions/login/",
    {{"username": "{DEMO_USER}", "password": "{DEMO_PASSWORD}"}},
    content_type="application/json",
)
token = login.json()["token"]
listed = client.get("/api/sessions/active/", HTTP_AUTHORIZATION="Token " + token)
refused = client.get("/api/whoami/", HTTP_AUTHORIZATION="Token nope", HTTP_ACCEPT_LANGUAGE="fa")
page = client.get("/")
print(json.dumps({{
    "module": nilva_session.__file__,
    "login": login.status_code,
    "listed": [listed.status_code, len(listed.json())],
    "refused": [refused.status_code, refused.json()],
    "page": page.status_code,
}}))
"""


def test_the_demo_serves_requests_from_the_installed_wheel(installed, demo):
    """Login, listing, a Persian refusal (the shipped .mo) and the demo page, in one process."""
    manage(installed, demo, "demo", "--no-serve")  # migrates and creates the demo user
    result = json.loads(manage(installed, demo, "shell", "-c", REQUESTS).strip().splitlines()[-1])
    assert not Path(result["module"]).resolve().is_relative_to(ROOT)
    assert result["login"] == 200
    assert result["listed"] == [200, 1]
    assert result["refused"] == [401, {"detail": INVALID_TOKEN_FA, "code": "invalid_token"}]
    assert result["page"] == 200
