"""Validate an ONNX model: full checker, strict shape inference, onnxruntime load, a readable summary, and
parity against a reference (PyTorch, or an ONNX test data set) on several inputs.

Parity inputs are chosen to expose what tracing gets wrong: besides the example input, its negation and a
scaled copy (a branch on a sign or a magnitude takes the other path), fresh random values, and other sizes on
dynamic axes (a loop unrolled for one length). When the export agrees on the example but not on the others,
the verdict says so and names the fix.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..agentlib import Signature, is_free
from ..errors import InputError, ModelError, from_onnxruntime, is_our_bug, one_line
from ..fileio import file_sha256
from ..models.modelinfo import check_external_data, generation_rules, host_session, load_model_proto
from ..models.parity import OutputComparison, Tolerances, compare_outputs


from ..models.modelinfo import META_EXPORTER, META_MODE, META_SOURCE  # noqa: F401 (validate reports them)


@dataclass
class CheckStep:
    name: str
    ok: bool
    message: str = ""


@dataclass
class SampleParity:
    label: str
    kind: str  # "base" (example / file), "values" (other values, same sizes), "sizes" (other sizes)
    shapes: dict
    comparisons: list[OutputComparison] = field(default_factory=list)
    error: str | None = None

    def __bool__(self) -> bool:
        return self.error is None and all(self.comparisons)


@dataclass
class ValidationReport:
    model_path: str
    summary: dict
    checks: list[CheckStep]
    reference: str | None = None
    samples: list[SampleParity] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks) and all(self.samples)

    def failures(self) -> list[str]:
        lines = [f"{c.name}: {c.message}" for c in self.checks if not c.ok]
        for sample in self.samples:
            if sample.error:
                lines.append(f"{sample.label}: {sample.error}")
            lines += [f"{sample.label}: {c}" for c in sample.comparisons if not c]
        return lines

    def to_json(self) -> dict:
        return {
            "model": self.model_path,
            "passed": self.passed,
            "summary": self.summary,
            "checks": [vars(c) for c in self.checks],
            "reference": self.reference,
            "samples": [
                {"label": s.label, "kind": s.kind, "passed": bool(s), "shapes": s.shapes, "error": s.error,
                 "outputs": [{**{k: v for k, v in vars(c).items()}, "passed": bool(c), "text": str(c)}
                             for c in s.comparisons]}
                for s in self.samples
            ],
            "failures": self.failures(),
            "diagnosis": self.diagnosis,
            "notes": self.notes,
        }


# ------------------------------------------------------------------------------------------ summary
def _walk_nodes(graph):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g.node:
                yield from _walk_nodes(attribute.g)
            for sub in attribute.graphs:
                yield from _walk_nodes(sub)


def summarize(model, path: Path) -> dict:
    import onnx

    from ..models.modelinfo import _value_info, graph_inputs

    ops = collections.Counter(
        (f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type) for n in _walk_nodes(model.graph)
    )
    parameters = 0
    parameter_bytes = 0
    for tensor in model.graph.initializer:
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        parameters += count
        parameter_bytes += count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return {
        "path": str(path),
        "sha256": file_sha256(path),
        "size_bytes": path.stat().st_size,
        "ir_version": model.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": graph_inputs(model.graph),
        "outputs": [_value_info(v) for v in model.graph.output],
        "node_count": sum(ops.values()),
        "ops": dict(ops.most_common()),
        "parameters": parameters,
        "parameter_bytes": parameter_bytes,
        "external_data": [p.name for p in check_external_data(model, path)],
        "metadata": {p.key: p.value for p in model.metadata_props},
    }


# ----------------------------------------------------------------------------------- structural
def structural_checks(path: Path) -> list[CheckStep]:
    import onnx

    steps = []
    try:
        onnx.checker.check_model(str(path), full_check=True)  # by path: handles external data and > 2 GB
        steps.append(CheckStep("onnx.checker (full)", True))
    except Exception as exc:  # the checker raises ValidationError, InferenceError, or protobuf errors
        if is_our_bug(exc):  # a bug of ours stays a traceback
            raise
        steps.append(CheckStep("onnx.checker (full)", False, one_line(exc)))
    try:
        model = onnx.load(str(path))
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        steps.append(CheckStep("shape inference (strict)", True))
    except Exception as exc:
        if is_our_bug(exc):  # a bug of ours stays a traceback
            raise
        steps.append(CheckStep("shape inference (strict)", False, one_line(exc)))
    try:
        host_session(path)
        steps.append(CheckStep("onnxruntime load", True))
    except ModelError as exc:
        steps.append(CheckStep("onnxruntime load", False, exc.message))
    return steps


# --------------------------------------------------------------------------------------- parity
def _signature(session) -> Signature:
    from ..agentlib import session_signature

    signature = session_signature(session)
    signature.dtypes  # an input type numpy cannot hold (a sequence, a map) is refused here, first
    return signature


def _fixed_dim_problems(signature: Signature, arrays: dict) -> list[str]:
    """Inputs whose size differs from a fixed dim of the model: name the dims and the fix."""
    problems = []
    for name, shape in zip(signature.names, signature.shapes):
        array = arrays[name]
        if array.ndim != len(shape):
            problems.append(f"input '{name}' has rank {len(shape)} in the model but {array.ndim} was given")
            continue
        fixed = [axis for axis, (want, got) in enumerate(zip(shape, array.shape))
                 if not is_free(want) and want != got]
        if fixed:
            dims = ", ".join(f"axis {a} = {shape[a]}" for a in fixed)
            flags = " ".join(f"--dynamic {name}:{a}" for a in fixed)
            problems.append(f"input '{name}' is fixed in the ONNX model ({dims}) but got shape {list(array.shape)}: "
                            f"re-export with {flags} to accept other sizes")
    return problems


def _check_dims(signature: Signature, dims: dict) -> None:
    """--dim names a free dimension of this model, with a positive size: the same rule as deploy's."""
    known = signature.accepted_dim_keys()
    for key, size in dims.items():
        if key not in known:
            raise InputError(f"--dim {key}: the model has no free dimension called that",
                             "free dimensions: " + (", ".join(sorted(known)) or "none (every dimension is fixed)"))
        if size < 1:
            raise InputError(f"--dim {key}={size}: a size must be a positive integer")


def _generated(signature: Signature, sizes: dict, seed: int, scale: float = 1.0, int_ranges: dict | None = None) -> dict:
    from ..agentlib import generate

    arrays = {}
    for position, (name, shape, dtype) in enumerate(zip(signature.names, signature.shapes, signature.dtypes)):
        concrete = tuple(sizes[(name, axis)] if is_free(d) else d for axis, d in enumerate(shape))
        array = generate(dtype, concrete, np.random.default_rng([seed, position]), (int_ranges or {}).get(name))
        if np.issubdtype(dtype, np.floating):
            array = (array * scale).astype(dtype)
        arrays[name] = array
    return arrays


def _free_sizes(signature: Signature, base: dict, grow: int = 0) -> dict:
    """(input, axis) -> size for every free dim: the base arrays' sizes (+grow), shared labels kept equal."""
    sizes: dict[tuple[str, int], int] = {}
    by_label: dict[str, int] = {}
    for name, shape in zip(signature.names, signature.shapes):
        for axis, dim in enumerate(shape):
            if not is_free(dim):
                continue
            size = by_label.get(dim) if isinstance(dim, str) else None
            if size is None:
                size = base[name].shape[axis] + grow
                if isinstance(dim, str):
                    by_label[dim] = size
            sizes[(name, axis)] = size
    return sizes


def parity_samples(signature: Signature, base: dict, count: int, rules=None) -> list[tuple[str, str, dict]]:
    """(label, kind, arrays): the base input, then variations that expose baked-in control flow. Inputs that
    only the user can give (a shape, text) are never varied: with one, only the base input is checked."""
    from ..agentlib import is_text

    samples = [("example input", "base", base)]
    if (rules is not None and rules.needs_value) or any(is_text(d) for d in signature.dtypes):
        return samples
    ranges = rules.int_ranges if rules is not None else {}
    floats = [n for n, d in zip(signature.names, signature.dtypes) if np.issubdtype(d, np.floating)]
    same = _free_sizes(signature, base)
    variations = []
    if floats:
        variations.append(("negated example", {n: (-a if n in floats else a) for n, a in base.items()}))
        variations.append(("example x 10", {n: (a * 10).astype(a.dtype) if n in floats else a for n, a in base.items()}))
    seed = 1
    while len(variations) < count - 1:
        scale = 1.0 if seed % 2 else 5.0
        variations.append((f"random #{seed}" + (" (x5)" if scale != 1.0 else ""),
                           _generated(signature, same, seed, scale, ranges)))
        seed += 1
    samples += [(label, "values", arrays) for label, arrays in variations[: max(count - 1, 0)]]
    if same:  # dynamic axes: one more sample at other sizes
        grown = _free_sizes(signature, base, grow=1)
        labels = sorted({f"{n}[{a}]={s}" for (n, a), s in grown.items()})
        samples.append((f"other sizes ({', '.join(labels)})", "sizes", _generated(signature, grown, 100, 1.0, ranges)))
    return samples


def _diagnose(report: ValidationReport, mode: str | None) -> None:
    base = [s for s in report.samples if s.kind == "base"]
    others = [s for s in report.samples if s.kind != "base"]
    if not base or not all(base) or all(others):
        return
    failed = [s for s in others if not s]
    how = "when the model was traced" if mode in (None, "trace") else f"by the {mode} export"
    fix = ("export with --mode script (TorchScript keeps If/Loop), or write the branch with torch.cond"
           if mode in (None, "trace") else "write data-dependent branches with torch.cond")
    kinds = {s.kind for s in failed}
    what = ("a branch or loop that depends on input values" if kinds == {"values"} else
            "a loop over an input size (unrolled for the example's size)" if kinds == {"sizes"} else
            "control flow that depends on input values or sizes")
    report.diagnosis.append(
        f"the export matches the reference on the example input but not on {len(failed)} of {len(others)} other "
        f"inputs: {what} was probably baked in {how}; {fix}")


def _static_size_note(report: ValidationReport, signature: Signature, reference, base: dict) -> None:
    """Static ONNX inputs whose PyTorch model takes other sizes: say so, with --dynamic."""
    from ..models.torchmodel import run_reference

    static = [n for n, s in zip(signature.names, signature.shapes) if s and not any(map(is_free, s))]
    if not static or len(static) != len(signature.names):
        return
    grown = {n: np.concatenate([a, a[:1]], axis=0) if a.ndim else a for n, a in base.items()}
    try:
        run_reference(reference, [grown[n] for n in signature.names])
    except Exception:  # the PyTorch model itself is tied to these sizes: nothing to say
        return
    shapes = ", ".join(f"{n} {list(base[n].shape)}" for n in static)
    flags = " ".join(f"--dynamic {n}:0" for n in static)
    report.notes.append(f"the ONNX model fixes its input sizes ({shapes}) while the PyTorch model also takes other "
                        f"sizes on axis 0: if the board will see other sizes, re-export with {flags}")


def validate(path: Path, reference=None, inputs: Path | None = None, example: dict | None = None,
             samples: int = 5, tolerances: Tolerances = Tolerances(), dims: dict | None = None,
             verbose: bool = False, strict_dims: bool = False) -> ValidationReport:
    """Everything `bench validate` checks. `reference` is a torchmodel.LoadedModel or None."""
    if samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}")
    if inputs is not None and not Path(inputs).exists():
        raise InputError(f"inputs not found: {inputs}")
    from ..models.testdata import is_test_data_set, read_test_data_set
    from ..models.torchmodel import run_reference

    path = Path(path)
    model = load_model_proto(path)
    report = ValidationReport(str(path), summarize(model, path), structural_checks(path),
                              reference=reference.spec if reference is not None else None)
    if not report.checks[-1].ok:  # onnxruntime cannot load it: no parity to check
        return report
    session = host_session(path, verbose)
    signature = _signature(session)  # an input type numpy cannot hold (a sequence, a map) is refused here
    rules = generation_rules(model)
    _check_dims(signature, dims or {})
    output_names = [o.name for o in session.get_outputs()]
    tolerances.check_outputs(output_names, path.name)

    expected_base = None
    if inputs is not None:
        if is_test_data_set(inputs):
            base, expected_base = read_test_data_set(Path(inputs), signature.names)
        else:
            from ..agentlib import load_npz

            base = load_npz(str(inputs))
    elif example is not None:
        base = dict(example)
    else:
        from ..agentlib import build_feeds

        rules.check_given(set(), "--inputs FILE.npz or a test data set")
        unset = signature.free_dim_keys(dims)
        if unset and strict_dims:
            report.samples.append(SampleParity("example input", "base", {}, error=(
                f"free dimension(s) {', '.join(unset)} have no size: set them with --dim NAME=N (--strict-dims "
                "refuses to default them to 1)")))
            return report
        if unset:  # like onnxruntime_perf_test: a free dim nobody sized is 1, and the report says so
            report.notes.append(f"free dimension(s) {', '.join(unset)} set to 1 (size them with --dim NAME=N; "
                                "--strict-dims refuses instead)")
            dims = {**(dims or {}), **{key: 1 for key in unset}}
        base, _ = build_feeds(signature, dims=dims or {}, int_ranges=rules.int_ranges)
    missing = [n for n in signature.names if n not in base]
    extra = [n for n in base if n not in signature.names]
    if missing or extra:
        raise InputError(f"the inputs do not match the model: missing {missing or 'none'}, unknown {extra or 'none'}",
                         f"the model's inputs are: {', '.join(signature.names)}")
    from ..agentlib import is_text

    base = {n: np.asarray(base[n]) if is_text(d) or np.asarray(base[n]).dtype == d else np.asarray(base[n]).astype(d)
            for n, d in zip(signature.names, signature.dtypes)}
    problems = _fixed_dim_problems(signature, base)
    if problems:
        report.samples.append(SampleParity("example input", "base", {n: list(a.shape) for n, a in base.items()},
                                           error="; ".join(problems)))
        return report

    has_reference = reference is not None or expected_base is not None
    if not has_reference:
        report.notes.append("no reference given (--reference MODEL_SPEC or a test data set with output_K.pb): "
                            "only checked that onnxruntime runs and gives finite outputs")
    for label, kind, arrays in parity_samples(signature, base, samples if has_reference else 1, rules):
        if reference is None and kind != "base":
            continue  # a test data set's outputs cover the base input only
        sample = SampleParity(label, kind, {n: list(a.shape) for n, a in arrays.items()})
        report.samples.append(sample)
        try:
            actual = session.run(None, {n: arrays[n] for n in signature.names})
        except Exception as exc:
            if not from_onnxruntime(exc):
                raise
            sample.error = f"onnxruntime failed: {one_line(exc)}"
            continue
        if reference is not None:
            try:
                expected = run_reference(reference, [arrays[n] for n in signature.names])
            except Exception as exc:  # noqa: BLE001 - the user's model ran: all it raises is its own
                sample.error = f"the PyTorch reference failed on this input: {one_line(exc)}"
                continue
        elif expected_base is not None:
            expected = expected_base
        else:
            bad = [n for n, a in zip(output_names, actual) if np.issubdtype(np.asarray(a).dtype, np.floating)
                   and not np.isfinite(a).all()]
            if bad:
                sample.error = f"non-finite values (NaN/Inf) in output(s) {', '.join(bad)}"
            continue
        if len(expected) != len(actual):
            raise ModelError(f"the reference gives {len(expected)} outputs but the model has {len(actual)} "
                             f"({', '.join(output_names)})", "check that --reference is the model this file was exported from")
        sample.comparisons = compare_outputs(output_names, expected, actual, tolerances)
    _diagnose(report, report.summary["metadata"].get(META_MODE))
    if reference is not None and report.passed:
        _static_size_note(report, signature, reference, base)
    return report


def report_lines(report: ValidationReport) -> list[str]:
    """The report as a person reads it."""
    lines = summary_lines(report.summary, report.checks)
    if report.samples:
        has_reference = report.reference or any(sample.comparisons for sample in report.samples)
        lines.append("parity    against " + (report.reference or "the test data set's outputs") if has_reference
                     else "parity    no reference: checked that onnxruntime runs and gives finite outputs")
        for sample in report.samples:
            mark = "ok  " if sample else "FAIL"
            detail = sample.error or "; ".join(str(c) for c in sample.comparisons) or "runs, finite outputs"
            lines.append(f"  {mark} {sample.label}: {detail}")
    for note in report.notes:
        lines.append(f"note      {note}")
    for diagnosis in report.diagnosis:
        lines.append(f"diagnosis {diagnosis}")
    problems = len(report.failures())
    lines.append("verdict   " + ("PASS" if report.passed else f"FAIL ({problems} problem{'s' if problems != 1 else ''})"))
    return lines


def summary_lines(s: dict, checks: list) -> list[str]:
    """What a model is (`bench inspect`, and the top of `bench validate`): free dims shown by name."""
    size = s["size_bytes"]
    lines = [
        f"model     {s['path']}  ({size / 1024:.1f} KiB, sha256 {s['sha256'][:12]})",
        f"format    IR {s['ir_version']}, opsets " + ", ".join(f"{d} {v}" for d, v in s["opsets"].items())
        + (f", producer {s['producer']}" if s["producer"] else ""),
    ]
    for label, values in (("inputs", s["inputs"]), ("outputs", s["outputs"])):
        for position, value in enumerate(values):
            shape = "?" if value["shape"] is None else "[" + ", ".join("?" if d is None else str(d) for d in value["shape"]) + "]"
            lines.append(f"{label if position == 0 else '':<10}{value['name']}  {value['dtype']} {shape}")
    ops = ", ".join(f"{op} {n}" for op, n in list(s["ops"].items())[:12]) + (" ..." if len(s["ops"]) > 12 else "")
    lines.append(f"graph     {s['node_count']} nodes: {ops}")
    lines.append(f"params    {s['parameters']:,} ({s['parameter_bytes'] / 1024:.1f} KiB); external data: "
                 + (", ".join(s["external_data"]) or "none"))
    for check in checks:
        lines.append(f"check     {'ok  ' if check.ok else 'FAIL'} {check.name}" + (f": {check.message}" if check.message else ""))
    return lines


def readable_graph(model) -> str:
    """onnx.printer's text of the graph, with weights named but not printed (they would drown the nodes)."""
    import onnx

    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    weights = [f"{i.name} {onnx.helper.tensor_dtype_to_np_dtype(i.data_type).name}{list(i.dims)}" for i in graph.initializer]
    del graph.initializer[:]
    header = f"# {len(weights)} initializers (values omitted): " + ", ".join(weights[:20]) + (" ..." if len(weights) > 20 else "")
    return header + "\n" + onnx.printer.to_text(graph)
