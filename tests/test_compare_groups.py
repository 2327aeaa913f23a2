"""Every grouping renders in every format, and a group that pools different things says so."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from edgebench.results.html import render_html
from edgebench.results.report import compare_runs, render
from tests.synthetic import lognormal_ns, result, write


def _digits_runs() -> list[dict]:
    """The digits model: the original, two variants and two thread counts, on two boards, with top-1."""
    rng = np.random.default_rng(11)
    documents = []
    for index, (variant, threads, target) in enumerate(itertools.product(("original", "int8-dynamic", "fp16"), (0, 1),
                                                                         ("local", "pi4"))):
        document = result(lognormal_ns(rng, 0.5 + index * 0.05, 200), run_id=f"d{index}", model="digits",
                          target=target, threads=threads, top1=99.4 - index * 0.1)
        if variant != "original":
            document["model"]["provenance"] = {"variant": variant, "parent": {"name": "digits"}}
            document["model"]["sha256"] = f"{variant:0<64}"[:64]
        documents.append(document)
    return documents


KEY_SETS = [combo for size in (1, 2, 3, 4) for combo in itertools.combinations(("model", "variant", "target", "settings"), size)]
KEY_SETS += [("provider",), ("threads",), ("opt", "dims"), ("plan", "target")]


@pytest.mark.parametrize("by", KEY_SETS, ids=[",".join(k) for k in KEY_SETS])
def test_every_grouping_renders_in_every_format(by, tmp_path):
    documents = _digits_runs()
    baseline = ("target", "local") if "target" in by else (("variant", "original") if "variant" in by else None)
    comparison = compare_runs(documents, by, baseline=baseline)
    assert comparison.rows
    for fmt in ("csv", "md", "json"):
        assert render(comparison, fmt).strip()
    assert render(comparison, "md", documents).strip()  # --per-run
    assert "<html" in render_html(comparison, documents, [])
    comparison.frame().to_parquet(tmp_path / "groups.parquet", index=False)


def test_the_reported_html_command_renders(bench, tmp_path):
    write(tmp_path / "r", _digits_runs())
    done = bench("compare", tmp_path / "r", "--by", "model,variant", "--baseline", "variant=original", "-f", "html",
                 "-o", tmp_path / "r.html")
    assert done.code == 0, done.stderr
    page = (tmp_path / "r.html").read_text()
    assert "Speed against top-1 accuracy" in page or page.count("data:image/png") >= 1


def test_a_group_that_pools_different_runs_says_so(bench, tmp_path):
    write(tmp_path / "r", _digits_runs())
    done = bench("compare", tmp_path / "r", "--by", "model,target", "--baseline", "target=local", "-f", "json")
    assert done.code == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: group")]
    assert len(warnings) == 2  # digits on local, digits on pi4: each pools 3 variants x 2 thread counts
    assert all("model_sha256, variant, settings" in w and "add variant and settings to --by" in w for w in warnings)
    rows = json.loads(done.stdout)
    assert {r["mixed"] for r in rows} == {"model_sha256, variant, settings"}
    # Grouped by everything that differs, nothing is mixed.
    clean = bench("compare", tmp_path / "r", "--by", "model,variant,target,settings", "-f", "json")
    assert "warning: group" not in clean.stderr and all("mixed" not in r or r["mixed"] is None
                                                         for r in json.loads(clean.stdout))


def test_a_regression_names_its_whole_group(bench, tmp_path):
    rng = np.random.default_rng(5)
    documents = [result(lognormal_ns(rng, 2.0, 400), run_id="base", model="digits", target="local"),
                 result(lognormal_ns(rng, 2.6, 400), run_id="slow", model="digits", target="pi4")]
    write(tmp_path / "r", documents)
    done = bench("compare", tmp_path / "r", "--by", "model,variant,target", "--baseline", "target=local",
                 "--fail-on-regression", "5%")
    assert done.code == 1
    assert "model=digits, variant=original, target=pi4:" in done.stderr and "slower than target=local" in done.stderr


def test_a_baseline_inside_settings_pairs_the_groups(bench, tmp_path):
    """--baseline threads=1 with the default --by (which holds threads inside `settings`) still pairs threads=2
    with threads=1, so --fail-on-regression can fire; and `--json` is -f json."""
    rng = np.random.default_rng(8)
    write(tmp_path / "r", [result(lognormal_ns(rng, 2.0, 400), run_id="one", threads=1),
                           result(lognormal_ns(rng, 2.6, 400), run_id="two", threads=2)])
    done = bench("compare", tmp_path / "r", "--baseline", "threads=1", "--fail-on-regression", "5%", "--json")
    assert done.code == 1, done.stderr
    assert "threads=2" in done.stderr and "slower than threads=1" in done.stderr
    rows = json.loads(done.stdout)
    assert {r["verdict"] for r in rows} == {"baseline", "slower"}
