"""What a model file is: identity (sha256, size), IR version, opsets, inputs and outputs.

Reads the graph without weights (load_external_data=False), so even a large model is inspected quickly,
and refuses a file that is not a usable ONNX model with one line saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, ModelError, is_our_bug, one_line

# Keys in the model's metadata_props written by `bench export`.
META_EXPORTER = "edgebench.exporter"
META_MODE = "edgebench.mode"
META_SOURCE = "edgebench.source"
from ..fileio import file_sha256


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
    if path.suffix in (".tar", ".tflite"):  # another runtime's model: this step reads ONNX graphs only
        raise ModelError(f"{path} is a model for another runtime, not an ONNX model: this command takes an .onnx",
                         "give the .onnx it was converted from; `bench deploy` runs the bundle itself")
    from google.protobuf import json_format, text_format

    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except (DecodeError, json_format.ParseError, text_format.ParseError, RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"{path} is not a valid ONNX model: {one_line(exc, 200)}",
                         "re-export it, e.g. with `bench export`") from exc
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


def graph_inputs(graph) -> list[dict]:
    """A graph's real inputs ({"name", "dtype", "shape"} each): its inputs less the initializers that older
    exporters also list as inputs. agentlib.Signature.from_block reads them as a signature."""
    initializers = {i.name for i in graph.initializer}
    return [_value_info(v) for v in graph.input if v.name not in initializers]


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

    from .provenance import read_provenance

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        if is_our_bug(exc):  # a bug of ours stays a traceback
            raise
        raise ModelError(f"{path} is not a loadable ORT-format model: {one_line(exc, 200)}") from exc

    from ..agentlib import ORT_TO_NUMPY, is_free

    def signature(args):
        return [{"name": a.name, "dtype": ORT_TO_NUMPY[a.type].__name__ if a.type in ORT_TO_NUMPY else a.type,
                 "shape": [(d or None) if is_free(d) else d for d in a.shape]} for a in args]

    provenance = read_provenance(path) or {}
    parent = provenance.get("parent", {})
    return {"format": "ort", "ir_version": parent.get("ir_version", 0), "opsets": parent.get("opsets", {}),
            "producer": "onnxruntime ORT format", "inputs": signature(session.get_inputs()),
            "outputs": signature(session.get_outputs()), "external_data": []}


def inspect_model(path: Path) -> dict:
    """The model block of a result: identity, signature, and provenance when it is a converted variant."""
    from .provenance import read_provenance

    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}", "check the path")
    if not path.is_file():  # a folder, a FIFO or a device: hashing one would fail or block forever
        raise ModelError(f"model path is not a regular file: {path}", "give an .onnx or .ort file")
    name = path.name if path.suffix in (".ort", ".tflite") else path.stem  # digits.ort beside digits.onnx
    sha256 = file_sha256(path)
    identity = {"name": name, "path": str(path.resolve()), "sha256": sha256, "size_bytes": path.stat().st_size}
    if path.suffix in (".tar", ".tflite"):  # another runtime's model: a bundle, or a LiteRT flatbuffer
        from .runtimes import inspect_artefact

        return {**identity, **inspect_artefact(path), "provenance": read_provenance(path, sha256)}
    if path.suffix == ".ort":
        return {**identity, **_inspect_ort_format(path), "provenance": read_provenance(path, sha256)}
    model = load_model_proto(path)
    return {
        **identity,
        "format": "onnx",
        "ir_version": model.ir_version,
        "opsets": {(entry.domain or "ai.onnx"): entry.version for entry in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": graph_inputs(model.graph),
        "outputs": [_value_info(v) for v in model.graph.output],
        "external_data": [p.name for p in check_external_data(model, path)],
        "provenance": read_provenance(path, sha256),
    }


# ----------------------------------------------------------------------------------- onnxruntime on the host
def host_session(path: Path, verbose: bool = False):
    """An onnxruntime CPU session of a model on this host, or ModelError naming the reason in one line.

    onnxruntime's own log lines (coloured `[E:onnxruntime:...]`) are silenced unless verbose: their text is in
    the exception, which becomes the message."""
    import onnxruntime as ort

    ort.set_default_logger_severity(2 if verbose else 4)
    options = ort.SessionOptions()
    options.log_severity_level = 2 if verbose else 4
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidGraph, NotImplemented, ...)
        if is_our_bug(exc):  # a bug of ours stays a traceback
            raise
        raise ModelError(f"onnxruntime cannot load {path} (onnxruntime {ort.__version__} on this host): "
                         f"{one_line(exc, 300)}",
                         "`bench convert --to opset:N` or a newer onnxruntime may help; `bench validate` shows more") from exc


def session_io(path: Path, verbose: bool = False):
    """(session, input signature triples, output names) of a model on this host: the signature read the way the
    board reads it (edgebench_agent.shared.inputs.session_signature)."""
    from ..agentlib import session_signature

    if Path(path).suffix in (".tar", ".tflite"):  # another runtime's model: its own runtime, on this host
        from ..agentlib import NUMPY_TO_ORT
        from .runtimes import inspect_artefact, runtime_of, runtime_session

        block = inspect_artefact(Path(path))
        session = runtime_session(Path(path), runtime_of(block) or "litert")
        # the bundle's own statement of its inputs: a runtime may drop the dimension names (OpenVINO does)
        signature = [(e["name"], NUMPY_TO_ORT.get(e["dtype"], e["dtype"]), list(e["shape"] or [])) for e in block["inputs"]]
        return session, signature, [o.name for o in session.get_outputs()]
    session = host_session(path, verbose)
    return session, session_signature(session), [o.name for o in session.get_outputs()]


# ---------------------------------------------------------------------------------- generated inputs
# Inputs consumed as a shape, a count or axes: no generated value can be right, so the user must give them.
# op type -> {input position: what it is}
SHAPE_LIKE_INPUTS = {
    "Reshape": {1: "shape"}, "Expand": {1: "shape"}, "ConstantOfShape": {0: "shape"}, "Tile": {1: "repeats"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"}, "Pad": {1: "pads", 3: "axes"}, "TopK": {1: "K"},
    "OneHot": {1: "depth"}, "Unsqueeze": {1: "axes"}, "Squeeze": {1: "axes"}, "Split": {1: "split"},
    "Resize": {3: "sizes"}, "Range": {0: "start", 1: "limit", 2: "delta"}, "Upsample": {1: "scales"},
    "ReduceSum": {1: "axes"}, "ReduceMean": {1: "axes"}, "ReduceMax": {1: "axes"}, "ReduceMin": {1: "axes"},
    "ReduceProd": {1: "axes"}, "ReduceL2": {1: "axes"}, "CenterCropPad": {1: "shape"},
}
# Inputs consumed as indices into a table: generated values must lie in [0, rows).
INDEX_INPUTS = {"Gather": 1, "GatherElements": 1, "ScatterElements": 1}
# Ops that pass a value through unchanged in meaning: an input's role is found past them.
PASS_THROUGH = {"Cast", "Identity"}


@dataclass
class GenerationRules:
    """What the graph says about generating each input: index ranges, and inputs only the user can give."""

    int_ranges: dict = field(default_factory=dict)  # input -> [0, rows]
    needs_value: dict = field(default_factory=dict)  # input -> "the shape of Expand 'e1'"

    def check_given(self, given: set, how: str = "--value {name}=1,3,4 or --inputs FILE.npz") -> None:
        """Refuse, before anything runs, an input that must be given but was not."""
        for name, role in self.needs_value.items():
            if name not in given:
                raise InputError(f"input {name!r} is {role}, which edgebench cannot guess",
                                 "give it with " + how.format(name=name))

    def ranges_for(self, given: set) -> dict:
        return {name: bounds for name, bounds in self.int_ranges.items() if name not in given}


def generation_rules(model) -> GenerationRules:
    """Read the graph (an onnx ModelProto, or a path) for what each integer input means to the ops it feeds."""
    if not hasattr(model, "graph"):
        path = Path(model)
        if path.suffix in (".ort", ".tar", ".tflite"):
            return GenerationRules()  # a flatbuffer without an ONNX graph: nothing to read
        model = load_model_proto(path)
    graph = model.graph
    consumers: dict = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))
    shapes = _static_shapes(graph)
    rules = GenerationRules()
    initializers = {init.name for init in graph.initializer}
    for value in graph.input:
        if value.name in initializers:
            continue
        frontier, seen = [value.name], set()
        while frontier:
            current = frontier.pop()
            if current in seen:
                continue
            seen.add(current)
            for node, position in consumers.get(current, []):
                if node.op_type in PASS_THROUGH:
                    frontier.extend(node.output)
                    continue
                role = SHAPE_LIKE_INPUTS.get(node.op_type, {}).get(position)
                if role and value.name not in rules.needs_value:
                    label = f"{node.op_type} {node.name!r}" if node.name else node.op_type
                    rules.needs_value[value.name] = f"the {role} of {label}"
                if INDEX_INPUTS.get(node.op_type) == position:
                    rows = _rows_indexed(node, shapes)
                    if rows:
                        low, high = rules.int_ranges.get(value.name, [0, rows])
                        rules.int_ranges[value.name] = [0, min(high, rows)]  # valid for every table it indexes
    return rules


def _static_shapes(graph) -> dict:
    """name -> list of ints for initializers, Constant nodes and fixed-shape inputs/value_infos."""
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    shapes[node.output[0]] = list(attribute.t.dims)
    for value in list(graph.input) + list(graph.value_info):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims) and value.name not in shapes:
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def _rows_indexed(node, shapes: dict) -> int | None:
    """Size of the axis of the data tensor that `node` indexes (Gather's axis attribute, default 0)."""
    data = shapes.get(node.input[0])
    if not data:
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    axis = axis + len(data) if axis < 0 else axis
    return data[axis] if 0 <= axis < len(data) and data[axis] > 0 else None
