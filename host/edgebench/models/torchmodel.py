"""PyTorch side of export and validate: load a MODEL_SPEC, build example inputs, run the reference.

MODEL_SPEC is one of:
  path/to/file.py:factory      a callable returning an nn.Module, or the module class itself
  package.module:factory       the same, imported by name
  model.pt / model.jit         a TorchScript archive (torch.jit.load)
  model.pt2                    an ExportedProgram (torch.export.load, without unpickling: see below)
Weights for a factory come from `--weights state_dict.pt`, loaded with weights_only=True only: a pickle
from an untrusted file never runs code here.

A file.py:factory spec runs that file's code by design: it is the user's own model. No model *file* ever
runs code: .pt/.jit archives go through TorchScript's own loader, and a .pt2 archive is checked for pickled
payloads and loaded with every torch.load forced to weights_only=True (torch.export.load otherwise falls
back to full unpickling for some archives).

torch is imported inside the functions, never at module import.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agentlib import sha256_bytes
from ..errors import ConfigError, InputError, ModelError, is_our_bug, one_line

TORCHSCRIPT_SUFFIXES = (".pt", ".jit", ".torchscript")
EXPORTED_PROGRAM_SUFFIXES = (".pt2",)

# --input NAME=1x3x224x224[:dtype]
_INPUT_SPEC = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)=(?P<shape>\d+(?:x\d+)*|scalar)(?::(?P<dtype>\w+))?\Z")
DTYPES = ("float32", "float16", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool")


@dataclass
class LoadedModel:
    """A PyTorch model ready to export or to serve as the reference."""

    spec: str
    kind: str  # "module", "torchscript" or "exported_program"
    module: Any  # nn.Module / ScriptModule / ExportedProgram
    example_inputs: dict | None = None  # name -> numpy array, from an example_inputs() next to the factory
    input_names: list[str] = field(default_factory=list)  # forward()'s parameter names, when known

    def callable(self):
        return self.module.module() if self.kind == "exported_program" else self.module


def _condense(exc: BaseException, limit: int = 300) -> str:
    return one_line(exc, limit, with_type=True)


def _import_target(spec: str):
    """The object named by file.py:attr or package.module:attr."""
    location, sep, attribute = spec.rpartition(":")
    if not sep or not location or not attribute:
        raise ConfigError(f"model spec {spec!r} names no factory",
                          "use file.py:factory, package.module:factory, a .pt/.jit TorchScript archive or a .pt2 file")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise ModelError(f"model spec file not found: {path}", "check the path before the ':'")
        # A stable name: it reaches the exported graph's metadata, and the same input must give the same bytes.
        module_name = f"_edgebench_spec_{sha256_bytes(str(path.resolve()).encode())[:12]}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ModelError(f"{path} cannot be imported as a Python module", "name a .py file")
        module = importlib.util.module_from_spec(loader_spec)
        sys.path.insert(0, str(path.resolve().parent))  # let the file import its siblings
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's code: all it raises is its own
            raise ModelError(f"importing {path} failed: {_condense(exc)}") from exc
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as exc:
            raise ModelError(f"model spec module {location!r} not found ({exc.name} is missing)",
                             "check the module name, or give a file path ending in .py") from exc
        except Exception as exc:  # noqa: BLE001 - the user's code: all it raises is its own
            raise ModelError(f"importing {location} failed: {_condense(exc)}") from exc
    if not hasattr(module, attribute):
        raise ModelError(f"{location} has no {attribute!r}",
                         f"it defines: {', '.join(n for n in dir(module) if not n.startswith('_'))[:200]}")
    return module, getattr(module, attribute)


def load_model(spec: str, weights: Path | None = None) -> LoadedModel:
    import torch

    path = Path(spec)
    if path.suffix in TORCHSCRIPT_SUFFIXES + EXPORTED_PROGRAM_SUFFIXES:
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        if weights is not None:
            raise ConfigError("--weights applies to a factory spec, not to a saved model")
        if not path.is_file():
            raise ModelError(f"{path} is not a regular file")
        try:
            if path.suffix in EXPORTED_PROGRAM_SUFFIXES:
                return LoadedModel(spec, "exported_program", load_exported_program(path))
            module = torch.jit.load(str(path), map_location="cpu")
        except ModelError:
            raise
        except Exception as exc:
            if is_our_bug(exc):  # a bug of ours stays a traceback
                raise
            kind = "ExportedProgram" if path.suffix in EXPORTED_PROGRAM_SUFFIXES else "TorchScript archive"
            raise ModelError(f"{path} is not a loadable {kind}: {_condense(exc)}") from exc
        module.eval()
        return LoadedModel(spec, "torchscript", module, input_names=_script_input_names(module))

    owner, factory = _import_target(spec)
    try:
        module = factory()
    except Exception as exc:  # noqa: BLE001 - the user's code: all it raises is its own
        raise ModelError(f"factory {spec} raised {_condense(exc)}") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"factory {spec} returned {type(module).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_weights(module, Path(weights))
    module.eval()
    example = None
    if callable(getattr(owner, "example_inputs", None)):
        example = _example_from_function(owner.example_inputs, module)
    return LoadedModel(spec, "module", module, example, _forward_names(module))


# .pt2 payloads that torch.export.load would unpickle with full pickle (code execution), by archive layout.
_PICKLED_PAYLOAD_PREFIXES = ("opaque_obj_", "custom_obj_")


def check_exported_program_archive(path: Path) -> None:
    """Refuse a .pt2 whose payloads torch would unpickle: weights or constants marked `use_pickle`, opaque or
    custom objects, and legacy pickled weight files. Nothing is unpickled here: only the JSON configs are read."""
    import json
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{path} is not a .pt2 archive (not a zip file: {_condense(exc, 120)})",
                         "save it with torch.export.save(program, 'model.pt2')") from exc
    with archive:
        names = archive.namelist()
        # torch reads the archive with miniz, which finds member names ignoring case: two names that differ only
        # in case would let torch read a member this check never saw.
        folded: dict = {}
        for name in names:
            if name.lower() in folded and folded[name.lower()] != name:
                raise ModelError(f"{path} holds members whose names differ only in case ({folded[name.lower()]!r}, "
                                 f"{name!r}); refused", "save it again with torch.export.save")
            folded[name.lower()] = name
        for name in names:
            parts = name.lower().split("/")
            if parts[-1].startswith(_PICKLED_PAYLOAD_PREFIXES):
                raise ModelError(f"{path} carries pickled object {name}, which edgebench never loads (unpickling runs "
                                 "code)", "export the model again with plain tensors, or give its file.py:factory")
            if len(parts) >= 3 and parts[-3] == "data" and parts[-2] in ("weights", "constants"):
                if parts[-1].endswith(".json"):
                    try:
                        config = json.loads(archive.read(name)).get("config") or {}
                    except (ValueError, AttributeError, zipfile.BadZipFile, OSError) as exc:
                        raise ModelError(f"{path}: {name} is not a valid payload config ({_condense(exc, 120)})") from exc
                    for key, entry in config.items():
                        entry = entry if isinstance(entry, dict) else {}
                        if entry.get("use_pickle") or str(entry.get("path_name", "")).lower().startswith(
                                _PICKLED_PAYLOAD_PREFIXES):
                            raise ModelError(f"{path} stores {key!r} as a pickled Python object, which edgebench never "
                                             "loads (unpickling runs code)",
                                             "export the model again with plain tensors, or give its file.py:factory")
                elif parts[-1].endswith(".pt"):
                    raise ModelError(f"{path} carries pickled payload {name}, which edgebench never loads "
                                     "(unpickling runs code)", "save it again with a current torch.export.save")


def load_exported_program(path: Path):
    """torch.export.load without code execution: the archive is checked first, and every torch.load it makes is
    forced to weights_only=True (an ExportedProgram needs no more)."""
    import contextlib
    import logging
    import os

    import torch

    check_exported_program_archive(path)
    saved = {k: os.environ.get(k) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    quiet = logging.getLogger("torch")
    level = quiet.level
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    quiet.setLevel(logging.CRITICAL)  # torch logs its fallback with a full traceback
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            return torch.export.load(str(path))
    except Exception as exc:
        if is_our_bug(exc):  # a bug of ours stays a traceback
            raise
        if "weights_only" in str(exc) or "Unpickler" in type(exc).__name__ or "Unpickling" in type(exc).__name__:
            raise ModelError(f"{path} holds pickled objects beyond plain tensors, which edgebench never loads "
                             "(unpickling runs code)", "export the model again, or give its file.py:factory") from exc
        raise ModelError(f"{path} is not a loadable ExportedProgram: {_condense(_root_cause(exc))}") from exc
    finally:
        quiet.setLevel(level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _root_cause(exc: BaseException) -> BaseException:
    inner = exc.__cause__ or exc.__context__
    while inner is not None and str(exc).strip() == "":
        exc, inner = inner, inner.__cause__ or inner.__context__
    return exc


def _load_weights(module, path: Path) -> None:
    import torch

    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        if is_our_bug(exc):  # a bug of ours stays a traceback
            raise
        if type(exc).__name__ == "UnpicklingError":  # the weights-only unpickler met a Python object
            raise ModelError(f"{path} holds more than plain tensors, and edgebench loads weights with weights_only=True",
                             f"save a plain state_dict (torch.save(model.state_dict(), ...)); {_condense(exc, 160)}") from exc
        raise ModelError(f"cannot read weights {path}: {_condense(exc)}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path} is not a state_dict (found {type(state).__name__})")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights {path} do not fit the model: {_condense(exc)}") from exc


def _forward_names(module) -> list[str]:
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _script_input_names(module) -> list[str]:
    try:
        return [a.name for a in module.forward.schema.arguments[1:]]
    except AttributeError:
        return []


def _example_from_function(function, module) -> dict:
    import torch

    try:
        produced = function()
    except Exception as exc:  # noqa: BLE001 - the user's code: all it raises is its own
        raise ModelError(f"example_inputs() raised {_condense(exc)}") from exc
    if isinstance(produced, dict):
        items = list(produced.items())
    else:
        tensors = produced if isinstance(produced, (tuple, list)) else (produced,)
        names = _forward_names(module)
        items = [(names[i] if i < len(names) else f"input_{i}", t) for i, t in enumerate(tensors)]
    out = {}
    for name, value in items:
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"example_inputs() gave {type(value).__name__} for {name!r}; tensors only")
        out[name] = value.detach().cpu().numpy()
    return out


def parse_input_spec(text: str) -> tuple[str, tuple[int, ...], str]:
    """'image=1x3x224x224:float16' -> ('image', (1, 3, 224, 224), 'float16'); 'rate=scalar:int64' -> rank 0."""
    match = _INPUT_SPEC.match(text)
    if not match:
        raise InputError(f"--input {text!r} must look like NAME=1x3x224x224 or NAME=1x3x224x224:float16 (or NAME=scalar:int64)")
    dtype = match["dtype"] or "float32"
    if dtype not in DTYPES:
        raise InputError(f"--input {text!r}: unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    shape = () if match["shape"] == "scalar" else tuple(int(d) for d in match["shape"].split("x"))
    return match["name"], shape, dtype


def example_for(loaded: LoadedModel, example_inputs: Path | None = None, input_specs: list[str] | None = None) -> dict:
    """The example input of an export: an .npz, --input NAME=SHAPE specs, or the spec's own example_inputs()."""
    if example_inputs is not None:
        from ..agentlib import load_npz

        if not Path(example_inputs).is_file():
            raise InputError(f"example inputs file not found: {example_inputs}")
        return load_npz(str(example_inputs))
    if input_specs:
        return example_inputs_from_specs(input_specs)
    if loaded.example_inputs is not None:
        return loaded.example_inputs
    raise InputError(f"no example input for {loaded.spec}", "give --input NAME=1x3x224x224, --example-inputs "
                     "inputs.npz, or define example_inputs() next to the factory")


def example_inputs_from_specs(specs: list[str], seed: int = 0) -> dict:
    """Seeded example arrays for --input specs (the same generator the agent uses)."""
    import numpy as np

    from ..agentlib import check_array_size, generate

    arrays = {}
    total = 0
    for position, text in enumerate(specs):
        name, shape, dtype = parse_input_spec(text)
        if name in arrays:
            raise InputError(f"--input {name} is given twice")
        numpy_dtype = np.dtype(np.float32 if dtype == "bfloat16" else dtype)
        total += check_array_size(f"--input {name}", numpy_dtype, shape, total)
        arrays[name] = generate(numpy_dtype, shape, np.random.default_rng([seed, position]))
    return arrays


def to_torch(array, bfloat16: bool = False):
    import torch

    tensor = torch.from_numpy(array.copy())
    return tensor.to(torch.bfloat16) if bfloat16 else tensor


def run_reference(model: LoadedModel, ordered_arrays: list) -> list:
    """Outputs of the PyTorch model as numpy arrays, flattened in order (tuples, lists, dicts)."""
    import torch
    from torch.utils._pytree import tree_flatten

    with torch.no_grad():
        produced = model.callable()(*[to_torch(a) for a in ordered_arrays])
    leaves, _ = tree_flatten(produced)
    return [leaf.detach().float().numpy() if leaf.dtype == torch.bfloat16 else leaf.detach().numpy()
            for leaf in leaves if isinstance(leaf, torch.Tensor)]
