"""The host <-> agent contract: versions, exit codes, and the shape of a run request.

The host imports this module (never a copy of it), so both sides agree by construction.

PROTOCOL_VERSION history:
  1 - first version: `info` and `run`; request JSON on stdin, one JSON document on stdout.
      Fields added since, all optional with defaults (an older host simply never sends them):
      error.kind from FAILURE_KINDS and error.traceback for `internal`; `kill --kind`; request `int_ranges`
      (generated integer inputs drawn from [low, high), e.g. the rows of the table an input indexes),
      `verbose` (onnxruntime's own log lines on stderr), list `values` for rank-1 inputs; telemetry
      `sampler_errors`; request `scenario` (SCENARIO_DEFAULTS: single-stream, multi-stream, server, offline)
      and, when set, `scenario` in each repeat of the reply (the scenario's own figures: per-query latencies
      stay in `samples_ns`; server issue delays, achieved QPS and QPS-search probes; offline throughput);
      request `pipeline` (an end-to-end run: each repeat has `stages_ns`, the reply a `pipeline` block) and the
      failure kind `pipeline`; request `energy` (an energy pass: the reply's `energy` block holds the source, its
      raw readings and the idle and load windows); `energy` in `info` (the source found, or why none); request `runtime` (RUNTIMES: onnxruntime, openvino, ncnn,
      litert), the reply's `runtime` block (name, version, threads, precision), `runtimes` in `info` and the
      failure kind `runtime`.
"""

from __future__ import annotations

import collections
import math
import re

PROTOCOL_VERSION = 1

# Exit codes of `python3 -m edgebench_agent ...`.
EXIT_OK = 0
EXIT_RUN_FAILED = 1  # the reply is still one valid JSON document with status "failed"
EXIT_USAGE = 2  # bad arguments, bad request, newer protocol than this agent speaks

# The kinds of a failed run's error ({"kind", "message"}, plus "traceback" for internal). The first five are the
# caller's to fix (exit 2, nothing measured); the rest are failed runs (exit 1), stored as results.
FAILURE_KINDS = {
    "usage": "a bad argument or request",
    "input": "inputs, dims, values or a dataset that do not fit the model",
    "model": "a model its runtime cannot load, or a model for another runtime",
    "provider": "an execution provider this board lacks",
    "missing": "numpy or the run's runtime (onnxruntime by default) is not installed on the board",
    "onnxruntime": "onnxruntime failed while running the model",
    "runtime": "the runtime (OpenVINO, ncnn, LiteRT) failed while loading or running the model",
    "oom": "the board ran out of memory (and the agent saw it)",
    "timeout": "the run overran its time limit and was killed on the board",
    "killed": "the agent process died without a reply (SIGKILL, the kernel's OOM killer)",
    "interrupted": "stopped by Ctrl-C on the host, SIGINT or SIGTERM",
    "busy": "another benchmark held the board's lock",
    "pipeline": "a stage of the user's pipeline raised on the board (the stage and sample are named)",
    "internal": "a bug in the agent: the traceback's tail is kept in the result",
    "agent": "the agent misbehaved as seen from the host (no valid reply)",
}

# The kinds that are the caller's to fix: exit 2, nothing measured, so the host stores no result.
USAGE_KINDS = ("usage", "input", "model", "provider", "missing")

# Lines on stderr that start with this prefix carry a JSON event (progress) for the host.
EVENT_PREFIX = "@edgebench "

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")

# Every field a run request may carry, with its default. Unknown fields are refused, so a typo in a
# hand-written request is an error rather than a silently ignored setting.
# The most latency samples one repeat keeps: a result file with more is refused by the host's reports (a folder of
# files just under the size limit must not make a report hold gigabytes), so a run never makes more: larger
# iteration counts asked for are capped at it (5,000,000 samples are about 40 MB of JSON, under the 64 MiB a result
# file may have).
MAX_SAMPLES = 5000000

RUN_DEFAULTS: dict = {
    "protocol_version": PROTOCOL_VERSION,
    "model": None,  # path to the .onnx file on this machine
    "inputs": None,  # optional .npz with user-supplied input arrays (allow_pickle=False)
    "values": {},  # input name -> a scalar that fills the whole input (sample_rate=16000), or a list for a rank-1 one
    "int_ranges": {},  # input name -> [low, high): where generated integers are drawn (default [0, 10))
    "dims": {},  # free dimension overrides: dim name, or "input:axis" -> size
    "batch": None,  # size of every free leading (batch) dimension; `dims` wins where both apply
    "seed": 0,
    "warmup_min_iterations": 10,
    "warmup_max_iterations": 500,
    "warmup_max_seconds": 5.0,
    "warmup_tolerance": 0.02,  # warm-up ends when the rolling median moves less than this fraction
    "min_iterations": 50,
    "min_seconds": 1.0,
    "max_iterations": 100000,
    "max_seconds": 60.0,
    "repeats": 1,  # fresh sessions, so session-to-session variance shows
    "intra_op_threads": 0,  # 0 = onnxruntime's default
    "inter_op_threads": 0,
    "provider": "CPUExecutionProvider",
    "provider_options": {},
    "graph_optimization_level": "all",
    "out": None,  # also write the reply to this file
    # The accuracy pass (a fresh session after the timed one, same settings), or None. Fields:
    #   inputs: .npz with keys batch<k>_<input position>;  batches: how many;  samples: rows to keep
    #   outputs: where to write the board's outputs (.npz, keys batch<k>_<output position>), or
    #   reference: .npz of expected outputs (same keys, plus optional `labels`) to compare on the board,
    #   with tolerances {output: [atol, rtol]} and label_output (index of the scores output)
    "accuracy": None,
    "cpus": None,  # CPU affinity of the run, e.g. [2, 3]; None: all
    "spin_wait": None,  # onnxruntime thread spinning: True / False; None: its default
    "cooldown": None,  # {"margin_c", "timeout_s", "idle_file": path}: wait for the board to cool first (PASS_DEFAULTS)
    "telemetry_interval_s": 1.0,  # board state sampled this often during the timed loop (sysfs only)
    "profile": None,  # {"dir": folder, "iterations"}: a separate onnxruntime profiling pass (PASS_DEFAULTS)
    "scenario": None,  # how queries load the model (SCENARIO_DEFAULTS); None: single-stream, back to back
    # An end-to-end pipeline (shared/pipeline.py), or None: {"file": the user's stages.py, "samples": a folder of
    # sample files or a tar of them (unpacked beside it), "results": where to write each sample's final result}
    "pipeline": None,
    # The energy pass (energy.py), or None: {"seconds", "idle_seconds", "rate_hz" (PASS_DEFAULTS), "external": true
    # when the host reads an external meter (then the board only keeps the windows)}
    "energy": None,
    "verbose": False,  # let onnxruntime's own log lines through to stderr
    "runtime": "onnxruntime",  # which runtime measures the model (runtimes/): onnxruntime, openvino, ncnn, litert
}

# Load scenarios after MLPerf LoadGen (scenarios.py on the board runs them). `qps` is a number or "auto" (then
# `latency_bound_s` is required: the highest QPS whose p99 meets it is searched for).
SCENARIO_NAMES = ("single-stream", "multi-stream", "server", "offline")
SCENARIO_DEFAULTS = {"name": "single-stream", "samples_per_query": 8, "qps": None, "latency_bound_s": None,
                     "concurrency": 1, "mlperf": False}  # type: dict

# MLPerf LoadGen's minimums (inference rules v4+): 600 s, and per scenario a query count.
MLPERF_MIN_SECONDS = 600.0
MLPERF_MIN_QUERIES = {"single-stream": 1024, "multi-stream": 270336, "server": 270336, "offline": 1}
# A QPS search runs at most this many probes (bisection, then confirmations), each of min_seconds.
QPS_SEARCH_MAX_PROBES = 18

# Defaults of the optional passes, in one table: the agent's argparse and runner, the host's CLI, plans and
# accuracy checks all read these (a request that leaves a field out gets the same value everywhere).
PASS_DEFAULTS = {  # type: dict
    "cooldown": {"margin_c": 3.0, "timeout_s": 120.0},
    "profile": {"iterations": 20},
    # Element tolerances: |board - reference| <= atol + rtol * |reference|, per output unless stated.
    "accuracy": {"samples": 8, "batch_size": 32, "atol": 1e-4, "rtol": 1e-3},
    # The model in a loop for `seconds` after an idle baseline of `idle_seconds`, power read at `rate_hz`.
    "energy": {"seconds": 10.0, "idle_seconds": 3.0, "rate_hz": 10.0},
}
MAX_ENERGY_RATE_HZ = 100.0

# Bounds that catch typos (an absurd thread count, zero iterations) before a session is made.
MAX_THREADS = 1024

# Every run option with a flag or a plan key, declared once: its request field, type and bounds, its flag (the
# same on `bench deploy` and the agent's `run`), its key in a plan's settings, and its help. The agent's argparse
# and the request check are made from it, and the host's flags, help defaults and plan keys are read from it
# (tests/test_run_options.py fails when a front accepts a spelling another refuses).
RunOption = collections.namedtuple("RunOption", "name field kind minimum exclusive maximum help flag plan")


def _option(name, field, kind, minimum=None, help="", exclusive=False, maximum=None, flag=True, plan=True):
    return RunOption(name, field, kind, minimum, exclusive, maximum, help,
                     "--" + name.replace("_", "-") if flag else None, name if plan else None)


RUN_OPTIONS = (
    _option("seed", "seed", "int", 0, "seed of generated inputs"),
    _option("warmup", "warmup_min_iterations", "int", 0, "minimum warm-up iterations (then until the median settles)"),
    _option("min_iterations", "min_iterations", "int", 1, "timed iterations at least"),
    _option("min_seconds", "min_seconds", "float", 0, "timed seconds at least (both minimums must be met)"),
    _option("max_iterations", "max_iterations", "int", 1, "timed iterations at most (at most %d are kept)" % MAX_SAMPLES),
    _option("max_seconds", "max_seconds", "float", 0, "timed seconds at most", exclusive=True),
    _option("repeats", "repeats", "int", 1, "fresh sessions to measure"),
    _option("threads", "intra_op_threads", "int", 0, "threads of the runtime (onnxruntime's intra-op; 0 = the "
            "runtime's own)", maximum=MAX_THREADS),
    _option("inter_op_threads", "inter_op_threads", "int", 0, "onnxruntime: inter-op threads (0 = its own)",
            maximum=MAX_THREADS),
    _option("batch", "batch", "int", 1, "size of every free leading (batch) dimension"),
    _option("graph_optimization", "graph_optimization_level", "choice", None,
            "onnxruntime's graph optimisation level: disable, basic, extended or all"),
    # Request fields without a flag or a plan key (the defaults serve; a hand-written request may set them).
    _option("warmup_max_iterations", "warmup_max_iterations", "int", 0, flag=False, plan=False),
    _option("warmup_max_seconds", "warmup_max_seconds", "float", 0, flag=False, plan=False),
    _option("warmup_tolerance", "warmup_tolerance", "float", 0, flag=False, plan=False),
    _option("telemetry_interval", "telemetry_interval_s", "float", 0, "sample the board's state this often while "
            "measuring (seconds)", exclusive=True),
)
RUN_OPTION = dict((option.name, option) for option in RUN_OPTIONS)
CHOICES = {"graph_optimization_level": GRAPH_OPTIMIZATION_LEVELS}
OPTION_METAVARS = {"int": "N", "float": "SECONDS", "choice": "LEVEL"}  # both CLIs' help (the float ones are times)

# The options of the passes beside the timed one, each a field of its pass's block in the request (PASS_DEFAULTS
# gives its default), set only with the switch that asks for the pass. One declaration for both CLIs, plans, the
# API and the request check, as RUN_OPTIONS are.
PASS_SWITCHES = {"energy": "--energy", "profile": "--profile", "cooldown": "--cooldown"}
PassOption = collections.namedtuple("PassOption", "name block key kind minimum exclusive maximum help flag plan metavar")


def _pass_option(name, block, key, kind, minimum, help, exclusive=False, metavar=None):
    return PassOption(name, block, key, kind, minimum, exclusive, None, help, "--" + name.replace("_", "-"), name,
                      metavar or OPTION_METAVARS[kind])


PASS_OPTIONS = (
    _pass_option("energy_seconds", "energy", "seconds", "float", 0, "length of the energy pass's loop",
                 exclusive=True),
    _pass_option("energy_idle_seconds", "energy", "idle_seconds", "float", 0,
                 "the idle baseline measured before the loop (0: none; the figures above idle are then unknown)"),
    _pass_option("profile_iterations", "profile", "iterations", "int", 1, "inferences in the profiling pass"),
    _pass_option("cooldown_margin", "cooldown", "margin_c", "float", 0,
                 "degrees C above the idle baseline that count as cool", metavar="DEGREES"),
    _pass_option("cooldown_timeout", "cooldown", "timeout_s", "float", 0, "wait at most this long for the board to "
                 "cool (seconds)"),
)
PASS_OPTION = dict((option.name, option) for option in PASS_OPTIONS)
# The blocks sent whole, their defaults filled in, as they always were: a plan's cell key hashes the settings, so
# `cooldown: true` and `cooldown: true, cooldown_margin: 3` are one cell. (An energy block holds what was given;
# normalize_energy fills the rest on the board.)
FILLED_PASS_BLOCKS = ("cooldown", "profile")


def pass_blocks(switches, values):
    """The request's pass blocks: {block: {key: value}} for each switch on ({"energy": True, ...}), from the pass
    options given (name -> value; None or absent: the default). RequestError for an option given without its
    switch, or out of its bounds (named by its flag)."""
    blocks = {}  # type: dict
    for option in PASS_OPTIONS:
        value = values.get(option.name)
        if value is None:
            continue
        if not switches.get(option.block):
            raise RequestError("%s goes with %s" % (option.flag, PASS_SWITCHES[option.block]))
        blocks.setdefault(option.block, {})[option.key] = check_option(option, value, option.flag)
    made = {}
    for block, on in switches.items():
        if on:
            defaults = dict((o.key, PASS_DEFAULTS[block][o.key]) for o in PASS_OPTIONS if o.block == block)
            made[block] = dict(defaults if block in FILLED_PASS_BLOCKS else {}, **blocks.get(block, {}))
    return made


def check_pass_block(block, raw):
    """A pass block of a request against its options (unknown keys are the caller's to refuse): RequestError
    naming the first bad field as block.key."""
    for option in PASS_OPTIONS:
        if option.block == block and option.key in raw:
            raw[option.key] = check_option(option, raw[option.key], "%s.%s" % (block, option.key))
    return raw


_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*")
_NON_FINITE = ("nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity")
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][+-]?[0-9]+)?")


def parse_option(option, text):
    """A run option's value from command-line text, read alike by `bench deploy` and the agent's `run`, and as a
    plan's YAML types it: ASCII digits (1_000 too), a decimal or exponent number for a float; RequestError
    otherwise (Python's int() would also take "١٢", pydantic's "2.0")."""
    if option.kind == "int":
        return parse_integer(text, option.flag)
    if option.kind == "float" and (_NUMBER_TEXT.fullmatch(text.strip()) or text.strip().lower() in _NON_FINITE):
        return float(text.strip())  # nan and inf are read, then refused by check_option like a request's
    if option.kind == "choice":
        return text
    raise RequestError("%s %r must be a number" % (option.flag, text))


def scenario_from_flags(name, samples_per_query=None, concurrency=None, qps=None, latency_bound=None, mlperf=False):
    """A load scenario's command-line flags (--scenario server --qps auto --latency-bound 33ms ...) -> the
    request's scenario object, read alike by `bench deploy` and the agent's `run`; None when none was asked."""
    given = {}  # type: dict
    for key, value, flag in (("samples_per_query", samples_per_query, "--samples-per-query"),
                             ("concurrency", concurrency, "--concurrency")):
        if value is not None:
            given[key] = parse_integer(value, flag) if isinstance(value, str) else value
    if qps is not None:
        given["qps"] = parse_qps(qps)
    if latency_bound is not None:
        given["latency_bound_s"] = parse_duration_s(latency_bound, "--latency-bound")
    if mlperf:
        given["mlperf"] = True
    if name is None and not given:
        return None
    return dict(given, name="single-stream" if name is None else name)


def parse_integer(text, what):
    """An integer from command-line text: ASCII digits, 1_000 too (RequestError otherwise)."""
    if not _INTEGER_TEXT.fullmatch(text.strip()):
        raise RequestError("%s %r must be an integer" % (what, text))
    return int(text.strip())


def check_option(option, value, field=None):
    """A request field's value against its declaration: the value (a float for a float), or RequestError naming
    `field` (the request field's name unless told)."""
    field = field or option.field
    if value is None and isinstance(option, RunOption) and RUN_DEFAULTS[option.field] is None:  # the runtime decides (batch)
        return None
    if option.kind == "choice":
        if value not in CHOICES[field]:
            raise RequestError("%s must be one of %s, got %r" % (field, ", ".join(CHOICES[field]), value))
        return value
    if option.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise RequestError("request field %r must be an integer, got %r" % (field, value))
    else:
        value = finite_number(value, field)
    low, high = option.minimum, option.maximum
    if high is not None and not low <= value <= high:
        raise RequestError("%s must be between %s and %s, got %r" % (field, low, high, value))
    if option.exclusive and not value > low:
        raise RequestError("%s must be positive, got %r" % (field, value))
    if value < low:
        raise RequestError("%s must %s, got %r" % (field, "not be negative" if low == 0 else "be at least %s" % low, value))
    return value


# Short names people type for onnxruntime's execution providers.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "acl": "ACLExecutionProvider",
    "armnn": "ArmNNExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
}


class RequestError(ValueError):
    """A run request that cannot be honoured as written."""


def provider_name(name):
    """Full onnxruntime provider name for an alias ("cpu") or a full name."""
    return PROVIDER_ALIASES.get(name.lower(), name)


def parse_scalar(text):
    """A command-line value: true/false, an integer, a float, or a comma-separated list of numbers (1,3,4)
    for a rank-1 input such as a shape."""
    if "," in text:
        return [parse_scalar(part) for part in text.split(",") if part.strip()]
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_positive(text, what):
    """A positive, finite number from the command line; RequestError naming the option."""
    try:
        value = float(text)
    except ValueError:
        raise RequestError("%s %r must be a number" % (what, text))
    if not (math.isfinite(value) and value > 0):
        raise RequestError("%s must be a positive number, got %r" % (what, text))
    return value


_DURATION_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


def is_auto_qps(value):
    """'auto' in any case: the search for the highest QPS under a latency bound (one spelling on every front)."""
    return isinstance(value, str) and value.strip().lower() == "auto"


def parse_qps(text, what="--qps"):
    """--qps: auto (is_auto_qps) or a positive rate, for `bench deploy` and the standalone agent alike."""
    return "auto" if is_auto_qps(text) else parse_positive(text, what)


def parse_duration_s(text, what):
    """'33ms', '250us', '0.5s' or a bare number of seconds -> seconds."""
    stripped = text.strip().lower()
    try:
        for unit in ("us", "µs", "ms", "s"):
            if stripped.endswith(unit):
                return parse_positive(stripped[: -len(unit)], what) * _DURATION_UNITS[unit]
        return parse_positive(stripped, what)
    except RequestError:
        raise RequestError("%s %r must be a positive duration: 33ms, 250us, 0.5s, or a number of seconds"
                           % (what, text))


def parse_assignments(items, what, convert):
    """["a=1", "b=2"] -> {"a": convert("1"), ...}; RequestError naming the bad item."""
    parsed = {}
    for item in items or []:
        name, sep, value = item.rpartition("=")
        if not sep or not name or not value:
            raise RequestError("%s %r must look like NAME=VALUE" % (what, item))
        try:
            parsed[name] = convert(value)
        except ValueError:
            raise RequestError("%s %r: %r is not a valid value" % (what, item, value))
    return parsed


def failed_reply(kind, message, command="run"):
    """The reply of a run that failed before or without measuring: the same shape wherever it is made (the
    service, a detached job, the command line)."""
    from . import __version__

    return {"protocol_version": PROTOCOL_VERSION, "agent_version": __version__, "command": command,
            "status": "failed", "error": {"kind": kind, "message": message}}


def default_run_timeout(request):
    """Seconds a run may take before it is killed, from its own maximums (plus load and first inference): with
    --mlperf at least LoadGen's 600 s, for a QPS search every probe it may run as well, and each session's wait
    for the board to cool."""
    scenario = request.get("scenario") or {}
    measuring = request["max_seconds"]
    if scenario.get("mlperf"):
        measuring = max(measuring, MLPERF_MIN_SECONDS)
    if scenario.get("qps") == "auto":
        measuring += QPS_SEARCH_MAX_PROBES * max(request["min_seconds"], MLPERF_MIN_SECONDS if scenario.get("mlperf") else 0.0)
    per_repeat = measuring + request["warmup_max_seconds"] + 120.0
    if request.get("cooldown") is not None:  # a wait for the board to cool comes before each session
        per_repeat += float(request["cooldown"].get("timeout_s", PASS_DEFAULTS["cooldown"]["timeout_s"]))
    energy = request.get("energy") or {}
    return per_repeat * request["repeats"] + (energy.get("seconds", 0.0) + energy.get("idle_seconds", 0.0) if energy else 0.0)


def _positive_int(value, name, limit=None):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (limit and value > limit):
        raise RequestError("%s must be an integer from 1%s, got %r" % (name, " to %d" % limit if limit else " up", value))
    return value


def normalize_scenario(raw):
    """A scenario object with every field (SCENARIO_DEFAULTS); RequestError naming the first bad one."""
    if not isinstance(raw, dict):
        raise RequestError("scenario must be an object like {\"name\": \"server\", \"qps\": 100}")
    unknown = sorted(set(raw) - set(SCENARIO_DEFAULTS))
    if unknown:
        raise RequestError("unknown scenario field %r; known: %s" % (unknown[0], ", ".join(SCENARIO_DEFAULTS)))
    scenario = dict(SCENARIO_DEFAULTS)
    scenario.update(raw)
    applies = {"samples_per_query": ("multi-stream",), "concurrency": ("server", "offline"), "latency_bound_s": ("server",)}
    for key, names in applies.items():
        if raw.get(key) not in (None, SCENARIO_DEFAULTS[key]) and scenario["name"] not in names and scenario["name"] in SCENARIO_NAMES:
            raise RequestError("%s applies to the %s scenario only, not %s"
                               % (key.replace("_s", "").replace("_", " "), " and ".join(names), scenario["name"]))
    if scenario["name"] not in SCENARIO_NAMES:
        raise RequestError("scenario must be one of %s, got %r" % (", ".join(SCENARIO_NAMES), scenario["name"]))
    _positive_int(scenario["samples_per_query"], "samples per query", 100000)
    _positive_int(scenario["concurrency"], "concurrency", MAX_THREADS)
    if not isinstance(scenario["mlperf"], bool):
        raise RequestError("scenario.mlperf must be true or false")
    bound = scenario["latency_bound_s"]
    if bound is not None and not finite_number(bound, "latency bound") > 0:
        raise RequestError("the latency bound must be a positive number of seconds, got %r" % (bound,))
    qps = scenario["qps"]
    if is_auto_qps(qps):  # a plan's or the API's qps, read as --qps reads it
        qps = scenario["qps"] = "auto"
    if scenario["name"] == "server":
        if qps is None:
            raise RequestError("the server scenario needs a QPS: a number, or auto with a latency bound")
        if qps == "auto":
            if bound is None:
                raise RequestError("qps auto searches the highest QPS whose p99 meets a latency bound: give one")
        elif not finite_number(qps, "qps") > 0:
            raise RequestError("qps must be a positive number (queries per second) or auto, got %r" % (qps,))
    elif qps is not None:
        raise RequestError("qps applies to the server scenario only, not %s" % scenario["name"])
    return scenario


def normalize_pipeline(req):
    """Check a request's pipeline block, and the options that cannot go with one."""
    spec = req["pipeline"]
    if not isinstance(spec, dict) or not isinstance(spec.get("file"), str) or not isinstance(spec.get("samples"), str):
        raise RequestError("pipeline must be an object like {\"file\": \"stages.py\", \"samples\": \"folder\"}")
    unknown = sorted(set(spec) - {"file", "samples", "results"})
    if unknown:
        raise RequestError("unknown pipeline field %r; known: file, samples, results" % unknown[0])
    if spec.get("results") is not None and not isinstance(spec["results"], str):
        raise RequestError("pipeline.results must be the path of an .npz file to write")
    if req["scenario"] is not None and req["scenario"]["name"] != "single-stream":
        raise RequestError("a pipeline runs one sample at a time (single-stream); the %s scenario applies to the "
                           "bare model: drop --pipeline or --scenario" % req["scenario"]["name"])
    for name, flag in (("inputs", "--inputs"), ("values", "--value"), ("accuracy", "the accuracy pass")):
        if req[name]:
            raise RequestError("a pipeline makes the model's inputs from its samples and checks its own results: "
                               "%s does not apply with --pipeline" % flag)


def normalize_energy(raw):
    """An energy pass block with every field (PASS_DEFAULTS["energy"]); RequestError naming the first bad one."""
    if not isinstance(raw, dict):
        raise RequestError("energy must be an object like {\"seconds\": 10}")
    unknown = sorted(set(raw) - set(PASS_DEFAULTS["energy"]) - {"external"})
    if unknown:
        raise RequestError("unknown energy field %r; known: seconds, idle_seconds, rate_hz, external" % unknown[0])
    spec = dict(PASS_DEFAULTS["energy"], external=False)
    spec.update(raw)
    check_pass_block("energy", spec)
    if not 0 < finite_number(spec["rate_hz"], "energy rate") <= MAX_ENERGY_RATE_HZ:
        raise RequestError("the power sample rate must be above 0 and at most %g Hz, got %r" % (MAX_ENERGY_RATE_HZ, spec["rate_hz"]))
    shortest = 2.0 / spec["rate_hz"]  # an idle figure needs two readings at least (a counter differences them)
    if 0 < spec["idle_seconds"] < shortest:
        raise RequestError("an idle baseline of %gs holds fewer than two power readings at %g Hz: give 0 (no baseline) "
                           "or at least %gs" % (spec["idle_seconds"], spec["rate_hz"], shortest))
    if not isinstance(spec["external"], bool):
        raise RequestError("energy.external must be true or false")
    return spec


def finite_number(value, name):
    """A JSON number that is a real, finite quantity (NaN and infinity are refused: they defeat every bound)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise RequestError("request field %r must be a number, got %r" % (name, value))
    if not math.isfinite(value):
        raise RequestError("%s must be a finite number, got %r" % (name, value))
    return float(value)


def normalize_run_request(raw):
    """Validate a run request dict and fill in defaults. Raises RequestError naming the field."""
    if not isinstance(raw, dict):
        raise RequestError("the run request must be a JSON object")
    unknown = sorted(set(raw) - set(RUN_DEFAULTS))
    if unknown:
        raise RequestError("unknown request field(s): %s" % ", ".join(unknown))
    version = raw.get("protocol_version", PROTOCOL_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise RequestError("protocol_version must be an integer")
    if version > PROTOCOL_VERSION:
        raise RequestError(
            "request uses protocol %d but this agent speaks %d: upgrade the agent on the board"
            % (version, PROTOCOL_VERSION)
        )
    req = dict(RUN_DEFAULTS)
    req.update(raw)
    req["protocol_version"] = PROTOCOL_VERSION
    if not isinstance(req["model"], str) or not req["model"]:
        raise RequestError("request field 'model' must be the path of an .onnx file")
    for option in RUN_OPTIONS:
        req[option.field] = check_option(option, req[option.field])
    for name in ("min_iterations", "max_iterations"):  # "10**9: let the time decide" stays valid; no repeat keeps more
        req[name] = min(req[name], MAX_SAMPLES)
    if req["max_iterations"] < req["min_iterations"]:
        raise RequestError("max_iterations (%d) is below min_iterations (%d)" % (req["max_iterations"], req["min_iterations"]))
    if req["max_seconds"] < req["min_seconds"]:
        raise RequestError("max_seconds (%g) is below min_seconds (%g)" % (req["max_seconds"], req["min_seconds"]))
    accuracy = req["accuracy"]
    if accuracy is not None and isinstance(accuracy, dict) and isinstance(accuracy.get("dataset"), str):
        batch_size = accuracy.get("batch_size", PASS_DEFAULTS["accuracy"]["batch_size"])
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise RequestError("accuracy.batch_size must be a positive integer")
    elif accuracy is not None:
        if not isinstance(accuracy, dict) or not isinstance(accuracy.get("inputs"), str):
            raise RequestError("request field 'accuracy' must be an object with an 'inputs' .npz path, or a 'dataset'")
        if not isinstance(accuracy.get("batches"), int) or accuracy["batches"] < 1:
            raise RequestError("accuracy.batches must be a positive integer")
        if not (accuracy.get("outputs") or accuracy.get("reference")):
            raise RequestError("accuracy needs 'outputs' (a path to write) or 'reference' (to compare on the board)")
    if req["cpus"] is not None and (not isinstance(req["cpus"], list) or not req["cpus"]
                                    or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in req["cpus"])):
        raise RequestError("cpus must be a list of CPU numbers, e.g. [2, 3]")
    if req["spin_wait"] is not None and not isinstance(req["spin_wait"], bool):
        raise RequestError("spin_wait must be true, false or null")
    if req["cooldown"] is not None:
        if not isinstance(req["cooldown"], dict):
            raise RequestError("cooldown must be an object like {\"margin_c\": 3, \"timeout_s\": 120}")
        req["cooldown"] = check_pass_block("cooldown", dict(req["cooldown"]))
    if req["profile"] is not None:
        if not isinstance(req["profile"], dict):
            raise RequestError("profile must be an object like {\"iterations\": 20}")
        req["profile"] = check_pass_block("profile", dict(req["profile"]))
    if req["scenario"] is not None:
        req["scenario"] = normalize_scenario(req["scenario"])
    if req["pipeline"] is not None:
        normalize_pipeline(req)
    if req["energy"] is not None:
        req["energy"] = normalize_energy(req["energy"])
    for name in ("values", "dims", "provider_options"):
        if not isinstance(req[name], dict):
            raise RequestError("request field %r must be an object" % name)
    for key, value in req["dims"].items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RequestError("dimension override %r must be a positive integer, got %r" % (key, value))
    for key, value in req["values"].items():
        items = value if isinstance(value, list) and value else [value]
        if not all(isinstance(v, (int, float, bool)) for v in items):
            raise RequestError("value for input %r must be a number, a boolean or a list of numbers, got %r" % (key, value))
    if not isinstance(req["int_ranges"], dict):
        raise RequestError("request field 'int_ranges' must be an object")
    for key, bounds in req["int_ranges"].items():
        if (not isinstance(bounds, list) or len(bounds) != 2 or not all(isinstance(b, int) and not isinstance(b, bool)
                                                                        for b in bounds) or bounds[1] <= bounds[0]):
            raise RequestError("int_ranges[%r] must be [low, high) with low < high, got %r" % (key, bounds))
    if not isinstance(req["verbose"], bool):
        raise RequestError("verbose must be true or false")
    if not isinstance(req["provider"], str):
        raise RequestError("request field 'provider' must be a string")
    req["provider"] = provider_name(req["provider"])
    normalize_runtime(req)
    return req


RUNTIMES = ("onnxruntime", "openvino", "ncnn", "litert")  # runtimes/ holds one module each


def normalize_runtime(req):
    """The runtime must be known, and the onnxruntime-only settings must be left alone for the others (each runtime
    takes its thread count from intra_op_threads; a setting it has no equivalent of is refused, never ignored)."""
    name = req["runtime"]
    if name not in RUNTIMES:
        raise RequestError("runtime must be one of %s, got %r" % (", ".join(RUNTIMES), name))
    if name == "onnxruntime":
        return
    for field, default, flag in (("inter_op_threads", 0, "--inter-op-threads"), ("spin_wait", None, "--spin-wait"),
                                 ("provider", "CPUExecutionProvider", "--provider"),
                                 ("provider_options", {}, "--provider-option"), ("profile", None, "--profile"),
                                 ("graph_optimization_level", "all", "--graph-optimization")):
        if req[field] != default:
            raise RequestError("%s is an onnxruntime setting that %s has no equivalent of: leave it out with "
                               "--runtime %s%s" % (flag, name, name, " (its threads come from --threads)"
                                                   if field == "inter_op_threads" else ""))


def reply_digest(reply):
    """sha256 of the reply's canonical JSON (digest left out): `bench import` refuses a result edited after the
    agent wrote it. An integrity check against accidents and casual edits, not a signature."""
    import json

    from .shared.files import sha256_bytes

    body = dict((k, v) for k, v in reply.items() if k != "digest")
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))
