"""The linters are part of the suite: ruff and mypy --strict stay clean."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "webapp", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied():
    result = _run("ruff", "format", "--check", "webapp", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing():
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
