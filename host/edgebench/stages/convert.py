"""Convert a model for the board: INT8 (dynamic, static), FP16, ORT format, an older opset, an offline-optimised
graph. Every variant is checked against its parent on the host and carries provenance.

Provenance is written beside each variant (`<variant>.edgebench.json`): parent path and sha256, the conversion
and its settings, tool versions, the variant's sha256 and its parity with the parent. `bench deploy` reads it,
so every result traces back to the exact model and conversion it came from. A conversion that fails is reported
with its reason; the others go ahead.
"""

from __future__ import annotations

import datetime
from typing import Any
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


from ..errors import ConfigError, InputError, ModelError, from_onnxruntime, is_our_bug, one_line
from ..fileio import copy_atomically, file_sha256
from ..models.modelinfo import check_external_data, host_session, load_model_proto, session_io
from ..models.parity import DEFAULT_ATOL, DEFAULT_RTOL
from ..models.provenance import PROVENANCE_VERSION, write_provenance

# plus opset:N; the last three are other runtimes' formats (runtimes.py), each a bundle checked with its runtime
KINDS = ("int8-dynamic", "int8-static", "fp16", "ort", "optimized", "openvino", "ncnn", "litert")
RUNTIME_KINDS = ("openvino", "ncnn", "litert")
QUANTIZED_KINDS = ("int8-dynamic", "int8-static")  # the ones that can keep chosen nodes in float

# How close a variant must stay to its parent on the host (the "stated tolerance"): (atol, rtol), or a minimum
# cosine similarity for the quantized ones, whose errors are expected and only their direction must hold.
TOLERANCES = {
    "opset": {"atol": 1e-5, "rtol": 1e-5},
    "optimized": {"atol": DEFAULT_ATOL, "rtol": DEFAULT_RTOL},
    "ort": {"atol": DEFAULT_ATOL, "rtol": DEFAULT_RTOL},
    "fp16": {"atol": 1e-2, "rtol": 1e-2},
    "int8-dynamic": {"min_cosine": 0.98},
    "int8-static": {"min_cosine": 0.98},
    # Another runtime's kernels (Winograd convolutions, other summation orders): f32 throughout, so the accuracy
    # pass's own default tolerance.
    "openvino": {"atol": DEFAULT_ATOL, "rtol": DEFAULT_RTOL},
    "ncnn": {"atol": DEFAULT_ATOL, "rtol": DEFAULT_RTOL},
    "litert": {"atol": DEFAULT_ATOL, "rtol": DEFAULT_RTOL},
}


def stated_tolerance(kind: str) -> dict | None:
    """How close a variant of this kind must stay to its parent: {atol, rtol} or {min_cosine}; None for a kind
    edgebench does not make (a provenance file from elsewhere)."""
    return TOLERANCES.get("opset" if kind.startswith("opset:") else kind)


@dataclass
class Variant:
    kind: str  # "int8-dynamic", ..., "opset:17"
    path: Path | None = None
    error: str | None = None
    parity: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.parity.get("passed", False)


def parse_kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if not kinds:
        raise ConfigError("--to names no conversion", f"choose from {', '.join(KINDS)}, opset:N")
    for kind in kinds:
        if kind.startswith("opset:"):
            if not kind[6:].isdigit() or not 7 <= int(kind[6:]) <= 30:
                raise ConfigError(f"--to {kind}: the opset must be a number from 7 to 30")
        elif kind not in KINDS:
            raise ConfigError(f"unknown conversion {kind!r}", f"choose from {', '.join(KINDS)}, opset:N")
    return list(dict.fromkeys(kinds))


def variant_name(model_path: Path, kind: str, keep_float: list[str] | None = None) -> str:
    stem = Path(model_path).stem
    if keep_float:  # an INT8 variant with some nodes left in float: its own file beside the plain one
        return f"{stem}.{kind}.float{len(keep_float)}.onnx"
    if kind == "ort":
        return f"{stem}.ort"
    if kind in RUNTIME_KINDS:
        from ..models.runtimes import bundle_name

        return bundle_name(model_path, kind)
    return f"{stem}.{kind.replace(':', '')}.onnx"


def tool_versions() -> dict:
    import onnx
    import onnxruntime

    from .. import __version__

    return {"edgebench": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


# --------------------------------------------------------------------------------------- conversions
def _preprocessed(model_path: Path, scratch: Path) -> Path:
    """onnxruntime's recommended pre-processing before quantization (shape inference, graph clean-up)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = scratch / "preprocessed.onnx"
    quant_pre_process(str(model_path), str(out), skip_symbolic_shape=False)
    return out


def _int8_dynamic(model_path: Path, out: Path, scratch: Path, options: dict) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = options.get("keep_float") or []
    quantize_dynamic(str(_preprocessed(model_path, scratch)), str(out), weight_type=QuantType.QInt8,
                     nodes_to_exclude=list(keep))
    return {"weight_type": "QInt8", "preprocess": "quant_pre_process", **_kept(keep)}


def _kept(keep: list[str]) -> dict:
    """The nodes a quantized variant keeps in float (onnxruntime quantization's nodes_to_exclude), when any."""
    return {"nodes_to_exclude": list(keep)} if keep else {}


def _int8_static(model_path: Path, out: Path, scratch: Path, options: dict) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    calibration = options.get("calibration")
    if calibration is None:
        raise InputError("int8-static needs calibration data: --calibration data.npz (inputs by name, samples on axis 0)")
    batches = calibration_batches(model_path, Path(calibration), options.get("calibration_samples", 128))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(batches)

        def get_next(self):
            return next(self.items, None)

    keep = options.get("keep_float") or []
    quantize_static(str(_preprocessed(model_path, scratch)), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    nodes_to_exclude=list(keep))
    return {"format": "QDQ", "activation_type": "QInt8", "weight_type": "QInt8", "per_channel": True,
            "calibration": {"path": str(Path(calibration).resolve()), "sha256": file_sha256(Path(calibration)), "samples": len(batches)},
            **_kept(keep)}


def _fp16(model_path: Path, out: Path, scratch: Path, options: dict) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    keep = options.get("keep_io_types", True)
    model = convert_float_to_float16(onnx.load(str(model_path)), keep_io_types=keep)
    onnx.save(model, str(out))
    return {"keep_io_types": keep, "converter": "onnxruntime.transformers.float16"}


def _optimized(model_path: Path, out: Path, scratch: Path, options: dict) -> dict:
    import onnxruntime as ort

    session_options = ort.SessionOptions()
    # EXTENDED, not ALL: ALL adds layout transformations for this host's CPU (NCHWc on x86) that an ARM board
    # cannot run. The saved graph stays portable.
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session_options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(model_path), session_options, providers=["CPUExecutionProvider"])
    return {"graph_optimization_level": "extended"}


def _ort_format(model_path: Path, out: Path, scratch: Path, options: dict) -> dict:
    source = scratch / "ort-input" / f"{Path(model_path).stem}.onnx"
    source.parent.mkdir()
    shutil.copy(model_path, source)
    done = subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(source),
                           "--output_dir", str(scratch / "ort-output"), "--optimization_style", "Runtime"],
                          capture_output=True, text=True, timeout=600)
    produced = sorted((scratch / "ort-output").glob("*.ort"))
    if done.returncode != 0 or not produced:
        tail = " ".join((done.stderr or done.stdout).split()[-40:])
        raise RuntimeError(f"convert_onnx_models_to_ort failed: {tail}")
    shutil.copy(produced[0], out)
    configs = sorted((scratch / "ort-output").glob("*.config"))
    operators = configs[0].read_text() if configs else ""
    config_path = out.with_name(out.name + ".required_operators.config")
    config_path.write_text(operators)
    return {"optimization_style": "Runtime", "required_operators_config": config_path.name}


def _opset(model_path: Path, out: Path, scratch: Path, options: dict) -> dict:
    import onnx

    target = options["opset"]
    model = load_model_proto(model_path, load_external_data=True)
    current = default_opset(model)
    try:
        converted = convert_opset(model, target)
    except Exception as exc:  # the version converter and the checker raise many types
        if is_our_bug(exc):  # a bug of ours stays a traceback
            raise
        raise RuntimeError(f"{' '.join(str(exc).split())[:300]}; re-exporting at that opset may work instead: "
                           f"bench export ... --opset {target} --exporter torchscript") from exc
    onnx.save(converted, str(out))
    return {"from_opset": current, "to_opset": target, "ir_version": converted.ir_version}


def default_opset(model) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def convert_opset(model, target: int):
    """The model at another default-domain opset, with the lowest IR version that carries it (so older runtimes
    load it too), checked in full. Raises what the version converter or the checker raise."""
    import onnx
    from onnx import version_converter

    converted = version_converter.convert_version(model, target)
    converted.ir_version = min(converted.ir_version, _ir_for_opset(target))
    onnx.checker.check_model(converted, full_check=True)
    return converted


def _ir_for_opset(opset: int) -> int:
    """ONNX's release table: the IR version that came with each opset."""
    for max_opset, ir_version in ((8, 3), (9, 4), (10, 5), (11, 6), (14, 7), (18, 8), (20, 9), (22, 10)):
        if opset <= max_opset:
            return ir_version
    return 11


def runtime_converter(kind: str):
    from ..models.runtime_convert import CONVERTERS as RUNTIME_CONVERTERS

    return RUNTIME_CONVERTERS[kind]


def _from_runtime(exc: BaseException) -> bool:
    from ..agentlib import is_runtime_error

    return bool(is_runtime_error(exc))


CONVERTERS = {"int8-dynamic": _int8_dynamic, "int8-static": _int8_static, "fp16": _fp16, "ort": _ort_format,
              "optimized": _optimized}


# ------------------------------------------------------------------------------------------- parity
def calibration_batches(model_path: Path, path: Path, limit: int) -> list[dict]:
    """Calibration samples one at a time (or in the model's fixed batch), from an .npz of inputs by name."""
    from .accuracy import dataset_batches, load_dataset

    _, signature, _ = session_io(model_path)
    arrays, _ = load_dataset(path, signature, require_labels=False)
    batches, _ = dataset_batches(arrays, signature, 1)
    return batches[:limit]


def parity_inputs(model_path: Path, calibration: Path | None, samples: int = 4) -> list[dict]:
    """A few inputs to compare a variant with its parent: calibration samples when given, else generated
    (free dimensions at 1)."""
    from ..agentlib import build_feeds, free_dim_keys
    from ..models.modelinfo import generation_rules

    if calibration is not None:
        return calibration_batches(model_path, Path(calibration), samples)
    _, signature, _ = session_io(model_path)
    rules = generation_rules(model_path)
    rules.check_given(set(), "--calibration data.npz holding the model's inputs")
    dims = {key: 1 for key in free_dim_keys(signature, {})}
    try:
        return [build_feeds(signature, dims=dims, seed=500 + index, int_ranges=rules.int_ranges)[0]
                for index in range(samples)]
    except InputError as exc:  # e.g. a string input: nothing to compare a variant with
        raise InputError(f"cannot make inputs to check the variants against {model_path.name}: {exc.message}",
                         "give --calibration data.npz with the model's inputs") from exc


def check_parity(kind: str, parent: Path, variant: Path, feeds_list: list[dict]) -> dict:
    """Run parent and variant on the host's CPU (a bundle with its own runtime); compare every output against the
    stated tolerance."""
    from ..agentlib import compare_arrays, is_classifier_output, join_batches, output_passes, topk_agreement
    from ..models.runtimes import runtime_session

    parent_session = host_session(parent)
    variant_session = runtime_session(variant, kind) if kind in RUNTIME_KINDS else host_session(variant)
    names = [o.name for o in parent_session.get_outputs()]
    expected = [parent_session.run(None, feeds) for feeds in feeds_list]
    actual = [variant_session.run(None, feeds) for feeds in feeds_list]
    rule = stated_tolerance(kind)
    if rule is None:
        raise ConfigError(f"unknown variant kind {kind!r}", f"choose from: {', '.join(KINDS)}, opset:N")
    outputs, passed = [], True
    for index, name in enumerate(names):
        e = join_batches([row[index] for row in expected])
        a = join_batches([row[index] for row in actual])
        metrics = compare_arrays(e, a, rule.get("atol", 0.0), rule.get("rtol", 0.0))
        ok = output_passes(metrics, rule.get("min_cosine"))
        if is_classifier_output(e) and metrics["expected_shape"] == metrics["actual_shape"]:
            metrics.update(topk_agreement(e, a))
        outputs.append({"name": name, "passed": ok, **metrics})
        passed = passed and ok
    return {"tolerance": rule, "samples": len(feeds_list), "outputs": outputs, "passed": passed}


# --------------------------------------------------------------------------------------------- main
def convert(model_path: Path, kinds: list[str], out_dir: Path, calibration: Path | None = None,
            keep_io_types: bool = True, spec: str | None = None, keep_float: list[str] | None = None) -> list[Variant]:
    """Make each kind of variant of the model in out_dir. keep_float: nodes an INT8 variant leaves in float (by
    the node names of the parent, e.g. what `bench diverge --budget` proposes)."""
    model_path = Path(model_path)
    parent_proto = load_model_proto(model_path)  # a clear error for a missing or corrupt parent, before anything
    check_external_data(parent_proto, model_path)  # its weights must not come from outside its folder
    if keep_float:
        check_keep_float(parent_proto, kinds, keep_float)
    if calibration is not None and not Path(calibration).is_file():
        raise InputError(f"calibration data not found: {calibration}")
    if "int8-static" in kinds and calibration is None:
        raise InputError("int8-static needs calibration data: --calibration data.npz (inputs by name, samples on axis 0)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--output-dir {out_dir} is a file, not a folder", "name a folder for the variants")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the variants folder {out_dir}: {exc.strerror or exc}") from exc
    parent_sha = file_sha256(model_path)
    feeds_list = parity_inputs(model_path, calibration)
    variants = []
    for kind in kinds:
        variant = Variant(kind)
        options: dict[str, Any] = {"calibration": calibration, "keep_io_types": keep_io_types, "spec": spec,
                                   "keep_float": keep_float}
        if kind.startswith("opset:"):
            options["opset"] = int(kind[6:])
        final = out_dir / variant_name(model_path, kind, keep_float)
        with tempfile.TemporaryDirectory(prefix="edgebench-convert-") as scratch_name:
            scratch = Path(scratch_name)
            staged = scratch / final.name
            converter = _opset if kind.startswith("opset:") else CONVERTERS.get(kind) or runtime_converter(kind)
            try:
                settings = converter(model_path, staged, scratch, options)
            except (InputError, ConfigError):
                raise
            except Exception as exc:  # the converters (onnx, onnxruntime tools) raise anything from ValueError to Fail
                if is_our_bug(exc):  # ours is a traceback, not a failed variant
                    raise
                variant.error = one_line(exc, 400, with_type=True)
                variants.append(variant)
                continue
            try:  # our own check: only onnxruntime's failures on the variant are the variant's problem
                variant.parity = check_parity(kind, model_path, staged, feeds_list)
            except ModelError as exc:
                variant.error = f"the variant does not load: {exc.message}"
            except Exception as exc:
                if not from_onnxruntime(exc) and not _from_runtime(exc):
                    raise
                variant.error = f"the variant fails to run: {one_line(exc, 400)}"
            if variant.error:
                variants.append(variant)
                continue
            for extra in (p for p in scratch.glob(staged.name + ".*") if p.is_file()):
                shutil.copy(extra, out_dir / extra.name)  # the ORT operator config
            copy_atomically(staged, final)
        variant.path = final
        variant.provenance = {
            "provenance_version": PROVENANCE_VERSION,
            "variant": kind,
            "path": final.name,
            "sha256": file_sha256(final),
            "size_bytes": final.stat().st_size,
            "parent": {"path": str(model_path.resolve()), "name": model_path.stem, "sha256": parent_sha,
                       "size_bytes": model_path.stat().st_size, "ir_version": parent_proto.ir_version,
                       "opsets": {(o.domain or "ai.onnx"): o.version for o in parent_proto.opset_import}},
            "settings": settings,
            "tools": tool_versions(),  # (a runtime conversion's own converter versions are in its settings)
            "parity": variant.parity,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        write_provenance(final, variant.provenance)
        variants.append(variant)
    return variants


def check_keep_float(parent_proto, kinds: list[str], keep_float: list[str]) -> None:
    """Nodes to keep in float apply to the INT8 conversions only, and must name nodes of the parent."""
    other = [k for k in kinds if k not in QUANTIZED_KINDS]
    if other:
        raise ConfigError(f"--keep-float leaves nodes of an INT8 variant in float; {', '.join(other)} quantizes nothing",
                          "convert to int8-static or int8-dynamic with it, the other kinds without it")
    names = {node.name for node in parent_proto.graph.node}
    unknown = [name for name in keep_float if name not in names]
    if unknown:
        raise ConfigError(f"--keep-float: the parent has no node named {', '.join(map(repr, unknown[:5]))}",
                          "name nodes as `bench inspect --graph` or `bench diverge` shows them")


def raise_for_failures(produced: list[Variant]) -> None:
    """RunFailed naming each variant that failed to convert or left its stated tolerance (the others were written)."""
    from ..errors import RunFailed

    failed = [v for v in produced if not v.ok]
    if failed:
        raise RunFailed("; ".join(f"{v.kind}: {v.error or 'outside its stated tolerance'}" for v in failed),
                        "the other variants were written" if len(failed) < len(produced) else None)
