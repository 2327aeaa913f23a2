"""Tiny ONNX models for the tests, built with onnx.helper (no torch, milliseconds to build).

    python tests/models/make_models.py OUT_DIR
    python tests/models/make_models.py --outlier DIR   # outlier_mlp with its calibration and inputs

Every model is small enough that a run takes milliseconds; each one exercises one input feature.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8  # loadable by every onnxruntime the agent supports

# Every tensor type onnxruntime runs that numpy holds: name in the model file -> TensorProto type.
DTYPES = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "float64": TensorProto.DOUBLE,
    "int8": TensorProto.INT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "uint8": TensorProto.UINT8,
    "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32,
    "uint64": TensorProto.UINT64,
    "bool": TensorProto.BOOL,
}


def _model(nodes, inputs, outputs, initializers=(), name="tiny"):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgebench-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def identity(dtype: str, shape=(2, 3)):
    """y = x for one dtype."""
    x = helper.make_tensor_value_info("x", DTYPES[dtype], list(shape))
    y = helper.make_tensor_value_info("y", DTYPES[dtype], list(shape))
    return _model([helper.make_node("Identity", ["x"], ["y"])], [x], [y], name=f"identity_{dtype}")


def all_dtypes():
    """One input per dtype, each passed through: proves generation for every dtype in one run."""
    inputs, outputs, nodes = [], [], []
    for dtype, proto in DTYPES.items():
        inputs.append(helper.make_tensor_value_info(f"in_{dtype}", proto, [2, 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{dtype}", proto, [2, 3]))
        nodes.append(helper.make_node("Identity", [f"in_{dtype}"], [f"out_{dtype}"]))
    return _model(nodes, inputs, outputs, name="all_dtypes")


def scalar_input():
    """audio [1, n] scaled by a rank-0 int64 sample_rate: y = audio * float(sample_rate)."""
    audio = helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, "samples"])
    rate = helper.make_tensor_value_info("sample_rate", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "samples"])
    nodes = [
        helper.make_node("Cast", ["sample_rate"], ["rate_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["audio", "rate_f"], ["y"]),
    ]
    return _model(nodes, [audio, rate], [y], name="scalar_input")


def free_dims():
    """A named free dim ('batch') and an unnamed one: y = relu(x) with x [batch, ?, 4]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None, 4])
    return _model([helper.make_node("Relu", ["x"], ["y"])], [x], [y], name="free_dims")


def matmul(n: int = 64):
    """y = x @ W + b on [1, n]: a model with weights, still tiny."""
    import numpy as np

    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [n, n], rng.standard_normal((n, n)).astype("float32").ravel())
    b = helper.make_tensor("b", TensorProto.FLOAT, [n], rng.standard_normal(n).astype("float32"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])]
    return _model(nodes, [x], [y], [w, b], name="matmul")


MODELS = {
    "all_dtypes": all_dtypes,
    "scalar_input": scalar_input,
    "free_dims": free_dims,
    "matmul": matmul,
    "identity_float32": lambda: identity("float32"),
}


def outlier_mlp(depth: int = 6, bad: int = 5, width: int = 32, classes: int = 10, gain: float = 30.0, seed: int = 0):
    """A classifier whose INT8 loss has one known cause: `depth` MatMul+Relu layers, where channel 0 carries
    relu(x[0]) unchanged through every layer and layer `bad` amplifies it `gain` times. Calibrated on inputs whose
    x[0] is small (outlier_data), static quantization fixes that layer's range too low, and inputs with ordinary
    x[0] are clipped there: layer `bad` is where the variant parts from its parent, and nowhere before it."""
    import numpy as np
    from onnx import numpy_helper

    rng = np.random.default_rng(seed)
    nodes, weights, previous, features = [], [], "x", 16
    for layer in range(depth):
        w = (rng.standard_normal((features, width)) * np.sqrt(2.0 / features)).astype(np.float32)
        w[0, :], w[:, 0] = 0.0, 0.0
        w[0, 0] = gain if layer == bad else 1.0
        weights.append(numpy_helper.from_array(w, f"w{layer}"))
        nodes += [helper.make_node("MatMul", [previous, f"w{layer}"], [f"h{layer}"], name=f"layer{layer}/MatMul"),
                  helper.make_node("Relu", [f"h{layer}"], [f"r{layer}"], name=f"layer{layer}/Relu")]
        previous, features = f"r{layer}", width
    head = (rng.standard_normal((width, classes)) / np.sqrt(width)).astype(np.float32)
    weights.append(numpy_helper.from_array(head, "w_head"))
    nodes.append(helper.make_node("MatMul", [previous, "w_head"], ["logits"], name="head/MatMul"))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], weights,
                  name="outlier_mlp")


def outlier_data(folder: Path, samples: int = 256) -> tuple[Path, Path]:
    """calibration.npz (x[0] a third of its usual size) and inputs.npz (ordinary inputs) for outlier_mlp."""
    import numpy as np

    rng = np.random.default_rng(1)
    calibration = rng.standard_normal((64, 16)).astype(np.float32)
    calibration[:, 0] *= 0.3
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "calibration.npz", x=calibration)
    np.savez(folder / "inputs.npz", x=rng.standard_normal((samples, 16)).astype(np.float32))
    return folder / "calibration.npz", folder / "inputs.npz"


def build_all(out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, build in MODELS.items():
        paths[name] = out_dir / f"{name}.onnx"
        onnx.save(build(), str(paths[name]))
    return paths


if __name__ == "__main__":
    if sys.argv[1:2] == ["--outlier"]:  # the model of README's `bench diverge` section, with its data
        folder = Path(sys.argv[2] if len(sys.argv) > 2 else "outlier")
        folder.mkdir(parents=True, exist_ok=True)
        onnx.save(outlier_mlp(), str(folder / "mlp.onnx"))
        for path in (folder / "mlp.onnx", *outlier_data(folder)):
            print(path)
        sys.exit(0)
    for name, path in build_all(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/models/out")).items():
        print(path)
