"""edgebench as a library: the same pipeline as `bench`, returning objects, raising the CLI's typed errors."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import edgebench
import edgebench.api as eb
from edgebench.errors import ConfigError, InputError, ModelError
from tests.conftest import EXAMPLES, FAST_REQUEST, REPO

TORCH_MODELS = REPO / "tests" / "torch_models.py"


def test_importing_edgebench_and_its_api_loads_nothing_heavy():
    code = ("import sys, edgebench, edgebench.api\n"
            "print([m for m in ('torch', 'onnx', 'onnxruntime', 'pandas', 'numpy') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_deploy_load_and_compare_from_python(tmp_path, capsys):
    results = tmp_path / "results"
    deployment = eb.deploy([EXAMPLES / "cnn.onnx", EXAMPLES / "setnet.onnx"], results=results, threads=[1, 2],
                           **FAST_REQUEST)
    assert deployment.ok and deployment.problems == []
    assert len(deployment.documents) == 4 and all(p.is_file() for p in deployment.paths)  # 2 models x 2 threads
    assert capsys.readouterr() == ("", "")  # nothing printed on success without progress=True

    frame = edgebench.load_results(results)  # the package-level shortcut
    assert len(frame) == 4 and set(frame["model"]) == {"cnn", "setnet"} and set(frame["threads"]) == {1, 2}
    assert (frame["p50_ms"] > 0).all() and frame["valid"].all()
    ordered = deployment.frame().sort_values("run_id").reset_index(drop=True)
    assert frame.sort_values("run_id").reset_index(drop=True).equals(ordered)

    long = eb.samples(results)
    from edgebench.results.stats import percentiles

    by_run = long.groupby("run_id")["latency_ms"].apply(lambda v: float(percentiles(v.to_numpy(), 50)))
    assert set(by_run.index) == set(frame["run_id"])
    for _, row in frame.iterrows():  # the long form holds exactly the samples the statistics came from
        assert by_run[row["run_id"]] == pytest.approx(row["p50_ms"], rel=1e-9)

    comparison = eb.compare(results, by="model,threads", baseline="threads=1")
    table = comparison.table
    assert len(table) == 4 and set(table["verdict"]) <= {"baseline", "faster", "slower", "no significant difference"}
    assert (table[table["threads"] == 1]["verdict"] == "baseline").all()
    assert comparison.regressions == []
    assert comparison.to_json() == json.loads(_cli_json(results))  # the same content as `bench compare --json`
    html = comparison.to_html(tmp_path / "report.html")
    assert "<img" in html and (tmp_path / "report.html").read_text() == html == comparison._repr_html_()
    assert capsys.readouterr() == ("", "")


def _cli_json(results: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "edgebench", "compare", str(results), "--by", "model,threads",
                           "--baseline", "threads=1", "--json"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_progress_and_events_are_asked_for(tmp_path):
    seen = []
    eb.deploy(EXAMPLES / "cnn.onnx", results=tmp_path / "r", on_event=lambda name, event: seen.append((name, event)),
              **FAST_REQUEST)
    assert {name for name, _ in seen} == {"local"}
    assert {"phase", "done"} <= {event.get("event") for _, event in seen}


def test_failed_runs_are_data_and_raise_only_when_asked(tmp_path):
    # minutes of work that only the 2 s timeout can end: the board kills it, the result records why
    deployment = eb.deploy(EXAMPLES / "cnn.onnx", results=tmp_path / "r", timeout=2, warmup_min_iterations=2,
                           min_seconds=120, max_seconds=120, min_iterations=10_000_000, max_iterations=10_000_000)
    assert not deployment.ok and "timed out after 2 s" in deployment.problems[0]
    assert deployment.documents[0]["status"] == "failed" and deployment.documents[0]["error"]["kind"] == "timeout"
    with pytest.raises(Exception) as raised:
        deployment.raise_for_problems()
    assert type(raised.value).__name__ == "RunFailed" and raised.value.exit_code == 1


@pytest.mark.bad_input
def test_bad_input_raises_the_clis_typed_error_and_message(tmp_path, bench):
    with pytest.raises(ModelError) as missing:
        eb.deploy(tmp_path / "missing.onnx", results=tmp_path / "r")
    done = bench("deploy", tmp_path / "missing.onnx", "--results", tmp_path / "r")
    assert done.code == missing.value.exit_code == 2
    assert done.stderr.strip() == f"error: {missing.value.message}" + (f" (hint: {missing.value.hint})" if missing.value.hint else "")

    with pytest.raises(InputError, match="unknown request field|not a run option|min_secs"):
        eb.deploy(EXAMPLES / "cnn.onnx", results=tmp_path / "r", min_secs=1)
    with pytest.raises(InputError, match="--accuracy-samples and --batch-size must be at least 1"):
        eb.deploy(EXAMPLES / "cnn.onnx", results=tmp_path / "r", accuracy=True, accuracy_samples=0)
    with pytest.raises(ConfigError, match="cannot group by"):
        eb.compare(tmp_path, by="modle")
    with pytest.raises(InputError, match="atol"):
        eb.validate(EXAMPLES / "cnn.onnx", atol="tight")
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.json"))


def test_unreadable_results_are_skipped_with_a_warning(tmp_path):
    eb.deploy(EXAMPLES / "cnn.onnx", results=tmp_path / "r", **FAST_REQUEST)
    (tmp_path / "r" / "broken.json").write_text("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = eb.load_results(tmp_path / "r")
    assert len(frame) == 1 and any("broken.json" in str(w.message) for w in caught)


def test_export_validate_inspect_and_convert_from_python(tmp_path):
    exported = eb.export(f"{TORCH_MODELS}:cnn", tmp_path / "cnn.onnx", inputs=["image=1x3x32x32"],
                         dynamic=["image:0=batch"], samples=2)
    assert exported.passed and exported.path.is_file() and exported.validation.passed
    assert exported.input_names == ["image"]

    report = eb.validate(exported.path, reference=f"{TORCH_MODELS}:cnn", samples=2)
    assert report.passed and report.to_json()["passed"] is True

    summary = eb.inspect(exported.path)
    assert summary.ok and summary.to_json()["inputs"][0]["name"] == "image"

    variants = eb.convert(exported.path, ["fp16", "int8-dynamic"], tmp_path / "variants")
    assert [v.kind for v in variants] == ["fp16", "int8-dynamic"] and all(v.ok for v in variants)
    assert all(v.path.is_file() and v.provenance["parent"]["sha256"] for v in variants)

    given = eb.export(f"{TORCH_MODELS}:cnn", tmp_path / "given.onnx", validate=False,
                      inputs={"image": np.zeros((2, 3, 32, 32), np.float32)})
    assert given.validation is None and given.passed


def _readme_python_block() -> str:
    """The ```python block of the README's "From Python" section, as written there."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_the_readmes_python_example_runs_as_written(tmp_path):
    (tmp_path / "examples").symlink_to(EXAMPLES)  # the README runs from the repository root
    (tmp_path / "example.py").write_text(_readme_python_block())
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "[('fp16', True), ('int8-dynamic', True)]" and lines[1] == "True 3 result files"
    assert {"original", "fp16", "int8-dynamic"} <= set(done.stdout.split())
    assert "baseline" in done.stdout and done.stderr == ""
    assert (tmp_path / "latency_by_variant.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<img" in (tmp_path / "report.html").read_text()
    assert len(list((tmp_path / "results").glob("*.json"))) == 3


def test_the_example_notebook_runs_headless_and_shows_the_table_and_a_plot(tmp_path):
    import nbclient
    import nbformat

    notebook = nbformat.read(EXAMPLES / "edgebench.ipynb", as_version=4)
    (tmp_path / "examples").symlink_to(EXAMPLES)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    rich = [o.get("data", {}) for o in outputs if o.output_type in ("execute_result", "display_data")]
    assert any("image/png" in data for data in rich), "the latency plot"
    tables = [data["text/html"] for data in rich if "text/html" in data]
    assert any("speedup" in html and "baseline" in html for html in tables), "the comparison table"
    assert any("<img" in html and "vs baseline" in html for html in tables), "the HTML report of the comparison"
    assert len(list((tmp_path / "notebook-results").glob("*.json"))) == 2


def test_a_plan_from_python_runs_its_cells_once(tmp_path, bench):
    from tests.test_plan import write_plan

    plan = write_plan(tmp_path, ["local"])
    dry = eb.run_plan(plan, results=tmp_path / "r", dry_run=True)
    assert [c["status"] for c in dry.cells] == ["to run"] * 4 and not (tmp_path / "r").exists()
    done = eb.run_plan(plan, results=tmp_path / "r")
    assert done.ok and len(done.ran) == 4 and {c["status"] for c in done.cells} == {"ran"}
    assert all(Path(c["result"]).is_file() for c in done.cells)
    again = eb.run_plan(plan, results=tmp_path / "r")  # resumes: nothing left to do
    assert again.ran == [] and again.skipped == 4 and {c["status"] for c in again.cells} == {"done"}
    cli = bench("run", plan, "--results", tmp_path / "r", "--dry-run", "--json")  # the CLI's view of the same cells
    assert [c["cell"] for c in json.loads(cli.stdout)] == [c["cell"] for c in dry.cells]
