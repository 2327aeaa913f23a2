"""A real install: `pip install .` into a fresh venv gives a working `bench` (the agent packaged with it), and
`bench demo` runs the README's demo from the installed package, in a folder that is not a checkout.

The venv sees this environment's dependencies through a path file (torch and friends are not installed again),
never its editable edgebench: what runs is the wheel pip built from the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("installed")
    venv.create(root / "venv", with_pip=False)
    python = root / "venv" / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies of this environment, as a plain path: its .pth files (the editable edgebench) are not read
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pip from this environment, run by the new venv's python: the package and its `bench` script go into the new
    # venv (its interpreter in the shebang); the checkout's editable edgebench elsewhere is left alone
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                           "--no-build-isolation", str(REPO)], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PIP_NO_INPUT": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _bench(root: Path, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    work = root / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run([str(root / "venv" / "bin" / "bench"), *map(str, args)], cwd=work, capture_output=True,
                          text=True, timeout=timeout, env=_clean_env(root))


def _clean_env(root: Path) -> dict:
    """The environment of a user of the installed tool: no PYTHONPATH or venv of the checkout's."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{root / 'venv' / 'bin'}:{env.get('PATH', '')}"
    return env


def test_the_installed_bench_is_the_wheel_not_the_checkout(installed):
    probe = subprocess.run([str(installed / "venv" / "bin" / "python"), "-c",
                            "import edgebench, edgebench_agent; print(edgebench.__file__); print(edgebench_agent.__file__)"],
                           capture_output=True, text=True, cwd=installed, env=_clean_env(installed))
    assert probe.returncode == 0, probe.stderr
    for line in probe.stdout.split():
        assert str(installed / "venv") in line and str(REPO) not in line, line
    assert _bench(installed, "--version").returncode == 0


def test_the_installed_package_bundles_the_agent_and_deploys_on_local(installed):
    done = _bench(installed, "agent", "bundle", "-o", installed / "agent.pyz")
    assert done.returncode == 0, done.stderr
    info = subprocess.run([sys.executable, str(installed / "agent.pyz"), "info"], capture_output=True, text=True)
    assert info.returncode == 0 and json.loads(info.stdout)["agent_version"], info.stderr


def test_bench_demo_runs_the_readmes_demo_from_the_installed_package(installed):
    done = _bench(installed, "demo", "--dir", "models", "--results", "results")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    work = installed / "work"
    assert {p.name for p in (work / "models").iterdir()} >= {"cnn.onnx", "setnet.onnx", "digits.onnx", "digits_test.npz"}
    documents = [json.loads(p.read_text()) for p in (work / "results").glob("*.json")]
    assert sorted(d["model"]["name"] for d in documents) == ["cnn", "digits", "setnet"]
    assert all(d["status"] == "ok" for d in documents)
    digits = next(d for d in documents if d["model"]["name"] == "digits")
    assert digits["accuracy"]["labels"]["board"]["top1_pct"] > 90
    assert "$ bench compare results" in done.stderr and "digits" in done.stdout  # the comparison table
    again = _bench(installed, "deploy", "--target", "local", "models/cnn.onnx", "--results", "results", "--min-seconds", "0.2")
    assert again.returncode == 0, again.stderr
