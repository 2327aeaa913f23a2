"""Export: PyTorch -> ONNX with torch.onnx.export (dynamo or TorchScript exporter, trace or script mode).

The exporters print graph dumps and warnings on stdout/stderr: they are captured, a failure is condensed
to its real reason plus a hint, and tracing warnings (a tensor turned into a Python bool or int: the sign
that control flow got baked in) come back as notes. The file appears only when the export succeeded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ExportFailed, InputError, is_our_bug
from ..models.torchmodel import LoadedModel, _condense

EXPORTERS = ("dynamo", "torchscript")
MODES = ("trace", "script")
# Above this, protobuf cannot hold the model in one file: weights go to a .onnx.data sidecar.
SINGLE_FILE_LIMIT_BYTES = 2 * 1024**3 - 64 * 1024**2

_DYNAMIC = re.compile(r"^(?P<name>[^:=]+):(?P<axis>\d+)(?:=(?P<label>[A-Za-z_]\w*))?$")


@dataclass
class ExportOptions:
    exporter: str | None = None  # None: dynamo, or torchscript where only it applies
    mode: str = "trace"
    dynamic: list[str] = field(default_factory=list)  # NAME:AXIS[=label]
    opset: int | None = None
    output_names: list[str] | None = None


@dataclass
class ExportResult:
    path: Path
    exporter: str
    mode: str
    input_names: list[str]
    output_names: list[str]
    files: list[Path]
    notes: list[str]


def resolve_exporter(loaded: LoadedModel, options: ExportOptions) -> str:
    if options.mode not in MODES:
        raise ConfigError(f"unknown --mode {options.mode!r}", "use trace or script")
    if options.exporter is not None and options.exporter not in EXPORTERS:
        raise ConfigError(f"unknown --exporter {options.exporter!r}", "use dynamo or torchscript")
    needs_torchscript = options.mode == "script" or loaded.kind == "torchscript"
    if needs_torchscript:
        if options.exporter == "dynamo":
            why = "--mode script" if options.mode == "script" else "a TorchScript archive"
            raise ConfigError(f"{why} exports with the TorchScript exporter, not dynamo", "drop --exporter dynamo")
        return "torchscript"
    if loaded.kind == "exported_program":
        if options.exporter == "torchscript":
            raise ConfigError("an ExportedProgram (.pt2) exports with the dynamo exporter", "drop --exporter torchscript")
        return "dynamo"
    return options.exporter or "dynamo"


def parse_dynamic(specs: list[str], example: dict, output_names: list[str]) -> dict:
    """--dynamic x:0=batch -> {"x": {0: "batch"}}; the name must be an input or output, the axis in range."""
    axes: dict[str, dict[int, str]] = {}
    for text in specs:
        match = _DYNAMIC.match(text)
        if not match:
            raise InputError(f"--dynamic {text!r} must look like NAME:AXIS or NAME:AXIS=label (e.g. image:0=batch)")
        name, axis = match["name"], int(match["axis"])
        if name in example:
            if axis >= example[name].ndim:
                raise InputError(f"--dynamic {text}: input {name!r} has rank {example[name].ndim}, no axis {axis}")
        elif name not in output_names:
            raise InputError(f"--dynamic {text}: no input or output named {name!r}",
                             f"inputs: {', '.join(example)}; outputs: {', '.join(output_names)}")
        axes.setdefault(name, {})[axis] = match["label"] or f"{name}_dim{axis}"
    return axes


def order_inputs(loaded: LoadedModel, example: dict) -> list[str]:
    """Input names in forward()'s order when the names match its parameters, else as given."""
    if loaded.input_names and set(example) <= set(loaded.input_names):
        return [n for n in loaded.input_names if n in example]
    return list(example)


@contextlib.contextmanager
def captured_output():
    """Send fd 1 and 2 (Python and C++ writers alike) to a temp file; yields a list that receives the text."""
    import sys

    captured: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def _hint_for(reason: str, exporter: str, mode: str) -> str:
    if "GuardOnDataDependentSymNode" in reason or "data-dependent" in reason or "data dependent" in reason:
        return ("the model branches on tensor values, which dynamo cannot export: use --mode script "
                "(the TorchScript exporter keeps If/Loop), or write the branch with torch.cond")
    if "inferred a static shape" in reason or "inferred to be a constant" in reason or "specialized" in reason or "specialised" in reason:
        return ("a dynamic axis was fixed to the example's size by the model's code (a Python loop over it, or "
                "a size used as a number): use --mode script, or drop that --dynamic")
    if "Unsupported" in reason or "unsupported" in reason or "not supported" in reason:
        return "an operator has no ONNX export at this opset: try another --opset or the other --exporter"
    if mode == "script":
        return "torch.jit.script could not compile the model: use --mode trace, or make forward() scriptable"
    other = "torchscript" if exporter == "dynamo" else "dynamo"
    return f"try --exporter {other}"


def _default_output_names(loaded: LoadedModel, example: dict, input_names: list[str]) -> list[str]:
    """"output", or output_0, output_1, ...: readable where the TorchScript exporter would say "2" or "5"."""
    from ..models.torchmodel import run_reference

    try:
        count = len(run_reference(loaded, [example[n] for n in input_names]))
    except Exception as exc:  # noqa: BLE001 - the user's model ran: all it raises is its own
        raise ExportFailed(f"the model fails on the example input: {_condense(exc)}",
                           "check the example input's names, shapes and dtypes") from exc
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _parameter_bytes(module) -> int:
    try:
        return sum(p.numel() * p.element_size() for p in module.parameters())
    except (AttributeError, RuntimeError, TypeError):  # ExportedProgram, some ScriptModules: no .parameters() view
        return 0


def check_output_path(output: Path) -> None:
    """Refuse a folder as --output before the (slow) model load."""
    if Path(output).is_dir():
        raise InputError(f"--output {output} is a folder", f"name the .onnx file to write, e.g. {Path(output) / 'model.onnx'}")


def save_test_data(result: ExportResult, loaded: LoadedModel, example: dict, folder: Path) -> Path:
    """FOLDER/test_data_set_0 in ONNX's layout: the example inputs and PyTorch's outputs for them, as .pb."""
    from ..models.testdata import write_test_data_set
    from ..models.torchmodel import run_reference

    ordered = {n: example[n] for n in result.input_names}
    return write_test_data_set(Path(folder) / "test_data_set_0", ordered, run_reference(loaded, list(ordered.values())),
                               result.output_names)


def export_model(loaded: LoadedModel, example: dict, output: Path, options: ExportOptions) -> ExportResult:
    import onnx
    import torch

    from ..models.torchmodel import to_torch
    from ..models.modelinfo import META_EXPORTER, META_MODE, META_SOURCE

    exporter = resolve_exporter(loaded, options)
    input_names = order_inputs(loaded, example)
    args = tuple(to_torch(example[n]) for n in input_names)
    output_names = options.output_names or _default_output_names(loaded, example, input_names)
    dynamic_axes = parse_dynamic(options.dynamic, example, output_names or [])
    module = loaded.module
    notes: list[str] = []
    if options.mode == "script" and loaded.kind == "module":
        try:
            module = torch.jit.script(loaded.module)
        except Exception as exc:
            if is_our_bug(exc):  # a bug of ours stays a traceback
                raise
            raise ExportFailed(f"torch.jit.script failed: {_condense(exc)}",
                               _hint_for(str(exc), exporter, "script")) from exc
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    large = _parameter_bytes(loaded.module if loaded.kind != "exported_program" else module) > SINGLE_FILE_LIMIT_BYTES
    # Export into a scratch folder beside the target; move into place only once everything succeeded.
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        staged = scratch / output.name
        kwargs: dict[str, Any] = dict(input_names=input_names, output_names=output_names, opset_version=options.opset,
                      dynamic_axes=dynamic_axes or None)
        if exporter == "dynamo":
            kwargs.update(dynamo=True, external_data=large, verbose=False)
        else:
            kwargs.update(dynamo=False)
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        with warnings.catch_warnings(record=True) as seen, captured_output() as text:
            warnings.simplefilter("always")
            try:
                torch.onnx.export(module, args, str(staged), **kwargs)
                error = None
            except Exception as exc:
                if is_our_bug(exc):  # a bug of ours stays a traceback
                    raise
                error = exc
        if error is not None:
            reason = _condense(_root_cause(error))
            raise ExportFailed(f"{exporter} export failed: {reason}", _hint_for(str(error) + "".join(text), exporter,
                                                                                 options.mode))
        for warning in seen:
            if "TracerWarning" in type(warning.message).__name__ or "trace might not generalize" in str(warning.message):
                first = str(warning.message).splitlines()[0]
                notes.append(f"tracing warned at {Path(warning.filename).name}:{warning.lineno}: {first}")
        proto = onnx.load(str(staged), load_external_data=False)
        if options.opset is not None:
            proto = _at_opset(proto, options.opset, exporter, notes)
        for key, value in ((META_EXPORTER, exporter), (META_MODE, options.mode), (META_SOURCE, loaded.spec)):
            entry = next((p for p in proto.metadata_props if p.key == key), None) or proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(staged))
        files = []
        for produced in sorted(scratch.iterdir(), key=lambda p: p.name == output.name):  # sidecars first
            destination = output.parent / produced.name
            os.replace(produced, destination)
            files.append(destination)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ExportResult(output, exporter, options.mode, input_names,
                        [o.name for o in onnx.load(str(output), load_external_data=False).graph.output], files, notes)


def _at_opset(proto, opset: int, exporter: str, notes: list[str]):
    """--opset is honoured, never silently raised: the dynamo exporter writes at least opset 18, so a lower one
    is reached with ONNX's version converter (and the parity check that follows tests the result), or refused."""
    from .convert import convert_opset, default_opset

    written = default_opset(proto)
    if written == opset:
        return proto
    try:
        converted = convert_opset(proto, opset)
    except Exception as exc:  # the version converter and the checker raise many types
        if is_our_bug(exc):  # a bug of ours stays a traceback
            raise
        raise ExportFailed(f"the {exporter} exporter wrote opset {written}, and converting it to the requested opset "
                           f"{opset} failed: {_condense(exc)}",
                           f"export with --exporter torchscript --opset {opset}, or leave out --opset") from exc
    notes.append(f"the {exporter} exporter wrote opset {written}; converted to the requested opset {opset} "
                 "(the parity check below tests the converted model)")
    return converted


def _root_cause(exc: BaseException) -> BaseException:
    """Unwrap the exporters' own wrappers (TorchExportError, OnnxExporterError, ...) down to the real reason."""
    inner = exc.__cause__ or exc.__context__
    while "Export" in type(exc).__name__ and inner is not None:
        exc, inner = inner, inner.__cause__ or inner.__context__
    return exc
