"""Fault scenarios, each against real components: a real sshd (through a relay that can slow or cut the link),
real agent processes, a real full file system, a real read-only folder. Nothing is lost, nobody is let in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from edgebench.results import files as results
from tests.conftest import EXAMPLES, FAST_RUN, assert_one_line_error
from tests.relay import Relay

pytestmark = pytest.mark.fault


def big_model(folder: Path, megabytes: int = 8) -> Path:
    """MatMul with a weight of `megabytes`: large enough to cut mid-upload."""
    columns = megabytes * 2**20 // 4 // 256
    weight = np.random.default_rng(0).standard_normal((256, columns)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, columns])],
                              [onnx.numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "big.onnx"
    onnx.save(model, str(path))
    return path


def relay_inventory(folder: Path, board, port: int, **overrides) -> Path:
    """An inventory reaching `board` through a relay on `port` (known_hosts names the relay's address)."""
    configs = folder / "configs"
    configs.mkdir(exist_ok=True)
    (configs / "targets.yaml").write_text(yaml.safe_dump({"targets": {"board": board.entry(port=port, **overrides)}}))
    (configs / "known_hosts").write_text(f"[127.0.0.1]:{port} {board.server.host_public_key}\n")
    return configs / "targets.yaml"


def _wait_for_run(runs: Path, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in runs.glob("*") if runs.exists() else []:
            if (run / "pid").exists() and not (run / "exit_code").exists():
                return run
        time.sleep(0.05)
    raise AssertionError("no run started")


def _bench(*args, env=None):
    # SIGINT back to its default in the child: a suite started in the background of a non-interactive shell
    # inherits SIGINT ignored, and Python keeps an ignored SIGINT ignored (the Ctrl-C tests would prove nothing).
    return subprocess.Popen([sys.executable, "-m", "edgebench", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_link_dropped_mid_upload_retries_cleanly(bench, tmp_path, ssh_board):
    model = big_model(tmp_path)
    work_dir = tmp_path / "board"
    with Relay("127.0.0.1", ssh_board.server.port) as relay:
        relay.cut_after_bytes = 3 * 2**20  # mid-way through the 8 MiB model
        inv = relay_inventory(tmp_path, ssh_board, relay.port, work_dir=str(work_dir))
        done = bench("deploy", model, "--target", "board", "--inventory", inv, "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    assert relay.cuts == 1
    (result,) = [results.load_result(p) for p in (tmp_path / "r").glob("*.json")]
    assert result["status"] == "ok"
    stored = list((work_dir / "files").rglob("big.onnx"))
    assert len(stored) == 1 and stored[0].read_bytes() == model.read_bytes()
    assert not [p for p in work_dir.rglob("*") if ".part-" in p.name]  # the cut partial was removed, never used


def test_link_dropped_mid_run_the_result_is_recovered(tmp_path, ssh_board):
    work_dir = tmp_path / "board"
    with Relay("127.0.0.1", ssh_board.server.port) as relay:
        inv = relay_inventory(tmp_path, ssh_board, relay.port, work_dir=str(work_dir))
        deploying = _bench("deploy", EXAMPLES / "cnn.onnx", "--target", "board", "--inventory", inv,
                           "--results", tmp_path / "r", "--min-seconds", "3", "--warmup", "2", env={"HOME": str(tmp_path)})
        _wait_for_run(work_dir / "runs")
        time.sleep(0.8)
        relay.cut_now()
        stdout, stderr = deploying.communicate(timeout=120)
    assert deploying.returncode == 0, stderr
    assert relay.cuts == 1
    (result,) = [results.load_result(p) for p in (tmp_path / "r").glob("*.json")]
    assert result["status"] == "ok" and sum(len(r["samples_ns"]) for r in result["measurements"]["repeats"]) > 50


def test_sshd_restarted_between_runs_like_a_board_reboot(tmp_path, ssh_board, inventory):
    inv = inventory(ssh_board)
    deploying = _bench("deploy", EXAMPLES / "cnn.onnx", EXAMPLES / "setnet.onnx", "--target", "sshroot",
                       "--inventory", inv, "--results", tmp_path / "r", "--min-seconds", "1", "--warmup", "2",
                       env={"HOME": str(tmp_path)})
    deadline = time.monotonic() + 60
    while not list((tmp_path / "r").glob("*.json")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ssh_board.server.kill()  # the board reboots between the two models
    time.sleep(1.0)
    ssh_board.server.start()
    stdout, stderr = deploying.communicate(timeout=180)
    assert deploying.returncode == 0, stderr
    names = sorted(results.load_result(p)["model"]["name"] for p in (tmp_path / "r").glob("*.json"))
    assert names == ["cnn", "setnet"]


def test_agent_killed_mid_run_is_recorded_and_the_sweep_goes_on(bench, tmp_path):
    runs = Path(os.environ["EDGEBENCH_CACHE"]) / "board" / "runs"

    def kill_first_job():
        run = _wait_for_run(runs)
        time.sleep(0.5)
        os.kill(int((run / "pid").read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_first_job)
    killer.start()
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--threads", "1,2", "--results", tmp_path / "r",
                 "--min-seconds", "2", "--warmup", "2")
    killer.join()
    assert done.code == 1
    assert_one_line_error(done, "1 problem(s)", "the agent process ended without a result")
    documents = sorted((results.load_result(p) for p in (tmp_path / "r").glob("*.json")),
                       key=lambda d: d["settings"]["intra_op_threads"])
    assert [d["status"] for d in documents] == ["failed", "ok"]
    assert documents[0]["error"]["kind"] == "killed"


def test_a_hung_run_is_killed_with_its_process_group(bench, tmp_path):
    runs = Path(os.environ["EDGEBENCH_CACHE"]) / "board" / "runs"
    before = set(runs.glob("*")) if runs.exists() else set()
    started = time.monotonic()
    # Ten million iterations at tens of µs each: minutes of work, so only the 2 s timeout can end it.
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", "--timeout", "2",
                 "--min-seconds", "120", "--max-seconds", "120", "--min-iterations", "10000000",
                 "--max-iterations", "10000000", "--warmup", "2")
    assert done.code == 1 and time.monotonic() - started < 60
    (document,) = [results.load_result(p) for p in (tmp_path / "r").glob("*.json")]
    assert document["status"] == "failed" and document["error"]["kind"] == "timeout"
    assert "killed with its process group on the board" in document["error"]["message"]
    done_dir = Path(os.environ["EDGEBENCH_CACHE"]) / "board" / "done" / document["run_id"]
    pid = int((done_dir / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # nothing keeps burning the board's CPU
    assert runs / document["run_id"] not in before  # the run killed is this test's own, not a leftover


def test_board_disk_full_is_one_line_and_leaves_nothing(bench, tmp_path, ssh_board, inventory):
    work_dir = tmp_path / "tiny-disk"
    work_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(work_dir)], check=True)
    try:
        inv = inventory(ssh_board, sshroot={"work_dir": str(work_dir)})
        done = bench("deploy", big_model(tmp_path, 4), "--target", "sshroot", "--inventory", inv, "--results", tmp_path / "r")
        assert done.code == 3
        assert_one_line_error(done, "cannot write", "is the board's disk full?", "bench clean")
        leftovers = [p.name for p in work_dir.rglob("*") if p.is_file() and not p.name.startswith("agent-")]
        assert not [n for n in leftovers if ".part-" in n or n.endswith(".onnx")], leftovers
        assert not list((tmp_path / "r").glob("*.json"))
    finally:
        subprocess.run(["umount", str(work_dir)], check=True)


def test_a_slow_link_completes_and_the_latency_is_the_boards(bench, tmp_path, ssh_board):
    with Relay("127.0.0.1", ssh_board.server.port, delay_s=0.02, bytes_per_s=2 * 2**20) as relay:
        inv = relay_inventory(tmp_path, ssh_board, relay.port, work_dir=str(tmp_path / "board"))
        done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", "board", "--inventory", inv,
                     "--results", tmp_path / "r", *FAST_RUN, timeout=600)
    assert done.code == 0, done.stderr
    (document,) = [results.load_result(p) for p in (tmp_path / "r").glob("*.json")]
    samples = np.concatenate([r["samples_ns"] for r in document["measurements"]["repeats"]])
    assert np.median(samples) < 5e6  # a few µs of model, not the link's 20 ms per packet: timed on the board
    assert relay.upstream_bytes > 0


def test_host_killed_mid_deploy_the_next_deploy_recovers(bench, tmp_path, ssh_board, inventory):
    inv = inventory(ssh_board)
    runs = Path(ssh_board.work_dir) / "runs"
    deploying = _bench("deploy", EXAMPLES / "cnn.onnx", "--target", "sshroot", "--inventory", inv,
                       "--results", tmp_path / "r", "--min-seconds", "2", "--warmup", "2", env={"HOME": str(tmp_path)})
    run = _wait_for_run(runs)
    deploying.send_signal(signal.SIGKILL)
    deploying.wait()
    while not (run / "exit_code").exists():
        time.sleep(0.1)
    done = bench("deploy", EXAMPLES / "setnet.onnx", "--target", "sshroot", "--inventory", inv,
                 "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    assert "recovered an earlier run on sshroot (ok): " in done.stderr
    names = sorted(results.load_result(p)["model"]["name"] for p in (tmp_path / "r").glob("*.json"))
    assert names == ["cnn", "setnet"]  # nothing lost, nothing twice


def test_a_run_lands_only_in_the_results_folder_it_was_started_for(bench, tmp_path, ssh_board, inventory):
    """Ctrl-C during a deploy to A stores an interrupted result in A; a host killed during a deploy to A leaves
    a run that a deploy to B never takes, and the next deploy to A does."""
    inv = inventory(ssh_board)
    runs = Path(ssh_board.work_dir) / "runs"
    interrupted = _bench("deploy", EXAMPLES / "cnn.onnx", "--target", "sshroot", "--inventory", inv,
                         "--results", tmp_path / "A", "--min-seconds", "30", "--warmup", "2", env={"HOME": str(tmp_path)})
    _wait_for_run(runs)
    interrupted.send_signal(signal.SIGINT)
    _, stderr = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 130, stderr
    (stored,) = [results.load_result(p) for p in (tmp_path / "A").glob("*.json")]
    assert stored["status"] == "failed" and stored["error"]["kind"] == "interrupted"

    killed = _bench("deploy", EXAMPLES / "cnn.onnx", "--target", "sshroot", "--inventory", inv,
                    "--results", tmp_path / "A", "--min-seconds", "2", "--warmup", "2", env={"HOME": str(tmp_path)})
    run = _wait_for_run(runs)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    deadline = time.monotonic() + 60
    while not (run / "exit_code").exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    other = bench("deploy", EXAMPLES / "setnet.onnx", "--target", "sshroot", "--inventory", inv,
                  "--results", tmp_path / "B", *FAST_RUN)
    assert other.code == 0, other.stderr
    assert "recovered" not in other.stderr
    assert [results.load_result(p)["model"]["name"] for p in (tmp_path / "B").glob("*.json")] == ["setnet"]
    back = bench("deploy", EXAMPLES / "setnet.onnx", "--target", "sshroot", "--inventory", inv,
                 "--results", tmp_path / "A", *FAST_RUN)
    assert back.code == 0 and "recovered an earlier run on sshroot (ok): " in back.stderr
    assert sorted(results.load_result(p)["model"]["name"] for p in (tmp_path / "A").glob("*.json")) == [
        "cnn", "cnn", "setnet"]


def test_results_folder_not_writable(bench, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], check=True)
    try:  # (a board cache of its own: what other tests left running on `local` is not this test's)
        done = bench("deploy", EXAMPLES / "cnn.onnx", "--results", folder, *FAST_RUN,
                     env={"EDGEBENCH_CACHE": str(tmp_path / "cache")})
        assert done.code == 2
        assert_one_line_error(done, f"cannot write results to {folder}", "--results")
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    runs = tmp_path / "cache" / "board" / "runs"
    assert not runs.exists() or not list(runs.iterdir())  # refused before anything ran


def test_two_deploys_writing_results_at_once(tmp_path):
    env = {"HOME": str(tmp_path)}
    first = _bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", *FAST_RUN, env=env)
    second = _bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", *FAST_RUN, env=env)
    assert first.wait(120) == 0 and second.wait(120) == 0
    files = list((tmp_path / "r").glob("*.json"))
    documents = [results.load_result(p) for p in files]
    assert len(files) == 2 and len({d["run_id"] for d in documents}) == 2
    assert all(d["status"] == "ok" for d in documents)


def test_an_unwritable_work_folder_on_the_board_is_one_line(bench, tmp_path, ssh_board_user, inventory):
    """A non-root user whose work_dir lies under /root: sftp.mkdir is refused, and that is one line, exit 3."""
    inv = inventory(ssh_board_user, sshuser={"work_dir": "/root/edgebench-not-yours/cache"})
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", "sshuser", "--inventory", inv, "--results", tmp_path / "r",
                 *FAST_RUN)
    assert done.code == 3, done.stderr
    assert_one_line_error(done, "cannot create /root/edgebench-not-yours", "permission denied", "work_dir")
    assert not (tmp_path / "r").exists()


def test_sigterm_ends_a_deploy_like_ctrl_c(tmp_path):
    """A cancelled CI job sends SIGTERM: the run on the board is killed and stored as interrupted, not orphaned."""
    runs = Path(os.environ["EDGEBENCH_CACHE"]) / "board" / "runs"
    before = set(runs.glob("*")) if runs.exists() else set()
    deploying = _bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", "--min-seconds", "60",
                       "--max-seconds", "60", "--warmup", "2")
    deadline = time.monotonic() + 60
    while not [r for r in (set(runs.glob("*")) if runs.exists() else set()) - before if (r / "pid").exists()]:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    deploying.send_signal(signal.SIGTERM)
    _, stderr = deploying.communicate(timeout=60)
    assert deploying.returncode == 130, stderr
    (stored,) = [results.load_result(p) for p in (tmp_path / "r").glob("*.json")]
    assert stored["status"] == "failed" and stored["error"]["kind"] == "interrupted"
    finished = [runs / stored["run_id"], runs.parent / "done" / stored["run_id"]]  # stored, so moved to done/
    assert any((folder / "exit_code").exists() for folder in finished)  # killed on the board, lock released


def test_a_host_that_dies_leaves_the_runs_timeout_enforced_on_the_board(tmp_path):
    """The board-side follower outlives its host (a broken pipe is not fatal to it), so a run still stops at its
    timeout instead of holding the board's lock forever."""
    runs = Path(os.environ["EDGEBENCH_CACHE"]) / "board" / "runs"
    before = set(runs.glob("*")) if runs.exists() else set()
    deploying = _bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", "--timeout", "3",
                       "--min-seconds", "120", "--max-seconds", "120", "--min-iterations", "10000000",
                       "--max-iterations", "10000000", "--warmup", "2")
    deadline = time.monotonic() + 60
    while not [r for r in (set(runs.glob("*")) if runs.exists() else set()) - before if (r / "pid").exists()]:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    deploying.send_signal(signal.SIGKILL)  # the host dies; its pipe from the board's follower breaks
    deploying.wait()
    (run,) = [r for r in set(runs.glob("*")) - before]
    while not (run / "exit_code").exists():
        assert time.monotonic() < deadline + 30, "the orphaned run was never stopped"
        time.sleep(0.1)
    assert json.loads((run / "reply.json").read_text())["error"]["kind"] == "timeout"
