"""`bench diverge`: where a variant parts from its parent, on the board's runtime, and the fewest nodes to keep in
float. A model whose INT8 loss has one known cause (tests/models/make_models.outlier_mlp: layer 5's range is
calibrated too low), run for real: onnxruntime's quantizer, the agent on `local` and on the emulated aarch64 board
over SSH, OpenVINO and ncnn bundles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest

from tests.conftest import assert_one_line_error
from tests.models.make_models import outlier_mlp, outlier_data

KNOWN_LAYER = "layer5/MatMul"


@pytest.fixture(scope="module")
def outlier(tmp_path_factory) -> dict:
    from edgebench.stages.convert import convert

    folder = tmp_path_factory.mktemp("outlier")
    onnx.save(outlier_mlp(), str(folder / "mlp.onnx"))
    calibration, inputs = outlier_data(folder)
    made = convert(folder / "mlp.onnx", ["int8-static", "fp16"], folder / "variants", calibration=calibration)
    assert all(v.ok for v in made), [v.error for v in made]
    return {"folder": folder, "parent": folder / "mlp.onnx", "int8": folder / "variants" / "mlp.int8-static.onnx",
            "fp16": folder / "variants" / "mlp.fp16.onnx", "inputs": inputs, "calibration": calibration}


def _diverge_budget(bench, outlier, tmp_path, *target_args) -> dict:
    out = tmp_path / "variants"
    done = bench("diverge", outlier["int8"], "--inputs", outlier["inputs"], "--budget", "cosine=0.999",
                 "--results", tmp_path / "results", "-o", out, "--html", tmp_path / "diverge.html", "--json",
                 *target_args, timeout=900)
    assert done.code == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    # The known layer is named first: the first divergent tensor comes right after it, nothing before it diverges.
    first = document["first_divergent"]
    assert first["tensor"] == "r5" and first["nodes"][0] == KNOWN_LAYER, first
    assert first["cosine"] < 0.99 and first["snr_db"] < 20
    assert all(not t["below"] for t in document["tensors"] if t["index"] < first["index"])
    assert document["worst"][0]["nodes"][0] == KNOWN_LAYER
    # Tensors through the quantizer's Q/DQ pairs matched; the ones it folded away named with the reason.
    assert {t["variant_tensor"] for t in document["tensors"]} >= {"r5_DequantizeLinear_Output", "logits"}
    assert {u["tensor"] for u in document["unmatched"]} == {f"h{i}" for i in range(6)}
    # Bisection: few board runs for the search itself.
    matched = document["matched"]
    search_runs = 1 + len([t for t in document["tensors"] if not t["tensor"] == "logits"])
    assert search_runs <= 2 * math.log2(matched) + 3, (search_runs, matched)
    # The proposal: the known layer and at most two others, and the budget recovered on the board.
    budget = document["budget"]
    assert budget["met"] and not budget["met_before"]
    assert KNOWN_LAYER in budget["kept"] and len(budget["kept"]) <= 3, budget["kept"]
    before, after = budget["measured"]
    assert before["cosine"] < 0.95 and after["cosine"] >= 0.999, budget["measured"]
    assert before["p50_ms"] > 0 and after["p50_ms"] > 0
    # The new variant: written with provenance naming the nodes kept in float; both runs are ordinary results.
    variant = Path(budget["variant"])
    assert variant.parent == out and variant.name == f"mlp.int8-static.float{len(budget['kept'])}.onnx"
    provenance = json.loads(variant.with_name(variant.name + ".edgebench.json").read_text())
    assert provenance["settings"]["nodes_to_exclude"] == budget["kept"]
    assert provenance["parent"]["sha256"] == document["parent"]["sha256"]
    compared = bench("compare", tmp_path / "results", "--json")
    assert compared.code == 0, compared.stderr
    assert len(json.loads(compared.stdout)) == 2
    page = (tmp_path / "diverge.html").read_text()
    assert "data:image/png;base64," in page and "first divergence: r5" in page
    return document


def test_the_clipped_layer_is_named_and_keeping_it_in_float_recovers_the_budget_on_local(bench, outlier, tmp_path):
    document = _diverge_budget(bench, outlier, tmp_path)
    assert document["target"] == "local" and document["runtime"] == "onnxruntime"
    assert document["cut"] == "the variant's own graph cut"


def test_the_same_answer_on_the_emulated_aarch64_board_over_ssh(bench, outlier, tmp_path, arm64_board, inventory):
    document = _diverge_budget(bench, outlier, tmp_path, "--target", "pi4emu", "--inventory", inventory(arm64_board))
    assert document["target"] == "pi4emu"
    for line in (tmp_path / "results").glob("*.json"):
        assert json.loads(line.read_text())["target"]["info"]["machine"]["arch"] == "aarch64"


def test_the_terminal_report_reads_in_graph_order_and_the_budget_reproduces_with_convert(bench, outlier, tmp_path):
    done = bench("diverge", outlier["int8"], "--inputs", outlier["inputs"])
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("mlp.int8-static.onnx (int8-static of mlp.onnx) on local, onnxruntime")
    assert any(line.startswith("first divergence: r5, after layer5/MatMul, layer5/Relu") for line in lines), done.stdout
    indices = [int(line.split()[0]) for line in lines if line[:1].isdigit() and "  " in line][:-1]
    assert indices == sorted(indices)
    made = bench("convert", outlier["parent"], "--to", "int8-static", "--calibration", outlier["calibration"],
                 "--keep-float", "layer5/MatMul,layer5/Relu,head/MatMul", "-o", tmp_path / "v", "--json")
    assert made.code == 0, made.stderr
    (variant,) = json.loads(made.stdout)
    assert variant["provenance"]["settings"]["nodes_to_exclude"] == ["layer5/MatMul", "layer5/Relu", "head/MatMul"]
    assert variant["provenance"]["parity"]["passed"]


def test_an_fp16_variant_shows_no_divergence_in_one_board_run(outlier):
    import edgebench.api as eb

    result = eb.diverge(outlier["fp16"], inputs=outlier["inputs"])
    assert result.first is None and result.document["board_runs"] == 1
    table = result.table
    assert list(table["tensor"]) == ["logits"] and table["cosine"].iloc[0] > 0.9999
    assert "no divergence" in repr(result)


def test_every_tensor_of_an_openvino_bundle_holds_when_each_cut_is_converted(outlier, tmp_path):
    import edgebench.api as eb
    from edgebench.stages.convert import convert

    (bundle,) = convert(outlier["parent"], ["openvino"], tmp_path)
    assert bundle.ok, bundle.error
    result = eb.diverge(bundle.path, inputs=outlier["inputs"], method="every")
    document = result.document
    assert document["runtime"] == "openvino" and document["cut"] == "the parent cut and each cut converted to openvino"
    assert result.first is None and not document["unmatched"]
    assert len(document["tensors"]) == document["matched"] == 13 and document["board_runs"] == 13
    assert all(t["cosine"] > 0.9999 and t["snr_db"] > 60 for t in document["tensors"])


def test_an_ncnn_bundle_holds_one_sample_at_a_time(outlier, tmp_path):
    import edgebench.api as eb
    from edgebench.stages.convert import convert

    (bundle,) = convert(outlier["parent"], ["ncnn"], tmp_path)
    assert bundle.ok, bundle.error
    result = eb.diverge(bundle.path, inputs=outlier["inputs"], min_snr=40)
    assert result.document["runtime"] == "ncnn" and result.first is None
    assert result.document["inputs"]["batches"] == 256 and result.document["board_runs"] == 1


def test_all_outputs_measures_every_tensor_in_one_run(outlier):
    import edgebench.api as eb

    result = eb.diverge(outlier["int8"], inputs=outlier["inputs"], method="all-outputs")
    document = result.document
    assert document["board_runs"] == 1 and len(document["tensors"]) == document["matched"] == 7
    assert result.first["tensor"] == "r5"


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_one_line_and_nothing_is_written(bench, outlier, tmp_path):
    import shutil

    orphan = tmp_path / "orphan.onnx"
    shutil.copy(outlier["int8"], orphan)  # no provenance beside it
    results = tmp_path / "results"
    cases = [
        (("diverge", orphan), "has no provenance naming its parent"),
        (("diverge", orphan, "--parent", _unrelated(tmp_path)), "no tensor of unrelated.onnx matches"),
        (("diverge", outlier["fp16"], "--budget", "cosine=0.999"), "--budget keeps nodes of an INT8 variant in float"),
        (("diverge", outlier["int8"], "--budget", "accuracy=1"), "is not a budget"),
        (("diverge", outlier["int8"], "--budget", "cosine=2"), "a cosine budget is a number in (0, 1]"),
        (("diverge", outlier["int8"], "--method", "guess"), "--method 'guess' is not one of"),
        (("diverge", outlier["int8"], "--min-cosine", "1.5"), "--min-cosine must be between -1 and 1"),
        (("diverge", outlier["int8"], "--inputs", outlier["inputs"], "--dataset", outlier["inputs"]), "both give the inputs"),
        (("diverge", tmp_path / "missing.onnx"), "model file not found"),
        (("diverge", _litert_bundle(tmp_path)), "is a LiteRT model"),
        (("diverge", outlier["int8"], "--runtime", "ncnn"), "--runtime ncnn: a int8-static variant runs on onnxruntime"),
        (("diverge", outlier["int8"], "--parent", _other_parent(tmp_path)), "other.onnx is not the parent of mlp.int8-static"),
        (("diverge", _malformed(outlier, tmp_path)), "the provenance beside mlp.int8-static.onnx is malformed"),
        (("diverge", outlier["int8"], "--dim", "batch=-1"), "--dim batch=-1: a size must be a positive integer"),
        (("diverge", outlier["int8"], "--inputs", _nan_inputs(tmp_path)), "input 'x' holds NaN or infinity"),
        (("diverge", outlier["int8"], "--inputs", outlier["inputs"], "--budget", "cosine=0.999", "-o", orphan),
         "cannot use --output-dir"),
        (("diverge", outlier["int8"], "--inputs", outlier["inputs"], "--budget", "cosine=0.999", "--html", tmp_path),
         "it is a folder, not a file"),
    ]
    for args, fragment in cases:
        done = bench(*args, "--results", results)
        assert_one_line_error(done, fragment)
        assert done.code == 2, (args, done.stderr)
    assert not results.exists()
    assert sorted(p.name for p in outlier["int8"].parent.iterdir()) == sorted(
        ["mlp.int8-static.onnx", "mlp.int8-static.onnx.edgebench.json", "mlp.fp16.onnx", "mlp.fp16.onnx.edgebench.json"])


def _other_parent(folder: Path) -> Path:
    """A model with the same tensor names as the parent (and other weights): not the one the variant came from."""
    onnx.save(outlier_mlp(seed=3), str(folder / "other.onnx"))
    return folder / "other.onnx"


def _malformed(outlier: dict, folder: Path) -> Path:
    import shutil

    (folder / "edited").mkdir()
    copy = folder / "edited" / outlier["int8"].name
    shutil.copy(outlier["int8"], copy)
    provenance = json.loads(outlier["int8"].with_name(outlier["int8"].name + ".edgebench.json").read_text())
    del provenance["parent"]["path"]
    copy.with_name(copy.name + ".edgebench.json").write_text(json.dumps(provenance))
    return copy


def _nan_inputs(folder: Path) -> Path:
    import numpy as np

    x = np.ones((4, 16), dtype=np.float32)
    x[1, 3] = np.nan
    np.savez(folder / "nan.npz", x=x)
    return folder / "nan.npz"


def test_names_from_files_never_reach_the_terminal_raw(bench, outlier, tmp_path):
    import shutil

    hostile = tmp_path / "evil\x1b]0;PWNED\x07\x1b[31mred.onnx"
    shutil.copy(outlier["int8"], hostile)
    shutil.copy(outlier["int8"].with_name(outlier["int8"].name + ".edgebench.json"),
                hostile.with_name(hostile.name + ".edgebench.json"))
    done = bench("diverge", hostile, "--inputs", outlier["inputs"], "--budget", "cosine=0.5", "--results", tmp_path / "r")
    assert done.code == 0, done.stderr
    assert "evilred.onnx already meets" in done.stderr and done.stdout.startswith("evilred.onnx (int8-static")
    assert "\x1b" not in done.stdout + done.stderr and "\x07" not in done.stdout + done.stderr


def _unrelated(folder: Path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "unrelated",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "unrelated.onnx"))
    return folder / "unrelated.onnx"


def _litert_bundle(folder: Path) -> Path:
    from edgebench.models.runtimes import write_bundle

    (folder / "model.tflite").write_bytes(b"TFL3")
    entry = [{"name": "x", "dtype": "float32", "shape": [1, 16], "blob": "0"}]
    write_bundle(folder / "mlp.litert.tar", "litert", {"tflite": folder / "model.tflite"}, entry, entry, folder)
    return folder / "mlp.litert.tar"


# ------------------------------------------------------------------------------------------ the parts
def test_a_cut_keeps_only_what_its_output_needs_and_matches_through_qdq(outlier):
    from edgebench.stages.diverge import cut_model, keep_in_float, match_tensors, parent_tensors

    parent = onnx.load(str(outlier["parent"]))
    variant = onnx.load(str(outlier["int8"]))
    cut = cut_model(variant, ["r2_DequantizeLinear_Output"])
    assert [o.name for o in cut.graph.output] == ["r2_DequantizeLinear_Output"]
    assert not any(n.name.startswith(("layer3", "layer4", "layer5", "head")) for n in cut.graph.node)
    assert [i.name for i in cut.graph.input] == ["x"]
    tensors = match_tensors(parent_tensors(parent), variant, cut_in_parent=False)
    assert [t.name for t in tensors if t.variant_name] == ["r0", "r1", "r2", "r3", "r4", "r5", "logits"]
    assert keep_in_float(parent, "r5") == ["layer5/Relu", "layer5/MatMul", "head/MatMul"]
    assert keep_in_float(parent, "h2") == ["layer2/MatMul", "layer2/Relu"]


def test_signal_to_noise_is_in_db_and_capped_for_an_exact_match():
    import numpy as np

    from edgebench.stages.diverge import SNR_CAP_DB, signal_to_noise_db

    reference = np.ones(100)
    assert signal_to_noise_db(reference, reference) == SNR_CAP_DB
    assert signal_to_noise_db(reference, reference * 1.1) == pytest.approx(20.0)
    assert signal_to_noise_db(reference, np.full(100, np.nan)) == 0.0
