"""The shape of a result document, checked on every read and before every import.

A result file may come from anywhere (a colleague, a CI artefact, a forged import), so nothing downstream
(compare, HTML, exports) may trust its types. Only what the reports read is checked, and checked cheaply:
10,000 files must still compare in seconds. A document that fails names its first bad field.

Spec forms: "str", "int", "num" (finite), "bool", "any", "samples" (non-empty finite ns), "dims" (name -> int),
"qps" (a number or "auto");
a tuple of allowed values; a dict (listed keys checked, others free); [spec] (a list of items);
Opt(spec) (may be null or absent).
"""

from __future__ import annotations

import math
import re

# Longest string a report shows from a result; longer is not a name, it is an attack or a bug.
MAX_TEXT = 100_000
# A sample above this (about 11.6 days in ns) is not a latency.
MAX_SAMPLE_NS = 1e15
# Integers past 2**63 are no count, size or time edgebench writes (and no float holds a 400-digit one).
MAX_INT = 2**63 - 1


class Opt:
    def __init__(self, spec):
        self.spec = spec


class ShapeError(ValueError):
    pass


SETTINGS = {"runtime": Opt("str"), "provider": Opt("str"), "intra_op_threads": Opt("int"), "inter_op_threads": Opt("int"),
            "graph_optimization_level": Opt("str"), "batch": Opt("int"), "cpus": Opt(["int"]), "dims": Opt("dims"),
            "scenario": Opt({"name": Opt("str"), "qps": Opt("qps"), "concurrency": Opt("int"),
                             "samples_per_query": Opt("int"), "latency_bound_s": Opt("num")}),
            "pipeline": Opt({"file": Opt("str"), "sha256": Opt("str"), "samples": Opt("str")}),
            "energy": Opt({"seconds": Opt("num")})}
# The energy block a report reads (figures are null when unknown, never 0).
ENERGY = Opt({"available": Opt("bool"), "reason": Opt("str"), "source": Opt("str"), "scope": Opt("str"),
              "mj_per_inference": Opt("num"), "mj_per_inference_above_idle": Opt("num"), "average_power_w": Opt("num"),
              "idle_power_w": Opt("num"), "inferences_per_joule": Opt("num"), "rate_hz": Opt("num"),
              "mj_per_inference_ci": Opt(["num"])})
# A pipeline run's repeat: ns per sample in each stage (checked where a report reads it).
STAGES_NS = Opt({"load": "samples", "preprocess": "samples", "inference": "samples", "postprocess": "samples"})
# What a scenario run adds to a repeat (checked where a report reads it).
REPEAT_SCENARIO = Opt({"name": Opt("str"), "qps": Opt("num"), "achieved_qps": Opt("num"), "issue_delays_ns": Opt("samples"),
                       "throughput_per_s": Opt("num"), "concurrency": Opt("int"), "samples": Opt("int"),
                       "wall_ns": Opt("num"), "latency_bound_s": Opt("num"),
                       "probes": Opt([{"qps": "num", "p99_ns": "num", "met": "bool"}])})

RESULT = {
    "schema_version": "int",
    "run_id": "str",
    "created_at": Opt("str"),
    "status": ("ok", "failed"),
    "error": Opt({"kind": Opt("str"), "message": Opt("str")}),
    "model": {"name": "str", "sha256": Opt("str"), "size_bytes": Opt("int"),
              "provenance": Opt({"variant": Opt("str"), "parent": Opt({"name": Opt("str")})})},
    "target": {"name": "str"},
    "settings": SETTINGS,
    "measurements": Opt({"repeats": Opt([{"samples_ns": "samples", "session_create_ns": "num",
                                          "first_inference_ns": "num", "scenario": REPEAT_SCENARIO,
                                          "stages_ns": STAGES_NS}]),
                         "memory": Opt({"peak_rss_bytes": Opt("num")}),
                         "runtime": Opt({"name": Opt("str"), "version": Opt("str")})}),
    "validity": Opt({"valid": Opt("bool"), "reasons": Opt(["str"]), "warnings": Opt(["str"])}),
    "accuracy": Opt({"passed": Opt("bool"), "outputs": Opt([{"name": Opt("str"), "max_abs": Opt("num")}]),
                     "labels": Opt({"board": {"top1_pct": "num"}})}),
    "profile": Opt({"iterations": Opt("int"),
                    "top_operators": Opt([{"op_type": "str", "total_us": "num", "pct": "num"}])}),
    "pipeline": Opt({"file": Opt("str"), "samples": Opt("int"),
                     "results": Opt({"samples": "int", "agree": "int", "agree_pct": "num", "passed": "bool",
                                     "max_abs": Opt("num"), "mismatched": Opt(["str"])})}),
    "energy": ENERGY,
    "plan": Opt({"name": Opt("str"), "cell": Opt("str")}),
    "origin": Opt({"kind": Opt("str"), "board": Opt("str")}),
}

# What `bench import` reads of a standalone agent's reply, before it builds a result from it.
AGENT_REPLY = {
    "command": ("run",),
    "protocol_version": "int",
    "status": ("ok", "failed"),
    "started_at": Opt("str"),
    "request": Opt({"model": Opt("str"), "accuracy": Opt({"dataset": Opt("str"), "batch_size": Opt("int")}),
                    **SETTINGS}),
    "info": Opt({"machine": Opt({"hostname": Opt("str")}), "python": Opt({"executable": Opt("str")})}),
    "model": Opt({"sha256": Opt("str")}),
    "telemetry": Opt("dict"),
    "inputs": Opt([{"name": "str", "dtype": "str", "shape": "list"}]),
    "outputs": Opt(["dict"]),
    "repeats": Opt([{"samples_ns": "samples", "session_create_ns": "num", "first_inference_ns": "num",
                     "stages_ns": STAGES_NS}]),
    "pipeline": Opt({"file": Opt("str"), "samples": Opt("int")}),
    "memory": Opt("dict"),
    "accuracy": Opt({"labels": Opt("dict")}),
    "energy": Opt({"available": Opt("bool"), "kind": Opt(("power", "counter")), "readings": Opt([["num"]]),
                   "idle": Opt(["num"]), "load": Opt(["num"]), "inferences": Opt("int"), "failed_readings": Opt("int"),
                   "errors": Opt(["str"]), "wrap_uj": Opt("num"), "requested_rate_hz": Opt("num")}),
    "profile": Opt({"top_operators": Opt([{"op_type": "str", "total_us": "num", "pct": "num"}])}),
    "error": Opt({"kind": Opt("str"), "message": Opt("str")}),
}


def check(document, spec=RESULT) -> None:
    """Raise ShapeError naming the first field of `document` that does not fit `spec`."""
    _check(document, spec, "")


def _fail(where: str, expected: str, value) -> None:
    shown = type(value).__name__ if isinstance(value, (dict, list)) else repr(value)[:40]
    raise ShapeError(f"field '{where or '(document)'}' must be {expected}, got {shown}")


def _check(value, spec, where: str) -> None:
    if isinstance(spec, Opt):
        if value is None:
            return
        spec = spec.spec
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            _fail(where, "an object", value)
        for key, sub in spec.items():
            if key not in value:
                if not isinstance(sub, Opt):
                    raise ShapeError(f"field '{where + '.' if where else ''}{key}' is missing")
                continue
            _check(value[key], sub, f"{where}.{key}" if where else key)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            _fail(where, "a list", value)
        for index, item in enumerate(value):
            _check(item, spec[0], f"{where}[{index}]")
    elif isinstance(spec, tuple):
        if value not in spec:
            _fail(where, " or ".join(map(repr, spec)), value)
    elif spec == "str":
        if not _text(value):
            _fail(where, "a string", value)
    elif spec == "int":
        if not isinstance(value, int) or isinstance(value, bool) or not -MAX_INT <= value <= MAX_INT:
            _fail(where, "an integer", value)
    elif spec == "num":
        if not _finite(value):
            _fail(where, "a finite number", value)
    elif spec == "bool":
        if not isinstance(value, bool):
            _fail(where, "true or false", value)
    elif spec in ("dict", "list"):
        if not isinstance(value, dict if spec == "dict" else list):
            _fail(where, "an object" if spec == "dict" else "a list", value)
    elif spec == "dims":
        if not isinstance(value, dict) or not all(_text(k) and isinstance(v, int) and _finite(v)
                                                  for k, v in value.items()):
            _fail(where, "an object of sizes", value)
    elif spec == "samples":
        _check_samples(value, where)
    elif spec == "qps":  # a rate, or "auto" (the scenario searched for it)
        if value != "auto" and not _finite(value):
            _fail(where, "a number or 'auto'", value)
    elif spec != "any":
        raise AssertionError(f"unknown spec {spec!r}")


def _text(value) -> bool:
    """Text a report can print and a database can store: a string of UTF-8 (JSON's "\\ud800" is a lone surrogate,
    which no terminal, CSV writer or DuckDB column takes) and of a sane length."""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _finite(value) -> bool:
    """A JSON number a report can compute with: a bool is not one, nor an integer of 400 digits (no float holds it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return -MAX_INT <= value <= MAX_INT if isinstance(value, int) else math.isfinite(value)


def _check_samples(value, where: str) -> None:
    import numpy as np

    if not isinstance(value, list) or not value:
        _fail(where, "a non-empty list of nanosecond samples", value)
    from ..agentlib import MAX_SAMPLES  # (the agent never keeps more in one repeat)

    if len(value) > MAX_SAMPLES:
        raise ShapeError(f"field '{where}' holds {len(value):,} samples, more than a run keeps ({MAX_SAMPLES:,})")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        _fail(where, "a list of numbers", value)
    if array.dtype.kind not in "iuf":  # strings ("12"), booleans and objects are not sample times
        _fail(where, "a list of numbers", value)
    if array.ndim != 1 or not np.isfinite(array).all() or (array < 0).any() or (array > MAX_SAMPLE_NS).any():
        _fail(where, f"finite sample times between 0 and {MAX_SAMPLE_NS:.0e} ns", value)


# ---------------------------------------------------------------------------------- safe text for output
# Whole escape sequences first (CSI ... final byte, OSC ... BEL/ST), then any control character left.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text) -> str:
    """Text from a result or a file name, safe for a terminal: escape sequences (CSI, OSC) and control characters
    removed, so a model named '\\x1b]0;...' cannot retitle, recolour or rewrite the user's terminal."""
    text = str(text)
    if "\n" in text or "\t" in text or _CONTROL.search(text):
        # a newline or tab would split a table row: a space instead; escape sequences and the rest: removed
        text = _CONTROL.sub("", text.replace("\n", " ").replace("\r", " ").replace("\t", " "))
    return text


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?%?$")


def spreadsheet_safe(text: str) -> str:
    """A cell a spreadsheet will not run as a formula: a leading =, +, -, @, tab or CR gets a ' in front (OWASP's
    CSV-injection rule). Numbers and the '-' placeholder stay as they are."""
    if text and text[0] in "=+-@\t\r" and text != "-" and not _NUMBER.match(text):
        return "'" + text
    return text
