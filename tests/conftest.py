"""Shared fixtures: tiny models, fast run options, and a `bench` runner that runs the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# The fault and bad-input suite: every test marked @pytest.mark.fault or @pytest.mark.bad_input (on the test itself
# or its module's pytestmark), wherever it lives, is counted in the closing line below.


def pytest_terminal_summary(terminalreporter):
    """The fault and bad-input suite's own line: how many scenarios it exercised, and whether all passed."""
    counts = {"fault": [0, 0], "bad_input": [0, 0]}  # passed, failed
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call" and outcome == "passed":
                continue
            for kind in counts:
                if kind in getattr(report, "keywords", {}):
                    counts[kind][0 if outcome == "passed" else 1] += 1
    faults, bad = counts["fault"], counts["bad_input"]
    if faults[0] + faults[1] + bad[0] + bad[1]:
        verdict = "all passed" if not (faults[1] or bad[1]) else f"{faults[1] + bad[1]} FAILED"
        terminalreporter.write_line(f"fault suite: {faults[0] + faults[1]} fault scenarios and {bad[0] + bad[1]} "
                                    f"bad inputs exercised, {verdict}")


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


@pytest.fixture(scope="session")
def fork_server():
    """One `bench` fork server per test process (tests/forkcli.py), or None for a fresh interpreter each run."""
    if os.environ.get("EDGEBENCH_TEST_FRESH_PROCESS") == "1":
        yield None
        return
    from tests.forkcli import ForkServer

    server = ForkServer()
    yield server
    server.close()


@pytest.fixture
def bench(tmp_path, tmp_path_factory, fork_server):
    """Run the real `bench` CLI in a process of its own (real exit codes, real stdout/stderr), forked from a server
    that has its imports done (tests/forkcli.py). `bench.home` is its HOME."""

    home = tmp_path_factory.mktemp("home")  # no ~/.ssh/config or known_hosts of the machine leaks into a test

    def run(*args, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> CliResult:
        full_env = {**os.environ, "HOME": str(home), **(env or {})}
        argv = [str(a) for a in args]
        if fork_server is not None:
            return CliResult(*fork_server.run(argv, Path(cwd or tmp_path), full_env, timeout))
        done = subprocess.run([sys.executable, "-m", "edgebench", *argv], cwd=cwd or tmp_path,
                              capture_output=True, text=True, timeout=timeout, env=full_env)
        return CliResult(done.returncode, done.stdout, done.stderr)

    run.home = home
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


# ------------------------------------------------------------------------------------ SSH boards
@dataclass
class SshBoard:
    """A board reached over a real sshd: what an inventory entry needs to reach it."""

    name: str
    server: object  # tests.sshd.SshServer
    user: str
    key: Path
    python: str
    work_dir: str
    env: dict

    def entry(self, **overrides) -> dict:
        entry = {"host": self.server.address, "port": self.server.port, "user": self.user,
                 "identity_file": str(self.key), "python": self.python, "work_dir": self.work_dir,
                 "lock_timeout": 30, "connect_timeout": 5}
        if self.env:
            entry["env"] = dict(self.env)
        entry.update(overrides)
        return {k: v for k, v in entry.items() if v is not None}


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> Path:
    from tests.sshd import keygen

    return keygen(tmp_path_factory.mktemp("client-key") / "id_ed25519")


@pytest.fixture(scope="session")
def ssh_server(client_key):
    import subprocess

    from tests.sshd import WORKER, SshServer, ensure_user, require_root

    require_root("the SSH tests")
    # The non-root board keeps its cache in its real home (one folder per pytest-xdist worker): start it empty, so
    # no run left by an earlier session is collected into this one's results.
    subprocess.run(["rm", "-rf", f"/home/{ensure_user()}/.cache/edgebench-{WORKER}"], check=True)
    server = SshServer.create()
    server.authorize("root", (client_key.parent / "id_ed25519.pub").read_text())
    server.authorize(ensure_user(), (client_key.parent / "id_ed25519.pub").read_text())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ssh_board(ssh_server, client_key, tmp_path_factory) -> SshBoard:
    """root@127.0.0.1 over the real sshd, running the agent with this venv's python."""
    import sys

    return SshBoard("sshroot", ssh_server, "root", client_key, sys.executable,
                    str(tmp_path_factory.mktemp("board-root-cache")), {})


@pytest.fixture(scope="session")
def ssh_board_user(ssh_server, client_key) -> SshBoard:
    """A non-root user over the same sshd, with Debian's /usr/bin/python3 and its own numpy + onnxruntime."""
    import tempfile

    from tests.sshd import NON_ROOT_USER, WORKER, board_site_packages

    folder = Path(tempfile.gettempdir()) / "edgebench-test-board-python"
    folder.mkdir(mode=0o755, exist_ok=True)
    site = board_site_packages(folder)
    return SshBoard("sshuser", ssh_server, NON_ROOT_USER, client_key, "/usr/bin/python3", f"~/.cache/edgebench-{WORKER}",
                    {"PYTHONPATH": str(site)})


@pytest.fixture(scope="session")
def netns_board(client_key, tmp_path_factory):
    """A board with its own address: sshd inside a network namespace made for this test session."""
    import sys

    from tests.sshd import Netns, SshServer, require_root

    require_root("the network namespace board")
    netns = Netns.create()
    server = SshServer.create(address=netns.board_address, netns=netns)
    server.authorize("root", (client_key.parent / "id_ed25519.pub").read_text())
    try:
        server.start()
        yield SshBoard("nsboard", server, "root", client_key, sys.executable,
                       str(tmp_path_factory.mktemp("board-ns-cache")), {})
    finally:
        server.stop()
        netns.delete()


@pytest.fixture
def inventory(tmp_path):
    """Write configs/targets.yaml (+ configs/known_hosts trusting the boards' keys) and return its path."""
    import yaml

    def make(*boards: SshBoard, known: bool = True, **overrides) -> Path:
        configs = tmp_path / "configs"
        configs.mkdir(exist_ok=True)
        targets = {b.name: b.entry(**overrides.get(b.name, {})) for b in boards}
        path = configs / "targets.yaml"
        path.write_text(yaml.safe_dump({"targets": targets}, sort_keys=False))
        if known:
            (configs / "known_hosts").write_text("".join({b.server.known_hosts_line() for b in boards}))
        return path

    return make


# ------------------------------------------------------------------------------------ old-stack board
OLD_STACK = {"python": "3.8", "onnxruntime": "1.19.2", "numpy": "1.24.4"}  # JetPack 5-like; the oldest we support


@pytest.fixture(scope="session")
def old_python() -> Path:
    """Python 3.8 (pyenv's) in a venv with onnxruntime 1.19.2 and numpy 1.24.4: the oldest stack the agent supports.
    Built once per machine in /tmp (world-readable), reused while it works."""
    import tempfile

    from tests.sshd import machine_lock

    venv = Path(tempfile.gettempdir()) / "edgebench-old-stack-py38"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import onnxruntime, numpy; print(onnxruntime.__version__, numpy.__version__)"]
    expected = f"{OLD_STACK['onnxruntime']} {OLD_STACK['numpy']}"
    with machine_lock("old-stack"):
        _build_old_stack(venv, python, probe, expected)
    return python


def _build_old_stack(venv: Path, python: Path, probe: list, expected: str) -> None:
    import subprocess

    from tests.test_agent_compat import python38

    if not python.exists() or subprocess.run(probe, capture_output=True, text=True).stdout.strip() != expected:
        subprocess.run(["rm", "-rf", str(venv)], check=True)
        subprocess.run([python38(), "-m", "venv", str(venv)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               f"onnxruntime=={OLD_STACK['onnxruntime']}", f"numpy=={OLD_STACK['numpy']}"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"cannot build the old-stack Python 3.8 environment: {done.stderr[-1500:]}")
        venv.chmod(0o755)


# ------------------------------------------------------------------------------------------ real boards
@pytest.fixture(scope="session")
def arm64_python() -> Path:
    """The emulated aarch64 board's python (scripts/build_arm64_board.py; built once, cached outside the repo).
    A failure to build fails the tests that need it, with its reason: never a silent skip."""
    import subprocess
    import sys

    from tests.sshd import machine_lock

    with machine_lock("arm64-board"):
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "build_arm64_board.py")], capture_output=True,
                              text=True, timeout=1200)
    if done.returncode != 0:
        pytest.fail(f"cannot build the emulated aarch64 board: {(done.stderr or done.stdout)[-2000:]}")
    line = next(l for l in done.stdout.splitlines() if l.startswith("board python: "))
    return Path(line.split(": ", 1)[1])


@pytest.fixture(scope="session")
def arm64_board(ssh_server, client_key, arm64_python, tmp_path_factory) -> SshBoard:
    """A Raspberry Pi 4 stand-in: aarch64 Python 3.11 under qemu, reached over the real sshd like a Pi."""
    return SshBoard("pi4emu", ssh_server, "root", client_key, str(arm64_python),
                    str(tmp_path_factory.mktemp("board-arm64-cache")), {})


@pytest.fixture(scope="session")
def old_board(ssh_server, client_key, old_python, tmp_path_factory) -> SshBoard:
    """A JetPack 5 stand-in: Python 3.8 with onnxruntime 1.19.2 and numpy 1.24.4, over the real sshd."""
    return SshBoard("oldstack", ssh_server, "root", client_key, str(old_python),
                    str(tmp_path_factory.mktemp("board-old-cache")), {})
