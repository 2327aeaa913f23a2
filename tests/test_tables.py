"""Tables a person can read, on a real pseudo-terminal (util-linux `script`) at 80, 120 and 200 columns: numbers
are never cut, columns that do not fit are left out and named, small latencies show in µs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import EXAMPLES, FAST_RUN, REPO
from tests.synthetic import lognormal_ns, result, write

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_terminal(args: list, columns: int, cwd) -> tuple[str, int]:
    """Run `python -m edgebench ARGS` under a pseudo-terminal `columns` wide; (what it printed, exit code)."""
    assert shutil.which("script"), "util-linux `script` is needed for the pseudo-terminal tests"
    command = " ".join(f"'{a}'" for a in [sys.executable, "-m", "edgebench", *map(str, args)])
    done = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": str(columns), "LINES": "50", "TERM": "xterm"}, timeout=300)
    return ANSI.sub("", done.stdout).replace("\r", ""), done.returncode


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory):
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("tables") / "results"
    documents = []
    for index, (model, target) in enumerate([("digits", "local"), ("digits", "raspberry-pi-4-lab-bench"),
                                             ("setnet", "local"), ("setnet", "raspberry-pi-4-lab-bench")]):
        documents.append(result(lognormal_ns(rng, 0.0134 * (index + 1), 400), run_id=f"run{index}", model=model,
                                target=target, top1=99.44))
    write(folder, documents)
    return folder


@pytest.mark.parametrize("columns", [80, 120, 200])
def test_compare_fits_the_terminal_without_cutting_a_number(results_folder, tmp_path, columns):
    text, code = on_terminal(["compare", results_folder, "--baseline", "target=local"], columns, tmp_path)
    assert code == 0, text
    assert "…" not in text and "..." not in text
    lines = [line for line in text.splitlines() if line.strip()]
    table = [line for line in lines if not line.startswith("(")]
    assert all(len(line.rstrip()) <= columns for line in table), [len(line) for line in table]
    assert "p50 µs" in table[0]  # 0.0134 ms medians read as 13.4 µs
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(subprocess.run(
        [sys.executable, "-m", "edgebench", "compare", str(results_folder), "-f", "csv"], capture_output=True,
        text=True, cwd=tmp_path).stdout)))
    for row in rows:  # every median appears whole, in µs with three decimals
        assert f"{float(row['p50_ms']) * 1000:.3f}" in text
    shown = table[0]
    assert "p50 µs" in shown  # the most important columns come first
    if columns >= 120:
        assert "p50 95% CI µs" in shown and "speed-up" in shown
    if columns >= 200:
        assert "vs baseline" in shown and "p99 µs" in shown
    left_out = next((line for line in lines if "more columns did not fit" in line), "")
    wide, _ = on_terminal(["compare", results_folder, "--baseline", "target=local"], 400, tmp_path)
    assert len(wide.splitlines()[0].split()) >= len(shown.split())  # a wider terminal never shows less
    if columns < 200:
        assert left_out, "a narrow terminal must say which columns it left out"
    picked, _ = on_terminal(["compare", results_folder, "--columns", "model,target,p99"], columns, tmp_path)
    assert picked.splitlines()[0].split() == ["model", "target", "p99", "µs"]


@pytest.mark.parametrize("columns", [80, 120])
def test_deploy_summary_fits_the_terminal(tmp_path, columns):
    text, code = on_terminal(["deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", *FAST_RUN], columns,
                             tmp_path)
    assert code == 0, text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model "))  # after the (transient) progress
    table = [line for line in lines[start:] if line.strip() and not line.startswith(("(", "result:"))]
    assert "…" not in "\n".join(lines[start:])
    assert all(len(line.rstrip()) <= columns for line in table), text
    assert table[0].split()[:2] == ["model", "variant"] and "p50" in table[0]


def test_export_shows_progress_on_a_terminal(tmp_path):
    text, code = on_terminal(["export", str(REPO / "tests" / "torch_mlp.py") + ":batch_mlp", "-o", tmp_path / "m.onnx",
                              "--no-validate"], 120, tmp_path)
    assert code == 0, text
    assert "exporting" in text and "dynamo" in text  # the spinner's line, shown while torch works


def test_asked_for_columns_that_do_not_fit_are_named_never_cropped(results_folder, tmp_path):
    text, code = on_terminal(["compare", results_folder, "--columns",
                              "model,target,settings,n,p50,p90,p99,inf/s,session,first,peak,KiB,mean"], 80, tmp_path)
    assert code == 0, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0].split()[:2] == ["model", "target"]
    assert all(len(line.rstrip()) <= 80 for line in lines if not line.startswith("("))
    assert any(line.startswith("(") and "did not fit" in line for line in lines)
