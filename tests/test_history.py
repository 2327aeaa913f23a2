"""The results index (DuckDB beside results/) under compare and history, and `bench history`'s change points."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebench.results.index import INDEX_VERSION
from tests.conftest import assert_one_line_error
from tests.synthetic import lognormal_ns, result, write


def _series(folder: Path, medians: list[float], model: str = "net", target: str = "board-a", day0: int = 1,
            samples: int = 200, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    documents = []
    for index, median in enumerate(medians):
        document = result(lognormal_ns(rng, median, samples), run_id=f"{model}-{target}-{index:03d}", model=model,
                          target=target)
        document["created_at"] = f"2026-10-{day0 + index:02d}T03:00:00+00:00"
        documents.append(document)
    write(folder, documents)
    return documents


def _json(done) -> list[dict]:
    assert done.code == 0, done.stderr
    return json.loads(done.stdout)


# ------------------------------------------------------------------------------------------- the index
def test_the_index_follows_the_files_and_loses_nothing(bench, tmp_path):
    folder = tmp_path / "results"
    _series(folder, [5.0] * 6)
    first = bench("compare", folder, "--format", "json")
    rows = _json(first)
    assert (folder / ".edgebench" / "index.duckdb").is_file()
    assert rows[0]["runs"] == 6 and rows[0]["n"] == 1200
    # new, changed and deleted files: read incrementally, and said when the index disagreed with the files
    _series(folder, [5.0] * 3, model="other")
    (folder / "net-board-a-000.json").unlink()
    changed = json.loads((folder / "net-board-a-001.json").read_text())
    changed["measurements"]["repeats"][0]["samples_ns"] = changed["measurements"]["repeats"][0]["samples_ns"][:50]
    (folder / "net-board-a-001.json").write_text(json.dumps(changed))
    again = bench("index", folder)
    assert again.code == 0, again.stderr
    assert "3 added, 1 re-read, 1 removed" in again.stdout
    assert "1 changed and 1 deleted result file(s) since it was last updated; re-read" in again.stderr
    by_model = {r["model"]: r for r in _json(bench("compare", folder, "--format", "json"))}
    assert by_model["net"]["runs"] == 5 and by_model["net"]["n"] == 4 * 200 + 50 and by_model["other"]["runs"] == 3
    # the JSON files are the truth: a rebuilt (or deleted) index gives the same answer
    shutil.rmtree(folder / ".edgebench")
    assert _json(bench("compare", folder, "--format", "json")) == list(by_model.values())
    rebuilt = bench("index", folder, "--rebuild")
    assert "8 added, 0 re-read, 0 removed" in rebuilt.stdout


def test_indexed_figures_match_the_raw_samples(bench, tmp_path):
    """A one-run group's figures are exact from its sketch; a pooled group's percentiles within 1 %; a comparison
    against a baseline reads the raw samples, so its verdict and speed-up are the same as without the index."""
    folder = tmp_path / "results"
    _series(folder, [5.0], model="single", samples=500)
    _series(folder, [5.0, 5.5, 6.0, 4.5], model="pooled", samples=800, seed=3)
    _series(folder, [5.0, 5.1], model="pooled", target="board-b", samples=800, seed=4)
    indexed = {(r["model"], r["target"]): r for r in _json(bench("compare", folder, "--format", "json"))}
    plain = {(r["model"], r["target"]): r for r in _json(bench("compare", *sorted(folder.glob("*.json")), "--format", "json"))}
    single = ("single", "board-a")
    for column in ("n", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms"):
        assert indexed[single][column] == pytest.approx(plain[single][column], rel=1e-9), column
    pooled = ("pooled", "board-a")
    for column in ("p50_ms", "p90_ms", "p99_ms", "ci_low_ms", "ci_high_ms"):
        assert indexed[pooled][column] == pytest.approx(plain[pooled][column], rel=0.01), column
    assert indexed[pooled]["mean_ms"] == pytest.approx(plain[pooled]["mean_ms"], rel=1e-9)
    versus = [_json(bench("compare", *paths, "--baseline", "target=board-a", "--format", "json"))
              for paths in ([folder], sorted(folder.glob("*.json")))]
    rows = [{(r["model"], r["target"]): r for r in found} for found in versus]
    assert rows[0][("pooled", "board-b")]["speedup"] == rows[1][("pooled", "board-b")]["speedup"]
    assert rows[0][("pooled", "board-b")]["verdict"] == rows[1][("pooled", "board-b")]["verdict"]


@pytest.mark.bad_input
def test_a_corrupt_file_is_skipped_once_read(bench, tmp_path):
    folder = tmp_path / "results"
    _series(folder, [5.0] * 2)
    (folder / "broken.json").write_text("{ not json")
    for _ in range(2):
        done = bench("compare", folder)
        assert done.code == 0 and done.stderr.count("broken.json") == 1, done.stderr
    import duckdb

    with duckdb.connect(str(folder / ".edgebench" / "index.duckdb"), read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM problems").fetchone() == (1,)


@pytest.mark.bad_input
def test_an_index_from_a_newer_edgebench_is_refused_and_compare_reads_the_files(bench, tmp_path):
    import duckdb

    folder = tmp_path / "results"
    _series(folder, [5.0] * 3)
    assert bench("index", folder).code == 0
    with duckdb.connect(str(folder / ".edgebench" / "index.duckdb")) as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'version'")
    from edgebench.results.index import _key, _write_seal

    _write_seal(folder / ".edgebench", _key())  # as a newer edgebench of this user would leave it
    done = bench("compare", folder, "--format", "json")
    assert done.code == 0 and json.loads(done.stdout)[0]["runs"] == 3
    assert f"is version 99, newer than this edgebench's ({INDEX_VERSION})" in done.stderr and "reading the result files instead" in done.stderr
    refused = bench("index", folder)
    assert refused.code == 2
    assert_one_line_error(refused, f"is version 99, newer than this edgebench's ({INDEX_VERSION})", "bench index --rebuild")
    assert bench("index", folder, "--rebuild").code == 0


def test_an_index_of_an_older_version_is_refilled_from_the_files(bench, tmp_path):
    """Version 1 rows lack the runtime: grouping by it must not read them."""
    import duckdb

    folder = tmp_path / "results"
    _series(folder, [5.0] * 3)
    assert bench("index", folder).code == 0
    with duckdb.connect(str(folder / ".edgebench" / "index.duckdb")) as connection:
        connection.execute("UPDATE meta SET value = '1' WHERE key = 'version'")
        connection.execute("UPDATE runs SET row_json = '{}'")  # what an old row cannot answer
    from edgebench.results.index import _key, _write_seal

    _write_seal(folder / ".edgebench", _key())  # as an older edgebench of this user would have left it
    done = bench("compare", folder, "--by", "model,runtime", "--format", "json")
    assert done.code == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["runtime"] == "onnxruntime" and row["runs"] == 3
    with duckdb.connect(str(folder / ".edgebench" / "index.duckdb"), read_only=True) as connection:
        assert connection.execute("SELECT value FROM meta WHERE key = 'version'").fetchone() == (str(INDEX_VERSION),)


@pytest.mark.bad_input
def test_an_index_held_by_another_process_falls_back_to_the_files(bench, tmp_path):
    folder = tmp_path / "results"
    _series(folder, [5.0] * 2)
    assert bench("index", folder).code == 0
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(60)", str(folder / ".edgebench" / "index.duckdb")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = bench("compare", folder, "--format", "json")
    finally:
        holder.kill()
        holder.wait()
    assert done.code == 0 and json.loads(done.stdout)[0]["runs"] == 2
    assert "cannot open the results index" in done.stderr and "reading the result files instead" in done.stderr


@pytest.mark.bad_input
def test_folders_merge_by_run_id_and_a_conflict_uses_neither(bench, tmp_path):
    ci, laptop = tmp_path / "ci", tmp_path / "laptop"
    documents = _series(ci, [5.0] * 3)
    write(laptop, documents[:2])  # the same runs, copied: counted once
    assert _json(bench("compare", ci, laptop, "--format", "json"))[0]["runs"] == 3
    forged = dict(documents[2], status="ok")
    forged["measurements"] = json.loads(json.dumps(forged["measurements"]))
    forged["measurements"]["repeats"][0]["samples_ns"] = [1] * 10  # one run id, other content
    write(laptop, [forged])
    done = bench("compare", ci, laptop, "--format", "json")
    assert json.loads(done.stdout)[0]["runs"] == 2
    assert "run net-board-a-002 is in 2 files that differ" in done.stderr and "neither is used" in done.stderr


@pytest.mark.bad_input
def test_a_result_from_the_future_is_said(bench, tmp_path):
    folder = tmp_path / "results"
    (document,) = _series(folder, [5.0])
    document = dict(document, run_id="future", created_at="2099-01-01T00:00:00+00:00")
    write(folder, [document])
    done = bench("compare", folder)
    assert done.code == 0
    assert "run future says it was created at 2099-01-01T00:00:00+00:00, after this host's clock" in done.stderr


# ------------------------------------------------------------------------------------------- history
def test_history_finds_the_change_and_fails_ci_on_it(bench, tmp_path):
    folder = tmp_path / "results"
    _series(folder, [5.0] * 12 + [5.6] * 10)  # a 12 % slow-down from the 13th night on
    _series(folder, [3.0] * 22, model="steady", seed=1)
    found = {s["group"]["model"]: s for s in _json(bench("history", folder, "--format", "json"))}
    (change,) = found["net"]["changes"]
    assert change["index"] == 12 and change["run_id"] == "net-board-a-012"
    assert change["change_pct"] == pytest.approx(12, abs=2.5) and change["p_value"] < 0.01
    assert found["steady"]["changes"] == [] and len(found["steady"]["points"]) == 22
    table = bench("history", folder)
    assert table.code == 0 and "+1" in table.stdout and "none" in table.stdout
    failing = bench("history", folder, "--since", "2026-10-10", "--fail-on-regression", "5%")
    assert failing.code == 1
    assert "1 regression(s): model=net" in failing.stderr and "from run net-board-a-012" in failing.stderr
    # a change before --since is history, not a regression now
    assert bench("history", folder, "--since", "2026-10-20", "--fail-on-regression", "5%").code == 0
    assert bench("history", folder, "--fail-on-regression", "20%").code == 0
    # the API finds the same change, with the same defaults (tests/test_run_options.py checks them)
    import edgebench.api as eb

    found = {s.key["model"]: s for s in eb.history(folder, since="2026-10-10", fail_above=0.05).series}
    assert [(c["index"], c["run_id"]) for c in found["net"].changes] == [(12, "net-board-a-012")]
    assert found["steady"].changes == [] and len(found["steady"].points) == 22
    assert len(eb.history(folder, since="2026-10-10", fail_above=0.05).regressions()) == 1
    assert eb.history(folder, fail_above=0.2).regressions() == []


def test_history_html_in_a_real_headless_browser(bench, tmp_path):
    from tests.test_report import _chromium

    folder = tmp_path / "results"
    _series(folder, [5.0] * 8 + [4.0] * 8)
    page = tmp_path / "history.html"
    done = bench("history", folder, "--format", "html", "-o", page)
    assert done.code == 0, done.stderr
    text = page.read_text()
    assert text.count("src='data:image/png;base64,") == 1 and "http://" not in text and "https://" not in text
    screenshot = tmp_path / "history.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'chromium-profile'}", "--hide-scrollbars", "--window-size=1200,900",
                    f"--screenshot={screenshot}", page.as_uri()], check=True, capture_output=True, timeout=120)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(screenshot))[..., :3]
    line = (np.abs(pixels - np.array([0x34, 0x66, 0xA4]) / 255).max(axis=2) < 0.03).sum()
    marker = (np.abs(pixels - np.array([0xB3, 0x26, 0x1E]) / 255).max(axis=2) < 0.05).sum()
    assert line > 300 and marker > 30, (line, marker)  # the series and its change point, drawn on screen


@pytest.mark.bad_input
@pytest.mark.parametrize("flags, message", [
    (["--since", "last tuesday"], "--since 'last tuesday' must be a date"),
    (["--metric", "p42"], "unknown metric 'p42'"),
    (["--window", "1"], "--window must be at least 2 runs"),
    (["--format", "pdf"], "unknown format 'pdf'"),
    (["--fail-on-regression", "lots"], "--fail-on-regression 'lots' must be a percentage"),
])
def test_bad_history_options_are_one_line(bench, tmp_path, flags, message):
    folder = tmp_path / "results"
    _series(folder, [5.0] * 3)
    done = bench("history", folder, *flags)
    assert done.code == 2
    assert_one_line_error(done, message)


def test_the_exact_rank_test_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    from edgebench.results.stats import mann_whitney_small

    rng = np.random.default_rng(2)
    for m, n in ((5, 5), (4, 7), (8, 8), (3, 12)):
        a, b = rng.normal(0, 1, m), rng.normal(0.8, 1, n)
        assert mann_whitney_small(a, b) == pytest.approx(scipy_stats.mannwhitneyu(a, b, method="exact").pvalue)
