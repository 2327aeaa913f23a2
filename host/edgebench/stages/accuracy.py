"""Accuracy on the board: is it still right there?

A pass apart from the timed one (same runtime settings, fresh session). The host prepares the inputs in
batches and the reference outputs: onnxruntime on the host's CPU running the original model by default, or
another ONNX model (`--reference parent.onnx`), the PyTorch model (`--reference file.py:factory`), or an ONNX
test data set's output_K.pb. The board's outputs come home as .npz (no pickle), or, when they would be large,
the reference goes to the board (by hash, cached) and the comparison happens there.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..agentlib import PASS_DEFAULTS
from ..agentlib import batches_of as dataset_batches
from ..errors import InputError, ModelError
from ..models.parity import Tolerances

DEFAULT_SAMPLES = PASS_DEFAULTS["accuracy"]["samples"]
DEFAULT_BATCH_SIZE = PASS_DEFAULTS["accuracy"]["batch_size"]
# Above this many bytes of outputs, compare on the board instead of downloading them.
DOWNLOAD_LIMIT_BYTES = 16 * 2**20


@dataclass
class AccuracyPlan:
    source: str  # "generated", "dataset", "test data set"
    input_names: list[str]
    output_names: list[str]
    batches: list[dict]  # one feeds dict per batch
    samples: int  # how many inputs were compared (dataset: rows; otherwise feeds)
    labels: np.ndarray | None = None
    expected: list = field(default_factory=list)  # per batch, per output
    reference: str = ""

    def inputs_npz(self) -> bytes:
        from ..agentlib import batch_key

        return npz_bytes({batch_key(b, p): feeds[n] for b, feeds in enumerate(self.batches)
                     for p, n in enumerate(self.input_names)})

    def reference_npz(self) -> bytes:
        from ..agentlib import batch_key

        arrays = {batch_key(b, j): value for b, outputs in enumerate(self.expected) for j, value in enumerate(outputs)}
        if self.labels is not None:
            arrays["labels"] = self.labels
        return npz_bytes(arrays)

    def expected_bytes(self) -> int:
        return sum(np.asarray(v).nbytes for outputs in self.expected for v in outputs)

    @property
    def keep_rows(self) -> int | None:
        """Rows of the joined outputs that count: only a dataset pads its last batch (with repeated rows); every
        other source compares whole outputs, whatever their first axis means (it need not be a batch)."""
        return self.samples if self.source == "dataset" else None

    def label_output(self) -> int | None:
        """The output that holds class scores: the first one shaped [samples, classes]."""
        from ..agentlib import is_classifier_output, join_batches

        for index in range(len(self.output_names)):
            if is_classifier_output(join_batches([o[index] for o in self.expected], self.keep_rows)):
                return index
        return None


@dataclass
class AccuracyBudget:
    """What a variant must keep against its parent (`--budget` of tune and diverge): every output's cosine
    similarity, or top-1 -- agreement with the parent's top class, or, with a labelled dataset, accuracy points lost."""

    metric: str  # "cosine" or "top1"
    value: float  # cosine: the minimum; top1: the most disagreement (or accuracy lost) allowed, in percent

    @classmethod
    def parse(cls, text: str) -> AccuracyBudget:
        import math
        import re

        match = re.fullmatch(r"\s*(cosine|top1)\s*=\s*([0-9.eE+-]+)\s*(%?)\s*", text or "")
        hint = "e.g. --budget cosine=0.999 or --budget top1=0.5%"
        if not match:
            raise InputError(f"--budget {text!r} is not a budget", hint)
        try:
            value = float(match.group(2))
        except ValueError:
            raise InputError(f"--budget {text!r}: {match.group(2)!r} is not a number", hint) from None
        if match.group(1) == "cosine" and (match.group(3) or not (math.isfinite(value) and 0 < value <= 1)):
            raise InputError(f"--budget {text!r}: a cosine budget is a number in (0, 1]", hint)
        if match.group(1) == "top1" and not (math.isfinite(value) and 0 <= value < 100):
            raise InputError(f"--budget {text!r}: a top-1 budget is the disagreement allowed, 0 to 100 %", hint)
        return cls(match.group(1), value)

    def met(self, outputs: list[dict], labels: dict | None = None) -> bool:
        """outputs: per-output figures with `cosine` and, for a classifier, `top1_agreement_pct` (an accuracy
        block's outputs, or diverge's probes); labels: an accuracy block's labels (board and reference top-1)."""
        if self.metric == "cosine":
            return all(o["cosine"] >= self.value for o in outputs)
        if labels:
            return labels["board"]["top1_pct"] >= labels["reference"]["top1_pct"] - self.value
        return all(o["top1_agreement_pct"] >= 100.0 - self.value for o in outputs if o.get("top1_agreement_pct") is not None)

    def text(self) -> str:
        return f"cosine >= {self.value:g}" if self.metric == "cosine" else f"top-1 within {self.value:g} % of the parent"


def npz_bytes(arrays: dict) -> bytes:
    from ..agentlib import storable

    buffer = io.BytesIO()
    np.savez(buffer, **{key: storable(value) for key, value in arrays.items()})  # never a pickled object array
    return buffer.getvalue()


def load_dataset(path: Path, signature: list, require_labels: bool = True) -> tuple[dict, np.ndarray | None]:
    """The shared dataset loader, after checking the file exists."""
    from ..agentlib import load_dataset as shared_load_dataset

    if not Path(path).is_file():
        raise InputError(f"dataset not found: {path}")
    return shared_load_dataset(path, signature, require_labels)


def plan(model_path: Path, *, dataset: Path | None = None, test_data: Path | None = None,
         samples: int = DEFAULT_SAMPLES, batch_size: int = DEFAULT_BATCH_SIZE, dims: dict | None = None,
         values: dict | None = None, seed: int = 0, batch: int | None = None,
         inputs: Path | None = None) -> AccuracyPlan:
    """What the accuracy pass feeds: a labelled dataset, a test data set, the --inputs file (the same tensors
    the timing pass runs), or generated samples (integers within the ranges the graph implies)."""
    from ..agentlib import build_feeds, load_npz
    from ..models.modelinfo import generation_rules, session_io
    from ..models.testdata import io_types, read_test_data_set

    session, signature, output_names = session_io(model_path)
    names = [name for name, _, _ in signature]
    if dataset is not None:
        arrays, labels = load_dataset(dataset, signature)
        batches, total = dataset_batches(arrays, signature, batch_size)
        return AccuracyPlan("dataset", names, output_names, batches, total, labels)
    if test_data is not None:
        feeds, expected = read_test_data_set(Path(test_data), names, io_types(session, signature))
        result = AccuracyPlan("test data set", names, output_names, [feeds], 1)
        if expected is not None:
            result.expected, result.reference = [expected], f"test data set {test_data}"
        return result
    given = load_npz(str(inputs)) if inputs is not None else {}
    if inputs is not None and "" in given and len(names) == 1:
        given = {names[0]: given.pop("")}
    rules = generation_rules(model_path)
    rules.check_given(set(given) | set(values or {}))
    if given and set(names) <= set(given):
        feeds, _ = build_feeds(signature, user_arrays=given, values=values or {})
        return AccuracyPlan("inputs file", names, output_names, [feeds], 1)
    batches = []
    for index in range(samples):
        feeds, _ = build_feeds(signature, user_arrays=given, values=values or {}, dims=dims or {},
                               seed=seed + 1000 + index, batch=batch, int_ranges=rules.ranges_for(set(given)))
        batches.append(feeds)
    return AccuracyPlan("generated", names, output_names, batches, samples)


def compute_reference(accuracy: AccuracyPlan, model_path: Path, reference: str | None) -> None:
    """Fill accuracy.expected: the original model on the host's CPU, another ONNX model, or PyTorch. A test data set
    brings its own outputs: the host's onnxruntime still runs it, so the result says whether a reference ran here
    (a PASS against stored outputs that this host's onnxruntime cannot reproduce says so)."""
    if accuracy.expected:
        try:
            _run_on_host(accuracy, Path(model_path))
            accuracy.reference += "; onnxruntime on this host ran it too"
        except (InputError, ModelError) as exc:
            accuracy.reference += f"; onnxruntime on this host could not run it ({exc.message})"
    elif reference and not reference.endswith(".onnx") and ":" in reference:
        from ..models.torchmodel import load_model, run_reference

        loaded = load_model(reference)
        accuracy.expected = [run_reference(loaded, [b[n] for n in accuracy.input_names]) for b in accuracy.batches]
        accuracy.reference = f"PyTorch {reference}"
    else:
        path = Path(reference) if reference else Path(model_path)
        if not path.is_file():
            raise InputError(f"reference model not found: {path}")
        accuracy.expected = _run_on_host(accuracy, path)
        accuracy.reference = f"onnxruntime CPU on this host, {path.name}"
    counts = {len(outputs) for outputs in accuracy.expected}
    if counts != {len(accuracy.output_names)}:
        raise InputError(f"the reference gives {counts.pop()} outputs but the model has {len(accuracy.output_names)}")
    if accuracy.labels is not None and accuracy.label_output() is not None:
        from ..agentlib import check_labels

        try:  # before anything is uploaded: labels that cannot match would report a meaningless 0 %
            check_labels(accuracy.expected[0][accuracy.label_output()], accuracy.labels)
        except InputError as exc:
            raise InputError(exc.message, "check that the dataset's labels belong to this model") from exc


def _run_on_host(accuracy: AccuracyPlan, path: Path) -> list:
    """The outputs of every batch from onnxruntime on this host's CPU; an InputError naming what failed."""
    from ..agentlib import is_runtime_error
    from ..models.modelinfo import session_io

    session, signature, _ = session_io(path)
    if [n for n, _, _ in signature] != accuracy.input_names:
        raise InputError(f"reference {path} takes inputs {[n for n, _, _ in signature]}, "
                         f"the model takes {accuracy.input_names}")
    try:
        return [session.run(None, batch) for batch in accuracy.batches]
    except Exception as exc:
        if not is_runtime_error(exc):
            raise
        raise InputError(f"onnxruntime on this host cannot run {path.name}: {' '.join(str(exc).split())[:300]}") from exc


def tolerance_table(accuracy: AccuracyPlan, tolerances: Tolerances) -> dict:
    return {name: list(tolerances.for_output(name)) for name in accuracy.output_names}


def request_block(accuracy: AccuracyPlan, inputs_path: str, tolerances: Tolerances, outputs_path: str | None,
                  reference_path: str | None) -> dict:
    block = {"inputs": inputs_path, "batches": len(accuracy.batches), "samples": accuracy.keep_rows,
             "tolerances": tolerance_table(accuracy, tolerances), "label_output": accuracy.label_output()}
    if reference_path:
        block["reference"] = reference_path
    else:
        block["outputs"] = outputs_path
    return block


def evaluate_on_host(accuracy: AccuracyPlan, outputs_npz: bytes, tolerances: Tolerances) -> dict:
    from ..agentlib import batch_key, evaluate, join_batches

    from ..agentlib import load_npz

    board = load_npz("the board's outputs", outputs_npz)
    count = len(accuracy.batches)
    expected = [join_batches([accuracy.expected[b][j] for b in range(count)], accuracy.keep_rows)
                for j in range(len(accuracy.output_names))]
    actual = [join_batches([board[batch_key(b, j)] for b in range(count)], accuracy.keep_rows)
              for j in range(len(accuracy.output_names))]
    return evaluate(accuracy.output_names, expected, actual,
                    {n: tuple(t) for n, t in tolerance_table(accuracy, tolerances).items()},
                    accuracy.labels, accuracy.label_output())


def result_block(accuracy: AccuracyPlan, evaluated: dict, compared_on: str, min_cosine: float | None = None) -> dict:
    """The accuracy block of a result: per output metrics with a verdict, label accuracy when labelled.

    min_cosine judges a quantized variant by direction (cosine similarity) instead of element tolerances."""
    from ..agentlib import output_passes

    outputs = []
    for entry in evaluated["outputs"]:
        passed = output_passes(entry, min_cosine)
        outputs.append({**entry, "passed": passed, **({"min_cosine": min_cosine} if min_cosine is not None else {})})
    block = {"source": accuracy.source, "reference": accuracy.reference, "samples": accuracy.samples,
             "batches": len(accuracy.batches), "compared_on": compared_on, "outputs": outputs,
             "passed": all(o["passed"] for o in outputs)}
    if "labels" in evaluated:
        block["labels"] = evaluated["labels"]
    return block


def verdict_text(block: dict) -> str:
    """One line: PASS/FAIL, the worst output, label accuracy on the board and the host."""
    from ..models.parity import OutputComparison

    parts = []
    for entry in block["outputs"]:
        metrics = {k: entry[k] for k in OutputComparison.__dataclass_fields__
                   if k in entry and k not in ("name", "expected_shape", "actual_shape")}
        comparison = OutputComparison(entry["name"], tuple(entry["expected_shape"]), tuple(entry["actual_shape"]), **metrics)
        text = str(comparison)
        if "min_cosine" in entry:
            text = (f"{entry['name']}: cosine {entry['cosine']:.6f} (needs >= {entry['min_cosine']}), "
                    f"max abs {entry['max_abs']:.3g}")
        if "top1_agreement_pct" in entry:
            text += f", top-1 agreement {entry['top1_agreement_pct']:.1f}%"
        parts.append(text)
    labels = block.get("labels")
    if labels:
        board, host = labels["board"], labels["reference"]
        parts.append(f"top-1 accuracy {board['top1_pct']:.2f}% ({board['top1_correct']}/{board['count']}) on the board, "
                     f"{host['top1_pct']:.2f}% ({host['top1_correct']}/{host['count']}) reference; "
                     f"top-5 {board['top5_pct']:.2f}% vs {host['top5_pct']:.2f}%")
    if "could not run" in str(block.get("reference")):  # a verdict against stored outputs only: say so
        parts.append(f"reference: {block['reference']}")
    return ("PASS " if block["passed"] else "FAIL ") + "; ".join(parts)


def is_labelled(dataset: Path) -> bool:
    """Does this .npz hold labels (read from its headers; nothing is inflated)?"""
    from ..agentlib import declared_arrays

    return any(name == "labels" for name, _, _ in declared_arrays(str(dataset)))
