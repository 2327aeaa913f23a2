"""A model's free dimensions get their sizes from what the user gave, else 1 with a note; never by guessing
silently, and a --dim that names nothing is an error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import EXAMPLES, FAST_RUN, assert_one_line_error

DIGITS = EXAMPLES / "digits.onnx"


def results_in(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def test_an_unsized_free_dim_is_1_with_a_note_and_recorded(bench, tmp_path):
    done = bench("deploy", DIGITS, "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    assert "free dimension(s) batch set to 1" in done.stderr
    (document,) = results_in(tmp_path / "r")
    assert document["settings"]["dims"] == {"batch": 1} and document["measurements"]["inputs"][0]["shape"][0] == 1
    assert any("set to 1" in w for w in document["validity"]["warnings"])


@pytest.mark.bad_input
def test_strict_dims_and_unknown_dims_are_refused(bench, tmp_path):
    assert_one_line_error(bench("deploy", DIGITS, "--strict-dims", "--results", tmp_path / "r", *FAST_RUN),
                          "free dimension(s) batch have no size", "--dim batch=N")
    assert_one_line_error(bench("deploy", DIGITS, "--dim", "nosuch=3", "--results", tmp_path / "r", *FAST_RUN),
                          "--dim nosuch", "free dimensions: batch, image:0")
    assert not (tmp_path / "r").exists()


def test_batch_and_dim_batch_are_the_same_run(bench, tmp_path):
    assert bench("deploy", DIGITS, "--batch", "1", "--results", tmp_path / "r", *FAST_RUN).code == 0
    assert bench("deploy", DIGITS, "--dim", "batch=1", "--results", tmp_path / "r", *FAST_RUN).code == 0
    first, second = results_in(tmp_path / "r")
    assert first["settings"] == second["settings"]
    rows = json.loads(bench("compare", tmp_path / "r", "-f", "json").stdout)
    assert len(rows) == 1 and rows[0]["runs"] == 2


def test_a_dataset_sizes_every_free_dim_but_the_batch(bench, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "features"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "features"])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "relu.onnx"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.random((6, 7), dtype=np.float32), labels=rng.integers(0, 7, 6))
    done = bench("deploy", tmp_path / "relu.onnx", "--dataset", tmp_path / "data.npz", "--results", tmp_path / "r",
                 *FAST_RUN)
    assert done.code == 0, done.stderr
    (document,) = results_in(tmp_path / "r")
    assert document["settings"]["dims"] == {"batch": 1, "features": 7}
    assert document["measurements"]["inputs"][0]["shape"] == [1, 7]


@pytest.mark.bad_input
def test_given_inputs_fix_their_dims_and_a_conflicting_dim_is_refused(bench, tmp_path):
    np.savez(tmp_path / "five.npz", image=np.zeros((5, 1, 8, 8), np.float32))
    done = bench("deploy", DIGITS, "--inputs", tmp_path / "five.npz", "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    (document,) = results_in(tmp_path / "r")
    assert document["settings"]["dims"] == {"batch": 5}  # the size the run really had: it groups apart from batch 1
    assert_one_line_error(bench("deploy", DIGITS, "--inputs", tmp_path / "five.npz", "--dim", "batch=3",
                                "--results", tmp_path / "r2", *FAST_RUN), "--dim batch=3", "have 5 on that axis")
    # Several models: each records only the dims that apply to it.
    done = bench("deploy", EXAMPLES / "cnn.onnx", DIGITS, "--dim", "batch=2", "--results", tmp_path / "r3", *FAST_RUN)
    assert done.code == 0, done.stderr
    dims = {d["model"]["name"]: d["settings"]["dims"] for d in results_in(tmp_path / "r3")}
    assert dims == {"cnn": {}, "digits": {"batch": 2}}


@pytest.mark.bad_input
def test_validate_checks_dims_like_deploy(bench):
    assert_one_line_error(bench("validate", DIGITS, "--dim", "nosuch=4"), "--dim nosuch", "free dimensions: batch")
    assert_one_line_error(bench("validate", DIGITS, "--dim", "batch=0"), "positive integer")


@pytest.mark.bad_input
def test_inputs_and_test_data_together_are_refused(bench, tmp_path):
    from onnx import numpy_helper

    (tmp_path / "td").mkdir()
    (tmp_path / "td" / "input_0.pb").write_bytes(
        numpy_helper.from_array(np.zeros((1, 1, 8, 8), np.float32), "image").SerializeToString())
    np.savez(tmp_path / "in.npz", image=np.zeros((3, 1, 8, 8), np.float32))
    assert_one_line_error(bench("deploy", DIGITS, "--inputs", tmp_path / "in.npz", "--test-data", tmp_path / "td",
                                "--results", tmp_path / "r", *FAST_RUN), "--inputs and --test-data")


def test_one_signature_read_from_a_session_a_model_block_and_the_graph(tmp_path):
    """A model's inputs read three ways (the session's, the result's model block, the ONNX graph a plan reads) are
    one Signature, with the same free dimensions and the same keys --dim takes."""
    import onnxruntime as ort

    from edgebench.agentlib import Input, Signature, is_free, session_signature
    from edgebench.models.modelinfo import graph_inputs, inspect_model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, None])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g", [x, helper.make_tensor_value_info(
        "w", TensorProto.FLOAT, [1])], [y], initializer=[weight])  # an initializer listed as an input, as old exporters do
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    from_session = session_signature(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    from_block = Signature.from_block(inspect_model(path)["inputs"])
    from_graph = Signature.from_block(graph_inputs(onnx.load(str(path)).graph))
    assert from_session.names == from_block.names == from_graph.names == ["x"]
    assert isinstance(from_session[0], Input) and from_session[0].free_axes == from_block[0].free_axes == [0, 2]
    for signature in (from_session, from_block, from_graph):
        assert signature.accepted_dim_keys() == {"batch", "x:0", "x:2"}
        assert signature.free_dim_keys({"batch": 4}) == ["x:2"] and signature.free_dim_keys({}, batch=2) == ["x:2"]
        name, _, shape = signature[0]  # still (name, type, shape) to every reader that unpacks it
        assert name == "x" and shape[1] == 3 and not signature[0].static
    assert [is_free(d) for d in ("n", None, -1, 0, 7, True)] == [True, True, True, False, False, True]
