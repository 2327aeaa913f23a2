"""The agent must run on the oldest Python a board ships (3.8): checked with a real 3.8 interpreter."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edgebench.boards.agent_bundle import ensure_bundle

AGENT_SOURCES = sorted((Path(__file__).resolve().parent.parent / "agent" / "edgebench_agent").glob("*.py"))


def python38() -> str:
    """pyenv's 3.8 (present on every machine of this project's kind, CI included)."""
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    candidates = sorted(Path(root, "versions").glob("3.8.*/bin/python3.8"))
    if not candidates:
        pytest.fail(f"no Python 3.8 under {root}/versions: install it with `pyenv install 3.8`")
    return str(candidates[-1])


def test_agent_sources_compile_under_python38():
    done = subprocess.run([python38(), "-c", "import sys, ast\nfor p in sys.argv[1:]: ast.parse(open(p).read(), p)",
                           *map(str, AGENT_SOURCES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_agent_bundle_info_runs_under_python38_without_numpy():
    """With nothing installed, `info` still answers, and says what is missing (for `bench doctor`)."""
    done = subprocess.run([python38(), "-I", str(ensure_bundle()), "info"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["python"]["version"].startswith("3.8.")
    if info["numpy_version"] is None:
        assert any(m.startswith("numpy") for m in info["missing"])
    if info["onnxruntime_version"] is None:
        assert info["providers"] == [] and any(m.startswith("onnxruntime") for m in info["missing"])
