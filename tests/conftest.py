"""Shared fixtures: the repository's specs, and running the modc command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow")
    parser.addoption(
        "--trials", type=int, default=None, help="trials of the randomised soundness searches"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked slow (long searches, sweeps) run only with --slow."""
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: its tensors are small, and threads only contend
    (CI runners have two cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def trials(request: pytest.FixtureRequest) -> int | None:
    """`--trials N` from the command line, or None for a test's own lean default."""
    return request.config.getoption("--trials")


def modc(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m modc ARGS` as a user would, capturing its output; a hang fails."""
    return subprocess.run(
        [sys.executable, "-m", "modc", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
    )


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write a spec file into a temporary directory and return its path."""

    def write(text: str, name: str = "net.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
