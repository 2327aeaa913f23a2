"""ONNX test data sets: test_data_set_N/input_K.pb and output_K.pb, the format onnxruntime's and ONNX's
own test runners use. Each file is one serialized TensorProto (no pickle anywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError


def is_test_data_set(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and any(path.glob("input_*.pb"))


def _read_tensors(folder: Path, prefix: str) -> list[tuple[str, Any]]:
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    files = sorted(folder.glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[-1]) if p.stem.split("_")[-1].isdigit() else -1)
    tensors = []
    for file in files:
        proto = onnx.TensorProto()
        try:
            proto.ParseFromString(file.read_bytes())
            array = numpy_helper.to_array(proto)
        except (DecodeError, ValueError, TypeError) as exc:
            raise InputError(f"{file} is not a serialized ONNX TensorProto: {exc}") from exc
        if array.dtype.kind not in "biufcUSO" or array.dtype.itemsize == 1 and array.dtype.kind == "f":
            # bfloat16, float8, int4 (ml_dtypes): numpy cannot store them in an .npz that reads back, nor feed them
            raise InputError(f"{file} holds {onnx.TensorProto.DataType.Name(proto.data_type)} data, which edgebench "
                             "cannot carry to a board (numpy has no such type)")
        tensors.append((proto.name, array))
    return tensors


def io_types(session, signature) -> dict:
    """Input and output name -> ONNX type text ("tensor(float)", "seq(tensor(float))") of a host session (another
    runtime's session, whose outputs carry no type, counts its outputs as tensors)."""
    types = {name: kind for name, kind, _ in signature}
    types.update({o.name: getattr(o, "type", "tensor()") for o in session.get_outputs()})
    return types


def read_test_data_set(folder: Path, input_names: list[str], types: dict | None = None) -> tuple[dict, list | None]:
    """(inputs by name, expected outputs or None). Unnamed tensors take the model's input order. `types` (input and
    output name -> ONNX type text) refuses a model whose inputs or outputs are not tensors: their .pb files are
    SequenceProto or OptionalProto, which a board run neither feeds nor returns."""
    folder = Path(folder)
    for name, kind in (types or {}).items():
        if not str(kind).startswith("tensor("):
            raise InputError(f"{name!r} of the model is {kind}: edgebench feeds and compares tensors only, so the test "
                             f"data set {folder} cannot be used", "time the model without --test-data")
    inputs = _read_tensors(folder, "input")
    if not inputs and input_names:
        raise InputError(f"{folder} holds no input_K.pb files")
    if len(inputs) != len(input_names):
        raise InputError(f"{folder} has {len(inputs)} inputs but the model takes {len(input_names)} ({', '.join(input_names)})")
    named = {}
    for position, (name, array) in enumerate(inputs):
        named[name if name in input_names else input_names[position]] = array
    outputs = _read_tensors(folder, "output")
    return named, ([array for _, array in outputs] or None)


def write_test_data_set(folder: Path, inputs: dict, outputs: list | None, output_names: list[str] | None = None) -> Path:
    from onnx import numpy_helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for position, (name, array) in enumerate(inputs.items()):
        (folder / f"input_{position}.pb").write_bytes(numpy_helper.from_array(array, name).SerializeToString())
    for position, array in enumerate(outputs or []):
        name = output_names[position] if output_names and position < len(output_names) else f"output_{position}"
        (folder / f"output_{position}.pb").write_bytes(numpy_helper.from_array(array, name).SerializeToString())
    return folder
