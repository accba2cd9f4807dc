"""Run part of the suite in its own process, under settings the main run cannot load.

Some tests need what only import time decides (simplejwt's blacklist app, the demo app with
drf-spectacular, Playwright's event loop). The main run starts them here and fails unless all
of them pass: none may skip, so nothing is silently left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def assert_suite_passes(settings_module: str, *paths: str) -> None:
    """Run ``pytest paths`` with ``settings_module``; fail with its output unless all pass."""
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
