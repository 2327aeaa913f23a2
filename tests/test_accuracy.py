"""Accuracy on the board: reference outputs, metrics that catch a board computing something else, labelled
data (the trained digits model) on `local` and over SSH, and datasets that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgebench.stages import accuracy
from edgebench.results import files as results
from edgebench.stages.deploy import AccuracyOptions, RunSettings, deploy
from edgebench.boards.targets import Target, load_inventory, resolve_target
from tests.conftest import EXAMPLES, FAST_REQUEST, FAST_RUN, assert_one_line_error

DIGITS = EXAMPLES / "digits.onnx"
DIGITS_DATA = EXAMPLES / "digits_test.npz"


def _only(folder: Path) -> dict:
    (path,) = folder.glob("*.json")
    return results.load_result(path)


def perturbed(source: Path, target: Path, scale: float = 1.02) -> Path:
    """The same model with its first float weight scaled: what a broken conversion or board would compute."""
    model = onnx.load(str(source))
    weight = next(i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) > 1)
    array = onnx.numpy_helper.to_array(weight) * np.float32(scale)
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(target))
    return target


def test_the_same_model_matches_itself(bench, tmp_path):
    done = bench("deploy", EXAMPLES / "setnet.onnx", "--accuracy", "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    block = _only(tmp_path / "r")["accuracy"]
    assert block["passed"] and block["source"] == "generated" and block["samples"] == 8
    assert block["reference"] == "onnxruntime CPU on this host, setnet.onnx"
    (output,) = block["outputs"]
    assert output["name"] == "scores" and output["max_abs"] == 0.0 and output["top1_agreement_pct"] == 100.0
    assert "accuracy setnet: PASS" in done.stdout


def test_a_board_that_computes_something_else_is_caught(bench, tmp_path):
    wrong = perturbed(EXAMPLES / "setnet.onnx", tmp_path / "setnet_wrong.onnx")
    done = bench("deploy", wrong, "--reference", EXAMPLES / "setnet.onnx", "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 1
    assert_one_line_error(done, "accuracy check failed for setnet_wrong")
    block = _only(tmp_path / "r")["accuracy"]
    assert not block["passed"]
    (output,) = block["outputs"]
    assert output["max_abs"] > 1e-3 and output["out_of_tolerance_pct"] > 0 and output["cosine"] < 1.0
    assert output["needed_atol"] >= output["max_abs"] - 1e-3 * 10  # the text says what would have passed
    assert "accuracy setnet_wrong: FAIL" in done.stdout and "would pass with atol" in done.stdout
    # A loose enough tolerance lets the same difference pass, per output.
    done = bench("deploy", wrong, "--reference", EXAMPLES / "setnet.onnx", "--atol", f"scores={output['needed_atol'] * 2}",
                 "--results", tmp_path / "r2", *FAST_RUN)
    assert done.code == 0, done.stdout + done.stderr


def test_float16_weights_show_small_differences(tmp_path):
    """Weights rounded through float16: the metrics see a small, nonzero difference the default tolerance flags."""
    model = onnx.load(str(EXAMPLES / "cnn.onnx"))
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            array = onnx.numpy_helper.to_array(init).astype(np.float16).astype(np.float32)
            init.CopyFrom(onnx.numpy_helper.from_array(array, init.name))
    onnx.save(model, str(tmp_path / "cnn16.onnx"))
    settings = RunSettings(options=dict(FAST_REQUEST),
                           accuracy=AccuracyOptions(reference=str(EXAMPLES / "cnn.onnx"), samples=4))
    report = deploy([tmp_path / "cnn16.onnx"], Target("local"), settings, tmp_path / "r")
    (output,) = report.outcomes[0].document["accuracy"]["outputs"]
    assert 0 < output["max_abs"] < 0.05 and output["cosine"] > 0.999 and output["top1_agreement_pct"] == 100.0


def test_digits_accuracy_on_local_equals_the_host_to_the_sample(bench, tmp_path):
    done = bench("deploy", DIGITS, "--dim", "batch=1", "--dataset", DIGITS_DATA, "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    block = _only(tmp_path / "r")["accuracy"]
    board, reference = block["labels"]["board"], block["labels"]["reference"]
    assert board == reference
    assert board["count"] == 360 and board["top1_pct"] > 95.0
    assert block["outputs"][0]["top1_agreement_pct"] == 100.0 and block["outputs"][0]["max_abs"] == 0.0
    assert block["batches"] == 12  # 360 samples in batches of 32 (the batch dim is free)
    assert f"({board['top1_correct']}/360) on the board" in done.stdout


def test_digits_accuracy_over_ssh_equals_the_host(tmp_path, ssh_board, inventory, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    target = resolve_target("sshroot", load_inventory(inventory(ssh_board)))
    settings = RunSettings(options={**FAST_REQUEST, "dims": {"batch": 1}}, accuracy=AccuracyOptions(dataset=DIGITS_DATA))
    block = deploy([DIGITS], target, settings, tmp_path / "r").outcomes[0].document["accuracy"]
    assert block["compared_on"] == "host"
    assert block["labels"]["board"] == block["labels"]["reference"] and block["labels"]["board"]["count"] == 360
    # The same with the comparison done on the board (what happens when outputs would be large).
    monkeypatch.setattr(accuracy, "DOWNLOAD_LIMIT_BYTES", 0)
    on_board = deploy([DIGITS], target, settings, tmp_path / "r").outcomes[0].document["accuracy"]
    assert on_board["compared_on"] == "board"
    assert on_board["labels"] == block["labels"]
    assert on_board["outputs"][0]["max_abs"] == block["outputs"][0]["max_abs"]


def test_test_data_set_and_pytorch_references(bench, tmp_path):
    from tests.test_export_validate import MLP

    out = tmp_path / "mlp.onnx"
    assert bench("export", MLP, "-o", out, "--dynamic", "x:0=batch", "--no-validate", "--save-test-data", tmp_path).code == 0
    done = bench("deploy", out, "--dim", "batch=4", "--test-data", tmp_path / "test_data_set_0",
                 "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stdout + done.stderr
    block = _only(tmp_path / "r")["accuracy"]
    assert block["source"] == "test data set" and block["passed"]
    done = bench("deploy", out, "--dim", "batch=4", "--accuracy", "--reference", MLP, "--results", tmp_path / "r2", *FAST_RUN)
    assert done.code == 0, done.stdout + done.stderr
    assert _only(tmp_path / "r2")["accuracy"]["reference"].startswith("PyTorch ")


def _dataset(folder: Path, **arrays) -> Path:
    path = folder / "data.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.bad_input
@pytest.mark.parametrize("arrays, fragment", [
    (dict(image=np.zeros((4, 1, 8, 8), np.float32)), "has no 'labels' array"),
    (dict(image=np.zeros((4, 1, 8, 7), np.float32), labels=np.zeros(4, np.int64)), "axis 3 is 7 but the model fixes it at 8"),
    (dict(image=np.zeros((4, 1, 8, 8), np.float64), labels=np.zeros(4, np.int64)), "'image' is float64 but the model takes float32"),
    (dict(image=np.zeros((4, 8, 8), np.float32), labels=np.zeros(4, np.int64)), "takes rank 4"),
    (dict(image=np.zeros((4, 1, 8, 8), np.float32), labels=np.zeros(3, np.int64)), "4 samples of 'image' but 3 labels"),
    (dict(image=np.zeros((4, 1, 8, 8), np.float32), labels=np.zeros(4, np.float32)), "labels must be a 1-D integer array"),
    (dict(pixels=np.zeros((4, 1, 8, 8), np.float32), other=np.zeros(4), labels=np.zeros(4, np.int64)), "lacks input(s) image"),
])
def test_datasets_that_do_not_fit_are_one_line(bench, tmp_path, arrays, fragment):
    done = bench("deploy", DIGITS, "--dim", "batch=1", "--dataset", _dataset(tmp_path, **arrays), "--results", tmp_path / "r")
    assert done.code == 2
    assert_one_line_error(done, fragment)
    assert not (tmp_path / "r").exists()


def test_compare_shows_accuracy_next_to_latency(bench, tmp_path):
    assert bench("deploy", DIGITS, "--dim", "batch=1", "--dataset", DIGITS_DATA, "--results", tmp_path / "r", *FAST_RUN).code == 0
    done = bench("compare", tmp_path / "r", "--format", "json")
    (row,) = json.loads(done.stdout)
    assert row["accuracy"] == "PASS" and row["top1_pct"] > 95.0 and row["p50_ms"] > 0
