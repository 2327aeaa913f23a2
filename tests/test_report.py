"""bench compare: statistics that tell a real difference from noise, the regression gate, INVALID and failed
runs, exports, schema migration, and the HTML report rendered in a real headless browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgebench.results import files as results
from edgebench.results.report import compare_runs
from edgebench.results.stats import compare_samples, mann_whitney, median_ci
from tests.conftest import assert_one_line_error
from tests.synthetic import lognormal_ns, result, write

ALPHA = 0.05


def test_the_same_distribution_is_rarely_called_different():
    """Many seeds, two draws from one distribution: 'different' no more often than alpha allows."""
    rng = np.random.default_rng(2026)
    trials = 400
    p_below = 0
    verdicts = 0
    for seed in range(trials):
        a, b = rng.lognormal(0, 0.1, 300), rng.lognormal(0, 0.1, 300)
        p_below += mann_whitney(a, b)[1] < ALPHA
        verdicts += compare_samples(a, b, alpha=ALPHA, seed=seed)["significant"]
    allowed = ALPHA * trials + 3 * np.sqrt(trials * ALPHA * (1 - ALPHA))  # alpha plus three standard errors
    assert p_below <= allowed, f"the test itself is miscalibrated: {p_below} of {trials}"
    assert verdicts <= allowed


def test_a_five_percent_shift_is_detected_and_its_direction_named():
    rng = np.random.default_rng(7)
    for seed in range(20):
        base, slow = rng.lognormal(0, 0.05, 2000), rng.lognormal(np.log(1.05), 0.05, 2000)
        found = compare_samples(base, slow, alpha=ALPHA, seed=seed)
        assert found["verdict"] == "slower" and found["speedup_high"] < 1.0
        assert 0.03 < found["change"] < 0.07
        assert compare_samples(slow, base, alpha=ALPHA, seed=seed)["verdict"] == "faster"


def test_a_tiny_shift_below_the_minimum_effect_is_no_difference():
    rng = np.random.default_rng(3)
    a, b = rng.lognormal(0, 0.02, 20000), rng.lognormal(np.log(1.005), 0.02, 20000)
    found = compare_samples(a, b, alpha=ALPHA)
    assert found["p_value"] < 1e-6  # "significant" to a bare test with this many samples
    assert found["verdict"] == "no significant difference"  # but 0.5 % is below the 2 % minimum effect


def test_median_interval_covers_the_true_median():
    rng = np.random.default_rng(11)
    covered = sum(low <= 1.0 <= high for low, high in (median_ci(rng.lognormal(0, 0.2, 400)) for _ in range(300)))
    assert 0.90 <= covered / 300 <= 0.99


@pytest.fixture
def board_results(tmp_path):
    rng = np.random.default_rng(5)
    documents = [
        *(result(lognormal_ns(rng, 10.0, 400), run_id=f"a-{i}", target="board-a") for i in range(2)),
        *(result(lognormal_ns(rng, 11.0, 400), run_id=f"b-{i}", target="board-b") for i in range(2)),  # 10 % slower
        result(lognormal_ns(rng, 9.0, 400), run_id="c-0", target="board-c"),  # 10 % faster
        result(lognormal_ns(rng, 10.0, 400), run_id="d-0", target="board-d"),  # the same
        result(lognormal_ns(rng, 30.0, 400), run_id="a-hot", target="board-a", valid=False,
               reasons=["throttled: soft temperature limit during the run"]),
        result([], run_id="a-dead", target="board-a", status="failed"),
    ]
    folder = tmp_path / "results"
    write(folder, documents)
    return folder


def test_compare_against_a_baseline(bench, board_results):
    done = bench("compare", board_results, "--baseline", "target=board-a", "--format", "json")
    assert done.code == 0, done.stderr
    rows = {r["target"]: r for r in json.loads(done.stdout)}
    assert rows["board-a"]["verdict"] == "baseline" and rows["board-a"]["runs"] == 3  # 2 ok + 1 failed; INVALID apart
    assert rows["board-b"]["verdict"] == "slower" and 0.88 < rows["board-b"]["speedup"] < 0.93
    assert rows["board-c"]["verdict"] == "faster" and 1.08 < rows["board-c"]["speedup"] < 1.14
    assert rows["board-d"]["verdict"] == "no significant difference"
    assert rows["board-a"]["p50_ms"] < 10.5  # the throttled run (30 ms) was left out
    assert "INVALID run a-hot (net on board-a): throttled: soft temperature limit during the run (left out" in done.stderr
    assert "failed run a-dead (net on board-a): the agent process ended without a result" in done.stderr
    kept = json.loads(bench("compare", board_results, "--baseline", "target=board-a", "--format", "json",
                            "--include-invalid").stdout)
    assert next(r for r in kept if r["target"] == "board-a")["n"] == 1200


@pytest.mark.parametrize("threshold, code", [("5%", 1), ("15%", 0)])
def test_the_regression_gate(bench, board_results, threshold, code):
    done = bench("compare", board_results, "--baseline", "target=board-a", "--fail-on-regression", threshold)
    assert done.code == code, done.stderr
    if code:
        error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and "1 regression(s) beyond 5%" in error[0] and "target" not in error[0].split(":")[1]
        assert "slower than target=board-a" in error[0] and "Traceback" not in done.stderr


@pytest.mark.bad_input
@pytest.mark.parametrize("args, fragment", [
    (["--baseline", "target"], "must look like KEY=VALUE"),
    (["--baseline", "target=nowhere"], "no runs with target=nowhere"),
    (["--fail-on-regression", "5%"], "needs --baseline"),
    (["--metric", "p42"], "unknown metric 'p42'"),
    (["--by", "colour"], "cannot group by colour"),
    (["--format", "parquet"], "needs --output"),
])
def test_bad_compare_options_are_one_line(bench, board_results, args, fragment):
    assert_one_line_error(bench("compare", board_results, *args), fragment)


def test_exports_for_other_tools(bench, board_results, tmp_path):
    assert bench("compare", board_results, "--per-run", "--format", "parquet", "-o", tmp_path / "runs.parquet").code == 0
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(runs) == 8 and {"run_id", "target", "p50_ms", "valid", "status"} <= set(runs.columns)
    assert runs.set_index("run_id").loc["a-hot", "valid"] == False  # noqa: E712
    assert bench("compare", board_results, "--per-run", "--format", "csv", "-o", tmp_path / "runs.csv").code == 0
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 8
    assert bench("compare", board_results, "--format", "parquet", "-o", tmp_path / "groups.parquet").code == 0
    assert set(pd.read_parquet(tmp_path / "groups.parquet")["target"]) == {"board-a", "board-b", "board-c", "board-d"}


def test_older_schemas_migrate_on_load(tmp_path, monkeypatch):
    """The migration chain: a (hypothetical) schema 0 lifted to 1, then the real 1 -> 2, step by step when read."""
    old = json.loads(results.Path(Path(__file__).parent / "golden" / "result_v1.json").read_text())
    old["schema_version"] = 0
    old["samples"] = old.pop("measurements")

    def v0_to_v1(document):
        document = dict(document, schema_version=1)
        document["measurements"] = document.pop("samples")
        return document

    monkeypatch.setitem(results.MIGRATIONS, 0, v0_to_v1)
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = results.load_result(tmp_path / "old.json")
    assert loaded["schema_version"] == 5 and loaded["measurements"]["repeats"]
    assert loaded["settings"]["scenario"] is None  # every version 1 run was single-stream
    assert loaded["settings"]["pipeline"] is None and loaded["pipeline"] is None  # nor was any run end to end
    assert loaded["settings"]["energy"] is None and loaded["energy"] is None  # nor had any an energy pass
    assert loaded["settings"]["runtime"] == "onnxruntime" and loaded["measurements"]["runtime"]["name"] == "onnxruntime"
    for version in (2, 3, 4):  # each real older version lifts to the current one
        older = results.load_result(Path(__file__).parent / "golden" / f"result_v{version}.json")
        assert older["schema_version"] == 5 and older["pipeline"] is None and older["energy"] is None
        assert older["settings"]["runtime"] == "onnxruntime"
    monkeypatch.delitem(results.MIGRATIONS, 0)
    with pytest.raises(results.ResultError, match="schema 0 is too old"):
        results.load_result(tmp_path / "old.json")


def test_grouping_by_threads_and_accuracy_columns():
    rng = np.random.default_rng(1)
    documents = [result(lognormal_ns(rng, 10.0 / t, 300), run_id=f"t{t}", threads=t, top1=97.5) for t in (1, 2, 4)]
    comparison = compare_runs(documents, by=("model", "threads"), baseline=("threads", "1"))
    rows = {r["threads"]: r for r in comparison.rows}
    assert rows["4"]["verdict"] == "faster" and rows["4"]["speedup"] > 3.5
    assert all(r["top1_pct"] == 97.5 for r in rows.values())


# ------------------------------------------------------------------------------------------- HTML
def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is not installed: `make test` installs it (Debian package chromium)")


def test_html_report_in_a_real_headless_browser(bench, board_results, tmp_path):

    # Add a model with variants and accuracy, so the speed-vs-accuracy plot is drawn too.
    rng = np.random.default_rng(9)
    variants = []
    for variant, median, top1 in (("original", 2.0, 99.4), ("int8-dynamic", 1.2, 98.9), ("fp16", 1.6, 99.4)):
        document = result(lognormal_ns(rng, median, 300), run_id=f"v-{variant}", model="digits", top1=top1)
        if variant != "original":
            document["model"]["provenance"] = {"variant": variant, "parent": {"name": "digits"}}
        variants.append(document)
    write(board_results, variants)
    report = tmp_path / "report.html"
    done = bench("compare", board_results, "--baseline", "target=board-a", "--format", "html", "-o", report)
    assert done.code == 0, done.stderr
    page = report.read_text()
    assert page.count("src='data:image/png;base64,") == 2  # latency distributions + speed against accuracy
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch
    assert "INVALID runs" in page and "Failed runs" in page and "throttled" in page
    screenshot = tmp_path / "report.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'chromium-profile'}", "--hide-scrollbars",
                    "--window-size=1400,2200", f"--screenshot={screenshot}", report.as_uri()],
                   check=True, capture_output=True, timeout=120)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(screenshot))[..., :3]
    assert pixels.std() > 0.05  # not blank
    nonwhite = (pixels < 0.95).any(axis=2).mean()
    assert nonwhite > 0.03, nonwhite
    # The box plots' fill (#cfe0f6) is on screen: the images were decoded and drawn, not just present.
    box_fill = (np.abs(pixels - np.array([0xCF, 0xE0, 0xF6]) / 255).max(axis=2) < 0.03).sum()
    assert box_fill > 2000, box_fill
