"""The host side of the spine: result files (golden v1, atomic writes), `bench deploy`, `bench compare`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgebench.results import report, files as results
from edgebench.errors import ResultError
from tests.conftest import EXAMPLES, FAST_RUN, assert_one_line_error

GOLDEN = Path(__file__).parent / "golden" / "result_v5.json"


def _key_tree(document, depth=2):
    if not isinstance(document, dict) or depth == 0:
        return type(document).__name__
    return {key: _key_tree(value, depth - 1) for key, value in document.items()}


# ------------------------------------------------------------------------------------------- golden
def test_a_version_1_result_reads_as_version_2():
    v1 = Path(__file__).parent / "golden" / "result_v1.json"
    assert json.loads(v1.read_text())["schema_version"] == 1
    assert results.load_result(v1) == json.loads(GOLDEN.read_text())  # the v5 golden is v1, migrated
    assert report.run_row(results.load_result(v1))["scenario"] == "single-stream"


def test_golden_result_loads_and_summarizes():
    document = results.load_result(GOLDEN)
    row = report.run_row(document)
    # Pooled samples of both repeats: 1, 2, 3, 4, 5, 3, 3, 3 ms.
    assert row["n"] == 8
    assert row["p50_ms"] == pytest.approx(3.0)
    assert row["mean_ms"] == pytest.approx(3.0)
    assert row["min_ms"] == 1.0 and row["max_ms"] == 5.0
    assert row["session_ms"] == pytest.approx(13.0)
    assert row["first_ms"] == pytest.approx(1.0)
    assert row["peak_rss_mib"] == pytest.approx(64.0)
    assert row["throughput_per_s"] == pytest.approx(1000 / 3.0)


def test_a_fresh_result_has_the_golden_shape(bench, tmp_path, tiny_models):
    """Schema drift without a SCHEMA_VERSION bump fails here."""
    done = bench("deploy", tiny_models["matmul"], "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    (path,) = (tmp_path / "r").glob("*.json")
    fresh = json.loads(path.read_text())
    assert _key_tree(fresh, 2) == _key_tree(json.loads(GOLDEN.read_text()), 2)
    assert fresh["schema_version"] == results.SCHEMA_VERSION
    assert sorted(fresh["measurements"]) == sorted(results.MEASUREMENT_KEYS)


# ----------------------------------------------------------------------------------- result files
def test_write_result_is_atomic_and_never_clobbers(tmp_path):
    document = json.loads(GOLDEN.read_text())
    path = results.write_result(tmp_path, document)
    assert path.name == f"{document['run_id']}.json"
    assert results.load_result(path) == document
    with pytest.raises(ResultError, match="already exists"):
        results.write_result(tmp_path, {**document, "status": "failed"})
    assert results.load_result(path)["status"] == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left behind


def test_a_killed_writers_temp_file_is_cleared_later(tmp_path):
    import os
    import time

    # the shared writer's temp names, and the older ".tmp-*.json" ones
    stale = [tmp_path / ".run-killed.json.k2j3.tmp", tmp_path / ".tmp-killed.json"]
    fresh = [tmp_path / ".run-writing-now.json.x9a1.tmp", tmp_path / ".tmp-writing-now.json"]
    for path in stale + fresh:
        path.write_text("{half a result")
    for path in stale:
        os.utime(path, (time.time() - 2 * results.STALE_TEMP_S,) * 2)
    results.write_result(tmp_path, json.loads(GOLDEN.read_text()))
    assert not any(p.exists() for p in stale) and all(p.exists() for p in fresh)


def test_run_ids_are_distinct_and_safe():
    ids = {results.new_run_id("my model; $(rm -rf ~)", "pi4") for _ in range(200)}
    assert len(ids) == 200
    assert all("/" not in i and " " not in i and "$" not in i for i in ids)


@pytest.mark.bad_input
@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"hello": 1}', "not an edgebench result"),
    ('{"schema_version": 99, "run_id": "x"}', "result schema 99 is newer than this edgebench understands"),
    ('{"schema_version": 1, "run_id": "x"}', "field 'status' is missing"),
])
def test_unreadable_results_are_reported(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ResultError, match=message):
        results.load_result(path)


# ------------------------------------------------------------------------------------------ CLI
def test_help_does_not_import_heavy_packages():
    import subprocess
    import sys

    code = ("import sys\nsys.argv = ['bench', '--help']\nfrom edgebench.entry import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'onnx', 'pandas', 'onnxruntime', 'numpy', 'edgebench.cli') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "edgebench.cli" not in done.stdout  # the commands themselves are not even imported
    assert "deploy" in done.stdout and "compare" in done.stdout


def test_version(bench):
    from edgebench import __version__

    done = bench("--version")
    assert (done.code, done.stdout) == (0, f"edgebench {__version__}\n")


def test_deploy_local_writes_one_result_per_model(bench, tmp_path, tiny_models):
    models = [tiny_models["matmul"], EXAMPLES / "setnet.onnx"]
    done = bench("deploy", "--target", "local", *models, "--results", tmp_path / "r", *FAST_RUN, "--repeats", "2")
    assert done.code == 0, done.stderr
    files = sorted((tmp_path / "r").glob("*.json"))
    assert len(files) == 2
    by_model = {d["model"]["name"]: d for d in map(results.load_result, files)}
    setnet = by_model["setnet"]
    assert setnet["status"] == "ok" and setnet["target"]["name"] == "local"
    assert setnet["model"]["inputs"] == [{"name": "grid", "dtype": "float32", "shape": [2, 2, 14, 17]}]
    assert setnet["measurements"]["inputs"][0]["shape"] == [2, 2, 14, 17]
    assert len(setnet["measurements"]["repeats"]) == 2
    assert setnet["settings"]["repeats"] == 2 and setnet["settings"]["min_iterations"] == 5
    assert setnet["target"]["info"]["providers"]
    # The summary table names both models, with a p50 column, and the result paths.
    header, *rows = [line for line in done.stdout.splitlines() if line.strip() and not line.startswith("result:")]
    assert header.split()[:8] == ["model", "variant", "target", "settings", "status", "n", "p50", "µs"]  # sub-ms: µs
    assert sorted(r.split()[0] for r in rows) == ["matmul", "setnet"]
    # settings is "cpu threads=0/0 opt=all": three words
    assert all(r.split()[1:3] + r.split()[6:7] == ["original", "local", "ok"] for r in rows)
    assert sorted(line.split()[-1] for line in done.stdout.splitlines() if line.startswith("result:")) == \
        sorted(str(f.relative_to(tmp_path)) if not f.is_absolute() else str(f) for f in files)


@pytest.mark.bad_input
@pytest.mark.parametrize("make_model, fragment", [
    (lambda d: d / "missing.onnx", "model file not found"),
    (lambda d: _write(d / "corrupt.onnx", b"\x08\x07garbage that is not protobuf\xff\xff"), "is not a valid ONNX model"),
    (lambda d: _write(d / "text.onnx", b"hello"), "is not a valid ONNX model"),
    (lambda d: _truncated(d), "is not a valid ONNX model"),
])
def test_bad_model_is_one_line_exit_2_and_no_result(bench, tmp_path, make_model, fragment):
    done = bench("deploy", make_model(tmp_path), "--results", tmp_path / "r")
    assert done.code == 2
    assert_one_line_error(done, fragment)
    assert not (tmp_path / "r").exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(folder: Path) -> Path:
    data = (EXAMPLES / "cnn.onnx").read_bytes()
    return _write(folder / "truncated.onnx", data[: len(data) // 2])


@pytest.mark.bad_input
@pytest.mark.parametrize("args, fragment", [
    (["--min-iterations", "0"], "min_iterations must be at least 1"),
    (["--threads", "100000"], "intra_op_threads must be between 0"),
    (["--value", "novalue"], "--value 'novalue' must look like NAME=VALUE"),
    (["--dim", "batch=x"], "is not a valid value"),
    (["--target", "nowhere"], "unknown target 'nowhere'"),
])
def test_bad_options_are_one_line(bench, tmp_path, tiny_models, args, fragment):
    done = bench("deploy", tiny_models["matmul"], "--results", tmp_path / "r", *args)
    assert done.code == 2
    assert_one_line_error(done, fragment)
    assert not (tmp_path / "r").exists()


@pytest.mark.bad_input
def test_input_mismatch_is_one_line_and_writes_nothing(bench, tmp_path, tiny_models):
    import numpy as np

    npz = tmp_path / "in.npz"
    np.savez(npz, x=np.ones((1, 63), np.float32))
    done = bench("deploy", tiny_models["matmul"], "--inputs", npz, "--results", tmp_path / "r", *FAST_RUN)
    assert_one_line_error(done, "input 'x' axis 1 is fixed at 64 in the model but the supplied array has 63")
    assert not list(tmp_path.rglob("*.json"))


# --------------------------------------------------------------------------------------- compare
@pytest.fixture(scope="module")
def result_folder(tmp_path_factory, tiny_models):
    """Several real results plus a corrupt file and a future-schema file."""
    import os
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("results")
    env = {**os.environ, "EDGEBENCH_CACHE": str(tmp_path_factory.getbasetemp() / "edgebench-cache")}
    for extra in ([], ["--threads", "1"], []):
        subprocess.run([sys.executable, "-m", "edgebench", "deploy", str(tiny_models["matmul"]),
                        str(tiny_models["identity_float32"]), "--results", str(folder), *FAST_RUN, *extra],
                       check=True, capture_output=True, env=env, timeout=300)
    shutil.copy(GOLDEN, folder / "golden.json")
    (folder / "corrupt.json").write_text('{"schema_version": 1, "run_id": ')
    (folder / "future.json").write_text('{"schema_version": 7, "run_id": "x"}')
    return folder


@pytest.mark.bad_input
def test_compare_groups_runs_and_skips_bad_files(bench, result_folder):
    done = bench("compare", result_folder, "--columns", "model,settings,runs")
    assert done.code == 0, done.stderr
    warnings = done.stderr.strip().splitlines()
    assert len(warnings) == 2
    assert any("corrupt.json: not valid JSON" in w for w in warnings)
    assert any("future.json: result schema 7 is newer" in w and "upgrade edgebench" in w for w in warnings)
    rows = [line.split() for line in done.stdout.splitlines()[1:] if line.strip()]
    # matmul and identity, each with the default threads (2 runs) and threads=1 (1 run); plus the golden setnet.
    assert len(rows) == 5, done.stdout
    runs = {(r[0], r[2]): int(r[4]) for r in rows}  # (model, "threads=intra/inter") -> runs
    assert runs == {("matmul", "threads=0/0"): 2, ("matmul", "threads=1/0"): 1, ("identity_float32", "threads=0/0"): 2,
                    ("identity_float32", "threads=1/0"): 1, ("setnet", "threads=0/0"): 1}


@pytest.mark.parametrize("fmt", ["csv", "md", "json"])
def test_compare_formats(bench, result_folder, tmp_path, fmt):
    out = tmp_path / f"table.{fmt}"
    done = bench("compare", result_folder, "--format", fmt, "-o", out)
    assert done.code == 0, done.stderr
    text = out.read_text()
    if fmt == "json":
        records = json.loads(text)
        assert len(records) == 5 and {"model", "target", "settings", "p50_ms", "runs"} <= set(records[0])
        golden = next(r for r in records if r["model"] == "setnet")
        assert golden["p50_ms"] == pytest.approx(3.0) and golden["n"] == 8
    elif fmt == "csv":
        import csv
        import io

        records = list(csv.DictReader(io.StringIO(text)))
        assert len(records) == 5 and float(next(r for r in records if r["model"] == "setnet")["p50_ms"]) == 3.0
    else:
        lines = text.strip().splitlines()
        assert lines[0].startswith("| model | variant | target | settings | n | p50 ms |") and len(lines) == 2 + 5


@pytest.mark.bad_input
def test_compare_on_an_empty_folder_is_one_line(bench, tmp_path):
    (tmp_path / "empty").mkdir()
    done = bench("compare", tmp_path / "empty")
    assert done.code == 2
    assert_one_line_error(done, "no readable results")


@pytest.mark.bad_input
def test_compare_unknown_format_is_one_line(bench, result_folder):
    assert_one_line_error(bench("compare", result_folder, "--format", "xml"), "unknown format 'xml'")


def test_the_lazy_help_table_matches_the_commands():
    """entry.COMMANDS (what `bench --help` shows without importing the commands) is each command's own help."""
    import typer

    from edgebench.cli import app
    from edgebench.entry import COMMANDS

    group = typer.main.get_command(app)
    assert sorted(COMMANDS) == sorted(group.commands)
    for name, text in COMMANDS.items():
        assert (group.commands[name].help or "").strip().splitlines()[0] == text, name
