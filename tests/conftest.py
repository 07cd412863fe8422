"""Shared fixtures: the repository's specs, and running the modc command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def modc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m modc ARGS` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "modc", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
    )


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write a spec file into a temporary directory and return its path."""

    def write(text: str, name: str = "net.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
