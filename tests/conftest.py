"""Shared fixtures: tiny models, fast run options, and a `bench` runner that runs the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

# Run options that keep each agent run to a few tens of milliseconds.
FAST_RUN = ["--warmup", "2", "--min-iterations", "5", "--min-seconds", "0.02", "--max-seconds", "2"]
FAST_REQUEST = {"warmup_min_iterations": 2, "warmup_max_iterations": 30, "min_iterations": 5,
                "min_seconds": 0.02, "max_seconds": 2.0}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from tests.models.make_models import build_all

    return build_all(tmp_path_factory.mktemp("models"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """The host-side agent cache lives in the test session's temp folder, never in ~/.cache."""
    monkeypatch.setenv("EDGEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "edgebench-cache"))


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def bench(tmp_path):
    """Run the real `bench` CLI in a subprocess (real exit codes, real stdout/stderr)."""

    def run(*args, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> CliResult:
        full_env = {**os.environ, **(env or {})}
        done = subprocess.run([sys.executable, "-m", "edgebench", *map(str, args)], cwd=cwd or tmp_path,
                              capture_output=True, text=True, timeout=timeout, env=full_env)
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """A user error: non-zero exit, exactly one line on stderr starting with 'error:', no traceback."""
    assert result.code != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
