"""Which runtime wins on this board: the digits model through onnxruntime, OpenVINO, ncnn and LiteRT, each
converted on the host, checked against its ONNX parent, measured by the same agent loop, and its top-1 on the
labelled split compared with the host's. Real runtimes, real converters (pnnx, openvino.convert_model, litert-torch
in its own venv), the real emulated aarch64 board over SSH."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgebench.results import files as results
from tests.conftest import EXAMPLES, assert_one_line_error

QUICK = ["--warmup", "1", "--min-iterations", "3", "--min-seconds", "0.05", "--max-seconds", "5"]
DIGITS_SPEC = f"{EXAMPLES / 'train_digits.py'}:DigitsCNN"
RUNTIMES = ("onnxruntime", "openvino", "ncnn", "litert")


@pytest.fixture(scope="module")
def digits_bundles(tmp_path_factory):
    """digits.onnx with its three bundles in ./variants, made once by the real converters."""
    from edgebench.stages.convert import convert

    folder = tmp_path_factory.mktemp("digits-runtimes")
    model = folder / "digits.onnx"
    shutil.copy(EXAMPLES / "digits.onnx", model)
    produced = convert(model, ["openvino", "ncnn", "litert"], folder / "variants", spec=DIGITS_SPEC)
    assert [(v.kind, v.error, v.ok) for v in produced] == [(k, None, True) for k in ("openvino", "ncnn", "litert")]
    return folder


def _documents(folder: Path) -> list[dict]:
    return [results.load_result(p) for p in sorted(folder.glob("*.json"))]


def test_conversions_are_bundles_with_provenance_and_parity(digits_bundles):
    from edgebench.models.modelinfo import inspect_model

    for kind in ("openvino", "ncnn", "litert"):
        block = inspect_model(digits_bundles / "variants" / f"digits.{kind}.tar")
        assert block["format"] == kind and block["inputs"][0]["name"] == "image"
        provenance = block["provenance"]
        assert provenance["variant"] == kind and provenance["parity"]["passed"]
        assert provenance["parity"]["outputs"][0]["max_abs"] < 1e-3
        assert provenance["parent"]["sha256"] == inspect_model(digits_bundles / "digits.onnx")["sha256"]
    ncnn = inspect_model(digits_bundles / "variants" / "digits.ncnn.tar")["provenance"]["settings"]
    assert ncnn["converter"] == "pnnx" and ncnn["fp16"] is False  # pnnx would store fp16 weights otherwise


def test_digits_through_every_runtime_on_local_with_the_hosts_top1(bench, digits_bundles, tmp_path):
    done = bench("deploy", "digits.onnx", "--runtime", ",".join(RUNTIMES), "--dim", "batch=1", "--dataset",
                 EXAMPLES / "digits_test.npz", "--results", tmp_path / "r", *QUICK, cwd=digits_bundles, timeout=600)
    assert done.code == 0, done.stdout + done.stderr
    documents = _documents(tmp_path / "r")
    by_runtime = {d["settings"].get("runtime"): d for d in documents}
    assert set(by_runtime) == set(RUNTIMES)
    for name, document in by_runtime.items():
        assert document["status"] == "ok", document.get("error")
        assert document["measurements"]["runtime"]["name"] == name and document["measurements"]["runtime"]["version"]
        labels = document["accuracy"]["labels"]
        assert labels["board"]["top1_correct"] == labels["reference"]["top1_correct"] == 358, (name, labels)
    assert by_runtime["openvino"]["measurements"]["runtime"]["precision"] == "f32"  # never bf16/f16 behind our back
    assert by_runtime["ncnn"]["model"]["provenance"]["variant"] == "ncnn"
    compared = bench("compare", tmp_path / "r", "--by", "model,runtime", "-f", "csv")
    assert compared.code == 0, compared.stderr
    rows = compared.stdout.strip().splitlines()
    assert len(rows) == 5 and all(any(line.startswith(f"digits,{name},") for line in rows) for name in RUNTIMES)
    # the HTML report ranks the runtimes of this board, fastest first, accuracy beside speed
    assert bench("compare", tmp_path / "r", "-f", "html", "-o", tmp_path / "r.html").code == 0
    page = (tmp_path / "r.html").read_text()
    ranked = page[page.index("Runtimes, fastest first"):page.index("<h2>Table")]
    assert ranked.count("<tr><td>") == 4 and ranked.count(">PASS<") == 4 and "1.00&times;" in ranked
    from edgebench.results.report import runtime_ranking

    (group,) = runtime_ranking(_documents(tmp_path / "r"))
    p50s = [row["p50_ms"] for row in group["runtimes"]]
    assert p50s == sorted(p50s) and group["target"] == "local"
    assert [row["top1_pct"] for row in group["runtimes"]] == [pytest.approx(99.444, abs=0.01)] * 4


def test_a_bundle_runs_with_its_own_runtime_and_refuses_another(bench, digits_bundles, tmp_path):
    bundle = digits_bundles / "variants" / "digits.ncnn.tar"
    done = bench("deploy", bundle, "--results", tmp_path / "r", *QUICK)
    assert done.code == 0, done.stderr
    (document,) = _documents(tmp_path / "r")
    assert document["settings"]["runtime"] == "ncnn"
    refused = bench("deploy", bundle, "--runtime", "openvino", "--results", tmp_path / "refused", *QUICK)
    assert_one_line_error(refused, "is a model for ncnn", "--runtime openvino cannot run it")
    assert refused.code == 2 and not (tmp_path / "refused").exists()


def test_a_tflite_from_elsewhere_runs_on_litert(bench, digits_bundles, tmp_path):
    """Where no converter fits, the runtime stays usable with the user's own artefact."""
    import tarfile

    with tarfile.open(digits_bundles / "variants" / "digits.litert.tar") as archive:
        (tmp_path / "mine.tflite").write_bytes(archive.extractfile("model.tflite").read())
    done = bench("deploy", "mine.tflite", "--results", tmp_path / "r", *QUICK)
    assert done.code == 0, done.stderr
    (document,) = _documents(tmp_path / "r")
    assert document["settings"]["runtime"] == "litert" and document["model"]["format"] == "tflite"
    assert document["measurements"]["inputs"][0]["shape"] == [1, 1, 8, 8]
    refused = bench("deploy", "mine.tflite", "--runtime", "onnxruntime", "--results", tmp_path / "no", *QUICK)
    assert_one_line_error(refused, "mine.tflite is a model for litert")


def test_a_plan_sweeps_runtimes_and_the_api_takes_them(digits_bundles, tmp_path):
    import yaml

    import edgebench.api as eb

    plan = {"name": "runtimes", "models": [{"name": "digits", "path": str(digits_bundles / "digits.onnx"),
                                             "dims": {"batch": 1}}],
            "targets": ["local"], "settings": {"warmup": 1, "min_iterations": 3, "min_seconds": 0.05,
                                               "runtime": ["onnxruntime", "ncnn"]}}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "edgebench", "run", str(tmp_path / "plan.yaml"), "--results",
                           str(tmp_path / "r")], capture_output=True, text=True, cwd=digits_bundles, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(d["settings"]["runtime"] for d in _documents(tmp_path / "r")) == ["ncnn", "onnxruntime"]
    deployment = eb.deploy(digits_bundles / "digits.onnx", runtime=["openvino"], dims={"batch": 1},
                                  results=tmp_path / "api", min_seconds=0.05, min_iterations=3)
    (document,) = deployment.documents
    assert document["measurements"]["runtime"]["name"] == "openvino"


@pytest.mark.parametrize("args, fragments", [
    (["--runtime", "OpenVINO", "--inter-op-threads", "2"], ["--inter-op-threads", "onnxruntime setting", "openvino"]),
    (["--runtime", "ncnn", "--spin-wait"], ["--spin-wait", "onnxruntime setting"]),
    (["--runtime", "tensorflow"], ["unknown runtime 'tensorflow'", "onnxruntime, openvino, ncnn, litert"]),
])
def test_settings_a_runtime_cannot_honour_are_refused(bench, tmp_path, args, fragments):
    done = bench("deploy", EXAMPLES / "digits.onnx", "--dim", "batch=1", "--results", tmp_path / "r", *args, *QUICK)
    assert_one_line_error(done, *fragments)
    assert done.code == 2 and not (tmp_path / "r").exists()


def test_an_onnx_without_its_bundle_names_the_conversion(bench, tmp_path):
    shutil.copy(EXAMPLES / "digits.onnx", tmp_path / "digits.onnx")
    done = bench("deploy", "digits.onnx", "--runtime", "litert", "--results", tmp_path / "r", *QUICK)
    assert_one_line_error(done, "no litert model of digits.onnx", "bench convert digits.onnx --to litert --spec")
    assert not (tmp_path / "r").exists()


def test_the_agent_refuses_an_artefact_for_another_runtime(digits_bundles, tmp_path):
    import subprocess
    import sys

    from edgebench.agentlib import EXIT_USAGE

    import tarfile

    tflite_bundle = digits_bundles / "variants" / "digits.litert.tar"
    with tarfile.open(tflite_bundle) as archive:  # the bare .tflite inside the bundle
        (tmp_path / "digits.tflite").write_bytes(archive.extractfile("model.tflite").read())
    for runtime, name, fragment in (("openvino", "digits.tflite", "is not a model OpenVINO reads"),
                                    ("openvino", "digits.litert.tar", "is a model for litert, not openvino"),
                                    ("ncnn", "digits.litert.tar", "is a model for litert, not ncnn")):
        copy = tmp_path / runtime / name
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(tflite_bundle if name.endswith(".tar") else tmp_path / name, copy)
        done = subprocess.run([sys.executable, "-m", "edgebench_agent", "run", str(copy), "--runtime", runtime, "--json"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == EXIT_USAGE, done.stderr
        import json

        reply = json.loads(done.stdout)
        assert reply["error"]["kind"] == "model" and fragment in reply["error"]["message"], reply["error"]


def test_setnet_and_the_cnn_through_every_runtime_whose_converter_handles_them(bench, tmp_path):
    """What the README's table says: setnet (batch 2, GatherND) does not fit ncnn; the rest converts and runs with
    its accuracy against the ONNX model."""
    from edgebench.stages.convert import convert

    for name in ("cnn", "setnet"):
        shutil.copy(EXAMPLES / f"{name}.onnx", tmp_path / f"{name}.onnx")
    spec = {"cnn": f"{EXAMPLES / 'models.py'}:small_cnn", "setnet": f"{EXAMPLES / 'models.py'}:setnet"}
    setnet = {v.kind: v for v in convert(tmp_path / "setnet.onnx", ["openvino", "ncnn", "litert"], tmp_path / "variants",
                                         spec=spec["setnet"])}
    assert setnet["openvino"].ok and setnet["litert"].ok
    assert not setnet["ncnn"].ok and "one sample at a time" in setnet["ncnn"].error
    assert not (tmp_path / "variants" / "setnet.ncnn.tar").exists()  # nothing half-written for a failed conversion
    cnn = {v.kind: v for v in convert(tmp_path / "cnn.onnx", ["openvino", "ncnn", "litert"], tmp_path / "variants",
                                      spec=spec["cnn"])}
    assert all(v.ok for v in cnn.values()), {k: v.error for k, v in cnn.items()}
    assert "spec's own" in cnn["litert"].provenance["settings"]["weights"]  # BatchNorm folded by the exporter
    for name, runtimes in (("cnn", "onnxruntime,openvino,ncnn,litert"), ("setnet", "onnxruntime,openvino,litert")):
        done = bench("deploy", f"{name}.onnx", "--runtime", runtimes, "--accuracy", "--accuracy-samples", "4",
                     "--results", tmp_path / "r", *QUICK, cwd=tmp_path, timeout=600)
        assert done.code == 0, done.stdout + done.stderr
    documents = _documents(tmp_path / "r")
    assert len(documents) == 7 and all(d["status"] == "ok" and d["accuracy"]["passed"] for d in documents)


def test_a_conversion_that_changes_outputs_is_marked_failed_with_its_numbers(tmp_path, monkeypatch):
    """The fault a real converter cannot produce on demand: one that quietly alters the weights."""
    import onnx
    from onnx import numpy_helper

    from edgebench.models import runtime_convert
    from edgebench.stages.convert import convert

    real = runtime_convert.CONVERTERS["openvino"]

    def altering(model_path, out, scratch, options):
        proto = onnx.load(str(model_path))
        head = next(i for i in proto.graph.initializer if i.name == "head.weight")
        head.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(head) * 1.05, "head.weight"))
        altered = scratch / "altered.onnx"
        onnx.save(proto, str(altered))
        return real(altered, out, scratch, options)

    monkeypatch.setitem(runtime_convert.CONVERTERS, "openvino", altering)
    (variant,) = convert(EXAMPLES / "digits.onnx", ["openvino"], tmp_path)
    assert not variant.ok and variant.error is None
    assert variant.parity["passed"] is False and variant.parity["outputs"][0]["max_abs"] > 0.01


def test_a_board_without_the_runtime_is_refused_before_upload(bench, tmp_path, old_board, inventory):
    done = bench("deploy", EXAMPLES / "digits.onnx", "--runtime", "openvino", "--dim", "batch=1", "--target", "oldstack",
                 "--inventory", inventory(old_board), "--results", tmp_path / "r", *QUICK, timeout=300)
    assert_one_line_error(done, "oldstack has no openvino", "pip install openvino")
    assert done.code == 2 and not list((tmp_path / "r").glob("*.json"))


def test_ncnn_and_openvino_on_the_emulated_pi_over_ssh(bench, digits_bundles, tmp_path, arm64_board, inventory):
    doctor = bench("doctor", "--target", "pi4emu", "--inventory", inventory(arm64_board), timeout=600)
    assert doctor.code == 0 and "runtimes" in doctor.stdout and "ncnn 1." in doctor.stdout, doctor.stdout
    done = bench("deploy", "digits.onnx", "--runtime", "ncnn,openvino", "--dim", "batch=1", "--target", "pi4emu",
                 "--inventory", inventory(arm64_board), "--dataset", EXAMPLES / "digits_test.npz", "--results",
                 tmp_path / "r", *QUICK, cwd=digits_bundles, timeout=900)
    assert done.code == 0, done.stdout + done.stderr
    documents = {d["settings"]["runtime"]: d for d in _documents(tmp_path / "r")}
    assert set(documents) == {"ncnn", "openvino"}
    for name, document in documents.items():
        assert document["target"]["info"]["machine"]["arch"] == "aarch64"
        assert document["measurements"]["runtime"]["precision"] == "f32", name
        assert document["accuracy"]["labels"]["board"]["top1_correct"] == 358, name


def test_a_pipeline_around_an_ncnn_bundle_agrees_with_the_hosts_run(bench, digits_bundles, tmp_path):
    done = bench("deploy", digits_bundles / "variants" / "digits.ncnn.tar", "--pipeline", EXAMPLES / "digits_pipeline.py",
                 "--samples", EXAMPLES / "digits_frames", "--results", tmp_path / "r", *QUICK)
    assert done.code == 0, done.stderr
    (document,) = _documents(tmp_path / "r")
    assert document["settings"]["runtime"] == "ncnn"
    assert document["pipeline"]["results"]["agree"] == 48 and document["pipeline"]["results"]["passed"]


def test_variants_with_bundles_among_them_run_each_on_its_own_runtime(bench, digits_bundles, tmp_path):
    done = bench("deploy", "digits.onnx", "--variants", "variants", "--dim", "batch=1", "--results", tmp_path / "r",
                 *QUICK, cwd=digits_bundles, timeout=600)
    assert done.code == 0, done.stdout + done.stderr
    ran = sorted((d["settings"].get("runtime") or "onnxruntime", (d["model"].get("provenance") or {}).get("variant"))
                 for d in _documents(tmp_path / "r"))
    assert ran == [("litert", "litert"), ("ncnn", "ncnn"), ("onnxruntime", None), ("openvino", "openvino")]
    assert not list(digits_bundles.glob("variants/*.tar.d"))  # unpacked in the cache, by content
