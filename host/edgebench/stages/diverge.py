"""Diverge: where a converted variant parts from its parent, tensor by tensor, on the target's own runtime.

The answer to "my INT8 (or FP16, OpenVINO, ncnn) model lost accuracy: which layer did it?", measured where the
numbers are produced. The parent's tensors are matched with the variant's (by ONNX name, through the
Quantize/DequantizeLinear pairs a quantizer inserts); then the variant is *cut* at a matched tensor -- a
truncated copy whose output is that tensor -- and the cut runs on the board with the variant's real graph, so
every fusion before the cut stays as the runtime makes it (marking every tensor an output, as a debugger
would, keeps each one alive and so breaks the fusions being judged: `--method all-outputs` does that, for
comparison). The host's onnxruntime computes the parent's value of the same tensor on the same inputs.

Bisection: the final outputs first (when they hold, nothing diverges: one board run); otherwise the first
matched tensor below the thresholds is found in about log2(matched) runs, since errors only accumulate along
the graph. Another runtime's bundle (OpenVINO, ncnn) or an ORT-format file cannot be cut itself: the parent is
cut and each cut converted as the variant was, so the board still runs that runtime's own graph of it.

`--budget` then proposes the fewest nodes to leave in float in an INT8 variant (onnxruntime quantization's
nodes_to_exclude): keep the first divergent tensor in float -- its producer (and the layer a Relu/Clip was
folded into) and its consumers --, re-convert, check the budget on the board, and repeat from the next
divergence. The last variant is written with provenance naming the nodes, and both it and the original are
measured (accuracy and latency) as ordinary stored results.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..results.tables import aligned
from .accuracy import AccuracyBudget, is_labelled, npz_bytes
from ..errors import AgentError, BenchError, ConfigError, CutFailed, InputError, ModelError, from_onnxruntime, is_our_bug, one_line

DIVERGENCE_VERSION = 1
DEFAULT_MIN_COSINE = 0.99
DEFAULT_MIN_SNR_DB = 20.0
METHODS = ("bisect", "every", "all-outputs")
SNR_CAP_DB = 200.0  # an exact match has infinite SNR: shown as this
# A probe measures values, not time: one inference after loading, no warm-up.
PROBE_OPTIONS = {"warmup_min_iterations": 0, "warmup_max_iterations": 0, "min_iterations": 1, "max_iterations": 1,
                 "min_seconds": 0.0, "max_seconds": 60.0, "repeats": 1}
# Activations onnxruntime's quantizer folds into the layer before them: to keep such a tensor in float, that
# layer must stay in float too.
FOLDED_ACTIVATIONS = ("Relu", "Clip")
MAX_SAMPLES = 10_000  # generated inputs: each is held on the host with every tensor the search measures
MAX_KEPT_NODES = 12  # --budget gives up beyond this many nodes in float (an INT8 model mostly in float is not one)
# Variants whose graph is an ONNX graph edgebench can cut as it is; the other kinds are cut in the parent and
# converted as the variant was.
CUT_IN_PARENT = ("ort", "openvino", "ncnn")


@dataclass
class Tensor:
    """A float tensor of the parent, in graph order."""

    index: int
    name: str
    node: str  # the node that produces it
    op: str
    is_output: bool = False
    variant_name: str | None = None  # where the variant holds the same value; None: not matched
    why_unmatched: str | None = None


@dataclass
class Probe:
    """One measured tensor: the variant's value on the board against the parent's on the host."""

    tensor: Tensor
    max_abs: float
    cosine: float
    snr_db: float
    top1_agreement_pct: float | None = None
    below: bool = False

    def row(self) -> dict:
        return {"index": self.tensor.index, "tensor": self.tensor.name, "variant_tensor": self.tensor.variant_name,
                "node": self.tensor.node, "op": self.tensor.op, "max_abs": self.max_abs, "cosine": self.cosine,
                "snr_db": self.snr_db, "top1_agreement_pct": self.top1_agreement_pct, "below": self.below}


@dataclass
class Pair:
    """The variant, its parent, and how the variant can be cut."""

    variant: Path
    parent: Path
    kind: str  # the conversion (int8-static, fp16, openvino, ...) or "onnx" for a model without provenance
    runtime: str
    provenance: dict | None
    cut_in_parent: bool  # True: cut the parent and convert each cut as the variant was

    @property
    def how(self) -> str:
        return (f"the parent cut and each cut converted to {self.kind}" if self.cut_in_parent
                else "the variant's own graph cut")


@dataclass
class Thresholds:
    min_cosine: float = DEFAULT_MIN_COSINE
    min_snr_db: float = DEFAULT_MIN_SNR_DB

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_cosine) and -1.0 <= self.min_cosine <= 1.0):
            raise InputError(f"--min-cosine must be between -1 and 1, got {self.min_cosine}")
        if not math.isfinite(self.min_snr_db):
            raise InputError(f"--min-snr must be a number of dB, got {self.min_snr_db}")

    def below(self, cosine: float, snr_db: float) -> bool:
        return cosine < self.min_cosine or snr_db < self.min_snr_db


# ------------------------------------------------------------------------------------------ the pair
def resolve_pair(variant: Path, parent: Path | None, runtime: str | None) -> Pair:
    """The variant and its parent (from the variant's provenance when not given), checked before anything runs."""
    from ..fileio import file_sha256
    from ..models.modelinfo import inspect_model
    from ..models.provenance import read_provenance

    variant = Path(variant)
    block = inspect_model(variant)  # a clear error for a missing or corrupt file
    provenance = _checked(read_provenance(variant, block["sha256"]), variant)
    if block["format"] in ("litert", "tflite"):
        raise ConfigError(f"{variant.name} is a LiteRT model, converted from the PyTorch module rather than from the "
                          "ONNX graph: no tensor of it can be matched and cut",
                          "diverge the ONNX variants (int8, fp16, opset) or the OpenVINO and ncnn bundles")
    if parent is None:
        if provenance is None:
            raise InputError(f"{variant.name} has no provenance naming its parent (it was not made by `bench convert`, "
                             "or it changed since)", "name the parent: --parent PARENT.onnx")
        parent = Path(provenance["parent"]["path"])
        if not parent.is_file():
            raise InputError(f"the parent of {variant.name}, {parent}, is not there any more", "name it: --parent PARENT.onnx")
        if file_sha256(parent) != provenance["parent"].get("sha256"):
            raise InputError(f"the parent of {variant.name}, {parent}, changed since the conversion",
                             "convert again, or name the parent it was made from: --parent PARENT.onnx")
    parent_block = inspect_model(Path(parent))
    if parent_block["format"] != "onnx":
        raise InputError(f"the parent {Path(parent).name} is not an ONNX model", "name the .onnx the variant was made from")
    if provenance is not None and parent_block["sha256"] != provenance["parent"]["sha256"]:
        raise InputError(f"{Path(parent).name} is not the parent of {variant.name}: its provenance names another model "
                         f"(sha256 {str(provenance['parent']['sha256'])[:12]}…)",
                         "leave --parent out to use the one it was converted from")
    kind = str(provenance["variant"]) if provenance else _kind_of(block)
    cut_in_parent = block["format"] != "onnx"
    if cut_in_parent and provenance is None:
        raise InputError(f"{variant.name} has no provenance: edgebench cannot tell how to convert cuts of the parent "
                         "as it was converted", f"make it with `bench convert PARENT --to {kind}`")
    chosen = _runtime_for(block, kind, runtime)
    return Pair(variant, Path(parent), kind, chosen, provenance, cut_in_parent)


def _checked(provenance: dict | None, variant: Path) -> dict | None:
    """A provenance whose parent and settings have the shapes edgebench writes, or an InputError: the file sits
    beside a model from anywhere."""
    if provenance is None:
        return None
    parent, settings = provenance.get("parent"), provenance.get("settings", {})
    if (not isinstance(parent, dict) or not isinstance(parent.get("path"), str) or not isinstance(parent.get("sha256"), str)
            or not isinstance(settings, dict) or not isinstance(provenance.get("variant"), str)):
        raise InputError(f"the provenance beside {variant.name} is malformed (its parent, variant or settings)",
                         "convert the variant again with `bench convert`")
    return provenance


def _kind_of(block: dict) -> str:
    """A model without provenance: an .onnx is judged as a graph of its own; the others by their format."""
    return str(block["format"])


def _runtime_for(block: dict, kind: str, runtime: str | None) -> str:
    own = {"openvino": "openvino", "ncnn": "ncnn"}.get(kind, "onnxruntime")
    if runtime is None or runtime == own:
        return own
    if block["format"] == "onnx" and runtime == "openvino":
        return runtime  # OpenVINO reads an .onnx as it is
    raise ConfigError(f"--runtime {runtime}: a {kind} variant runs on {own}",
                      "leave --runtime out, or convert the parent for that runtime and diverge that variant")


# ------------------------------------------------------------------------------------ tensors, matching
def parent_tensors(parent) -> list[Tensor]:
    """The parent's float tensors that depend on an input, in graph (topological) order."""
    import onnx

    graph = _with_types(parent).graph
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    live = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    tensors: list[Tensor] = []
    for node in graph.node:
        if not any(name in live for name in _node_inputs(node)):
            continue  # computed from constants only (shapes, folded weights): nothing a conversion changes per input
        for name in node.output:
            if not name:
                continue
            live.add(name)
            if types.get(name) in float_types:
                tensors.append(Tensor(len(tensors), name, node.name or f"{node.op_type}:{name}", node.op_type,
                                      name in outputs))
    return tensors


def _with_types(model):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference fails on some valid models (custom domains): types of outputs only, then
        return model


def _node_inputs(node) -> list[str]:
    """A node's inputs, and the outer names its subgraphs (If, Loop, Scan) read."""
    names = [n for n in node.input if n]
    for attribute in node.attribute:
        for graph in [attribute.g, *attribute.graphs] if attribute.type in (5, 10) else []:
            inner = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | {t.name for t in graph.initializer}
            names += [name for n in graph.node for name in _node_inputs(n) if name not in inner]
    return names


def match_tensors(tensors: list[Tensor], variant, cut_in_parent: bool) -> list[Tensor]:
    """Fill each tensor's variant name (or why it has none): the same name in the variant, or -- where a quantizer
    put a QuantizeLinear/DequantizeLinear pair on it -- the dequantized value the next layer reads."""
    if cut_in_parent:  # the cuts are made in the parent: every tensor is there, by its own name
        for tensor in tensors:
            tensor.variant_name = tensor.name
        return tensors
    produced = {name for node in variant.graph.node for name in node.output}
    quantized = {n.input[0]: n.output[0] for n in variant.graph.node if n.op_type == "QuantizeLinear" and n.input}
    dequantized = {n.input[0]: n.output[0] for n in variant.graph.node if n.op_type == "DequantizeLinear" and n.input}
    for tensor in tensors:
        through = dequantized.get(quantized.get(tensor.name, ""))
        if through is not None:
            tensor.variant_name = through
        elif tensor.name in produced:
            tensor.variant_name = tensor.name
        else:
            tensor.why_unmatched = "not in the variant's graph: the conversion folded or renamed it"
    return tensors


# ------------------------------------------------------------------------------------------------ cuts
def cut_model(model, outputs: list[str]):
    """A copy of the model whose outputs are `outputs`, holding only the nodes they need (the graph's inputs all
    stay, so the same feeds fit every cut)."""
    import onnx

    graph = model.graph
    producer = {name: index for index, node in enumerate(graph.node) for name in node.output}
    needed, keep, stack = set(), set(), list(outputs)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        index = producer.get(name)
        if index is not None and index not in keep:
            keep.add(index)
            stack.extend(_node_inputs(graph.node[index]))
    typed = {v.name: v for v in [*graph.value_info, *graph.output]}
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    del cut.graph.node[:]
    cut.graph.node.extend(node for index, node in enumerate(graph.node) if index in keep)
    del cut.graph.initializer[:]
    cut.graph.initializer.extend(t for t in graph.initializer if t.name in needed)
    del cut.graph.value_info[:]
    cut.graph.value_info.extend(v for v in graph.value_info if v.name in needed and v.name not in outputs)
    del cut.graph.output[:]
    for name in outputs:
        value = onnx.ValueInfoProto()
        if name in typed:
            value.CopyFrom(typed[name])
        value.name = name
        cut.graph.output.append(value)
    return cut


# ---------------------------------------------------------------------------------------------- probing
@dataclass
class Inputs:
    """The feeds every probe runs, in batches, and where they came from."""

    source: str
    batches: list[dict]
    samples: int
    labels: np.ndarray | None = None


def plan_inputs(parent: Path, *, dataset: Path | None, test_data: Path | None, inputs: Path | None, samples: int,
                dims: dict, values: dict, seed: int) -> Inputs:
    """The accuracy pass's inputs, made as `bench deploy` makes them (the parent's signature)."""
    from . import accuracy

    if dataset is not None:  # labels are optional here: the parent is the reference
        from ..models.modelinfo import session_io

        _, signature, _ = session_io(parent)
        arrays, labels = accuracy.load_dataset(dataset, signature, require_labels=False)
        batches, total = accuracy.dataset_batches(arrays, signature, accuracy.DEFAULT_BATCH_SIZE)
        return _usable(Inputs("dataset", batches, total, labels))
    planned = accuracy.plan(parent, test_data=test_data, inputs=inputs, samples=samples, dims=dims, values=values,
                            seed=seed)
    return _usable(Inputs(planned.source, planned.batches, planned.samples))


def _usable(feeds: Inputs) -> Inputs:
    """Inputs a divergence can be measured on: some rows, and finite floats (a NaN in the reference makes every
    comparison after it meaningless)."""
    for batch in feeds.batches:
        for name, value in batch.items():
            array = np.asarray(value)
            if array.size == 0:
                raise InputError(f"input {name!r} has no elements ({list(array.shape)}): nothing to compare",
                                 "give inputs with at least one row, or size the free dimensions with --dim")
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise InputError(f"input {name!r} holds NaN or infinity: the parent's values would be no reference",
                                 "give finite inputs")
    return feeds


class Prober:
    """Runs cuts of the variant on the board and the parent on the host; counts the board runs."""

    def __init__(self, pair: Pair, board, feeds: Inputs, scratch: Path, thresholds: Thresholds, dims: dict):
        from ..models.modelinfo import load_model_proto

        self.pair, self.board, self.feeds, self.scratch, self.thresholds = pair, board, feeds, scratch, thresholds
        self.dims = dims
        self.parent_model = load_model_proto(pair.parent, load_external_data=True)
        self.variant_model = None if pair.cut_in_parent else load_model_proto(pair.variant, load_external_data=True)
        self.board_runs = 0
        self.board_seconds = 0.0
        self._reference_session: Any = None
        self._reference: dict[str, np.ndarray] = {}
        self._staged_inputs: str | None = None
        self._timing_inputs: str | None = None

    # ---- the parent, on the host
    def reference(self, names: list[str]) -> dict[str, np.ndarray]:
        """The parent's value of each tensor over every batch (onnxruntime on this host's CPU, no graph
        optimisation: the values the graph defines)."""
        import onnxruntime as ort

        missing = [n for n in names if n not in self._reference]
        if missing:
            if self._reference_session is None:
                everything = [t.name for t in parent_tensors(self.parent_model)]
                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                options.log_severity_level = 3
                try:
                    self._reference_session = ort.InferenceSession(
                        cut_model(self.parent_model, everything).SerializeToString(), options,
                        providers=["CPUExecutionProvider"])
                except Exception as exc:
                    if not from_onnxruntime(exc):
                        raise
                    raise ModelError(f"onnxruntime on this host cannot run the parent {self.pair.parent.name}: "
                                     f"{one_line(exc, 200)}") from exc
            from ..agentlib import join_batches

            try:
                runs = [self._reference_session.run(missing, batch) for batch in self.feeds.batches]
            except Exception as exc:
                if not from_onnxruntime(exc):
                    raise
                raise InputError(f"the parent {self.pair.parent.name} does not run on these inputs here: "
                                 f"{one_line(exc, 200)}") from exc
            for position, name in enumerate(missing):
                self._reference[name] = join_batches([run[position] for run in runs], self._keep_rows)
        return {name: self._reference[name] for name in names}

    @property
    def _keep_rows(self) -> int | None:
        return self.feeds.samples if self.feeds.source == "dataset" else None

    # ---- the variant, on the board
    def measure(self, tensors: list[Tensor], whole: bool = False) -> list[Probe]:
        """One board run of the variant cut at these tensors (whole: the variant file itself); their probes."""
        names = [t.variant_name for t in tensors]
        path = self.pair.variant if whole else self._cut_file(tensors)
        outputs = self._run_on_board(path)
        expected = self.reference([t.name for t in tensors])
        probes = []
        for tensor, name in zip(tensors, names):
            if name not in outputs:
                raise AgentError(f"the cut at {name} gave outputs {sorted(outputs)[:5]}, not {name}")
            probes.append(self._probe(tensor, expected[tensor.name], outputs[name]))
        return probes

    def _probe(self, tensor: Tensor, expected: np.ndarray, actual: np.ndarray) -> Probe:
        from ..agentlib import compare_arrays, is_classifier_output, topk_agreement

        metrics = compare_arrays(expected, actual, 0.0, 0.0)
        if metrics["expected_shape"] != metrics["actual_shape"]:
            raise InputError(f"{tensor.name} has shape {metrics['actual_shape']} in {self.pair.variant.name} but "
                             f"{metrics['expected_shape']} in {self.pair.parent.name}",
                             "is --parent the model this variant was converted from?")
        snr = signal_to_noise_db(expected, actual)
        top1 = None
        if tensor.is_output and is_classifier_output(expected):
            top1 = topk_agreement(expected, actual)["top1_agreement_pct"]
        return Probe(tensor, metrics["max_abs"], metrics["cosine"], snr, top1,
                     self.thresholds.below(metrics["cosine"], snr))

    def _cut_file(self, tensors: list[Tensor]) -> Path:
        """The cut as a file for the board: the variant cut there, or the parent cut there and converted as the
        variant was. Named by content, so a cut made twice is uploaded once."""
        import onnx

        model = self.parent_model if self.pair.cut_in_parent else self.variant_model
        cut = cut_model(model, [str(t.variant_name) for t in tensors])
        data = cut.SerializeToString()
        if len(data) > 2**31 - 1:
            raise ModelError(f"a cut of {self.pair.variant.name} is over 2 GiB, more than one ONNX file holds",
                             "diverge a smaller model, or its parts")
        from ..agentlib import sha256_bytes

        stem = f"{self.pair.variant.name.split('.')[0][:40]}.cut-{sha256_bytes(data)[:12]}"
        path = self.scratch / f"{stem}.onnx"
        if not path.exists():
            onnx.save(cut, str(path))
        if not self.pair.cut_in_parent:
            return path
        return self._converted(path)

    def _converted(self, cut: Path) -> Path:
        """A cut of the parent converted as the variant was (its provenance's kind and settings)."""
        from .convert import CONVERTERS, runtime_converter, variant_name

        kind = self.pair.kind
        out = self.scratch / variant_name(cut, kind)
        if out.exists():
            return out
        options = {"dims": self.dims, **(self.pair.provenance or {}).get("settings", {})}
        converter = CONVERTERS.get(kind) or runtime_converter(kind)
        with tempfile.TemporaryDirectory(prefix="edgebench-cut-", dir=self.scratch) as work:
            try:
                converter(cut, out, Path(work), options)
            except BenchError:
                raise
            except Exception as exc:  # the converters (pnnx, openvino, onnxruntime tools) raise anything
                if is_our_bug(exc):  # a bug of ours stays a traceback
                    raise
                raise CutFailed(f"converting the cut to {kind} failed: {one_line(exc, 200)}") from exc
        return out

    def _run_on_board(self, path: Path) -> dict[str, np.ndarray]:
        from ..agentlib import batch_key, join_batches
        from .deploy import RunSettings
        from ..fileio import file_sha256
        from ..results.files import new_run_id

        board = self.board
        if self._staged_inputs is None:
            self._staged_inputs = board.stage_bytes(npz_bytes({batch_key(b, p): self._cast(name, value)
                                                          for b, feeds in enumerate(self.feeds.batches)
                                                          for p, (name, value) in enumerate(feeds.items())}),
                                                    "diverge-inputs.npz")
            self._timing_inputs = board.stage_bytes(npz_bytes({name: self._cast(name, value) for name, value
                                                          in self.feeds.batches[0].items()}), "diverge-feeds.npz")
        remote = board.stage(path, file_sha256(path))
        run_id = new_run_id(f"diverge-{path.stem[:40]}", board.target.name[:40])
        request = RunSettings(options={**PROBE_OPTIONS, "runtime": self.pair.runtime}).request(remote, self._timing_inputs)
        request["accuracy"] = {"inputs": self._staged_inputs, "batches": len(self.feeds.batches), "samples": None,
                               "tolerances": {}, "label_output": None, "outputs": board.run_path(run_id, "outputs.npz")}
        started = time.monotonic()
        try:
            reply = board.run(request, run_id, {"run_id": run_id, "diverge": True}, 600.0)
            answer = reply.get("accuracy") if reply.get("status") == "ok" else None
            data = board.transport.read_bytes(answer["outputs_file"]) if answer else None
        finally:
            self.board_runs += 1
            self.board_seconds += time.monotonic() - started
            with contextlib.suppress(BenchError, OSError):
                board.mark_fetched(run_id)  # a probe is no result: `bench fetch` leaves it
        if answer is None:
            error = reply.get("error") or {}
            raise CutFailed(f"{board.target.name} could not run it: {error.get('message', 'no accuracy outputs')}")
        if data is None:
            raise AgentError(f"the outputs of a cut are missing on {board.target.name}: {answer['outputs_file']}")
        from ..agentlib import load_npz

        arrays = load_npz(f"the outputs of a cut on {board.target.name}", data)
        names = answer["output_names"]
        return {name: join_batches([arrays[batch_key(b, j)] for b in range(len(self.feeds.batches))], self._keep_rows)
                for j, name in enumerate(names)}

    def _cast(self, name: str, value: np.ndarray) -> np.ndarray:
        """Feeds in the variant's input types (an FP16 variant without --keep-io-types takes float16)."""
        wanted = self._variant_input_types().get(name)
        return value.astype(wanted) if wanted is not None and value.dtype != wanted else value

    def _variant_input_types(self) -> dict:
        import onnx

        if self.variant_model is None:
            return {}
        found = {}
        for value in self.variant_model.graph.input:
            elem = value.type.tensor_type.elem_type
            if elem:
                found[value.name] = onnx.helper.tensor_dtype_to_np_dtype(elem)
        return found




def signal_to_noise_db(expected, actual) -> float:
    """10·log10(‖reference‖² / ‖difference‖²) over the finite elements; capped at SNR_CAP_DB for an exact match."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    both = np.isfinite(e) & np.isfinite(a)
    if not both.any():
        return 0.0
    noise = float(np.sum((e[both] - a[both]) ** 2))
    signal = float(np.sum(e[both] ** 2))
    if noise == 0.0:
        return SNR_CAP_DB
    if signal == 0.0:
        return -SNR_CAP_DB
    return float(min(SNR_CAP_DB, max(-SNR_CAP_DB, 10.0 * math.log10(signal / noise))))


# ---------------------------------------------------------------------------------------------- search
@dataclass
class Search:
    """What one search found."""

    probes: list[Probe] = field(default_factory=list)
    first: Probe | None = None
    cut_failures: list[tuple[str, str]] = field(default_factory=list)

    def finals(self) -> list[Probe]:
        return [p for p in self.probes if p.tensor.is_output]


def search(prober: Prober, tensors: list[Tensor], method: str, force: bool = False) -> Search:
    matched = [t for t in tensors if t.variant_name is not None]
    outputs = [t for t in matched if t.is_output]
    inner = [t for t in matched if not t.is_output]
    found = Search()
    if method == "all-outputs":  # one run, every matched tensor an output: fast, but the fusions change
        found.probes = prober.measure(matched)
    else:
        found.probes = prober.measure(outputs, whole=True)
        if method == "every":
            for tensor in inner:
                found.probes += _measured(prober, [tensor], found)
        elif any(p.below for p in found.probes) or force:
            found.probes += _bisect(prober, inner, found)
    found.probes.sort(key=lambda p: p.tensor.index)
    found.first = next((p for p in found.probes if p.below), None)
    return found


def _measured(prober: Prober, tensors: list[Tensor], found: Search) -> list[Probe]:
    try:
        return prober.measure(tensors)
    except CutFailed as exc:
        found.cut_failures.append((tensors[0].name, exc.message))
        return []


def _bisect(prober: Prober, candidates: list[Tensor], found: Search) -> list[Probe]:
    """The first candidate below the thresholds, given that the final outputs are: the boundary between the
    last tensor that holds (lo) and the first that does not (hi) narrows by half each run."""
    candidates = list(candidates)
    probes: list[Probe] = []
    lo, hi = -1, len(candidates)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        measured = _measured(prober, [candidates[mid]], found)
        if not measured:  # this tensor cannot be cut: search without it
            candidates.pop(mid)
            hi -= 1
            continue
        probes += measured
        if measured[0].below:
            hi = mid
        else:
            lo = mid
    return probes


def worst_spans(tensors: list[Tensor], probes: list[Probe], limit: int = 3) -> list[dict]:
    """Where the SNR fell most between one measured tensor and the next: the nodes between them."""
    spans: list[dict] = []
    # Before the first measured tensor: as clean as the cleanest one measured (inputs are exact, but a drop from
    # "exact" to any quantized tensor says nothing).
    previous_snr, previous_index = max((p.snr_db for p in probes), default=SNR_CAP_DB), -1
    for probe in probes:
        between = [t.node for t in tensors if previous_index < t.index <= probe.tensor.index]
        drop = previous_snr - probe.snr_db
        if drop > 0:
            spans.append({"to": probe.tensor.name, "nodes": list(dict.fromkeys(between)), "snr_drop_db": drop})
        previous_snr, previous_index = probe.snr_db, probe.tensor.index
    return sorted(spans, key=lambda s: -s["snr_drop_db"])[:limit]


def first_nodes(tensors: list[Tensor], probes: list[Probe], first: Probe) -> list[str]:
    """The nodes between the last measured tensor that held and the first that did not: where it went wrong."""
    before = max((p.tensor.index for p in probes if p.tensor.index < first.tensor.index and not p.below), default=-1)
    return list(dict.fromkeys(t.node for t in tensors if before < t.index <= first.tensor.index))


# ---------------------------------------------------------------------------------------------- budget
def keep_in_float(parent, tensor_name: str) -> list[str]:
    """The parent's nodes to exclude from quantization so this tensor stays in float: its producer (and, for a
    Relu or Clip the quantizer folds away, the layer before it) and every consumer."""
    graph = parent.graph
    producer = {name: node for node in graph.node for name in node.output}
    consumers = [node.name for node in graph.node if tensor_name in node.input]
    nodes = []
    node = producer.get(tensor_name)
    if node is not None:
        nodes.append(node.name)
        if node.op_type in FOLDED_ACTIVATIONS and node.input and node.input[0] in producer:
            nodes.append(producer[node.input[0]].name)
    return [n for n in dict.fromkeys(nodes + consumers) if n]


@dataclass
class BudgetSteps:
    """The search for nodes to keep in float: each step's kept nodes and final outputs on the board."""

    kept: list[str] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    met: bool = False
    variant: Path | None = None


def propose(pair: Pair, prober: Prober, tensors: list[Tensor], first: Search, budget: AccuracyBudget, calibration: Path | None,
            method: str, thresholds: Thresholds) -> BudgetSteps:
    """Greedy: keep the first divergent tensor in float, re-convert, check the budget on the board; repeat. The
    search for it is at least as strict as the budget (a cosine budget above --min-cosine is the threshold), and
    stricter again when the budget is missed with no tensor below it."""
    from .convert import convert

    outcome = BudgetSteps()
    parent = prober.parent_model
    strict = Thresholds(max(thresholds.min_cosine, budget.value) if budget.metric == "cosine" else thresholds.min_cosine,
                        thresholds.min_snr_db)
    current = first if strict == thresholds and first.first is not None else _divergence(prober, tensors, method, strict)
    while current.first is not None:
        more = [n for n in _nodes_to_keep(parent, tensors, current) if n not in outcome.kept]
        if not more or len(outcome.kept) + len(more) > MAX_KEPT_NODES:
            break  # at nodes already in float, or more than an INT8 model should keep: not met
        outcome.kept += more
        folder = Path(tempfile.mkdtemp(prefix="step-", dir=prober.scratch))
        (made,) = convert(pair.parent, [pair.kind], folder, calibration=calibration, keep_float=outcome.kept)
        if made.path is None:
            raise ModelError(f"re-converting with {', '.join(outcome.kept)} in float failed: {made.error}")
        step = Prober(Pair(made.path, pair.parent, pair.kind, pair.runtime, made.provenance, False), prober.board,
                      prober.feeds, prober.scratch, strict, prober.dims)
        step._reference, step._reference_session = prober._reference, prober._reference_session
        step_tensors = match_tensors(parent_tensors(parent), step.variant_model, False)
        finals = step.measure([t for t in step_tensors if t.is_output and t.variant_name], whole=True)
        outcome.steps.append({"kept": list(outcome.kept), "finals": [p.row() for p in finals]})
        outcome.variant = made.path
        if budget.met([p.row() for p in finals]):
            outcome.met = True
        else:
            current = _divergence(step, step_tensors, method, strict)
        prober.board_runs += step.board_runs
        prober.board_seconds += step.board_seconds
        if outcome.met:
            break
    return outcome


def _divergence(prober: Prober, tensors: list[Tensor], method: str, thresholds: Thresholds, tries: int = 3) -> Search:
    """The first divergent tensor under these thresholds; when the budget is missed and none is below them, the
    search asks 10 dB more SNR (up to `tries` times)."""
    found = Search()
    for attempt in range(tries):
        prober.thresholds = Thresholds(thresholds.min_cosine, thresholds.min_snr_db + 10.0 * attempt)
        found = search(prober, tensors, method, force=True)
        if found.first is not None:
            break
    return found


def _nodes_to_keep(parent, tensors: list[Tensor], found: Search) -> list[str]:
    """The nodes between the last tensor that held and the first that did not, and what keeps that tensor in
    float (keep_in_float). Named nodes only: onnxruntime's nodes_to_exclude names them."""
    assert found.first is not None
    span = first_nodes(tensors, found.probes, found.first)
    names = {node.name for node in parent.graph.node}
    unnamed = [n for n in span if n not in names]
    if unnamed or any(not n.name for n in parent.graph.node if found.first.tensor.name in n.input):
        raise ConfigError(f"nodes around {found.first.tensor.name} have no names in the parent: onnxruntime's "
                          "nodes_to_exclude names the nodes to keep in float",
                          "name the parent's nodes (torch.onnx.export does) and convert again")
    return list(dict.fromkeys([*span, *keep_in_float(parent, found.first.tensor.name)]))


def calibration_for(pair: Pair, given: Path | None) -> Path | None:
    """The calibration data of an int8-static variant: --calibration, else the file its provenance names (when it
    is still the same file)."""
    from ..fileio import file_sha256

    if pair.kind != "int8-static":
        return given
    if given is not None:
        if not Path(given).is_file():
            raise InputError(f"calibration data not found: {given}")
        from ..agentlib import declared_arrays

        declared_arrays(str(given))  # a file that is no .npz fails here, before the search
        return Path(given)
    recorded = ((pair.provenance or {}).get("settings") or {}).get("calibration") or {}
    recorded = recorded if isinstance(recorded, dict) else {}
    path = Path(str(recorded.get("path") or ""))
    if not path.is_absolute():  # made by an older edgebench, relative to where it ran: try beside the variant
        path = pair.variant.parent / path
    if recorded.get("path") and path.is_file() and file_sha256(path) == recorded.get("sha256"):
        return path
    raise InputError(f"the calibration data {pair.variant.name} was made with is not there (or changed)",
                     "give it: --calibration data.npz")


# ------------------------------------------------------------------------------------------------ main
@dataclass
class DivergeRequest:
    """What `bench diverge` is asked (cli.py and api.diverge build one)."""

    variant: Path
    parent: Path | None = None
    target: str = "local"
    inventory: Path | None = None
    runtime: str | None = None
    dataset: Path | None = None
    test_data: Path | None = None
    inputs: Path | None = None
    samples: int = 8
    dims: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    seed: int = 0
    thresholds: Thresholds = field(default_factory=Thresholds)
    method: str = "bisect"
    budget: AccuracyBudget | None = None
    calibration: Path | None = None
    results: Path = Path("results")
    output_dir: Path | None = None  # where --budget writes its variant (default: beside the variant)
    html: Path | None = None  # checked before anything runs; written by the caller


def diverge(request: DivergeRequest, say=None) -> dict:
    """Run the search (and the budget's proposal) on the target; the divergence document."""
    from ..boards.board import Board
    from .deploy import RunSettings, check_board
    from ..models.modelinfo import inspect_model
    from ..boards.targets import find_target

    say = say or (lambda message: None)
    if request.method not in METHODS:
        raise InputError(f"--method {request.method!r} is not one of {', '.join(METHODS)}")
    if not 1 <= request.samples <= MAX_SAMPLES:
        raise InputError(f"--samples must be from 1 to {MAX_SAMPLES}, got {request.samples}")
    bad = {k: v for k, v in request.dims.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise InputError(f"--dim {', '.join(f'{k}={v}' for k, v in bad.items())}: a size must be a positive integer")
    _check_outputs(request)
    pair = resolve_pair(request.variant, request.parent, request.runtime)
    calibration = None
    if request.budget is not None:
        if pair.kind not in ("int8-static", "int8-dynamic"):
            raise ConfigError(f"--budget keeps nodes of an INT8 variant in float; {pair.variant.name} is "
                              f"{'a ' + pair.kind + ' variant' if pair.kind != 'onnx' else 'not a variant edgebench made'}",
                              "diverge the int8-static or int8-dynamic variant with --budget")
        calibration = calibration_for(pair, request.calibration)
    from ..models.modelinfo import load_model_proto

    tensors = match_tensors(parent_tensors(load_model_proto(pair.parent)), None if pair.cut_in_parent else
                            load_model_proto(pair.variant), pair.cut_in_parent)
    matched = [t for t in tensors if t.variant_name is not None]
    if not any(t.is_output for t in matched):
        raise InputError(_why_no_outputs(pair, tensors, matched), "is --parent the model this variant was converted from?")
    feeds = plan_inputs(pair.parent, dataset=request.dataset, test_data=request.test_data, inputs=request.inputs,
                        samples=request.samples, dims=request.dims, values=request.values, seed=request.seed)
    if pair.runtime == "ncnn":  # ncnn runs one sample at a time
        feeds = _per_sample(feeds)
    target = find_target(request.target, request.inventory)
    started = time.monotonic()
    # Many short probes: each forked by the board's warm agent (numpy and the runtime imported once, not per cut).
    with tempfile.TemporaryDirectory(prefix="edgebench-diverge-") as scratch, Board(target).expect_runs(1000) as board:
        check_board(board, [inspect_model(pair.variant)], RunSettings(options={"runtime": pair.runtime}))
        prober = Prober(pair, board, feeds, Path(scratch), request.thresholds, request.dims)
        say(f"{len(matched)} tensors matched; measuring on {target.name} ({pair.runtime}) by {request.method}")
        found = search(prober, tensors, request.method)
        document = _document(pair, target.name, request, tensors, found, feeds)
        if request.budget is not None:
            document["budget"] = _budget_block(pair, prober, tensors, found, request, calibration, board, target, say)
        document["board_runs"] = prober.board_runs
        document["board_seconds"] = prober.board_seconds
    document["wall_s"] = time.monotonic() - started
    return document


def _why_no_outputs(pair: Pair, tensors: list[Tensor], matched: list[Tensor]) -> str:
    """The one line for a pair whose outputs cannot be compared."""
    if not any(t.is_output for t in tensors):
        return (f"{pair.parent.name} has no float output (diverge compares float tensors: an index or a label from "
                "ArgMax says nothing about where values drift)")
    if matched:
        return (f"the outputs of {pair.variant.name} have other names than {pair.parent.name}'s "
                f"({', '.join(t.name for t in tensors if t.is_output)}), though {len(matched)} inner tensors match")
    return f"no tensor of {pair.parent.name} matches one of {pair.variant.name}"


def _check_outputs(request: DivergeRequest) -> None:
    """Everything diverge will write, checked before anything runs: --html, and with --budget the variant's folder
    and --results (else a late error would leave the new variant and its results behind)."""
    from ..fileio import check_output_file, check_writable_folder

    if request.html is not None:
        check_output_file(request.html, "--html")
    if request.budget is not None:
        check_writable_folder(request.output_dir or Path(request.variant).parent, "--output-dir")
        from .deploy import check_results_dir

        check_results_dir(request.results)


def _per_sample(feeds: Inputs) -> Inputs:
    rows = [{name: value[i:i + 1] for name, value in batch.items()} for batch in feeds.batches
            for i in range(len(next(iter(batch.values()))))]
    keep = feeds.samples if feeds.source == "dataset" else len(rows)
    return Inputs(feeds.source, rows[:keep], keep, feeds.labels)


def _document(pair: Pair, target: str, request: DivergeRequest, tensors: list[Tensor], found: Search,
              feeds: Inputs) -> dict:
    from ..fileio import file_sha256

    first = found.first
    return {
        "divergence_version": DIVERGENCE_VERSION,
        "variant": {"path": str(pair.variant), "kind": pair.kind, "sha256": file_sha256(pair.variant)},
        "parent": {"path": str(pair.parent), "sha256": file_sha256(pair.parent)},
        "target": target, "runtime": pair.runtime, "method": request.method, "cut": pair.how,
        "thresholds": {"min_cosine": request.thresholds.min_cosine, "min_snr_db": request.thresholds.min_snr_db},
        "inputs": {"source": feeds.source, "batches": len(feeds.batches),
                   "rows": sum(len(next(iter(b.values()))) for b in feeds.batches if b) if feeds.batches else 0},
        "matched": sum(1 for t in tensors if t.variant_name is not None),
        "unmatched": [{"tensor": t.name, "node": t.node, "reason": t.why_unmatched} for t in tensors if t.variant_name is None]
                     + [{"tensor": name, "node": None, "reason": why} for name, why in found.cut_failures],
        "graph": [{"index": t.index, "tensor": t.name, "node": t.node, "op": t.op, "matched": t.variant_name is not None}
                  for t in tensors],
        "tensors": [p.row() for p in found.probes],
        "first_divergent": None if first is None else {**first.row(), "nodes": first_nodes(tensors, found.probes, first)},
        "worst": worst_spans(tensors, found.probes),
        "budget": None,
    }


def _budget_block(pair: Pair, prober: Prober, tensors: list[Tensor], found: Search, request: DivergeRequest,
                  calibration: Path | None, board, target, say) -> dict:
    """Propose nodes to keep in float; write the variant that meets the budget; measure it and the original."""
    budget = request.budget
    assert budget is not None
    before = found.finals()
    block = {"budget": budget.text(), "met_before": budget.met([p.row() for p in before]), "kept": [],
             "met": budget.met([p.row() for p in before]),
             "variant": None, "steps": [], "measured": []}
    if block["met_before"]:
        say(f"{pair.variant.name} already meets {budget.text()}: nothing to keep in float")
        return block
    say(f"proposing nodes to keep in float for {budget.text()}")
    outcome = propose(pair, prober, tensors, found, budget, calibration, request.method, request.thresholds)
    block.update(kept=outcome.kept, met=outcome.met, steps=outcome.steps)
    if outcome.variant is None:
        return block
    from ..fileio import copy_atomically
    from ..models.provenance import sidecar_of

    folder = Path(request.output_dir or pair.variant.parent)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / outcome.variant.name
    copy_atomically(outcome.variant, final)
    copy_atomically(sidecar_of(outcome.variant), sidecar_of(final))
    block["variant"] = str(final)
    block["measured"] = _measure_both(pair.variant, final, request, board, target)
    return block


def _measure_both(original: Path, kept: Path, request: DivergeRequest, board, target) -> list[dict]:
    """Accuracy and latency of the original variant and the one with nodes in float: ordinary stored results."""
    from .deploy import AccuracyOptions, RunSettings, deploy
    from ..results.stats import all_samples_ns, summarize_ns

    labelled = request.dataset is not None and is_labelled(request.dataset)
    accuracy = AccuracyOptions(dataset=request.dataset if labelled else None, test_data=request.test_data,
                               samples=request.samples)
    inputs = request.inputs or (request.dataset if not labelled else None)  # unlabelled: the inputs of every pass
    settings = RunSettings(options={"dims": dict(request.dims), "values": dict(request.values)}, inputs=inputs,
                           accuracy=accuracy)
    report = deploy([original, kept], target, settings, request.results, board=board)
    from ..results.view import Result

    rows = []
    for outcome in report.outcomes:
        document = outcome.document
        result = Result(document)
        outputs = result.outputs
        latency = summarize_ns(all_samples_ns(result.measurements)) if result.ok else {}
        rows.append({"model": outcome.model_path.name, "result": str(outcome.path), "status": document["status"],
                     "cosine": min((o["cosine"] for o in outputs), default=None),
                     "top1_agreement_pct": min((o["top1_agreement_pct"] for o in outputs if "top1_agreement_pct" in o),
                                               default=None),
                     "p50_ms": latency.get("p50_ms")})
    return rows




# --------------------------------------------------------------------------------------------- reading
def summary_lines(document: dict) -> list[str]:
    """The terminal report: the measured tensors in graph order, the first divergence, the budget's answer. Names
    come from model files: printable() strips what a terminal would act on."""
    from ..results.schema import printable

    variant, thresholds = Path(document["variant"]["path"]).name, document["thresholds"]
    lines = [printable(f"{variant} ({document['variant']['kind']} of {Path(document['parent']['path']).name}) on "
                       f"{document['target']}, {document['runtime']}: {document['cut']}; inputs: {document['inputs']['source']}, "
                       f"{document['inputs']['batches']} batch(es), {document['inputs']['rows']} rows")]
    unmatched = document["unmatched"]
    reasons = sorted({u["reason"] for u in unmatched})
    lines.append(f"{document['matched']} tensors matched" + (f", {len(unmatched)} not ({'; '.join(reasons)})"
                                                              if unmatched else ""))
    rows = [[str(t["index"]), t["tensor"], t["node"], t["op"], f"{t['max_abs']:.4g}", f"{t['cosine']:.6f}",
             "exact" if t["max_abs"] == 0 else f"{t['snr_db']:.1f}", "" if t["top1_agreement_pct"] is None else f"{t['top1_agreement_pct']:.1f}",
             "BELOW" if t["below"] else ""] for t in document["tensors"]]
    lines += aligned(["#", "tensor", "node", "op", "max abs", "cosine", "SNR dB", "top-1 agree %", ""], rows)
    first = document["first_divergent"]
    if first is None:
        lines.append(f"no divergence: every measured tensor keeps cosine >= {thresholds['min_cosine']:g} and SNR >= "
                     f"{thresholds['min_snr_db']:g} dB")
    else:
        lines.append(printable(f"first divergence: {first['tensor']}, after {', '.join(first['nodes'])}: cosine "
                               f"{first['cosine']:.4f} (needs >= {thresholds['min_cosine']:g}), SNR {first['snr_db']:.1f} dB "
                               f"(needs >= {thresholds['min_snr_db']:g})"))
        worst = "; ".join(f"{', '.join(w['nodes'][-3:])} -{w['snr_drop_db']:.1f} dB" for w in document["worst"])
        lines.append(printable(f"worst SNR drops: {worst}"))
    lines.append(f"{document['board_runs']} board runs ({document['method']} over {document['matched']} matched "
                 f"tensors), {document['board_seconds']:.1f} s on the board, {document['wall_s']:.1f} s in all")
    lines += _budget_lines(document.get("budget"))
    return [printable(line) for line in lines]


def _budget_lines(block: dict | None) -> list[str]:
    if block is None:
        return []
    if block["met_before"]:
        return [f"budget {block['budget']}: already met, nothing to keep in float"]
    verdict = "met" if block["met"] else "NOT met"
    lines = [f"budget {block['budget']}: {verdict} with {len(block['kept'])} node(s) in float: {', '.join(block['kept'])}"]
    rows = [[m["model"], _fmt(m["cosine"], ".6f"), _fmt(m["top1_agreement_pct"], ".2f"), _fmt(m["p50_ms"], ".4f"),
             m["result"]] for m in block["measured"]]
    lines += aligned(["variant", "cosine", "top-1 agree %", "p50 ms", "result"], rows)
    if block["variant"]:
        lines.append(f"written: {block['variant']} (its provenance names the nodes kept in float; "
                     f"`bench convert --keep-float` makes it again)")
    return lines


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)




def raise_for_budget(document: dict) -> None:
    """Exit 1 when --budget was asked and not met (the closest variant and its figures were reported)."""
    from ..errors import RunFailed

    block = document.get("budget")
    if block and not block["met"]:
        closest = (block["steps"][-1]["finals"] if block["steps"] else document["tensors"][-1:]) or [{}]
        raise RunFailed(f"no variant met {block['budget']} with at most {MAX_KEPT_NODES} nodes in float; the closest "
                        f"kept {len(block['kept'])} and reached cosine {closest[0].get('cosine', float('nan')):.6f}",
                        "raise the budget, give calibration data like the inputs, or keep the model in fp16")


def frame(document: dict):
    """The measured tensors as a pandas DataFrame (graph order), for notebooks."""
    import pandas as pd

    return pd.DataFrame(document["tensors"])


# ------------------------------------------------------------------------------------------------ HTML
def divergence_plot(document: dict) -> str | None:
    from ..results.html import _png, _pyplot
    """SNR (and cosine) of each measured tensor along the graph; the thresholds, the first divergence and the
    tensors of nodes --budget kept in float marked."""
    probes = document["tensors"]
    if not probes:
        return None
    plt = _pyplot()
    figure, snr_axis = plt.subplots(figsize=(9, 3.6))
    x = [p["index"] for p in probes]
    snr_axis.plot(x, [p["snr_db"] for p in probes], "o-", color="#2f6db3", label="SNR dB")
    snr_axis.axhline(document["thresholds"]["min_snr_db"], color="#2f6db3", linestyle=":", linewidth=1)
    snr_axis.set_ylabel("SNR (dB)")
    cosine_axis = snr_axis.twinx()
    cosine_axis.plot(x, [p["cosine"] for p in probes], "s--", color="#b3261e", alpha=0.7, label="cosine")
    cosine_axis.axhline(document["thresholds"]["min_cosine"], color="#b3261e", linestyle=":", linewidth=1)
    cosine_axis.set_ylabel("cosine")
    first = document.get("first_divergent")
    if first:
        snr_axis.axvline(first["index"], color="#b3261e", alpha=0.35, linewidth=6)
    kept = set((document.get("budget") or {}).get("kept") or [])
    for entry in document.get("graph", []):
        if entry["node"] in kept:
            snr_axis.axvspan(entry["index"] - 0.4, entry["index"] + 0.4, color="#11772f", alpha=0.15)
    snr_axis.set_xlabel("tensor (graph order)")
    snr_axis.set_xticks(x, [p["tensor"][-18:] for p in probes], rotation=60, ha="right", fontsize=7)
    figure.legend(loc="lower left", fontsize=8)
    return _png(figure)


def divergence_html(document: dict) -> str:
    """The divergence as a page: the plot, the measured tensors, what could not be matched, the budget's table."""
    import html

    from ..results.html import STYLE, drawn
    title = f"edgebench diverge: {document['variant']['path']}"
    image = drawn(divergence_plot, document)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             "<pre>" + html.escape("\n".join(summary_lines(document))) + "</pre>"]
    if image and image.startswith("data:"):
        parts.append(f"<h2>Divergence along the graph</h2><img alt='divergence' src='{image}'>"
                     "<p class='muted'>red band: the first divergent tensor; green: nodes kept in float.</p>")
    elif image:
        parts.append(f"<h2>Divergence along the graph</h2><p class='muted'>{html.escape(image)}</p>")
    if document["unmatched"]:
        parts.append("<h2>Not matched</h2><ul>" + "".join(
            f"<li>{html.escape(u['tensor'])}: {html.escape(u['reason'])}</li>" for u in document["unmatched"]) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
