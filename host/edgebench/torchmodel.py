"""PyTorch side of export and validate: load a MODEL_SPEC, build example inputs, run the reference.

MODEL_SPEC is one of:
  path/to/file.py:factory      a callable returning an nn.Module, or the module class itself
  package.module:factory       the same, imported by name
  model.pt / model.jit         a TorchScript archive (torch.jit.load)
  model.pt2                    an ExportedProgram (torch.export.load)
Weights for a factory come from `--weights state_dict.pt`, loaded with weights_only=True only: a pickle
from an untrusted file never runs code here.

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

from .errors import ConfigError, InputError, ModelError, one_line

TORCHSCRIPT_SUFFIXES = (".pt", ".jit", ".torchscript")
EXPORTED_PROGRAM_SUFFIXES = (".pt2",)

# --input NAME=1x3x224x224[:dtype]
_INPUT_SPEC = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)=(?P<shape>\d+(?:x\d+)*|scalar)(?::(?P<dtype>\w+))?$")
DTYPES = ("float32", "float16", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool")


@dataclass
class LoadedModel:
    """A PyTorch model ready to export or to serve as the reference."""

    spec: str
    kind: str  # "module", "torchscript" or "exported_program"
    module: object  # nn.Module / ScriptModule / ExportedProgram
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
        module_name = f"_edgebench_spec_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.path.insert(0, str(path.resolve().parent))  # let the file import its siblings
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            raise ModelError(f"importing {path} failed: {_condense(exc)}") from None
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as exc:
            raise ModelError(f"model spec module {location!r} not found ({exc.name} is missing)",
                             "check the module name, or give a file path ending in .py") from None
        except Exception as exc:
            raise ModelError(f"importing {location} failed: {_condense(exc)}") from None
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
        try:
            if path.suffix in EXPORTED_PROGRAM_SUFFIXES:
                program = torch.export.load(str(path))
                return LoadedModel(spec, "exported_program", program)
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            kind = "ExportedProgram" if path.suffix in EXPORTED_PROGRAM_SUFFIXES else "TorchScript archive"
            raise ModelError(f"{path} is not a loadable {kind}: {_condense(exc)}") from None
        module.eval()
        return LoadedModel(spec, "torchscript", module, input_names=_script_input_names(module))

    owner, factory = _import_target(spec)
    try:
        module = factory()
    except Exception as exc:
        raise ModelError(f"factory {spec} raised {_condense(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"factory {spec} returned {type(module).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_weights(module, Path(weights))
    module.eval()
    example = None
    if callable(getattr(owner, "example_inputs", None)):
        example = _example_from_function(owner.example_inputs, module)
    return LoadedModel(spec, "module", module, example, _forward_names(module))


def _load_weights(module, path: Path) -> None:
    import pickle

    import torch

    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"{path} holds more than plain tensors, and edgebench loads weights with weights_only=True",
                         f"save a plain state_dict (torch.save(model.state_dict(), ...)); {_condense(exc, 160)}") from None
    except Exception as exc:
        raise ModelError(f"cannot read weights {path}: {_condense(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path} is not a state_dict (found {type(state).__name__})")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights {path} do not fit the model: {_condense(exc)}") from None


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
    except Exception as exc:
        raise ModelError(f"example_inputs() raised {_condense(exc)}") from None
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


def example_inputs_from_specs(specs: list[str], seed: int = 0) -> dict:
    """Seeded example arrays for --input specs (the same generator the agent uses)."""
    import numpy as np

    from edgebench_agent.inputs import generate

    arrays = {}
    for position, text in enumerate(specs):
        name, shape, dtype = parse_input_spec(text)
        if name in arrays:
            raise InputError(f"--input {name} is given twice")
        numpy_dtype = np.float32 if dtype == "bfloat16" else np.dtype(dtype)
        arrays[name] = generate(np.dtype(numpy_dtype), shape, np.random.default_rng([seed, position]))
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
