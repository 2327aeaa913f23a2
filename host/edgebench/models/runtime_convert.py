"""Conversions to other runtimes' formats, each written as a bundle (runtimes.py): OpenVINO IR by openvino's
convert_model, ncnn by pnnx, LiteRT by litert-torch from the PyTorch module (in a Python of its own when its pins
clash with the host's). convert.py calls them as variant kinds and checks each against its parent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import ConfigError
from .runtimes import _entries, write_bundle

LITERT_PYTHON_ENV = "EDGEBENCH_LITERT_PYTHON"


def to_openvino(model_path: Path, out: Path, scratch: Path, options: dict) -> dict:
    """OpenVINO IR (xml + bin) by openvino.convert_model, weights kept in f32 (FP16 is a variant of its own)."""
    import openvino

    converted = openvino.convert_model(str(model_path))
    xml = scratch / "model.xml"
    openvino.save_model(converted, str(xml), compress_to_fp16=False)
    from .modelinfo import session_io

    session, _, _ = session_io(model_path)
    write_bundle(out, "openvino", {"xml": xml, "bin": xml.with_suffix(".bin")}, _entries(session.get_inputs()),
                 _entries(session.get_outputs()), scratch)
    return {"converter": "openvino.convert_model", "openvino": openvino.get_version(), "compress_to_fp16": False}


def pnnx_binary() -> Path:
    import importlib.util

    found = importlib.util.find_spec("pnnx")
    if found is None or not found.submodule_search_locations:
        raise ConfigError("ncnn conversion needs pnnx on this host", "pip install 'edgebench[runtimes]' (or pnnx ncnn)")
    return Path(list(found.submodule_search_locations)[0]) / "pnnx"


def to_ncnn(model_path: Path, out: Path, scratch: Path, options: dict) -> dict:
    """ncnn's .param/.bin by pnnx from the ONNX model, at the shapes the parity inputs have (free dims at their
    --dim sizes, else 1): ncnn's graph is static. Layers pnnx emits that ncnn has no implementation of are named."""
    import ncnn

    from .modelinfo import session_io

    session, signature, _ = session_io(model_path)
    dims = options.get("dims") or {}
    shapes, entries_in = [], []
    for position, (name, ort_type, shape) in enumerate(signature):
        if ort_type != "tensor(float)":
            raise ValueError(f"ncnn takes float32 inputs only; input {name!r} is {ort_type}")
        concrete = fixed_shape(name, shape, dims)
        if not concrete or concrete[0] != 1:
            raise ValueError(f"ncnn runs one sample at a time, but input {name!r} has shape {concrete} "
                             "(export the model with batch 1 or a free batch dimension)")
        shapes.append("[" + ",".join(map(str, concrete)) + "]")
        entries_in.append({"name": name, "dtype": "float32", "shape": concrete, "blob": f"in{position}"})
    source = scratch / "model.onnx"
    shutil.copy(model_path, source)
    # fp16=0: pnnx stores ncnn weights as fp16 by default (a precision change nobody asked for)
    done = subprocess.run([str(pnnx_binary()), str(source), "inputshape=" + ",".join(shapes), "fp16=0"], cwd=scratch,
                          capture_output=True, text=True, timeout=600)
    param, weights = scratch / "model.ncnn.param", scratch / "model.ncnn.bin"
    if done.returncode != 0 or not param.exists():
        tail = " ".join((done.stderr or done.stdout).split()[-30:])
        raise RuntimeError(f"pnnx failed: {tail}")
    unknown = sorted({line.split()[0] for line in param.read_text().splitlines()[2:] if line.strip()
                      and ncnn.layer_to_index(line.split()[0]) < 0})
    if unknown:
        raise RuntimeError(f"ncnn has no layer for {', '.join(unknown)} (what pnnx made of the model's ops); this "
                           "model cannot run on ncnn as exported")
    feeds = {name: _zeros(shape) for name, shape in zip([e["name"] for e in entries_in], [e["shape"] for e in entries_in])}
    outputs = session.run(None, feeds)  # output shapes at these input shapes: ncnn's blobs lose the batch axis
    entries_out = [{"name": meta.name, "dtype": "float32", "shape": list(value.shape), "blob": f"out{index}"}
                   for index, (meta, value) in enumerate(zip(session.get_outputs(), outputs))]
    write_bundle(out, "ncnn", {"param": param, "bin": weights}, entries_in, entries_out, scratch)
    return {"converter": "pnnx", "pnnx": _pnnx_version(), "ncnn": ncnn.__version__, "inputshape": shapes, "fp16": False}


def fixed_shape(name: str, shape: list, dims: dict) -> list[int]:
    """An input's shape for a static graph: free dimensions at their --dim size (by name or input:axis), else 1."""
    from ..agentlib import is_free

    return [dims.get(d, dims.get(f"{name}:{axis}", 1)) if is_free(d) else d for axis, d in enumerate(shape)]


def _zeros(shape):
    import numpy as np

    return np.zeros(shape, dtype=np.float32)


def _pnnx_version() -> str:
    try:
        from importlib.metadata import version

        return version("pnnx")
    except Exception:
        return "unknown"


def litert_python() -> str:
    """A Python with litert-torch: $EDGEBENCH_LITERT_PYTHON, this one when it has it, or the checkout's
    .venv-litert (`make litert-env`): litert-torch pins its own torch and jax, so it often lives apart."""
    import importlib.util

    given = os.environ.get(LITERT_PYTHON_ENV)
    if given:
        if not Path(given).is_file():
            raise ConfigError(f"{LITERT_PYTHON_ENV}={given} is not a file", "point it at a python with litert-torch")
        return given
    if importlib.util.find_spec("litert_torch") is not None:
        return sys.executable
    checkout = Path(__file__).resolve().parents[3] / ".venv-litert" / "bin" / "python"
    if checkout.is_file():
        return str(checkout)
    raise ConfigError("LiteRT conversion needs litert-torch, which is not installed for this host",
                      f"run `make litert-env` in the edgebench checkout, or set {LITERT_PYTHON_ENV} to a python "
                      "with `pip install litert-torch onnx`")


def to_litert(model_path: Path, out: Path, scratch: Path, options: dict) -> dict:
    """A .tflite by litert-torch from the PyTorch module the ONNX model was exported from (its spec: --spec, or the
    one `bench export` recorded in the model), with the ONNX model's weights loaded into it by name."""
    spec = options.get("spec") or _recorded_spec(model_path)
    if not spec:
        raise ValueError("LiteRT conversion starts from the PyTorch module: give its spec with --spec file.py:factory "
                         "(its weights are taken from the ONNX model by name)")
    from .modelinfo import session_io

    session, signature, _ = session_io(model_path)
    dims = options.get("dims") or {}
    shapes = [fixed_shape(name, shape, dims) for name, _, shape in signature]
    tflite = scratch / "model.tflite"
    job = {"onnx": str(Path(model_path).resolve()), "spec": spec, "out": str(tflite), "shapes": shapes,
           "dtypes": [t for _, t, _ in signature]}
    worker = Path(__file__).with_name("litert_worker.py")
    # -I: the worker's folder (this package, whose html.py would shadow the standard library's) stays off sys.path
    done = subprocess.run([litert_python(), "-I", str(worker)], input=json.dumps(job), capture_output=True, text=True,
                          timeout=900)
    answer = _last_json(done.stdout)
    if done.returncode != 0 or answer is None or answer.get("error"):
        reason = (answer or {}).get("error") or " ".join((done.stderr or done.stdout).split()[-30:])
        raise RuntimeError(f"litert-torch failed: {reason}")
    entries_in = [{**e, "blob": blob} for e, blob in zip(_entries(session.get_inputs()), answer["inputs"])]
    for entry, shape in zip(entries_in, shapes):
        entry["shape"] = shape
    outputs = session.run(None, {name: _zeros(shape) for (name, _, _), shape in zip(signature, shapes)})
    entries_out = [{**e, "shape": list(value.shape), "blob": blob}
                   for e, value, blob in zip(_entries(session.get_outputs()), outputs, answer["outputs"])]
    write_bundle(out, "litert", {"tflite": tflite}, entries_in, entries_out, scratch)
    return {"converter": "litert-torch", "litert_torch": answer.get("litert_torch"), "spec": spec,
            "weights": answer.get("weights"), "input_shapes": shapes}


def _recorded_spec(model_path: Path) -> str | None:
    from .modelinfo import load_model_proto
    from .modelinfo import META_SOURCE

    proto = load_model_proto(model_path)
    return next((p.value for p in proto.metadata_props if p.key == META_SOURCE), None)


def _last_json(text: str) -> dict | None:
    for line in reversed((text or "").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


CONVERTERS = {"openvino": to_openvino, "ncnn": to_ncnn, "litert": to_litert}
