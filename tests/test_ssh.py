"""Deploying to boards over a real OpenSSH server (loopback, a non-root user, a network namespace)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgebench.results import files as results
from edgebench.stages.deploy import RunSettings, deploy
from edgebench.boards.targets import load_inventory, resolve_target
from tests.conftest import FAST_RUN, FAST_REQUEST, assert_one_line_error
from tests.sshd import NON_ROOT_USER

GOLDEN = Path(__file__).parent / "golden" / "result_v5.json"


def _key_tree(document, depth=2):
    if not isinstance(document, dict) or depth == 0:
        return type(document).__name__
    return {key: _key_tree(value, depth - 1) for key, value in document.items()}


def _only_result(folder: Path) -> dict:
    files = list(folder.glob("*.json"))
    assert len(files) == 1, files
    return results.load_result(files[0])


def test_ssh_round_trip_matches_the_local_schema(bench, tmp_path, tiny_models, ssh_board, inventory):
    inv = inventory(ssh_board)
    done = bench("deploy", tiny_models["matmul"], "--target", "sshroot", "--inventory", inv,
                 "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    document = _only_result(tmp_path / "r")
    assert document["status"] == "ok"
    assert _key_tree(document) == _key_tree(json.loads(GOLDEN.read_text()))
    assert document["target"]["kind"] == "ssh"
    assert document["target"]["address"] == f"root@127.0.0.1:{ssh_board.server.port}"
    # The model ran from the board's cache, by hash.
    assert document["model"]["sha256"] in (document["measurements"].get("model_path") or
                                          json.dumps(list(Path(ssh_board.work_dir, "files").iterdir()), default=str))
    assert "uploaded" in done.stderr


def test_a_second_deploy_uploads_nothing(tmp_path, tiny_models, ssh_board, inventory, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    target = resolve_target("sshroot", load_inventory(inventory(ssh_board, sshroot={"work_dir": str(tmp_path / "cache")})))
    settings = RunSettings(options=dict(FAST_REQUEST))
    first = deploy([tiny_models["matmul"]], target, settings, tmp_path / "r")
    assert first.uploaded_bytes >= tiny_models["matmul"].stat().st_size  # agent + model
    second = deploy([tiny_models["matmul"]], target, settings, tmp_path / "r")
    assert second.uploaded_bytes == 0
    assert len(list((tmp_path / "r").glob("*.json"))) == 2
    # Uploads are complete files named by hash; no partial file is left behind.
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".part-" in p.name]


@pytest.mark.bad_input
def test_unknown_host_key_is_refused_by_default(bench, tmp_path, tiny_models, ssh_board, inventory):
    inv = inventory(ssh_board, known=False)
    done = bench("deploy", tiny_models["matmul"], "--target", "sshroot", "--inventory", inv, "--results", tmp_path / "r")
    assert done.code == 3
    assert_one_line_error(done, f"unknown SSH host key for [127.0.0.1]:{ssh_board.server.port}", "SHA256:",
                          "refused", "ssh-keyscan", "accept-new")
    assert not (tmp_path / "r").exists()


@pytest.mark.bad_input
def test_accept_new_trusts_once_and_refuses_a_changed_key(bench, tmp_path, tiny_models, ssh_board, inventory):
    from tests.sshd import keygen

    inv = inventory(ssh_board, known=False, sshroot={"host_key_policy": "accept-new"})
    done = bench("doctor", "--target", "sshroot", "--inventory", inv)
    assert done.code == 0, done.stderr
    recorded = (inv.parent / "known_hosts").read_text()
    assert ssh_board.server.host_public_key in recorded
    # Now the board "changes" its key: someone in between, or a reinstall. Refused even with accept-new.
    other = keygen(tmp_path / "other_host_key")
    wrong = " ".join((tmp_path / "other_host_key.pub").read_text().split()[:2])
    (inv.parent / "known_hosts").write_text(f"[127.0.0.1]:{ssh_board.server.port} {wrong}\n")
    done = bench("deploy", tiny_models["matmul"], "--target", "sshroot", "--inventory", inv, "--results", tmp_path / "r")
    assert done.code == 3
    assert_one_line_error(done, "CHANGED", "expected SHA256:", "got SHA256:", "refused")
    assert not (tmp_path / "r").exists()
    assert other.exists()


@pytest.mark.bad_input
def test_hostile_file_names_are_data_not_shell(bench, tmp_path, tiny_models, ssh_board, inventory):
    import time

    started = time.time()
    name = "a b'c\";$(touch PWNED)`touch PWNED2`.onnx"
    model = tmp_path / name
    shutil.copy(tiny_models["matmul"], model)
    inv = inventory(ssh_board)
    done = bench("deploy", model, "--target", "sshroot", "--inventory", inv, "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    assert _only_result(tmp_path / "r")["status"] == "ok"
    # A shell would have run `touch` in a folder this test owns (its own, the board's cache) or in the SSH
    # user's home, where only a file made since the test started counts (other programs' files are not ours).
    for folder in (tmp_path, Path(ssh_board.work_dir)):
        assert not list(folder.rglob("PWNED*"))
    for marker in (Path("/root/PWNED"), Path("/root/PWNED2")):
        assert not (marker.exists() and marker.stat().st_mtime >= started - 1)
    uploaded = [p.name for p in Path(ssh_board.work_dir, "files").rglob("*.onnx")]
    assert name in uploaded


@pytest.mark.fault
def test_a_held_lock_makes_the_second_deploy_wait_then_fail(bench, tmp_path, tiny_models, ssh_board, inventory):
    import fcntl

    work_dir = tmp_path / "locked-cache"
    work_dir.mkdir()
    inv = inventory(ssh_board, sshroot={"work_dir": str(work_dir), "lock_timeout": 2})
    with open(work_dir / "lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        lock.write("run someone-else, pid 1, since earlier")
        lock.flush()
        done = bench("deploy", tiny_models["matmul"], "--target", "sshroot", "--inventory", inv,
                     "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 3
    assert_one_line_error(done, "the board is busy", "run someone-else", "waited 2 s", "lock_timeout")
    assert not list((tmp_path / "r").glob("*.json")) if (tmp_path / "r").exists() else True
    # With the lock free, the same deploy goes through.
    done = bench("deploy", tiny_models["matmul"], "--target", "sshroot", "--inventory", inv,
                 "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr


@pytest.mark.fault
def test_sshd_killed_mid_run_the_result_comes_back(bench, tmp_path, tiny_models, ssh_board, inventory):
    """The board's sshd (and every connection) dies mid-run; the run goes on; the host reconnects and fetches it."""
    inv = inventory(ssh_board)
    env = {**os.environ, "HOME": str(tmp_path)}
    deploying = subprocess.Popen(
        [sys.executable, "-m", "edgebench", "deploy", str(tiny_models["matmul"]), "--target", "sshroot",
         "--inventory", str(inv), "--results", str(tmp_path / "r"), "--min-seconds", "4", "--min-iterations", "5",
         "--warmup", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    runs = Path(ssh_board.work_dir) / "runs"
    deadline = time.monotonic() + 60
    while not any((runs / r / "pid").exists() and not (runs / r / "exit_code").exists()
                  for r in (os.listdir(runs) if runs.exists() else [])):
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.1)
    time.sleep(1.0)
    ssh_board.server.kill()
    time.sleep(1.5)
    ssh_board.server.start()
    stdout, stderr = deploying.communicate(timeout=120)
    assert deploying.returncode == 0, stderr
    document = _only_result(tmp_path / "r")
    assert document["status"] == "ok"
    assert sum(len(r["samples_ns"]) for r in document["measurements"]["repeats"]) > 5
    # Nothing left to fetch, and fetching again stores nothing twice.
    again = bench("fetch", "--target", "sshroot", "--inventory", inv, "--results", tmp_path / "r")
    assert again.code == 0 and "nothing to fetch" in again.stderr
    assert len(list((tmp_path / "r").glob("*.json"))) == 1


@pytest.mark.fault
def test_host_killed_mid_deploy_is_recovered_by_fetch(bench, tmp_path, tiny_models, ssh_board, inventory):
    inv = inventory(ssh_board)
    env = {**os.environ, "HOME": str(tmp_path)}
    deploying = subprocess.Popen(
        [sys.executable, "-m", "edgebench", "deploy", str(tiny_models["matmul"]), "--target", "sshroot",
         "--inventory", str(inv), "--results", str(tmp_path / "r"), "--min-seconds", "2", "--warmup", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    runs = Path(ssh_board.work_dir) / "runs"
    deadline = time.monotonic() + 60
    started = set(os.listdir(runs)) if runs.exists() else set()
    while True:
        fresh = [r for r in (os.listdir(runs) if runs.exists() else []) if r not in started and (runs / r / "pid").exists()]
        if fresh:
            break
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.1)
    deploying.send_signal(signal.SIGKILL)  # the host dies; the board does not notice
    deploying.wait()
    run_id = fresh[0]
    while not (runs / run_id / "exit_code").exists():
        assert time.monotonic() < deadline + 60
        time.sleep(0.2)
    done = bench("fetch", "--target", "sshroot", "--inventory", inv, run_id, "--results", tmp_path / "r")
    assert done.code == 0, done.stderr
    document = _only_result(tmp_path / "r")
    assert document["run_id"] == run_id and document["status"] == "ok"
    assert bench("fetch", "--target", "sshroot", "--inventory", inv, "--results", tmp_path / "r").code == 0
    assert len(list((tmp_path / "r").glob("*.json"))) == 1


@pytest.mark.bad_input
def test_a_model_too_new_for_the_board_is_refused_before_upload(bench, tmp_path, ssh_board, inventory):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 99)])
    model.ir_version = 99
    path = tmp_path / "future.onnx"
    onnx.save(model, str(path))
    work_dir = tmp_path / "cache"
    inv = inventory(ssh_board, sshroot={"work_dir": str(work_dir)})
    done = bench("deploy", path, "--target", "sshroot", "--inventory", inv, "--results", tmp_path / "r")
    assert done.code == 2
    assert_one_line_error(done, "future needs a newer onnxruntime than the board's", "opset 99, IR version 99",
                          "bench convert", "--to opset:")
    assert not (work_dir / "files").exists()  # refused before anything was uploaded
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def plain_python_board(client_key):
    """A board whose plain `python3` has numpy and onnxruntime, as on a prepared Pi: nothing in an inventory."""
    import tempfile

    from tests.sshd import NON_ROOT_USER, SshServer, board_site_packages, require_root

    require_root("the SSH tests")
    # This board uses the user's default cache folder: start it empty (no earlier session's runs collected).
    subprocess.run(["rm", "-rf", f"/home/{NON_ROOT_USER}/.cache/edgebench"], check=True)
    folder = Path(tempfile.gettempdir()) / "edgebench-test-board-python"
    folder.mkdir(mode=0o755, exist_ok=True)
    server = SshServer.create(extra_config=f"SetEnv PYTHONPATH={board_site_packages(folder)}")
    server.authorize(NON_ROOT_USER, (client_key.parent / "id_ed25519.pub").read_text())
    server.start()
    yield server
    server.stop()


def test_an_ssh_config_alias_works_as_a_target(bench, tmp_path, tiny_models, plain_python_board, client_key,
                                               ssh_server):
    home = bench.home
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "config").write_text(
        f"Host eb-alias\n  HostName 127.0.0.1\n  Port {plain_python_board.port}\n  User {NON_ROOT_USER}\n"
        f"  IdentityFile {client_key}\n")
    (home / ".ssh" / "known_hosts").write_text(plain_python_board.known_hosts_line())
    done = bench("deploy", tiny_models["matmul"], "--target", "eb-alias", "--results", tmp_path / "r", *FAST_RUN,
                 cwd=tmp_path)
    assert done.code == 0, done.stderr
    document = _only_result(tmp_path / "r")
    assert document["target"]["name"] == "eb-alias"
    assert document["target"]["address"] == f"{NON_ROOT_USER}@127.0.0.1:{plain_python_board.port}"
    assert document["target"]["python"] == "python3"  # the board's plain python3, not this venv's
    assert document["target"]["info"]["python"]["executable"] != sys.executable
    # user@host:port with the key in its default place (~/.ssh/id_ed25519), no ssh config entry used.
    (home / ".ssh" / "config").unlink()
    shutil.copy(client_key, home / ".ssh" / "id_ed25519")
    done = bench("doctor", "--target", f"{NON_ROOT_USER}@127.0.0.1:{plain_python_board.port}", cwd=tmp_path)
    assert done.code == 0, done.stdout + done.stderr


def test_non_root_user_board(bench, tmp_path, tiny_models, ssh_board_user, inventory):
    """Another user, Debian's python3 with numpy/onnxruntime from the inventory's env, cache in its home."""
    inv = inventory(ssh_board_user)
    doctor = bench("doctor", "--target", "sshuser", "--inventory", inv)
    assert doctor.code == 0, doctor.stderr
    assert "/usr/bin/python3" in doctor.stdout and "/home/edgebench-test/.cache/edgebench" in doctor.stdout
    done = bench("deploy", tiny_models["matmul"], "--target", "sshuser", "--inventory", inv,
                 "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    document = _only_result(tmp_path / "r")
    assert document["target"]["info"]["python"]["executable"] == "/usr/bin/python3"


def test_network_namespace_board_and_targets_check(bench, tmp_path, tiny_models, ssh_board, netns_board, inventory):
    inv = inventory(ssh_board, netns_board)
    listing = bench("targets", "--inventory", inv, "--check")
    assert listing.code == 0, listing.stdout + listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert set(rows) == {"local", "sshroot", "nsboard"}
    assert all("ok: x86_64" in row for row in rows.values())
    assert netns_board.server.address in rows["nsboard"]
    done = bench("deploy", tiny_models["matmul"], "--target", "nsboard", "--inventory", inv,
                 "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    assert _only_result(tmp_path / "r")["target"]["address"].startswith(f"root@{netns_board.server.address}:")


@pytest.mark.bad_input
def test_unreachable_board_and_bad_identity_are_one_line(bench, tmp_path, tiny_models, ssh_board, inventory):
    from tests.sshd import free_port

    inv = inventory(ssh_board, sshroot={"port": free_port()})
    done = bench("deploy", tiny_models["matmul"], "--target", "sshroot", "--inventory", inv, "--results", tmp_path / "r")
    assert done.code == 3
    assert_one_line_error(done, "cannot connect to root@127.0.0.1:", "sshd")
    (tmp_path / "not-a-key").write_text("hello")
    inv = inventory(ssh_board, sshroot={"identity_file": str(tmp_path / "not-a-key")})
    done = bench("deploy", tiny_models["matmul"], "--target", "sshroot", "--inventory", inv, "--results", tmp_path / "r")
    assert_one_line_error(done, "is not a usable private key", "not-a-key")
    assert not (tmp_path / "r").exists()


def test_clean_trims_the_board_cache(bench, tmp_path, tiny_models, ssh_board, inventory):
    work_dir = tmp_path / "cache"
    inv = inventory(ssh_board, sshroot={"work_dir": str(work_dir)})
    for model in ("matmul", "identity_float32", "free_dims"):
        extra = ["--dim", "batch=1", "--dim", "x:1=2"] if model == "free_dims" else []
        assert bench("deploy", tiny_models[model], "--target", "sshroot", "--inventory", inv,
                     "--results", tmp_path / "r", *FAST_RUN, *extra).code == 0
    assert len(list((work_dir / "files").iterdir())) == 3
    # the agent ran from its unpacked copy in the cache, where Python keeps its compiled bytecode between starts
    (current,) = work_dir.glob("agent-*.pyz.d")
    assert list(current.glob("edgebench_agent/__pycache__/protocol.*.pyc"))
    old = work_dir / "agent-000000000000.pyz"  # an agent an older edgebench left, with its copy
    old.write_bytes(b"old")
    (work_dir / "agent-000000000000.pyz.d" / "edgebench_agent").mkdir(parents=True)
    done = bench("clean", "--target", "sshroot", "--inventory", inv, "--max-size", "0")
    assert done.code == 0, done.stderr
    assert "removed" in done.stdout
    assert not list((work_dir / "files").iterdir())
    assert not old.exists() and not (work_dir / "agent-000000000000.pyz.d").exists()
    assert list(work_dir.glob("agent-*.pyz")) and current.is_dir()  # the current agent and its copy stay


def test_proxy_jump_through_a_second_real_sshd(bench, tmp_path, tiny_models, netns_board, client_key, inventory):
    """The board's sshd listens on its namespace's own loopback: only the jump host (the namespace board, an
    inventory entry whose key is only in the project's known_hosts) can reach it."""
    from tests.conftest import SshBoard
    from tests.sshd import SshServer

    inner = SshServer.create(address="127.0.0.1", netns=netns_board.server.netns)
    inner.authorize("root", (client_key.parent / "id_ed25519.pub").read_text())
    inner.start()
    try:
        hidden = SshBoard("hidden", inner, "root", client_key, sys.executable, str(tmp_path / "hidden-cache"), {})
        direct = inventory(netns_board, hidden)
        done = bench("deploy", tiny_models["matmul"], "--target", "hidden", "--inventory", direct,
                     "--results", tmp_path / "r", *FAST_RUN)
        assert done.code == 3  # without the jump, the host cannot reach it at all
        jumped = inventory(netns_board, hidden, hidden={"proxy_jump": "nsboard"})
        done = bench("deploy", tiny_models["matmul"], "--target", "hidden", "--inventory", jumped,
                     "--results", tmp_path / "r", *FAST_RUN)
        assert done.code == 0, done.stderr
        document = _only_result(tmp_path / "r")
        assert document["status"] == "ok" and document["target"]["name"] == "hidden"
        assert any(Path(tmp_path / "hidden-cache").iterdir())  # the agent ran in the hidden board's work folder
    finally:
        inner.stop()


@pytest.mark.bad_input
def test_a_proxy_jump_loop_is_one_line(bench, tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "targets.yaml").write_text("targets:\n  a:\n    host: 10.0.0.1\n    proxy_jump: b\n"
                                          "  b:\n    host: 10.0.0.2\n    proxy_jump: a\n")
    done = bench("doctor", "--target", "a", "--inventory", configs / "targets.yaml")
    assert done.code == 2
    assert_one_line_error(done, "ProxyJump chain of 'a' loops", "a -> b -> a")
