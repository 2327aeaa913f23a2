"""What a model file is: identity (sha256, size), IR version, opsets, inputs and outputs.

Reads the graph without weights (load_external_data=False), so even a large model is inspected quickly,
and refuses a file that is not a usable ONNX model with one line saying so.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ModelError, one_line


def file_sha256(path: Path) -> str:
    """The same hash the agent computes on the board (one implementation, in the agent package)."""
    from edgebench_agent.runner import file_sha256 as agent_sha256

    return agent_sha256(str(path))


def load_model_proto(path: Path, load_external_data: bool = False):
    """Parse an .onnx file, or raise ModelError naming the problem."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if load_external_data:  # check where the data would come from before reading it
        check_external_data(load_model_proto(path), path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}", "check the path")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"{path} is not a valid ONNX model: {one_line(exc, 200)}",
                         "re-export it, e.g. with `bench export`") from None
    # Protobuf accepts many byte strings as an (empty) message: a real model has a graph and an IR version.
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.output:
        raise ModelError(f"{path} is not a valid ONNX model: it has no IR version or no graph",
                         "re-export it, e.g. with `bench export`")
    return model


def _value_info(value) -> dict:
    import onnx

    tensor = value.type.tensor_type
    shape = None
    if tensor.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "unknown"
    return {"name": value.name, "dtype": dtype, "shape": shape}


def external_data_files(model) -> list[str]:
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    files = {ExternalDataInfo(t).location for t in _get_all_tensors(model) if uses_external_data(t)}
    return sorted(files)


def check_external_data(model, model_path: Path) -> list[Path]:
    """Every external-data file of the model, proven to lie inside the model's folder.

    Refuses absolute locations, `..` components, and symlinks that resolve outside the folder (the
    CVE-2022-25882 / CVE-2024-27318 class), before anything loads or uploads them.
    """
    folder = Path(model_path).resolve().parent
    safe = []
    for location in external_data_files(model):
        relative = Path(location)
        if relative.is_absolute() or location.startswith(("/", "\\")) or ".." in relative.parts or ".." in location.split("\\"):
            raise ModelError(f"{model_path} points its external data outside its folder ({location!r}); refused",
                             "external data must be a plain file name next to the model")
        resolved = (folder / relative).resolve()
        if folder not in resolved.parents:
            raise ModelError(f"{model_path}: external data {location!r} resolves outside the model folder "
                             f"(to {resolved}); refused", "replace the symlink with the file itself")
        if not resolved.is_file():
            raise ModelError(f"{model_path}: external data file {location!r} is missing",
                             "keep the .onnx.data file next to the .onnx file")
        safe.append(resolved)
    return safe


def _inspect_ort_format(path: Path) -> dict:
    """An ORT-format model (.ort, a flatbuffer): its signature comes from onnxruntime; its opsets from the
    provenance of the conversion that made it, when there is one."""
    import onnxruntime as ort

    from .convert import read_provenance

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        raise ModelError(f"{path} is not a loadable ORT-format model: {one_line(exc, 200)}") from None

    from edgebench_agent.inputs import ORT_TO_NUMPY

    def signature(args):
        return [{"name": a.name, "dtype": ORT_TO_NUMPY[a.type].__name__ if a.type in ORT_TO_NUMPY else a.type,
                 "shape": [d if isinstance(d, int) else (d or None) for d in a.shape]} for a in args]

    provenance = read_provenance(path) or {}
    parent = provenance.get("parent", {})
    return {"format": "ort", "ir_version": parent.get("ir_version", 0), "opsets": parent.get("opsets", {}),
            "producer": "onnxruntime ORT format", "inputs": signature(session.get_inputs()),
            "outputs": signature(session.get_outputs()), "external_data": []}


def inspect_model(path: Path) -> dict:
    """The model block of a result: identity, signature, and provenance when it is a converted variant."""
    from .convert import read_provenance

    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}", "check the path")
    if not path.is_file():  # a folder, a FIFO or a device: hashing one would fail or block forever
        raise ModelError(f"model path is not a regular file: {path}", "give an .onnx or .ort file")
    name = path.name if path.suffix == ".ort" else path.stem  # digits.ort beside digits.onnx: keep them apart
    identity = {"name": name, "path": str(path.resolve()), "sha256": file_sha256(path),
                "size_bytes": path.stat().st_size}
    if path.suffix == ".ort":
        return {**identity, **_inspect_ort_format(path), "provenance": read_provenance(path)}
    model = load_model_proto(path)
    initializer_names = {init.name for init in model.graph.initializer}
    return {
        **identity,
        "format": "onnx",
        "ir_version": model.ir_version,
        "opsets": {(entry.domain or "ai.onnx"): entry.version for entry in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [_value_info(v) for v in model.graph.input if v.name not in initializer_names],
        "outputs": [_value_info(v) for v in model.graph.output],
        "external_data": [p.name for p in check_external_data(model, path)],
        "provenance": read_provenance(path),
    }
