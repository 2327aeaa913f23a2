"""The two command lines speak one language: same option names, readable metavars, every default shown."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import EXAMPLES, FAST_RUN, REPO

COMMANDS = ["deploy", "export", "validate", "inspect", "convert", "run", "compare", "import", "fetch", "targets",
            "doctor", "clean", "tune", "diverge"]
MEASURING = ["--seed", "--warmup", "--min-iterations", "--min-seconds", "--max-iterations", "--max-seconds",
             "--repeats", "--threads", "--inter-op-threads", "--provider", "--graph-optimization"]


def _help_entries(text: str) -> dict:
    """option -> its help text, from click's two-column help."""
    entries, current = {}, None
    for line in text.splitlines():
        match = re.match(r"\s{2}(-\w, )?(--[\w-]+)", line)
        if match:
            current = match[2]
            entries[current] = line
        elif current and line.startswith(" " * 20):
            entries[current] += " " + line.strip()
    return entries


@pytest.mark.parametrize("command", COMMANDS)
def test_bench_help_has_readable_metavars(bench, command):
    done = bench(command, "--help")
    assert done.code == 0, done.stderr
    assert not re.search(r"<(list\[|int>|float>|str>|path>|Path>)", done.stdout), done.stdout


def test_every_measuring_option_shows_its_default(bench):
    entries = _help_entries(bench("deploy", "--help").stdout)
    for option in MEASURING:
        assert "[default:" in entries[option], entries[option]
    agent = subprocess.run([sys.executable, "-m", "edgebench_agent", "run", "--help"], capture_output=True, text=True,
                           cwd=REPO / "agent").stdout
    for option in MEASURING:
        block = agent[agent.index(f"  {option} "):][:300]
        assert "default" in block, (option, block)


def test_the_agent_uses_deploys_option_names_and_keeps_the_old_ones_hidden(tmp_path):
    top = subprocess.run([sys.executable, "-m", "edgebench_agent", "--help"], capture_output=True, text=True,
                         cwd=REPO / "agent").stdout
    assert "SUPPRESS" not in top and "_job" not in top
    run_help = subprocess.run([sys.executable, "-m", "edgebench_agent", "run", "--help"], capture_output=True,
                              text=True, cwd=REPO / "agent").stdout
    assert "--threads N" in run_help and "--graph-optimization LEVEL" in run_help
    assert "--intra-op-threads" not in run_help and "--graph-optimization-level" not in run_help
    for flags in (["--threads", "1", "--graph-optimization", "basic"],
                  ["--intra-op-threads", "1", "--graph-optimization-level", "basic"]):
        done = subprocess.run([sys.executable, "-m", "edgebench_agent", "run", str(EXAMPLES / "cnn.onnx"), "--json",
                               *flags, *FAST_RUN], capture_output=True, text=True, cwd=REPO / "agent", timeout=120)
        reply = json.loads(done.stdout)
        assert reply["request"]["intra_op_threads"] == 1 and reply["request"]["graph_optimization_level"] == "basic"


def test_json_output_of_import_targets_fetch_and_run(bench, tmp_path):
    targets = json.loads(bench("targets", "--json").stdout)
    assert targets[0]["name"] == "local"
    fetched = bench("fetch", "--target", "local", "--json", "--results", tmp_path / "nothing")
    assert fetched.code == 0 and json.loads(fetched.stdout) == []
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"name: j\nmodels:\n  - {{name: cnn, path: {EXAMPLES / 'cnn.onnx'}}}\ntargets: [local]\n"
                    "settings: {warmup: 2, min_iterations: 5, min_seconds: 0.02, max_seconds: 2}\n")
    dry = json.loads(bench("run", plan, "--dry-run", "--json").stdout)
    assert [c["status"] for c in dry] == ["to run"]
    ran = json.loads(bench("run", plan, "--json", "--results", tmp_path / "r").stdout)
    assert ran[0]["result"] and ran[0]["result"].endswith(".json")


def test_files_are_written_into_new_folders(bench, tmp_path):
    done = bench("agent", "bundle", "-o", tmp_path / "new" / "agent.pyz")
    assert done.code == 0 and (tmp_path / "new" / "agent.pyz").is_file()
    bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", *FAST_RUN)
    for fmt in ("csv", "html", "parquet"):
        out = tmp_path / "reports" / fmt / f"report.{fmt}"
        done = bench("compare", tmp_path / "r", "-f", fmt, "-o", out)
        assert done.code == 0 and out.is_file(), done.stderr


def test_inspect_shows_a_model_without_running_it(bench, tmp_path):
    done = bench("inspect", EXAMPLES / "digits.onnx")
    assert done.code == 0, done.stderr
    assert "image  float32 [batch, 1, 8, 8]" in done.stdout and "check     ok   onnxruntime load" in done.stdout
    assert "parity" not in done.stdout
    summary = json.loads(bench("inspect", EXAMPLES / "digits.onnx", "--json").stdout)
    assert summary["inputs"][0]["shape"] == ["batch", 1, 8, 8] and all(c["ok"] for c in summary["checks"])


def test_validate_prints_the_summary_before_asking_for_sizes(bench):
    strict = bench("validate", EXAMPLES / "digits.onnx", "--strict-dims")
    assert strict.code == 1
    assert strict.stdout.index("inputs    image") < strict.stdout.index("free dimension(s) batch have no size")
    assert "verdict   FAIL (1 problem)" in strict.stdout  # singular
    lenient = bench("validate", EXAMPLES / "digits.onnx")
    assert lenient.code == 0 and "free dimension(s) batch set to 1" in lenient.stdout
    assert "parity    no reference: checked that onnxruntime runs" in lenient.stdout
    assert "test data set's outputs" not in lenient.stdout


def test_per_run_compare_is_a_table_and_clean_and_import_speak_json(bench, tmp_path):
    assert bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", *FAST_RUN).code == 0
    per_run = bench("compare", tmp_path / "r", "--per-run")
    assert per_run.code == 0 and per_run.stdout.split()[:3] == ["model", "variant", "target"]
    cleaned = json.loads(bench("clean", "--target", "local", "--max-size", "1G", "--json").stdout)
    assert cleaned["target"] == "local" and "removed" in cleaned and "remaining_bytes" in cleaned
    out = tmp_path / "board.json"
    standalone = subprocess.run([sys.executable, "-m", "edgebench_agent", "run", str(EXAMPLES / "cnn.onnx"), *FAST_RUN],
                                capture_output=True, text=True, cwd=REPO / "agent", timeout=120)
    assert "run again with --out" in standalone.stdout  # no --out given: never "copy the --out file home"
    subprocess.run([sys.executable, "-m", "edgebench_agent", "run", str(EXAMPLES / "cnn.onnx"), "--out", str(out),
                    *FAST_RUN], capture_output=True, text=True, cwd=REPO / "agent", timeout=120, check=True)
    imported = json.loads(bench("import", out, "--results", tmp_path / "r", "--json").stdout)
    assert imported[0]["source"] == str(out) and imported[0]["path"].endswith(".json")


def test_tolerance_defaults_in_help_and_per_run_refuses_grouping_options(bench, tmp_path):
    from edgebench.models.parity import DEFAULT_ATOL, DEFAULT_RTOL

    entries = _help_entries(bench("deploy", "--help").stdout)
    assert f"[default: {DEFAULT_ATOL}]" in entries["--atol"] and f"[default: {DEFAULT_RTOL}]" in entries["--rtol"]
    (tmp_path / "r").mkdir()
    done = bench("compare", tmp_path / "r", "--per-run", "--baseline", "threads=1")
    assert done.code == 2 and "--per-run lists every run on its own" in done.stderr


def test_a_deploy_warning_comes_before_the_table(tmp_path):
    merged = subprocess.run([sys.executable, "-m", "edgebench", "deploy", str(EXAMPLES / "digits.onnx"), "--results",
                             str(tmp_path / "r"), *FAST_RUN], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=120, cwd=tmp_path).stdout
    assert merged.index("free dimension(s) batch set to 1") < merged.index("model ")  # read before the numbers


@pytest.mark.parametrize("command, panels", [
    ("deploy", ["Where", "What to run", "Inputs and sizes", "Measuring", "Accuracy pass",
                "Profile, energy and pipeline passes", "Load scenarios", "Output"]),
    ("tune", ["Where", "The space", "The goal", "Inputs and data", "Measuring", "Output"]),
    ("diverge", ["What to compare", "Where", "Inputs", "Keeping nodes in float (--budget)", "Output"]),
])
def test_a_long_help_is_in_panels_and_every_option_has_one(bench, command, panels):
    done = bench(command, "--help")
    assert done.code == 0
    sections = [line[:-1] for line in done.stdout.splitlines() if re.fullmatch(r"[A-Z][^:]*:", line)]
    assert sections == ["Arguments", *panels, "Help"], sections  # "Other options" would hold one no panel names
    assert len(_help_entries(done.stdout)) >= {"deploy": 54, "tune": 25, "diverge": 20}[command]
