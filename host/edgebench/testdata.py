"""ONNX test data sets: test_data_set_N/input_K.pb and output_K.pb, the format onnxruntime's and ONNX's
own test runners use. Each file is one serialized TensorProto (no pickle anywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import InputError


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
            tensors.append((proto.name, numpy_helper.to_array(proto)))
        except (DecodeError, ValueError, TypeError) as exc:
            raise InputError(f"{file} is not a serialized ONNX TensorProto: {exc}") from exc
    return tensors


def read_test_data_set(folder: Path, input_names: list[str]) -> tuple[dict, list | None]:
    """(inputs by name, expected outputs or None). Unnamed tensors take the model's input order."""
    folder = Path(folder)
    inputs = _read_tensors(folder, "input")
    if not inputs:
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
