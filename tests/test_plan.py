"""Benchmark plans: the matrix they yield, resuming after an interruption, and refusal with file and line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgebench.results import files as results
from tests.conftest import EXAMPLES, REPO, assert_one_line_error

QUICK = {"warmup": 2, "min_iterations": 5, "min_seconds": 0.05, "max_seconds": 5}


def write_plan(folder: Path, targets: list[str], **settings) -> Path:
    plan = {"name": "two-by-two",
            "models": [{"name": "cnn", "path": str(EXAMPLES / "cnn.onnx")},
                       {"name": "setnet", "path": str(EXAMPLES / "setnet.onnx")}],
            "targets": targets, "settings": {**QUICK, "threads": [1, 2], **settings}}
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def _results(folder: Path) -> list[dict]:
    """Stored results (a killed host may leave its hidden temp file behind; readers skip it)."""
    return [results.load_result(p) for p in results.result_files([folder])]


def test_two_models_by_two_thread_counts_on_local_and_an_ssh_board(bench, tmp_path, ssh_board, inventory):
    inv = inventory(ssh_board)
    plan = write_plan(tmp_path, ["local", "sshroot"])
    dry = bench("run", plan, "--inventory", inv, "--results", tmp_path / "r", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert "8 cells, 0 already measured" in dry.stderr and not (tmp_path / "r").exists()
    done = bench("run", plan, "--inventory", inv, "--results", tmp_path / "r")
    assert done.code == 0, done.stderr
    documents = _results(tmp_path / "r")
    matrix = sorted((d["model"]["name"], d["target"]["name"], d["settings"]["intra_op_threads"]) for d in documents)
    assert matrix == sorted((m, t, n) for m in ("cnn", "setnet") for t in ("local", "sshroot") for n in (1, 2))
    import hashlib

    sha = hashlib.sha256(plan.read_bytes()).hexdigest()
    assert {(d["plan"]["name"], d["plan"]["sha256"]) for d in documents} == {("two-by-two", sha)}
    assert len({d["plan"]["cell"] for d in documents}) == 8
    again = bench("run", plan, "--inventory", inv, "--results", tmp_path / "r")
    assert again.code == 0 and "ran 0 cells, skipped 8 already measured" in again.stderr
    assert len(_results(tmp_path / "r")) == 8


@pytest.mark.fault
def test_an_interrupted_plan_resumes_without_repeating_cells(bench, tmp_path):
    plan = write_plan(tmp_path, ["local"], min_seconds=1.0)
    # A board cache of its own: runs another test left going on `local` are not this test's to wait for.
    env = {**os.environ, "HOME": str(tmp_path), "EDGEBENCH_CACHE": str(tmp_path / "cache")}
    runs = tmp_path / "cache" / "board" / "runs"
    earlier = set(runs.glob("*"))
    running = subprocess.Popen([sys.executable, "-m", "edgebench", "run", str(plan), "--results", str(tmp_path / "r")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while not (tmp_path / "r").exists() or len(results.result_files([tmp_path / "r"])) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    running.send_signal(signal.SIGKILL)  # the host dies halfway through the plan
    running.wait()
    finished_before = {d["plan"]["cell"] for d in _results(tmp_path / "r")}
    assert 1 <= len(finished_before) < 4
    # the cell that was running goes on on the board and finishes there
    while any(not (run / "exit_code").exists() for run in set(runs.glob("*")) - earlier):
        assert time.monotonic() < deadline, "the run left on the board never finished"
        time.sleep(0.05)
    done = bench("run", plan, "--results", tmp_path / "r", env={"EDGEBENCH_CACHE": str(tmp_path / "cache")})
    assert done.code == 0, done.stderr
    documents = _results(tmp_path / "r")
    cells = [d["plan"]["cell"] for d in documents]
    assert len(cells) == 4 and len(set(cells)) == 4  # every cell once: nothing repeated, nothing lost
    assert finished_before <= set(cells)


def test_a_plan_with_an_export_and_a_variant(bench, tmp_path):
    plan = {"name": "exported", "targets": ["local"], "variants": ["fp16"], "settings": {**QUICK},
            "models": [{"name": "mlp", "export": str(REPO / "tests" / "torch_mlp.py") + ":batch_mlp",
                        "dynamic": ["x:0=batch"], "dims": {"batch": 4}}]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    done = bench("run", path, "--results", tmp_path / "r")
    assert done.code == 0, done.stderr
    documents = {d["plan"]["variant"]: d for d in _results(tmp_path / "r")}
    assert set(documents) == {"original", "fp16"}
    assert documents["fp16"]["model"]["provenance"]["parent"]["sha256"] == documents["original"]["model"]["sha256"]
    assert documents["fp16"]["accuracy"]["passed"]
    assert (tmp_path / ".edgebench-build" / "exported" / "mlp" / "mlp.onnx").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("text, fragment", [
    ("name: p\nmodels: []\ntargets: [local]\nsetings: {}\n", "plan.yaml:4: setings: unknown key"),
    ("name: p\nmodels:\n  - name: a\n    path: nowhere.onnx\ntargets: [local]\n", "plan.yaml:4: models.0.path: model file not found"),
    ("name: p\nmodels: []\ntargets: [local, pi9]\n", "plan.yaml:3: targets.1: unknown target 'pi9'"),
    ("name: p\nmodels: []\ntargets: [local]\nsettings:\n  repeats: three\n", "plan.yaml:5: settings.repeats: must be an integer"),
    ("name: p\nmodels: []\ntargets: [local]\nsettings:\n  threads: [1, two]\n", "plan.yaml:5: settings.threads.1: must be an integer"),
    ("name: p\nmodels:\n  - name: a\n    size: 3\n    path: x\ntargets: [local]\n", "plan.yaml:4: models.0.size: unknown key"),
    ("name: p\nmodels: []\ntargets: [local]\nvariants: [int4]\n", "plan.yaml:4: variants: unknown conversion 'int4'"),
    ("models: []\ntargets: [local]\n", "the plan has no 'name'"),
])
def test_a_bad_plan_is_refused_with_its_line(bench, tmp_path, text, fragment):
    (tmp_path / "plan.yaml").write_text(text)
    done = bench("run", tmp_path / "plan.yaml", "--results", tmp_path / "r")
    assert done.code == 2
    assert_one_line_error(done, fragment)
    assert not (tmp_path / "r").exists()


def test_the_shipped_example_plan_validates(bench):
    done = bench("run", REPO / "configs" / "plan.yaml", "--dry-run", "--results", "unused", cwd=REPO)
    assert done.code == 0, done.stderr
    assert "6 cells" in done.stderr


def test_a_dry_run_builds_nothing_and_says_what_it_would_build(bench, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "dry", "variants": ["fp16"], "targets": ["local"], "settings": QUICK,
        "models": [{"name": "mlp", "export": str(REPO / "tests" / "torch_mlp.py") + ":batch_mlp",
                    "dynamic": ["x:0=batch"], "dims": {"batch": 1}},
                   {"name": "cnn", "path": str(EXAMPLES / "cnn.onnx")}]}, sort_keys=False))
    done = bench("run", plan, "--dry-run", "--results", tmp_path / "r")
    assert done.code == 0, done.stderr
    assert not (tmp_path / ".edgebench-build").exists() and not (tmp_path / "r").exists()
    assert "3 model file(s) would be exported or converted first" in done.stderr  # mlp.onnx, its fp16, cnn's fp16
    assert "nothing was built or run" in done.stderr
    assert done.stdout.count("to build, then run") == 3 and done.stdout.count("to run") == 1  # cnn itself


@pytest.mark.bad_input
@pytest.mark.parametrize("model", [
    {"name": "digits", "path": str(EXAMPLES / "digits.onnx")},
    {"name": "mlp", "export": str(REPO / "tests" / "torch_mlp.py") + ":batch_mlp", "dynamic": ["x:0=batch"]},
])
def test_a_plan_model_without_a_size_for_its_free_dim_fails_at_dry_run(bench, tmp_path, model):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"name": "p", "models": [model], "targets": ["local"]}, sort_keys=False))
    done = bench("run", plan, "--dry-run")
    assert_one_line_error(done, f"{plan}:", "models.0", "free dimension(s) batch with no size", "dims: {batch: N}")
    batch = plan.read_text().replace("targets: [local]", "targets: [local]\nsettings: {batch: [1, 4]}")
    plan.write_text(batch.replace("targets:\n- local", "targets:\n- local\nsettings: {batch: [1, 4]}"))
    assert bench("run", plan, "--dry-run").code == 0


def _warm_agents(cache: str) -> list[int]:
    """pids of the warm agents serving this board cache (forkserver.py)."""
    done = subprocess.run(["pgrep", "-f", f"_warm --cache {cache}"], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()]


def test_a_plans_cells_are_forked_by_a_warm_agent_that_is_replaced_when_it_dies(bench, tmp_path, ssh_board, inventory):
    """One connection and one warm agent per board for a plan: the first cell starts fresh and starts the warm
    agent, the others are forked from it (each its own process, session and result); a warm agent killed between
    plans is replaced, and nothing is lost."""
    inv = inventory(ssh_board)
    plan = write_plan(tmp_path, ["sshroot"])
    done = bench("run", plan, "--inventory", inv, "--results", tmp_path / "r")
    assert done.code == 0, done.stderr
    first = _warm_agents(ssh_board.work_dir)
    assert len(first) == 1, "no warm agent (or more than one) served the plan"
    documents = _results(tmp_path / "r")
    assert len(documents) == 4 and all(d["status"] == "ok" for d in documents)
    pids = {Path(ssh_board.work_dir, "done", d["run_id"], "pid").read_text() for d in documents}
    assert len(pids) == 4  # four processes, never one reused
    os.kill(first[0], signal.SIGKILL)  # the warm agent dies between two plans
    again = bench("run", plan, "--inventory", inv, "--results", tmp_path / "r2", "--force")
    assert again.code == 0, again.stderr
    assert len(_results(tmp_path / "r2")) == 4
    replaced = _warm_agents(ssh_board.work_dir)
    assert len(replaced) == 1 and replaced != first


def test_a_plans_runs_go_through_one_launcher_on_the_board(tmp_path, ssh_board, inventory, monkeypatch):
    """No interpreter start per cell: the plan's runs are launched through one `_launcher` on the board."""
    from edgebench import api
    from edgebench.boards.transport.ssh import SSHTransport

    started, launches = [], []
    real_open, real_exec = SSHTransport.open_stream, SSHTransport.exec
    monkeypatch.setattr(SSHTransport, "open_stream", lambda self, argv: started.append(argv) or real_open(self, argv))
    monkeypatch.setattr(SSHTransport, "exec", lambda self, argv, *a, **k: (
        launches.append(argv) if "launch" in argv else None) or real_exec(self, argv, *a, **k))
    outcome = api.run_plan(write_plan(tmp_path, ["sshroot"]), inventory=inventory(ssh_board), results=tmp_path / "r")
    assert len(outcome.cells) == 4 and all(c["status"] == "ran" for c in outcome.cells), outcome.cells
    assert len(started) == 1 and "_launcher" in started[0]
    assert launches == []


@pytest.mark.fault
def test_a_launcher_killed_between_cells_costs_nothing(bench, tmp_path, ssh_board, inventory):
    """The board's launcher dies between two cells: the next cell is launched by its own command, the one after
    by a new launcher; every cell is measured once."""
    import threading

    inv = inventory(ssh_board, sshroot={"work_dir": str(tmp_path / "cache")})
    plan = write_plan(tmp_path, ["sshroot"], min_seconds=0.5)
    killed = []

    def kill_the_launcher_after_the_first_result():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if (tmp_path / "r").exists() and results.result_files([tmp_path / "r"]):
                found = subprocess.run(["pgrep", "-f", f"_launcher --cache {tmp_path / 'cache'}"],
                                       capture_output=True, text=True).stdout.split()
                for pid in found:
                    os.kill(int(pid), signal.SIGKILL)
                killed.extend(found)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_launcher_after_the_first_result)
    killer.start()
    done = bench("run", plan, "--inventory", inv, "--results", tmp_path / "r")
    killer.join()
    assert killed, "the launcher was never seen"
    assert done.code == 0, done.stderr
    documents = _results(tmp_path / "r")
    assert len(documents) == 4 and all(d["status"] == "ok" for d in documents)
    assert len({d["plan"]["cell"] for d in documents}) == 4


def test_a_deploy_of_several_models_is_served_by_a_warm_agent_and_one_alone_is_not(bench, tmp_path, ssh_board,
                                                                                  inventory):
    for name, models, expected in (("alone", ["cnn.onnx"], 0), ("several", ["cnn.onnx", "setnet.onnx"], 1)):
        cache = tmp_path / f"cache-{name}"
        inv = inventory(ssh_board, sshroot={"work_dir": str(cache)})
        done = bench("deploy", *[EXAMPLES / m for m in models], "--target", "sshroot", "--inventory", inv,
                     "--results", tmp_path / name, "--warmup", "2", "--min-iterations", "5", "--min-seconds", "0.05")
        assert done.code == 0, done.stderr
        assert len(_warm_agents(str(cache))) == expected, name
        assert len(_results(tmp_path / name)) == len(models)


@pytest.mark.fault
def test_the_warm_agent_only_talks_to_its_own_user(tmp_path):
    """An abstract socket name has no permissions: a listener another user put under it is never used, and the
    warm agent answers no other user."""
    import secrets
    import socket

    from edgebench_agent import forkserver
    from tests.sshd import ensure_user

    ours, theirs = socket.socketpair(socket.AF_UNIX)
    assert forkserver.same_user(ours)
    name = "\0edgebench-test-squatter-" + secrets.token_hex(4)
    squatter = subprocess.Popen(
        ["runuser", "-u", ensure_user(), "--", "/usr/bin/python3", "-c",
         f"import socket, time; s = socket.socket(socket.AF_UNIX); s.bind({name!r}); s.listen(1); print('up', "
         "flush=True); c, _ = s.accept(); time.sleep(5)"], stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout.readline().strip() == "up"
        connection = socket.socket(socket.AF_UNIX)
        connection.connect(name)
        assert not forkserver.same_user(connection)
    finally:
        squatter.kill()
        squatter.wait()


@pytest.mark.fault
def test_a_warm_agent_that_dies_mid_request_fails_that_cell_with_the_reason(tmp_path):
    """The fault a real warm agent cannot produce on demand: it takes the request and dies before answering. The
    run is failed with the reason, never started twice; the launcher does not hang."""
    import json
    import socket

    from edgebench_agent import forkserver, jobs

    cache = tmp_path / "cache"
    folder = Path(jobs.run_dir(str(cache), "r1"))
    folder.mkdir(parents=True)
    (folder / "request.json").write_text(json.dumps({"model": "/nonexistent.onnx"}))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(forkserver.address(str(cache)))
    listener.listen(1)
    import threading

    def die_mid_request():
        connection, _ = listener.accept()
        connection.recv(4096)
        connection.close()  # gone without saying which process runs the job

    threading.Thread(target=die_mid_request, daemon=True).start()
    code, text = forkserver.launch_warm(str(cache), "r1", 5.0, 30.0)
    listener.close()
    reply = json.loads(text)
    assert code == 1 and reply["error"]["kind"] == "killed"
    assert "warm agent ended before starting this run" in reply["error"]["message"]
    assert not (folder / "pid").exists()  # nothing was started for it
