"""End-to-end pipelines: the user's load/preprocess/postprocess around the model, timed per stage on the board and
checked against the same pipeline run on the host."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from edgebench.results import report, files as results
from tests.conftest import EXAMPLES, REPO, assert_one_line_error

PIPELINE = EXAMPLES / "digits_pipeline.py"
FRAMES = EXAMPLES / "digits_frames"
QUICK = ["--warmup", "2", "--min-seconds", "0.2", "--min-iterations", "20", "--max-seconds", "30"]
STAGES = ("load", "preprocess", "inference", "postprocess")


def _one(folder: Path) -> dict:
    (path,) = list(folder.glob("*.json"))
    return results.load_result(path)


def _deploy(bench, tmp_path, pipeline=PIPELINE, samples=FRAMES, *extra, name="r", model=EXAMPLES / "digits.onnx"):
    return bench("deploy", model, "--results", tmp_path / name, "--pipeline", pipeline, "--samples", samples,
                 *QUICK, *extra, timeout=600)


def _pipeline(tmp_path: Path, body: str, name: str = "stages.py") -> Path:
    path = tmp_path / name
    path.write_text("import numpy as np\nimport sys\n" + body)
    return path


DIGITS_STAGES = """
def preprocess(data):
    return {"image": np.frombuffer(data, dtype=np.uint8)[-64:].reshape(1, 1, 8, 8).astype(np.float32) / 255}

def postprocess(outputs):
    return int(np.argmax(outputs[0]))
"""


def test_the_digits_pipeline_end_to_end_on_local(bench, tmp_path):
    done = _deploy(bench, tmp_path)
    assert done.code == 0, done.stderr
    document = _one(tmp_path / "r")
    repeat = document["measurements"]["repeats"][0]
    stages = repeat["stages_ns"]
    assert sorted(stages) == sorted(STAGES)
    assert all(len(stages[s]) == len(repeat["samples_ns"]) >= 20 for s in STAGES)
    # end to end is the sum of the stages, sample by sample: nothing of the harness is charged to a stage
    assert repeat["samples_ns"][:50] == [sum(stages[s][i] for s in STAGES) for i in range(50)]
    assert all(v > 0 for s in STAGES for v in stages[s])
    block = document["pipeline"]
    assert block["samples"] == 48 and block["custom_load"] is True
    assert block["results"]["passed"] and block["results"]["agree"] == 48
    assert document["settings"]["pipeline"]["file"] == "digits_pipeline.py"
    assert len(document["settings"]["pipeline"]["sha256"]) == 64
    assert document["measurements"]["inputs"] == [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32",
                                                  "source": "pipeline"}]
    assert "pipeline digits: PASS 48/48 final results agree with the host's" in done.stdout
    assert "load" in done.stdout and "inference" in done.stdout
    row = report.run_row(document)
    shares = [row[f"{s}_pct"] for s in STAGES]
    assert sum(shares) == pytest.approx(100.0) and all(0 < s < 100 for s in shares)
    assert row["pipeline_agree"] == "48/48"
    # compare shows the breakdown; the HTML report draws it as stacked bars
    table = bench("compare", tmp_path / "r", "--format", "json")
    assert table.code == 0, table.stderr
    (group,) = json.loads(table.stdout)
    assert group["inference_ms"] > 0 and group["load_ms"] > 0 and "pipeline=digits_pipeline.py" in group["settings"]
    assert bench("compare", tmp_path / "r", "--format", "html", "-o", tmp_path / "r.html").code == 0
    assert "alt='End to end'" in (tmp_path / "r.html").read_text()


def test_the_pipelines_answers_are_the_labels_in_the_file_names(tmp_path):
    """The worked example is right, not only consistent: its digits match the frames' labels."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import digits_pipeline
    finally:
        sys.path.remove(str(EXAMPLES))
    import onnxruntime

    session = onnxruntime.InferenceSession(str(EXAMPLES / "digits.onnx"), providers=["CPUExecutionProvider"])
    frames = sorted(FRAMES.glob("*.pgm"))
    right = 0
    for frame in frames:
        feeds = digits_pipeline.preprocess(digits_pipeline.load(str(frame)))
        answer = digits_pipeline.postprocess(session.run(None, feeds))
        right += answer["digit"] == int(frame.stem.split("_")[1])
    assert right / len(frames) >= 0.9


def test_pipelines_over_ssh_on_python38_and_on_the_emulated_arm_board(bench, tmp_path, ssh_board, old_board,
                                                                    arm64_board, inventory):
    inv = inventory(ssh_board, old_board, arm64_board)
    for target in ("sshroot", old_board.name, arm64_board.name):
        folder = f"{target}-1"
        done = _deploy(bench, tmp_path, PIPELINE, FRAMES, "--target", target, "--inventory", inv, name=folder)
        assert done.code == 0, done.stderr
        document = _one(tmp_path / folder)
        assert document["pipeline"]["results"]["agree"] == 48, document["pipeline"]
        assert len(document["measurements"]["repeats"][0]["stages_ns"]["load"]) >= 20
    # shipped by hash: a second run on a board uploads nothing (agent, model, pipeline and samples are there)
    again = _deploy(bench, tmp_path, PIPELINE, FRAMES, "--target", "sshroot", "--inventory", inv, name="again")
    assert again.code == 0, again.stderr
    assert "uploaded 0.0 KiB to sshroot (agent and models were cached there)" in again.stderr


def test_final_results_that_differ_on_the_board_fail_the_run_and_name_the_samples(bench, tmp_path):
    # "edgebench" (the host package) is imported on the host, never in the board's agent process
    stages = _pipeline(tmp_path, DIGITS_STAGES.replace("return int(np.argmax(outputs[0]))",
                                                       "return int(np.argmax(outputs[0])) + ('edgebench' in sys.modules)"))
    done = _deploy(bench, tmp_path, stages)
    assert done.code == 1
    assert "the pipeline's final results on the board differ from the host's" in done.stderr
    document = _one(tmp_path / "r")
    assert document["status"] == "ok" and document["pipeline"]["results"]["agree"] == 0
    assert document["pipeline"]["results"]["mismatched"][:2] == ["000_6.pgm", "001_6.pgm"]
    assert "FAIL 0/48" in done.stdout


def test_a_stage_that_fails_only_on_the_board_is_a_failed_result_naming_stage_and_sample(bench, tmp_path):
    stages = _pipeline(tmp_path, DIGITS_STAGES.replace(
        "def postprocess(outputs):\n", "def postprocess(outputs):\n    if 'edgebench' not in sys.modules:\n"
                                       "        raise ValueError('no camera here')\n"))
    done = _deploy(bench, tmp_path, stages)
    assert done.code == 1
    document = _one(tmp_path / "r")
    assert document["status"] == "failed" and document["error"]["kind"] == "pipeline"
    assert document["error"]["message"] == ("the pipeline's postprocess stage failed on sample 000_6.pgm: "
                                            "ValueError: no camera here")


@pytest.mark.bad_input
def test_a_module_the_board_lacks_is_named(bench, tmp_path):
    stages = _pipeline(tmp_path, "if 'edgebench' not in sys.modules:\n    import cv2_not_on_this_board\n" + DIGITS_STAGES)
    done = _deploy(bench, tmp_path, stages)
    assert done.code == 2
    assert_one_line_error(done, "needs the module 'cv2_not_on_this_board'", "pip install opencv-python-headless")
    assert not list((tmp_path / "r").glob("*.json"))


BAD_PIPELINES = {
    "no preprocess": ("def postprocess(o):\n    return 0\n", "defines no preprocess()"),
    "no postprocess": ("def preprocess(s):\n    return {}\n", "defines no postprocess()"),
    "stage raises": (DIGITS_STAGES.replace("def preprocess(data):\n", "def preprocess(data):\n    raise KeyError('exif')\n"),
                     "the pipeline's preprocess stage failed on sample 000_6.pgm: KeyError: 'exif' (on the host"),
    "load raises": ("def load(path):\n    return open(path + '.missing')\n" + DIGITS_STAGES,
                    "the pipeline's load stage failed on sample 000_6.pgm: FileNotFoundError"),
    "wrong input name": (DIGITS_STAGES.replace('{"image":', '{"pixels":'),
                         "sample 000_6.pgm: preprocess returned feeds pixels but the model's inputs are image"),
    "wrong dtype": (DIGITS_STAGES.replace(".astype(np.float32) / 255", ".astype(np.float64)"),
                    "input 'image' must be float32 but the supplied array is float64"),
    "wrong shape": (DIGITS_STAGES.replace("reshape(1, 1, 8, 8)", "reshape(1, 8, 8)"), "input 'image' must have rank 4"),
    "not a result": (DIGITS_STAGES.replace("return int(np.argmax(outputs[0]))", "return object()"),
                     "postprocess must return numbers, arrays or strings"),
    "syntax error": ("def preprocess(:\n", "is not valid Python"),
    "raises on import": ("raise RuntimeError('needs a GPU')\n", "raised while loading: RuntimeError: needs a GPU"),
}


@pytest.mark.bad_input
@pytest.mark.parametrize("case", sorted(BAD_PIPELINES))
def test_bad_pipelines_are_one_line_before_any_upload(bench, tmp_path, case):
    body, message = BAD_PIPELINES[case]
    done = _deploy(bench, tmp_path, _pipeline(tmp_path, body))
    assert done.code == 2
    assert_one_line_error(done, message)
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.json"))


@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["empty", "missing", "only hidden", "pipeline alone", "samples alone", "not python",
                                  "with a scenario", "with a dataset", "with inputs"])
def test_bad_pipeline_options_are_one_line(bench, tmp_path, case):
    (tmp_path / "empty").mkdir()
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "stages.txt").write_text("x")
    model = EXAMPLES / "digits.onnx"
    args = {
        "empty": (["--pipeline", PIPELINE, "--samples", tmp_path / "empty"], "holds no sample files"),
        "missing": (["--pipeline", PIPELINE, "--samples", tmp_path / "nope"], "samples folder not found"),
        "only hidden": (["--pipeline", PIPELINE, "--samples", tmp_path / "hidden"], "holds no sample files"),
        "pipeline alone": (["--pipeline", PIPELINE], "--pipeline and --samples go together"),
        "samples alone": (["--samples", FRAMES], "--pipeline and --samples go together"),
        "not python": (["--pipeline", tmp_path / "stages.txt", "--samples", FRAMES], "a pipeline is a Python file"),
        "with a scenario": (["--pipeline", PIPELINE, "--samples", FRAMES, "--scenario", "server", "--qps", "10"],
                            "a pipeline runs one sample at a time"),
        "with a dataset": (["--pipeline", PIPELINE, "--samples", FRAMES, "--dataset", EXAMPLES / "digits_test.npz"],
                           "the accuracy pass (--accuracy, --reference"),
        "with inputs": (["--pipeline", PIPELINE, "--samples", FRAMES, "--value", "image=1"], "--value does not apply"),
    }
    flags, message = args[case]
    done = bench("deploy", model, "--results", tmp_path / "r", *flags, *QUICK)
    assert done.code == 2
    assert_one_line_error(done, message)
    assert not (tmp_path / "r").exists()


@pytest.mark.bad_input
def test_a_hostile_samples_archive_never_writes_outside_its_folder(tmp_path):
    from edgebench_agent.shared.inputs import InputError
    from edgebench_agent.shared.pipeline import samples_folder

    for name, kind in (("../escaped.pgm", tarfile.REGTYPE), ("/tmp/abs.pgm", tarfile.REGTYPE), ("link", tarfile.SYMTYPE),
                       ("sub/inner.pgm", tarfile.REGTYPE)):
        archive = tmp_path / f"bad{len(list(tmp_path.glob('*.tar')))}.tar"
        with tarfile.open(archive, "w") as out:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            info.size = 0 if kind == tarfile.SYMTYPE else 3
            out.addfile(info, None if kind == tarfile.SYMTYPE else io.BytesIO(b"abc"))
        with pytest.raises(InputError, match="not a plain file"):
            samples_folder(str(archive))
        assert not Path(str(archive) + ".d").exists()
    assert not (tmp_path.parent / "escaped.pgm").exists() and not Path("/tmp/abs.pgm").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".tar")) == []  # no part folder left


def test_packed_samples_are_the_same_bytes_every_time(tmp_path):
    """Uploads go by hash: the same files must pack to the same archive (no times, owners or order in it)."""
    from edgebench_agent.shared.pipeline import list_samples, pack_samples, samples_folder

    packs = []
    for _ in range(2):
        out = io.BytesIO()
        pack_samples(list_samples(str(FRAMES)), out)
        packs.append(out.getvalue())
    assert packs[0] == packs[1]
    (tmp_path / "s.tar").write_bytes(packs[0])
    unpacked = Path(samples_folder(str(tmp_path / "s.tar")))
    assert sorted(p.name for p in unpacked.iterdir()) == sorted(p.name for p in FRAMES.glob("*.pgm"))
    assert (unpacked / "000_6.pgm").read_bytes() == (FRAMES / "000_6.pgm").read_bytes()


def test_the_standalone_agent_runs_a_pipeline_and_bench_imports_it(bench, tmp_path):
    done = subprocess.run([sys.executable, "-m", "edgebench_agent", "run", str(EXAMPLES / "digits.onnx"), "--warmup", "2",
                           "--min-seconds", "0.2", "--pipeline", str(PIPELINE), "--samples", str(FRAMES),
                           "--out", str(tmp_path / "e2e.json")], cwd=REPO / "agent", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pipeline  digits_pipeline.py over 48 samples: load" in done.stdout
    imported = bench("import", tmp_path / "e2e.json", "--target", "pi-lab", "--results", tmp_path / "r")
    assert imported.code == 0, imported.stderr
    row = report.run_row(_one(tmp_path / "r"))
    assert row["inference_ms"] > 0 and sum(row[f"{s}_pct"] for s in STAGES) == pytest.approx(100.0)


def test_a_plan_runs_a_model_through_its_pipeline(bench, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"name: p\nmodels:\n  - name: digits\n    path: {EXAMPLES / 'digits.onnx'}\n"
                    f"    pipeline: {PIPELINE}\n    samples: {FRAMES}\ntargets: [local]\n"
                    "settings:\n  warmup: 2\n  min_seconds: 0.2\n")
    done = bench("run", plan, "--results", tmp_path / "r")
    assert done.code == 0, done.stderr
    document = _one(tmp_path / "r")
    assert document["pipeline"]["results"]["passed"] and document["settings"]["pipeline"]["file"] == "digits_pipeline.py"


@pytest.mark.bad_input
def test_a_plan_with_a_missing_samples_folder_is_refused_at_its_line(bench, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"name: p\nmodels:\n  - name: digits\n    path: {EXAMPLES / 'digits.onnx'}\n"
                    f"    pipeline: {PIPELINE}\n    samples: nowhere\ntargets: [local]\n")
    done = bench("run", plan, "--dry-run")
    assert done.code == 2
    assert_one_line_error(done, "plan.yaml:6", "models.0.samples: samples folder not found")


@pytest.mark.bad_input
def test_pipeline_figures_from_elsewhere_never_crash_a_report(bench, tmp_path):
    """A result file may come from anywhere: stage timings of the wrong type or shape are skipped with a warning
    naming the field; good ones show their breakdown."""
    from tests.synthetic import result, write

    good = result([3_000_000] * 50, run_id="good", model="m", target="t")
    good["measurements"]["repeats"][0]["stages_ns"] = {s: [750_000] * 50 for s in STAGES}
    forged = []
    for name, stages in (("text", {s: ["fast"] for s in STAGES}), ("missing", {"load": [1, 2]}),
                         ("negative", {s: [-5] for s in STAGES}), ("scalar", 7)):
        document = result([1_000_000] * 50, run_id=name, model=f"m-{name}", target="t")
        document["measurements"]["repeats"][0]["stages_ns"] = stages
        forged.append(document)
    write(tmp_path / "r", [good, *forged])
    for flags in ([], ["-f", "html", "-o", tmp_path / "page.html"]):
        done = bench("compare", tmp_path / "r", *flags)
        assert done.code == 0, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.count("stages_ns") == 4, done.stderr
    assert "alt='End to end'" in (tmp_path / "page.html").read_text()
    table = bench("compare", tmp_path / "r", "--format", "csv")
    assert "load_ms" in table.stdout.splitlines()[0]


def test_results_round_trip_and_compare_sample_by_sample():
    from edgebench_agent.shared.pipeline import compare_results, read_results, result_arrays, results_npz

    host = [result_arrays({"digit": 3, "confidence": 0.9}), result_arrays(np.array([1.0, 2.0])), result_arrays("cat")]
    board = read_results(results_npz([result_arrays({"digit": 3, "confidence": 0.90001}),
                                      result_arrays(np.array([1.0, 2.5])), result_arrays("cat")]), 3)
    found = compare_results(host, board, ["a", "b", "c"], 1e-4, 1e-3)
    assert (found["agree"], found["mismatched"], found["passed"]) == (2, ["b"], False)
    assert found["max_abs"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------ what a red team found
def test_long_and_odd_sample_names_travel(bench, tmp_path, ssh_board, inventory):
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("a" * 150 + ".pgm", "näme with spaces.pgm"):
        shutil.copy(FRAMES / "000_6.pgm", samples / name)
    done = bench("deploy", EXAMPLES / "digits.onnx", "--target", "sshroot", "--inventory", inventory(ssh_board),
                 "--results", tmp_path / "r", "--pipeline", PIPELINE, "--samples", samples, *QUICK, timeout=600)
    assert done.code == 0, done.stderr
    assert _one(tmp_path / "r")["pipeline"]["results"]["agree"] == 2


HOSTILE_STAGES = {
    "ragged result": (DIGITS_STAGES.replace("return int(np.argmax(outputs[0]))", "return [[1, 2], [3]]"),
                      "postprocess must return numbers, arrays or strings"),
    "bytes result": (DIGITS_STAGES.replace("return int(np.argmax(outputs[0]))", "return b'\\x00\\xffabc'"),
                     "(decode bytes to str)"),
    "exit in a stage": (DIGITS_STAGES.replace("def preprocess(data):\n", "def preprocess(data):\n    sys.exit(0)\n"),
                        "the pipeline's preprocess stage failed on sample 000_6.pgm: sys.exit(0) was called"),
    "exit on import": ("sys.exit(3)\n" + DIGITS_STAGES, "raised while loading: sys.exit(3) was called"),
    "a thread left running": ("import threading, time\nthreading.Thread(target=time.sleep, args=(600,)).start()\n"
                              + DIGITS_STAGES, "started thread(s) that are still running"),
}


@pytest.mark.bad_input
@pytest.mark.parametrize("case", sorted(HOSTILE_STAGES))
def test_hostile_stages_are_one_line_and_never_end_or_hang_bench(bench, tmp_path, case):
    body, message = HOSTILE_STAGES[case]
    done = _deploy(bench, tmp_path, _pipeline(tmp_path, body))
    assert done.code == 2, (done.code, done.stderr)
    assert_one_line_error(done, message)
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.json"))


def test_a_stage_that_prints_never_corrupts_the_output(bench, tmp_path):
    stages = _pipeline(tmp_path, DIGITS_STAGES.replace("def preprocess(data):\n", "def preprocess(data):\n    print('hello')\n"))
    done = _deploy(bench, tmp_path, stages, FRAMES, "--json")
    assert done.code == 0, done.stderr
    (document,) = json.loads(done.stdout)  # still one JSON document
    assert document["pipeline"]["results"]["passed"] and "hello" in done.stderr


def test_board_side_exits_and_threads_are_the_stages_failure_and_end(bench, tmp_path):
    exits = _pipeline(tmp_path, DIGITS_STAGES.replace(
        "def postprocess(outputs):\n", "def postprocess(outputs):\n    if 'edgebench' not in sys.modules:\n        sys.exit(0)\n"))
    done = _deploy(bench, tmp_path, exits)
    assert done.code == 1
    error = _one(tmp_path / "r")["error"]
    assert (error["kind"], error["message"]) == ("pipeline", "the pipeline's postprocess stage failed on sample "
                                                             "000_6.pgm: sys.exit(0) was called")
    # a thread the pipeline leaves running on the board never keeps the agent alive after its reply
    threads = _pipeline(tmp_path, "import threading, time\nif 'edgebench' not in sys.modules:\n"
                                  "    threading.Thread(target=time.sleep, args=(600,)).start()\n" + DIGITS_STAGES,
                        name="threads.py")
    started = time.time()
    done = _deploy(bench, tmp_path, threads, FRAMES, name="t")
    assert done.code == 0, done.stderr
    assert time.time() - started < 120


@pytest.mark.bad_input
def test_a_stage_that_never_returns_is_stopped_on_the_host(tmp_path, monkeypatch):
    from edgebench.stages import pipeline
    from edgebench.errors import InputError

    stages = _pipeline(tmp_path, DIGITS_STAGES.replace("def preprocess(data):\n",
                                                       "def preprocess(data):\n    while True:\n        pass\n"))
    monkeypatch.setattr(pipeline, "HOST_SAMPLE_TIMEOUT_S", 0.5)
    with pytest.raises(InputError, match="took more than 0 s through the pipeline on the host|preprocess stage failed"):
        pipeline.plan(pipeline.PipelineOptions(stages, FRAMES), EXAMPLES / "digits.onnx")


@pytest.mark.bad_input
def test_the_example_refuses_a_broken_frame_instead_of_looping(bench, tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "empty.pgm").write_bytes(b"")
    (samples / "short.pgm").write_bytes(b"P5\n32 32\n255\n" + b"\x00" * 10)
    done = _deploy(bench, tmp_path, PIPELINE, samples)
    assert done.code == 2
    assert_one_line_error(done, "the pipeline's load stage failed on sample empty.pgm: ValueError: truncated PGM header")


def test_other_samples_under_one_folder_name_never_pool_silently(bench, tmp_path):
    samples = tmp_path / "samples"
    shutil.copytree(FRAMES, samples)
    assert _deploy(bench, tmp_path, PIPELINE, samples).code == 0
    (samples / "000_6.pgm").unlink()
    assert _deploy(bench, tmp_path, PIPELINE, samples).code == 0
    done = bench("compare", tmp_path / "r")
    assert done.code == 0
    assert "pools 2 runs that differ in pipeline_code_and_samples" in done.stderr


def test_a_dataclass_in_a_pipeline_file_loads(bench, tmp_path):
    stages = tmp_path / "boxes.py"
    stages.write_text("from __future__ import annotations\nfrom dataclasses import dataclass\nimport numpy as np\n\n"
                      "@dataclass\nclass Box:\n    score: float\n" + DIGITS_STAGES)
    done = _deploy(bench, tmp_path, stages)
    assert done.code == 0, done.stderr


@pytest.mark.bad_input
def test_a_sample_linking_outside_its_folder_is_refused(bench, tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    shutil.copy(FRAMES / "000_6.pgm", samples / "000_6.pgm")
    (samples / "secret.pgm").symlink_to("/etc/passwd")
    done = _deploy(bench, tmp_path, PIPELINE, samples)
    assert done.code == 2
    assert_one_line_error(done, "sample", "secret.pgm is a link to /etc/passwd, outside the samples folder")
