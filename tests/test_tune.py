"""`bench tune`: the best configuration under an accuracy budget, searched on the board by successive halving,
checked against the exhaustive plan over the same space (on `local` and on the emulated aarch64 board over SSH),
resumed after Ctrl-C, refused with one line for what it cannot search."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, assert_one_line_error

DIGITS = EXAMPLES / "digits.onnx"
# A space with a clear order on a 2-core machine: onnxruntime's dynamic INT8 is ~3x slower than float for so small a
# model, two threads ~1.4x slower than one (their synchronisation costs more than the work).
SPACE = ["--runtime", "onnxruntime", "--precision", "fp32,int8-dynamic", "--threads", "1,2", "--dim", "batch=1"]
# Under qemu the order differs (dynamic INT8 ~2.4x faster than float, two threads faster than one) and two threads
# suffer most when the other test worker holds a core, so the emulated board's space is one thread, three precisions:
# a 2.4x gap no neighbour can reorder.
EMULATED_SPACE = ["--runtime", "onnxruntime", "--precision", "fp32,fp16,int8-dynamic", "--threads", "1", "--dim", "batch=1"]
QUICK = ["--rung-seconds", "0.05", "--final-seconds", "0.4", "--final-repeats", "2"]


def _request(tmp_path: Path, **overrides):
    from edgebench.stages.tune import Timing, TuneRequest

    fields = dict(model=DIGITS, runtimes=["onnxruntime"], precisions=["fp32", "int8-dynamic"], threads=[1, 2],
                  dims={"batch": 1}, results=tmp_path / "exhaustive", variants_dir=tmp_path / "variants",
                  timing=Timing(0.05, 0.4, 2))
    fields.update(overrides)
    return TuneRequest(**fields)


def _check_against_exhaustive(document: dict, tmp_path: Path, **overrides) -> None:
    from edgebench.stages.tune import exhaustive, within_best

    request = _request(tmp_path, **overrides)
    full = exhaustive(request)
    configs = len(request.precisions) * len(request.threads)
    assert len(full["ranking"]) == configs
    figures = {"tune finals": [(f["config"], f["value"]) for f in document["finals"]],
               "exhaustive": [(r["config"], r["value"]) for r in full["ranking"]]}
    assert within_best(full, document["recommended"]["config"]), figures
    # Fewer full-length runs than the exhaustive plan: 2 finalists of 3 or 4 (time itself is benchmarks/tune.py's).
    assert len(document["finals"]) == 2 and full["board_runs"] == configs


def test_tune_on_local_picks_what_the_exhaustive_plan_ranks_first(bench, tmp_path):
    done = bench("tune", DIGITS, *SPACE, *QUICK, "--results", tmp_path / "results", "--variants-dir",
                 tmp_path / "variants", "--plan-out", tmp_path / "tuned.yaml", "--html", tmp_path / "tune.html", "--json")
    assert done.code == 0, done.stderr
    document = json.loads(done.stdout)
    assert [c["status"] for c in document["candidates"]] == ["ok", "ok"]
    # Which thread count wins depends on what else holds this 2-core machine: the claim is that the pick is the
    # exhaustive plan's best or within its interval (_check_against_exhaustive below), not a fixed answer.
    picked = document["recommended"]
    assert picked["config"] in ("onnxruntime fp32 threads=1", "onnxruntime fp32 threads=2"), document["finals"]
    versus = picked["vs_runner_up"]
    assert versus["speedup"] > 1 and versus["speedup_low"] <= versus["speedup"] <= versus["speedup_high"]
    assert document["pareto"][0]["config"] == picked["config"]
    # Every run is an ordinary result that compare reads; the plan file it wrote is a valid plan of that pick.
    stored = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    assert len(stored) == document["board_runs"] == 6 and {d["plan"]["name"] for d in stored} == {document["name"]}
    compared = bench("compare", tmp_path / "results", "--by", "model,variant,settings", "--json")
    assert compared.code == 0 and len(json.loads(compared.stdout)) == 4
    from edgebench.stages.plan import load_plan
    from edgebench.boards.targets import load_inventory

    plan = load_plan(tmp_path / "tuned.yaml", load_inventory(None))
    assert plan.settings["threads"] == picked["threads"] and plan.settings["runtime"] == "onnxruntime"
    assert plan.models[0].path == DIGITS.resolve()
    assert "data:image/png;base64," in (tmp_path / "tune.html").read_text()
    _check_against_exhaustive(document, tmp_path)


def test_the_same_search_on_the_emulated_aarch64_board(bench, tmp_path, arm64_board, inventory):
    board = inventory(arm64_board)
    done = bench("tune", DIGITS, *EMULATED_SPACE, *QUICK, "--target", "pi4emu", "--inventory", board, "--results",
                 tmp_path / "results", "--variants-dir", tmp_path / "variants", "--plan-out", tmp_path / "p.yaml",
                 "--json", timeout=900)
    assert done.code == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["target"] == "pi4emu"
    stored = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    assert {d["target"]["info"]["machine"]["arch"] for d in stored} == {"aarch64"}
    _check_against_exhaustive(document, tmp_path, target="pi4emu", inventory=board,
                              precisions=["fp32", "fp16", "int8-dynamic"], threads=[1])


def test_a_budget_nothing_meets_is_one_line_naming_the_closest(bench, tmp_path):
    done = bench("tune", DIGITS, "--runtime", "onnxruntime", "--precision", "int8-dynamic", "--threads", "1",
                 "--dim", "batch=1", "--budget", "cosine=0.9999999", *QUICK, "--results", tmp_path / "r",
                 "--variants-dir", tmp_path / "v", "--plan-out", tmp_path / "p.yaml")
    assert done.code == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: nothing met cosine >= 1 on local; closest: onnxruntime int8-dynamic"), last
    assert "nothing meets the budget; closest: onnxruntime int8-dynamic" in done.stdout
    assert not (tmp_path / "p.yaml").exists()


def test_ctrl_c_then_the_same_command_resumes_without_measuring_again(bench, tmp_path):
    args = [sys.executable, "-m", "edgebench", "tune", str(DIGITS), "--runtime", "onnxruntime", "--precision",
            "fp32,int8-dynamic,fp16", "--threads", "1,2", "--dim", "batch=1", "--rung-seconds", "0.3",
            "--final-seconds", "0.4", "--final-repeats", "2", "--results", str(tmp_path / "r"),
            "--variants-dir", str(tmp_path / "v"), "--plan-out", str(tmp_path / "p.yaml"), "--json"]
    env = {**os.environ, "HOME": str(bench.home)}
    # SIGINT back to its default in the child (a suite started in the background inherits it ignored).
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "r").glob("*.json"))) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    first = [json.loads(p.read_text()) for p in (tmp_path / "r").glob("*.json")]
    finished = [d for d in first if d["status"] == "ok"]
    assert len(finished) >= 3
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["reused"] == len(finished)
    ok = [json.loads(p.read_text()) for p in (tmp_path / "r").glob("*.json")]
    cells = [d["plan"]["cell"] for d in ok if d["status"] == "ok"]
    assert len(cells) == len(set(cells)) == document["board_runs"] + document["reused"], cells


def test_each_board_of_a_fleet_is_tuned_on_its_own(bench, tmp_path, ssh_board, ssh_board_user, inventory):
    done = bench("tune", DIGITS, "--target", "sshroot,sshuser", "--inventory", inventory(ssh_board, ssh_board_user),
                 "--runtime", "onnxruntime", "--precision", "fp32", "--threads", "1,2", "--dim", "batch=1", *QUICK,
                 "--results", tmp_path / "r", "--variants-dir", tmp_path / "v", "--plan-out", tmp_path / "p.yaml",
                 "--json", timeout=600)
    assert done.code == 0, done.stderr
    documents = json.loads(done.stdout)
    assert [d["target"] for d in documents] == ["sshroot", "sshuser"]
    assert all(d["recommended"] for d in documents)
    assert (tmp_path / "p-sshroot.yaml").is_file() and (tmp_path / "p-sshuser.yaml").is_file()


@pytest.mark.parametrize("args, fragment", [
    (("--objective", "fastest"), "--objective 'fastest' is not one of"),
    (("--budget", "speed=1"), "is not a budget"),
    (("--time-limit", "soon"), "--time-limit 'soon' is not a duration"),
    (("--runtime", "tensorrt"), "tune searches the runtimes onnxruntime, openvino, ncnn"),
    (("--precision", "int4"), "unknown precision 'int4'"),
    (("--precision", "int8-static"), "int8-static needs calibration data"),
    (("--batch", "1,8"), "has no free batch dimension"),
    (("--objective", "energy"), "local has no power sensor"),
    (("--threads", "0"), "threads and batch sizes to search must be at least 1"),
    (("--final-repeats", "0"), "--final-repeats must be at least 1"),
])
def test_what_tune_cannot_search_is_one_line_and_nothing_is_written(bench, tmp_path, args, fragment):
    done = bench("tune", EXAMPLES / "cnn.onnx", *args, "--results", tmp_path / "r", "--variants-dir", tmp_path / "v")
    assert_one_line_error(done, fragment)
    assert done.code == 2
    assert not (tmp_path / "r").exists() and not (tmp_path / "v").exists()


def test_a_space_file_is_checked_like_a_plan(bench, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("runtime: [onnxruntime]\nthreads: [1, two]\n")
    done = bench("tune", DIGITS, "--space", space, "--results", tmp_path / "r")
    assert_one_line_error(done, "space.yaml", "threads")
    space.write_text("runtime: [onnxruntime]\ncolour: [red]\n")
    assert_one_line_error(bench("tune", DIGITS, "--space", space), "unknown key")
