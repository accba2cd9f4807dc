"""Run part of the suite in its own process, under settings the main run cannot load.

Some tests need what only import time decides (simplejwt's blacklist app, the demo app with
drf-spectacular, Playwright's event loop). The main run starts them here and fails unless all
of them pass: none may skip, so nothing is silently left out.

They take most of a minute, so a developer's ``./dev test`` leaves them to CI: they run when
``CI`` or ``NILVA_TEST_SUBSUITES`` is set, and are skipped (saying so) otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def assert_suite_passes(settings_module: str, *paths: str) -> None:
    """Run ``pytest paths`` with ``settings_module``; fail with its output unless all pass."""
    if not (os.environ.get("CI") or os.environ.get("NILVA_TEST_SUBSUITES")):
        pytest.skip(f"{' '.join(paths)} in its own process: CI runs it (NILVA_TEST_SUBSUITES=1)")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module}
    env.pop("PYTEST_ADDOPTS", None)
    command = [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, f"--ds={settings_module}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"\b\d+ passed\b", output), output
    assert "skipped" not in output, output
