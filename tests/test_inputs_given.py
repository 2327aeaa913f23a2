"""Inputs given are inputs used; generated inputs are ones the model accepts; onnxruntime's refusals are one line.

Each model is built with onnx.helper and goes through the real CLI (deploy on `local`, validate, convert).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import FAST_RUN, assert_one_line_error


def _save(path: Path, nodes, inputs, outputs, initializers=(), opset=17, ir=8) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.save(model, str(path))
    return path


def embedding(folder: Path, rows: int, batch="batch") -> Path:
    """y = table[ids]: an Embedding of `rows` rows; ids [batch, 5] int64."""
    table = numpy_helper.from_array(np.arange(rows * 4, dtype=np.float32).reshape(rows, 4), "table")
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [batch, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5, 4])
    return _save(folder / f"embedding{rows}.onnx", [helper.make_node("Gather", ["table", "ids"], ["y"], name="lookup")],
                 [ids], [y], [table])


def write_test_data(folder: Path, inputs: dict, outputs: dict) -> Path:
    folder.mkdir(parents=True)
    for position, (name, array) in enumerate(inputs.items()):
        (folder / f"input_{position}.pb").write_bytes(numpy_helper.from_array(array, name).SerializeToString())
    for position, (name, array) in enumerate(outputs.items()):
        (folder / f"output_{position}.pb").write_bytes(numpy_helper.from_array(array, name).SerializeToString())
    return folder


def only_result(folder: Path) -> dict:
    (path,) = folder.glob("*.json")
    return json.loads(path.read_text())


def test_generated_indices_stay_within_the_table(bench, tmp_path):
    model = embedding(tmp_path, rows=3)  # the default [0, 10) would index past row 2: INVALID_ARGUMENT
    done = bench("deploy", model, "--dim", "batch=2", "--accuracy", "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    document = only_result(tmp_path / "r")
    (ids,) = document["measurements"]["inputs"]
    assert ids["source"] == "generated" and ids["range"] == [0, 3]
    assert document["accuracy"]["passed"] is True
    # 8 generated samples of batch 2: all 16 rows are compared, not the first 8
    assert document["accuracy"]["outputs"][0]["expected_shape"] == [16, 5, 4]
    assert bench("validate", model, "--dim", "batch=2").code == 0


def test_test_data_feeds_the_timing_pass_and_fixes_free_dims(bench, tmp_path):
    model = embedding(tmp_path, rows=10)
    ids = np.array([[9, 0, 3, 7, 1], [2, 2, 8, 5, 6]], dtype=np.int64)
    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    data = write_test_data(tmp_path / "test_data_set_0", {"ids": ids}, {"y": table[ids]})
    # No --dim: the test data's [2, 5] fixes the free batch dimension for every pass.
    done = bench("deploy", model, "--test-data", data, "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    document = only_result(tmp_path / "r")
    (fed,) = document["measurements"]["inputs"]
    assert fed["source"] == "file" and fed["shape"] == [2, 5]
    given = document["settings"]["inputs_file"]
    assert given["source"] == "test data set" and given["path"] == str(data) and len(given["sha256"]) == 64
    assert document["accuracy"]["source"] == "test data set" and document["accuracy"]["passed"] is True


def test_an_inputs_file_feeds_timing_and_accuracy(bench, tmp_path):
    model = embedding(tmp_path, rows=10)
    np.savez(tmp_path / "in.npz", ids=np.array([[1, 2, 3, 4, 5]], dtype=np.int64))
    done = bench("deploy", model, "--inputs", tmp_path / "in.npz", "--accuracy", "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    document = only_result(tmp_path / "r")
    assert document["measurements"]["inputs"][0]["source"] == "file"
    assert document["measurements"]["inputs"][0]["shape"] == [1, 5]
    assert document["accuracy"]["source"] == "inputs file" and document["accuracy"]["samples"] == 1
    assert document["settings"]["inputs_file"]["source"] == "inputs file"


@pytest.mark.bad_input
@pytest.mark.parametrize("op", ["Expand", "Reshape"])
def test_a_shape_input_must_be_given_and_is_named_before_running(bench, tmp_path, op):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4] if op == "Expand" else [2, 6])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _save(tmp_path / f"{op.lower()}.onnx", [helper.make_node(op, ["x", "shape"], ["y"], name="e1")],
                  [x, shape], [y])
    done = bench("deploy", model, "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 2
    assert_one_line_error(done, "input 'shape' is the shape of", f"{op} 'e1'", "--value shape=")
    assert not (tmp_path / "r").exists()
    assert_one_line_error(bench("validate", model), f"{op} 'e1'", "--inputs")
    value = "3,4" if op == "Expand" else "3,4"
    done = bench("deploy", model, "--value", f"shape={value}", "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    document = only_result(tmp_path / "r")
    assert document["measurements"]["outputs"][0]["shape"] == [3, 4]
    assert {"name": "shape", "shape": [2], "dtype": "int64", "source": "value"} in document["measurements"]["inputs"]


@pytest.mark.bad_input
def test_an_op_without_a_kernel_is_one_line_with_no_onnxruntime_log_noise(bench, tmp_path):
    import onnxruntime

    a = helper.make_tensor_value_info("a", TensorProto.DOUBLE, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2, 2])
    b = numpy_helper.from_array(np.ones((3, 2)), "b")
    model = _save(tmp_path / "gemm6.onnx", [helper.make_node("Gemm", ["a", "b"], ["y"], name="g")], [a], [y], [b],
                  opset=6, ir=3)
    done = bench("deploy", model, "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 2
    assert_one_line_error(done, "onnxruntime cannot load", f"onnxruntime {onnxruntime.__version__}", "Gemm",
                          "bench convert --to opset:N")
    assert "[E:onnxruntime" not in done.stderr and "\x1b[" not in done.stderr
    assert not (tmp_path / "r").exists()
    validated = bench("validate", model)
    assert validated.code == 1 and "FAIL onnxruntime load" in validated.stdout.replace("  ", " ").replace("  ", " ")
    assert "[E:onnxruntime" not in validated.stderr + validated.stdout
    verbose = bench("deploy", model, "--verbose", "--results", tmp_path / "r", *FAST_RUN)
    assert verbose.code == 2 and "onnxruntime" in verbose.stderr


def test_a_string_model_runs_from_given_data(bench, tmp_path):
    text = helper.make_tensor_value_info("text", TensorProto.STRING, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, [1, 3])
    model = _save(tmp_path / "normalize.onnx",
                  [helper.make_node("StringNormalizer", ["text"], ["y"], case_change_action="LOWER", locale="C")],
                  [text], [y])
    words = np.array([["Edge", "BENCH", "runs"]], dtype=object)
    data = write_test_data(tmp_path / "test_data_set_0", {"text": words},
                         {"y": np.array([["edge", "bench", "runs"]], dtype=object)})
    done = bench("deploy", model, "--test-data", data, "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    document = only_result(tmp_path / "r")
    assert document["status"] == "ok" and document["measurements"]["inputs"][0]["source"] == "file"
    assert document["accuracy"]["passed"] is True
    wrong = write_test_data(tmp_path / "wrong" / "test_data_set_0", {"text": words},
                            {"y": np.array([["edge", "BENCH", "runs"]], dtype=object)})
    failing = bench("deploy", model, "--test-data", wrong, "--results", tmp_path / "r3", *FAST_RUN)
    assert failing.code == 1 and "33.33% of the strings differ" in failing.stdout  # never a silent PASS
    np.savez(tmp_path / "words.npz", text=np.array([["A", "b", "C"]]))
    assert bench("validate", model, "--inputs", tmp_path / "words.npz").code == 0
    # Without data: one line saying why text cannot be generated.
    assert_one_line_error(bench("deploy", model, "--results", tmp_path / "r2", *FAST_RUN), "'text'", "string tensor")
