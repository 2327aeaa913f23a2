"""Boards as they really are: an emulated aarch64 Raspberry Pi 4 and an old-stack (Python 3.8, onnxruntime
1.19) board, both reached over a real sshd, running the same agent and the same deploys as any board.

Emulated timings are not board timings: these tests check correctness of the aarch64 and old-stack paths."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from edgebench.results import files as results
from tests.conftest import EXAMPLES, OLD_STACK, assert_one_line_error

QUICK = ["--warmup", "1", "--min-iterations", "3", "--min-seconds", "0.05", "--max-seconds", "5"]


def _documents(folder: Path) -> dict:
    return {d["model"]["name"]: d for d in (results.load_result(p) for p in folder.glob("*.json"))}


def test_doctor_reports_the_emulated_pi(bench, arm64_board, inventory):
    done = bench("doctor", "--target", "pi4emu", "--inventory", inventory(arm64_board), timeout=600)
    assert done.code == 0, done.stdout + done.stderr
    assert "aarch64, Cortex-A72 (BCM2835)" in done.stdout and "Raspberry Pi 4 Model B" in done.stdout
    import onnxruntime

    assert f"onnxruntime  {onnxruntime.__version__}" in done.stdout


@pytest.mark.parametrize("board_fixture, name", [("arm64_board", "pi4emu"), ("old_board", "oldstack")])
def test_examples_and_digits_deploy_and_match_the_host(bench, tmp_path, inventory, request, board_fixture, name):
    board = request.getfixturevalue(board_fixture)
    inv = inventory(board)
    done = bench("deploy", EXAMPLES / "cnn.onnx", EXAMPLES / "setnet.onnx", "--target", name, "--inventory", inv,
                 "--accuracy", "--accuracy-samples", "4", "--results", tmp_path / "r", *QUICK, timeout=900)
    assert done.code == 0, done.stdout + done.stderr
    done = bench("deploy", EXAMPLES / "digits.onnx", "--target", name, "--inventory", inv, "--dim", "batch=1",
                 "--dataset", EXAMPLES / "digits_test.npz", "--results", tmp_path / "r", *QUICK, timeout=900)
    assert done.code == 0, done.stdout + done.stderr
    documents = _documents(tmp_path / "r")
    assert set(documents) == {"cnn", "setnet", "digits"}
    for document in documents.values():
        assert document["status"] == "ok" and document["accuracy"]["passed"], document["accuracy"]
        assert document["accuracy"]["outputs"][0]["cosine"] > 0.99999
    labels = documents["digits"]["accuracy"]["labels"]
    assert labels["board"] == labels["reference"] and labels["board"]["top1_correct"] == 358
    info = documents["digits"]["target"]["info"]
    if name == "pi4emu":
        assert info["machine"]["arch"] == "aarch64" and info["python"]["version"].startswith("3.11")
    else:
        assert info["python"]["version"].startswith("3.8.") and info["onnxruntime_version"] == OLD_STACK["onnxruntime"]
        assert info["numpy_version"] == OLD_STACK["numpy"]


def test_a_model_too_new_for_the_old_board_then_its_opset_variant(bench, tmp_path, old_board, inventory):
    from onnx import version_converter

    too_new = version_converter.convert_version(onnx.load(str(EXAMPLES / "digits.onnx")), 23)
    too_new.ir_version = 11
    parent = tmp_path / "digits23.onnx"
    onnx.save(too_new, str(parent))
    work_dir = tmp_path / "old-cache"
    inv = inventory(old_board, oldstack={"work_dir": str(work_dir)})
    done = bench("deploy", parent, "--target", "oldstack", "--inventory", inv, "--dim", "batch=1",
                 "--results", tmp_path / "r", *QUICK, timeout=600)
    assert done.code == 2
    assert_one_line_error(done, "needs a newer onnxruntime than the board's 1.19.2", "opset 23, IR version 11",
                          "--to opset:21")
    assert not (work_dir / "files").exists()  # refused before upload
    assert bench("convert", parent, "--to", "opset:17", "-o", tmp_path / "v").code == 0
    done = bench("deploy", parent, "--variants", tmp_path / "v", "--target", "oldstack", "--inventory", inv,
                 "--dim", "batch=1", "--results", tmp_path / "r", *QUICK, timeout=600)
    # The parent is still refused; run the variant on its own.
    assert done.code == 2
    variant = tmp_path / "v" / "digits23.opset17.onnx"
    done = bench("deploy", variant, "--target", "oldstack", "--inventory", inv, "--dim", "batch=1", "--accuracy",
                 "--results", tmp_path / "r", *QUICK, timeout=600)
    assert done.code == 0, done.stdout + done.stderr
    (document,) = _documents(tmp_path / "r").values()
    assert document["model"]["provenance"]["variant"] == "opset:17"
    assert document["accuracy"]["passed"] and document["target"]["info"]["onnxruntime_version"] == "1.19.2"
    assert document["accuracy"]["reference"].endswith("digits23.onnx")  # the parent, run on the host
