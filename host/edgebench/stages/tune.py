"""Tune: the best configuration of a model on a board under an accuracy budget, searched on the board.

The space -- runtime x precision x threads x batch -- comes from what the target has (its runtimes, its cores) and
what `bench convert` can make; `--space space.yaml` (or the options) narrows or extends it. The search spends board
time where it matters:

1. accuracy: each (runtime, precision) candidate runs the accuracy pass once, with a short timing; one that misses
   the budget is dropped before any long timing (and so are candidates whose conversion fails).
2. successive halving: every configuration left runs short; the better half runs twice as long; and so on until
   two finalists are left.
3. final: the finalists at full length (several fresh sessions). The ranking, the recommendation's interval against
   the runner-up and its significance come from these runs, computed as `bench compare` computes them.

Every run is an ordinary stored result, marked with the search's name and its cell (compare and history see it),
and a rerun reuses each cell a result already holds: Ctrl-C, then the same command resumes. The answer is the
Pareto front (objective against accuracy), the recommended configuration, and a plan file that measures it again.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..results.tables import aligned
from ..results.view import Result
from .accuracy import AccuracyBudget, is_labelled
from ..errors import ConfigError, InputError

TUNE_VERSION = 1
OBJECTIVES = ("p50", "p99", "throughput", "energy")
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
# What each runtime runs: the quantized and half-precision ONNX graphs are onnxruntime's; OpenVINO runs the float
# .onnx as it is; ncnn its own float bundle (one sample at a time).
RUNTIME_PRECISIONS = {"onnxruntime": PRECISIONS, "openvino": ("fp32",), "ncnn": ("fp32",)}
SPACE_KEYS = {"runtime": "list of strings", "precision": "list of strings", "threads": "list", "batch": "list"}
FINALISTS = 2


@dataclass(frozen=True)
class Config:
    runtime: str
    precision: str
    threads: int
    batch: int | None = None

    def label(self) -> str:
        return f"{self.runtime} {self.precision} threads={self.threads}" + (f" batch={self.batch}" if self.batch else "")

    def cell(self, phase: str) -> str:
        return f"{self.runtime}/{self.precision}/t{self.threads}/b{self.batch or '-'}/{phase}"


@dataclass
class Timing:
    """How long each phase measures: rung r runs rung_seconds * 2**r; the finalists final_seconds x final_repeats."""

    rung_seconds: float = 0.1
    final_seconds: float = 1.0
    final_repeats: int = 3

    def rung(self, index: int) -> dict:
        seconds = self.rung_seconds * 2 ** index
        return {"warmup_min_iterations": 2, "warmup_max_iterations": 100, "warmup_max_seconds": 0.5,
                "min_iterations": 5, "min_seconds": seconds, "max_seconds": max(4 * seconds, 1.0), "repeats": 1}

    def final(self) -> dict:
        return {"min_seconds": self.final_seconds, "max_seconds": max(4 * self.final_seconds, 5.0),
                "repeats": self.final_repeats}

    def accuracy(self) -> dict:
        return {"warmup_min_iterations": 1, "warmup_max_iterations": 5, "min_iterations": 3, "min_seconds": 0.0,
                "max_seconds": 2.0, "repeats": 1}

    def recorded(self) -> dict:
        return {"rung_seconds": self.rung_seconds, "final_seconds": self.final_seconds,
                "final_repeats": self.final_repeats}


@dataclass
class Space:
    runtimes: list[str]
    precisions: list[str]
    threads: list[int]
    batches: list[int | None]

    def configs(self, candidates: list[tuple[str, str]]) -> list[Config]:
        return [Config(runtime, precision, threads, batch) for runtime, precision in candidates
                for threads in self.threads for batch in self.batches
                if not (runtime == "ncnn" and batch not in (None, 1))]

    def recorded(self) -> dict:
        return {"runtime": self.runtimes, "precision": self.precisions, "threads": self.threads, "batch": self.batches}


@dataclass
class TuneRequest:
    """What `bench tune` is asked (cli.py and api.tune build one)."""

    model: Path
    target: str = "local"
    inventory: Path | None = None
    budget: AccuracyBudget | None = None
    objective: str = "p50"
    space: Path | None = None  # a YAML file: runtime, precision, threads, batch (lists)
    runtimes: list[str] | None = None
    precisions: list[str] | None = None
    threads: list[int] | None = None
    batches: list[int] | None = None
    time_limit_s: float | None = None
    dataset: Path | None = None  # labelled: top-1 on the board; else inputs. Also int8-static's calibration
    calibration: Path | None = None
    inputs: Path | None = None
    samples: int = 8
    dims: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    results: Path = Path("results")
    variants_dir: Path = Path("variants")
    plan_out: Path | None = None  # default: configs/tuned-<model>-<target>.yaml
    timing: Timing = field(default_factory=Timing)


# -------------------------------------------------------------------------------------------- the space
def load_space(path: Path) -> dict:
    """A space file: lists under runtime, precision, threads, batch (each key optional)."""
    from ..yamlconf import check_type, load_yaml

    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "a space is a mapping of runtime, precision, threads and batch lists")
    found = {}
    for key, value in doc.data.items():
        if key not in SPACE_KEYS:
            raise doc.error((key,), "unknown key", f"a space's keys: {', '.join(SPACE_KEYS)}")
        value = value if isinstance(value, list) else [value]
        check_type(doc, (key,), value, SPACE_KEYS[key])
        if key in ("threads", "batch") and not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
            raise doc.error((key,), f"must be a list of positive integers, got {value!r}")
        if not value:
            raise doc.error((key,), "an empty list leaves nothing to search")
        found[key] = value
    return found


def resolve_space(request: TuneRequest, info: dict, model: dict) -> Space:
    """The space: options first, then the space file, then what the target has."""
    given = load_space(request.space) if request.space is not None else {}
    available = [r for r in RUNTIME_PRECISIONS if r in (info.get("runtimes") or {})]
    runtimes = request.runtimes or given.get("runtime") or available
    for runtime in runtimes:
        if runtime not in RUNTIME_PRECISIONS:
            raise ConfigError(f"tune searches the runtimes {', '.join(RUNTIME_PRECISIONS)}; {runtime!r} is not one")
        if runtime not in available:
            raise ConfigError(f"{info.get('name', 'the target')} has no {runtime}",
                              f"choose from what it has: {', '.join(available) or 'nothing'}")
    calibration = request.calibration or request.dataset
    default_precisions = [p for p in PRECISIONS if p != "int8-static" or calibration is not None]
    precisions = request.precisions or given.get("precision") or default_precisions
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}", f"choose from {', '.join(PRECISIONS)}")
        if precision == "int8-static" and calibration is None:
            raise InputError("int8-static needs calibration data", "give --calibration data.npz or --dataset")
    cores = int((info.get("machine") or {}).get("cpu_count") or 1)
    threads = request.threads or given.get("threads") or sorted({*(2 ** i for i in range(8) if 2 ** i <= cores), cores})
    batches = request.batches or given.get("batch") or [None]
    if any(t < 1 for t in threads) or any(b is not None and b < 1 for b in batches):
        raise InputError("threads and batch sizes to search must be at least 1")
    if batches != [None] and not _has_free_batch(model):
        raise InputError(f"{Path(model['path']).name} has no free batch dimension to search over",
                         "leave --batch out, or export the model with a dynamic batch axis")
    return Space(list(runtimes), list(precisions), [int(t) for t in threads], list(batches))


def _has_free_batch(model: dict) -> bool:
    return any(entry["shape"] and not isinstance(entry["shape"][0], int) for entry in model["inputs"])


# ------------------------------------------------------------------------------------------ candidates
@dataclass
class Candidate:
    runtime: str
    precision: str
    path: Path | None = None
    status: str = "pending"  # ok, dropped (missed the budget), failed (conversion or run)
    reason: str | None = None
    accuracy: dict | None = None  # the accuracy figures the budget was judged on
    result: str | None = None

    def row(self) -> dict:
        return {"runtime": self.runtime, "precision": self.precision, "path": str(self.path) if self.path else None,
                "status": self.status, "reason": self.reason, "accuracy": self.accuracy, "result": self.result}


def make_candidates(request: TuneRequest, space: Space, say) -> list[Candidate]:
    """Each (runtime, precision) the space allows, with the model file it runs (converted here when needed; a
    conversion that fails drops its candidate with the reason)."""
    from .convert import convert

    pairs = [(r, p) for r in space.runtimes for p in space.precisions if p in RUNTIME_PRECISIONS[r]]
    kinds = sorted({p for _, p in pairs if p != "fp32"} | ({"ncnn"} if ("ncnn", "fp32") in pairs else set()))
    folder = Path(request.variants_dir)
    made = {kind: _existing_variant(request.model, folder, kind) for kind in kinds}
    missing = [kind for kind, path in made.items() if path is None]
    errors = {}
    if missing:
        say(f"converting {request.model.name} to {', '.join(missing)} in {folder}")
        for variant in convert(request.model, missing, folder, calibration=request.calibration or request.dataset):
            made[variant.kind] = variant.path if variant.ok else None
            errors[variant.kind] = variant.error or "outside its stated tolerance against the parent"
    candidates = []
    for runtime, precision in pairs:
        kind = "ncnn" if runtime == "ncnn" else precision
        path = request.model if kind == "fp32" else made.get(kind)
        candidate = Candidate(runtime, precision, path)
        if path is None:
            candidate.status, candidate.reason = "failed", f"conversion to {kind} failed: {errors.get(kind)}"
        candidates.append(candidate)
    return candidates


def _existing_variant(model: Path, folder: Path, kind: str) -> Path | None:
    """A variant of this exact model (by its provenance's parent sha256) already in the folder."""
    from .convert import variant_name
    from ..fileio import file_sha256
    from ..models.provenance import read_provenance

    path = Path(folder) / variant_name(model, kind)
    provenance = read_provenance(path) if path.is_file() else None
    if provenance and (provenance.get("parent") or {}).get("sha256") == file_sha256(model):
        return path
    return None


# --------------------------------------------------------------------------------------------- the runs
class Runner:
    """Runs one cell on the board as an ordinary stored result, or reuses the result a cell already has."""

    def __init__(self, request: TuneRequest, name: str, board, target, say):
        self.request, self.name, self.board, self.target, self.say = request, name, board, target, say
        self.board_seconds = 0.0
        self.runs = 0
        self.reused = 0
        self.started = time.monotonic()
        self._done = _finished_cells(request.results, name, target.name)

    def out_of_time(self) -> bool:
        limit = self.request.time_limit_s
        return limit is not None and time.monotonic() - self.started > limit

    def measure(self, candidate: Candidate, config: Config, phase: str, options: dict, accuracy: bool = False) -> dict:
        """The result document of this cell (run now, or found from an earlier run)."""
        return self.measure_group(candidate, [config], phase, options, accuracy)[config]

    def measure_group(self, candidate: Candidate, configs: list[Config], phase: str, options: dict,
                      accuracy: bool = False) -> dict:
        """Configurations of one candidate in one phase: config -> result document. Those not measured yet run in
        one deploy (one model check, one upload check, each run its own result file)."""
        from .deploy import deploy
        from ..fileio import file_sha256

        assert candidate.path is not None
        sha = file_sha256(candidate.path)
        found = {c: self._done[(c.cell(phase), sha)] for c in configs if (c.cell(phase), sha) in self._done}
        self.reused += len(found)
        todo = [c for c in configs if c not in found]
        if not todo:
            return found
        cells = [self._settings(config, options, accuracy) for config in todo]
        annotations = [{"plan": {"name": self.name, "file": str(self.request.model), "cell": config.cell(phase),
                                 "model": self.request.model.stem, "variant": candidate.precision}} for config in todo]
        started = time.monotonic()
        try:
            report = deploy([candidate.path], self.target, cells, self.request.results, None, annotations, self.board)
        finally:
            self.board_seconds += time.monotonic() - started
            self.runs += len(todo)
        for config, outcome in zip(todo, report.outcomes):
            document = {**outcome.document, "_path": str(outcome.path)}
            if document["status"] == "ok":
                self._done[(config.cell(phase), sha)] = document
            found[config] = document
        return found

    def _settings(self, config: Config, options: dict, accuracy: bool):
        from .deploy import AccuracyOptions, RunSettings

        run_options = {**options, "runtime": config.runtime, "intra_op_threads": config.threads,
                       "values": dict(self.request.values)}
        if config.runtime != "ncnn":  # an ncnn bundle's shapes were fixed when it was made
            run_options["dims"] = dict(self.request.dims)
        if config.batch is not None:
            run_options["batch"] = config.batch
        if self.request.objective == "energy" and not accuracy:
            run_options["energy"] = {"seconds": max(1.0, float(options["min_seconds"]))}
        labelled = self.request.dataset is not None and is_labelled(self.request.dataset)
        return RunSettings(options=run_options, inputs=self.request.inputs or (None if labelled else self.request.dataset),
                           accuracy=AccuracyOptions(dataset=self.request.dataset if labelled else None,
                                                    samples=self.request.samples) if accuracy else None)


def _finished_cells(results: Path, name: str, target: str) -> dict:
    """(cell, model sha256) -> result document (its file as `_path`), for this search's ok results on this target."""
    from ..errors import ResultError
    from ..results.files import load_result, result_files

    if not Path(results).is_dir():
        return {}
    done = {}
    for path in result_files([Path(results)], []):
        try:
            document = load_result(path)
        except ResultError:
            continue  # an unreadable file is no finished cell: that cell runs again
        result = Result(document)
        if result.status == "ok" and result.plan_name == name and result.target_name == target:
            done[(result.plan_cell, result.model.get("sha256"))] = {**document, "_path": str(path)}
    return done




# ------------------------------------------------------------------------------------------- figures
def objective_value(document: dict, objective: str) -> float | None:
    """The objective's figure of one result (lower is better, except throughput); None when it has none."""
    from ..results.stats import all_samples_ns, summarize_ns

    result = Result(document)
    if not result.ok:
        return None
    if objective == "energy":
        return result.mj_per_inference
    summary = summarize_ns(all_samples_ns(result.measurements))
    if objective == "throughput":
        return result.batch * summary["throughput_per_s"]
    return summary["p50_ms" if objective == "p50" else "p99_ms"]


def better(objective: str) -> int:
    """+1 when a larger figure is better (throughput), -1 when smaller is."""
    return 1 if objective == "throughput" else -1


def accuracy_figures(document: dict) -> dict | None:
    result = Result(document)
    block = result.accuracy
    if not block:
        return None
    outputs = result.outputs
    figures = {"passed": block.get("passed"), "cosine": min((o["cosine"] for o in outputs), default=None),
               "top1_agreement_pct": min((o["top1_agreement_pct"] for o in outputs if "top1_agreement_pct" in o),
                                         default=None)}
    if block.get("labels"):
        figures["top1_pct"] = block["labels"]["board"]["top1_pct"]
        figures["reference_top1_pct"] = block["labels"]["reference"]["top1_pct"]
    return figures


def meets(budget: AccuracyBudget | None, document: dict) -> bool:
    result = Result(document)
    if not result.accuracy:
        return False
    if budget is None:  # the variant's own stated tolerance (the accuracy pass's verdict)
        return bool(result.accuracy.get("passed"))
    return budget.met(result.outputs, result.accuracy.get("labels"))


# ---------------------------------------------------------------------------------------------- search
def tune(request: TuneRequest, say=None) -> dict:
    """Search one target; the tune document (see module docstring)."""
    from ..boards.board import Board
    from .deploy import check_results_dir
    from ..models.modelinfo import inspect_model
    from ..boards.targets import find_target

    say = say or (lambda message: None)
    if request.objective not in OBJECTIVES:
        raise InputError(f"--objective {request.objective!r} is not one of {', '.join(OBJECTIVES)}")
    if request.time_limit_s is not None and not (math.isfinite(request.time_limit_s) and request.time_limit_s > 0):
        raise InputError("--time-limit must be a positive duration, e.g. 10m")
    model = inspect_model(request.model)
    if model["format"] != "onnx":
        raise InputError(f"{request.model.name} is not an .onnx model", "tune the .onnx: it makes the variants it needs")
    for path, what in ((request.dataset, "dataset"), (request.calibration, "calibration data"), (request.inputs, "inputs")):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{what} not found: {path}")
    check_results_dir(request.results)
    target = find_target(request.target, request.inventory)
    if target.kind == "labgrid":
        raise ConfigError("bench tune searches one board at a time: name an inventory target (or several: a,b)",
                          "a labgrid place can be named in the inventory like any board")
    started = time.monotonic()
    with Board(target).expect_runs(1000) as board:  # many short runs: each forked by the board's warm agent
        info = board.info(max_age_s=600)
        space = resolve_space(request, info, model)
        if request.objective == "energy" and not (info.get("energy") or {}).get("available"):
            raise ConfigError(f"{target.name} has no power sensor ({(info.get('energy') or {}).get('reason', 'none found')}):"
                              " the energy objective needs one", "choose --objective p50, p99 or throughput")
        name = search_name(request, model["sha256"], space, target.name)
        runner = Runner(request, name, board, target, say)
        candidates = make_candidates(request, space, say)
        document = _search(request, runner, candidates, space, say)
    document.update({"tune_version": TUNE_VERSION, "name": name, "model": {"path": str(request.model), "sha256": model["sha256"]},
                     "target": target.name, "objective": request.objective,
                     "budget": request.budget.text() if request.budget else "each variant's stated tolerance",
                     "space": space.recorded(), "timing": request.timing.recorded(), "board_seconds": runner.board_seconds,
                     "board_runs": runner.runs, "reused": runner.reused, "wall_s": time.monotonic() - started,
                     "candidates": [c.row() for c in candidates]})
    if document["recommended"] is not None:
        document["plan_file"] = str(write_plan(request, document, target.name))
    return document


def search_name(request: TuneRequest, sha: str, space: Space, target: str) -> str:
    """The search's identity: the same model, target, space, objective, budget and timing resume each other."""
    from ..agentlib import sha256_bytes

    blob = json.dumps({"model": sha, "target": target, "space": space.recorded(), "objective": request.objective,
                       "budget": request.budget.text() if request.budget else None, "timing": request.timing.recorded(),
                       "dataset": str(request.dataset), "inputs": str(request.inputs), "dims": request.dims}, sort_keys=True)
    return f"tune-{request.model.stem}-{sha256_bytes(blob.encode())[:10]}"


def _search(request: TuneRequest, runner: Runner, candidates: list[Candidate], space: Space, say) -> dict:
    """Rung 0 doubles as the accuracy pass: each candidate's first configuration runs it, and a candidate that
    misses the budget is dropped before its other configurations run at all."""
    objective, timing = request.objective, request.timing
    latest: dict = {}
    measured: list[tuple] = []
    for candidate in (c for c in candidates if c.status == "pending"):
        first, *others = space.configs([(candidate.runtime, candidate.precision)])
        document = runner.measure(candidate, first, "rung0", timing.rung(0), accuracy=True)
        _judge(candidate, document, request.budget)
        say(f"accuracy {candidate.runtime} {candidate.precision}: {candidate.status}"
            + (f" ({candidate.reason})" if candidate.reason else ""))
        if candidate.status == "ok":
            value = objective_value(document, objective)
            if value is not None:
                latest[first] = (value, document)
            measured.append((first, value, document))
            measured += _measure_all(runner, {(first.runtime, first.precision): candidate}, others, "rung0",
                                     timing.rung(0), objective, latest)
    by_pair = {(c.runtime, c.precision): c for c in candidates if c.status == "ok"}
    rungs: list[dict] = []
    alive: list[Config] = []
    index = 0
    while measured:
        ranked = _ranked(measured, objective)
        kept = _kept(ranked, objective)
        rungs.append({"seconds": timing.rung(index)["min_seconds"], "configs": [_entry(c, v, d) for c, v, d in measured],
                      "kept": [c.label() for c, _, _ in kept]})
        alive = [c for c, _, _ in kept]
        if len(alive) <= FINALISTS or runner.out_of_time():
            break
        index += 1
        say(f"rung {index}: {len(alive)} configurations, {timing.rung(index)['min_seconds']:g} s each")
        measured = _measure_all(runner, by_pair, alive, f"rung{index}", timing.rung(index), objective, latest)
    finalists = [c for c, _, _ in _ranked([(c, *latest[c]) for c in latest if c in set(alive)], objective)][:FINALISTS] \
        if rungs else []
    finals: list[tuple] = []
    if finalists:
        say(f"final: {', '.join(c.label() for c in finalists)} at {timing.final_seconds:g} s x {timing.final_repeats}")
        finals = _ranked(_measure_all(runner, by_pair, finalists, "final", timing.final(), objective, latest), objective)
    return {"rungs": rungs, "finals": [_entry(c, v, d) for c, v, d in finals],
            "recommended": _recommendation(finals, objective, by_pair),
            "pareto": pareto_front(latest, by_pair, objective, request.budget),
            "closest": None if by_pair else _closest(candidates, request.budget)}


def _judge(candidate: Candidate, document: dict, budget: AccuracyBudget | None) -> None:
    candidate.result = Result(document).path
    candidate.accuracy = accuracy_figures(document)
    if document["status"] != "ok":
        candidate.status, candidate.reason = "failed", Result(document).error_message
    elif meets(budget, document):
        candidate.status = "ok"
    else:
        candidate.status, candidate.reason = "dropped", "misses the budget"


def _measure_all(runner: Runner, by_pair: dict, configs: list[Config], phase: str, options: dict, objective: str,
                 latest: dict) -> list[tuple]:
    """Each configuration's (config, objective figure, document), one deploy per candidate."""
    documents: dict = {}
    for pair in dict.fromkeys((c.runtime, c.precision) for c in configs):
        group = [c for c in configs if (c.runtime, c.precision) == pair]
        documents.update(runner.measure_group(by_pair[pair], group, phase, options))
    measured = []
    for config in configs:
        value = objective_value(documents[config], objective)
        if value is not None:
            latest[config] = (value, documents[config])
        measured.append((config, value, documents[config]))
    return measured


# A configuration this much worse than the rung's best, significantly (compare's test), leaves at once, even from
# the better half: a short run is enough to see that two threads on two cores or dynamic INT8 lose by 40 %.
RACE_MARGIN = 0.2


def _kept(ranked: list[tuple], objective: str) -> list[tuple]:
    """Who goes on from a rung: the better half, less those clearly beaten by the best; two at least."""
    from ..results.stats import all_samples_ns, compare_samples

    if len(ranked) <= FINALISTS:
        return ranked
    kept = ranked[:max(FINALISTS, math.ceil(len(ranked) / 2))]
    best = kept[0][2]
    if objective == "energy" or kept[0][1] is None:
        return kept
    raced = [kept[0]]
    for item in kept[1:]:
        if item[1] is None:
            continue
        verdict = compare_samples(all_samples_ns(best["measurements"]), all_samples_ns(item[2]["measurements"]),
                                  objective, min_effect=RACE_MARGIN)
        if verdict["verdict"] != "slower":
            raced.append(item)
    return raced if len(raced) >= FINALISTS else kept[:FINALISTS]


def _ranked(measured: list[tuple], objective: str) -> list[tuple]:
    """Best first; a configuration without a figure (a failed run) last."""
    sign = better(objective)
    return sorted(measured, key=lambda item: (item[1] is None, -sign * (item[1] or 0.0)))


def _entry(config: Config, value, document: dict) -> dict:
    result = Result(document)
    return {"config": config.label(), "runtime": config.runtime, "precision": config.precision,
            "threads": config.threads, "batch": config.batch, "value": value, "status": result.status,
            "result": result.path, "error": result.error_message}


def _recommendation(finals: list[tuple], objective: str, by_pair: dict) -> dict | None:
    """The best finalist, with its interval and its difference from the runner-up as compare computes them."""
    from ..results.stats import all_samples_ns, compare_samples, median_ci

    usable = [item for item in finals if item[1] is not None]
    if not usable:
        return None
    config, value, document = usable[0]
    samples = all_samples_ns(document["measurements"]) / 1e6
    low, high = median_ci(samples)
    recommended = {**_entry(config, value, document), "p50_ci_ms": [low, high],
                   "path": str(by_pair[(config.runtime, config.precision)].path), "vs_runner_up": None}
    if len(usable) > 1 and objective != "energy":
        runner_config, runner_value, runner_document = usable[1]
        metric = {"p50": "p50", "p99": "p99", "throughput": "throughput"}[objective]
        verdict = compare_samples(all_samples_ns(runner_document["measurements"]),
                                  all_samples_ns(document["measurements"]), metric)
        recommended["vs_runner_up"] = {"runner_up": runner_config.label(), "runner_up_value": runner_value, **verdict}
    return recommended


def pareto_front(latest: dict, by_pair: dict, objective: str, budget: AccuracyBudget | None) -> list[dict]:
    """Configurations no other beats on both the objective and accuracy (cosine, or top-1 under a top-1 budget)."""
    key = "top1" if budget is not None and budget.metric == "top1" else "cosine"
    points = []
    for config, (value, _) in latest.items():
        figures = by_pair[(config.runtime, config.precision)].accuracy or {}
        accuracy = (figures.get("top1_pct") if figures.get("top1_pct") is not None else figures.get("top1_agreement_pct")) \
            if key == "top1" else figures.get("cosine")
        if accuracy is not None:
            points.append({"config": config.label(), "value": value, "accuracy": accuracy, "accuracy_metric": key})
    sign = better(objective)

    def dominated(p: dict) -> bool:
        return any(sign * (q["value"] - p["value"]) >= 0 and q["accuracy"] >= p["accuracy"]
                   and (sign * (q["value"] - p["value"]) > 0 or q["accuracy"] > p["accuracy"]) for q in points)

    return sorted((p for p in points if not dominated(p)), key=lambda p: -sign * p["value"])


def _closest(candidates: list[Candidate], budget: AccuracyBudget | None) -> dict | None:
    """The candidate nearest the budget when none met it."""
    measured = [c for c in candidates if c.accuracy]
    if not measured:
        return None
    key = "cosine" if budget is None or budget.metric == "cosine" else "top1_agreement_pct"
    best = max(measured, key=lambda c: (c.accuracy or {}).get(key) or float("-inf"))
    return best.row()


# -------------------------------------------------------------------------------------------- the plan
def write_plan(request: TuneRequest, document: dict, target: str) -> Path:
    """A plan (`bench run FILE`) that measures the recommended configuration again, paths relative to it."""
    import yaml

    from ..fileio import write_atomically

    recommended = document["recommended"]
    path = Path(request.plan_out or Path("configs") / f"tuned-{request.model.stem}-{_slug(target)}.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    model: dict = {"name": request.model.stem.replace(".", "-"),
                   "path": os.path.relpath(Path(recommended["path"]).resolve(), base)}
    if request.dims:
        model["dims"] = dict(request.dims)
    if request.dataset is not None and is_labelled(request.dataset):
        model["dataset"] = os.path.relpath(Path(request.dataset).resolve(), base)
    settings: dict = {"runtime": recommended["runtime"], "threads": recommended["threads"],
                      "min_seconds": request.timing.final_seconds, "repeats": request.timing.final_repeats,
                      "accuracy": True}
    if recommended["batch"] is not None:
        settings["batch"] = recommended["batch"]
    plan = {"name": f"tuned-{_slug(request.model.stem)}-{_slug(target)}",
            "description": f"bench tune's pick for {request.model.name} on {target}: {recommended['config']} "
                           f"({document['objective']}, budget: {document['budget']})",
            "models": [model], "targets": [target], "settings": settings}
    made = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = f"# Made by `bench tune` on {made}; `bench run {path}` measures the recommended configuration again.\n"
    write_atomically(path, header + yaml.safe_dump(plan, sort_keys=False))
    return path


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "model"


# ------------------------------------------------------------------------------------------------ fleet
def tune_fleet(request: TuneRequest, say=None) -> list[dict]:
    """Each board of `a,b` (or tag:X) tuned on its own, one after another."""
    from ..boards.targets import inventory_path, load_inventory, select_targets

    targets = select_targets(request.target, load_inventory(inventory_path(request.inventory)))
    documents = []
    for target in targets:
        plan_out = request.plan_out
        if plan_out is not None and len(targets) > 1:
            plan_out = plan_out.with_name(f"{plan_out.stem}-{_slug(target.name)}{plan_out.suffix}")
        documents.append(tune(replace(request, target=target.name, plan_out=plan_out), say))
    return documents


def fleet_differences(documents: list[dict]) -> list[str]:
    """Where the best configuration differs between boards: one line per board, when they differ."""
    picks = {d["target"]: (d["recommended"] or {}).get("config") for d in documents}
    if len(set(picks.values())) <= 1:
        return []
    return [f"{target}: {pick or 'nothing met the budget'}" for target, pick in picks.items()]


# --------------------------------------------------------------------------------------------- reading
def summary_lines(document: dict) -> list[str]:
    from ..results.schema import printable

    unit = {"p50": "ms", "p99": "ms", "throughput": "/s", "energy": "mJ"}[document["objective"]]
    lines = [f"{Path(document['model']['path']).name} on {document['target']}: objective {document['objective']}, "
             f"budget {document['budget']}; space {_space_text(document['space'])}"]
    for c in document["candidates"]:
        accuracy = _accuracy_text(c["accuracy"] or {})
        lines.append(f"  {c['runtime']:<12} {c['precision']:<13} {c['status']:<8} {accuracy}"
                     + (f"  ({c['reason']})" if c["reason"] else ""))
    for index, rung in enumerate(document["rungs"]):
        lines.append(f"rung {index} ({rung['seconds']:g} s): {len(rung['configs'])} measured, kept "
                     f"{', '.join(rung['kept'])}")
    lines.append(f"final ({document['timing']['final_seconds']:g} s x {document['timing']['final_repeats']}):")
    lines += ["  " + line for line in aligned(["config", document["objective"] + " " + unit, "result"],
                                             [[f["config"], _fmt(f["value"]), f["result"] or "-"] for f in document["finals"]])]
    recommended = document["recommended"]
    if recommended is None:
        closest = document.get("closest")
        lines.append("nothing meets the budget" + (f"; closest: {closest['runtime']} {closest['precision']} "
                                                   f"({closest['accuracy']})" if closest else ""))
    else:
        low, high = recommended["p50_ci_ms"]
        text = (f"recommended: {recommended['config']} ({recommended['path']}): {document['objective']} "
                f"{_fmt(recommended['value'])} {unit}, p50 95% CI {low:.5g}-{high:.5g} ms")
        versus = recommended.get("vs_runner_up")
        if versus:
            text += (f"; vs {versus['runner_up']}: {versus['speedup']:.3f}x [{versus['speedup_low']:.3f}, "
                     f"{versus['speedup_high']:.3f}], p={versus['p_value']:.2g}, {versus['verdict']}")
        lines.append(text)
        lines.append("pareto: " + "; ".join(f"{p['config']} {_fmt(p['value'])} {unit} / {p['accuracy_metric']} "
                                            f"{p['accuracy']:.6g}" for p in document["pareto"]))
        lines.append(f"plan: {document['plan_file']} (bench run {document['plan_file']})")
    lines.append(f"{document['board_runs']} board runs in {document['board_seconds']:.1f} s"
                 + (f", {document['reused']} cells reused from earlier runs" if document["reused"] else "")
                 + f"; {document['wall_s']:.1f} s in all")
    return [printable(line) for line in lines]


def _accuracy_text(figures: dict) -> str:
    parts = []
    if figures.get("cosine") is not None:
        parts.append(f"cosine {figures['cosine']:.6f}")
    if figures.get("top1_pct") is not None:
        parts.append(f"top-1 {figures['top1_pct']:.2f} % (parent {figures['reference_top1_pct']:.2f} %)")
    if figures.get("top1_agreement_pct") is not None:
        parts.append(f"agrees {figures['top1_agreement_pct']:.1f} %")
    return ", ".join(parts)


def _space_text(space: dict) -> str:
    return "; ".join(f"{k} {','.join(str(v) if v is not None else 'model' for v in values)}" for k, values in space.items())


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"




def raise_for_budget(documents: list[dict]) -> None:
    """Exit 1 when nothing met the budget on some board (the closest candidate was reported)."""
    from ..errors import RunFailed

    missed = [d for d in documents if d["recommended"] is None]
    if missed:
        closest = missed[0].get("closest")
        raise RunFailed(f"nothing met {missed[0]['budget']} on {', '.join(d['target'] for d in missed)}"
                        + (f"; closest: {closest['runtime']} {closest['precision']} ({closest['reason'] or 'no figure'})"
                           if closest else ""), "loosen --budget, or add precisions or runtimes to the space")


def frame(documents: list[dict]):
    """Every configuration measured, per board and phase, as a pandas DataFrame."""
    import pandas as pd

    rows = []
    for document in documents:
        for index, rung in enumerate(document["rungs"]):
            rows += [{"target": document["target"], "phase": f"rung{index}", **entry} for entry in rung["configs"]]
        rows += [{"target": document["target"], "phase": "final", **entry} for entry in document["finals"]]
    return pd.DataFrame(rows)



# ------------------------------------------------------------------------------------- the exhaustive plan
def exhaustive(request: TuneRequest, say=None) -> dict:
    """What tune saves: every configuration of the same space measured at full length with the accuracy pass, one
    cell at a time as `bench run` measures a plan's cells (for benchmarks/tune.py and the tests). Returns the
    ranking (best first, each with its result) and the board time."""
    from ..boards.board import Board
    from ..models.modelinfo import inspect_model
    from ..boards.targets import find_target

    say = say or (lambda message: None)
    model = inspect_model(request.model)
    target = find_target(request.target, request.inventory)
    with Board(target).expect_runs(1000) as board:
        space = resolve_space(request, board.info(max_age_s=600), model)
        name = "exhaustive-" + search_name(request, model["sha256"], space, target.name)
        runner = Runner(request, name, board, target, say)
        candidates = [c for c in make_candidates(request, space, say) if c.status == "pending"]
        by_pair = {(c.runtime, c.precision): c for c in candidates}
        measured = []
        for config in space.configs(list(by_pair)):
            document = runner.measure(by_pair[(config.runtime, config.precision)], config, "final", request.timing.final(),
                                      accuracy=True)
            if meets(request.budget, document):
                measured.append((config, objective_value(document, request.objective), document))
    ranked = _ranked(measured, request.objective)
    return {"ranking": [_entry(c, v, d) for c, v, d in ranked], "board_seconds": runner.board_seconds,
            "board_runs": runner.runs, "documents": {c.label(): d for c, _, d in ranked}}


def within_best(exhaustive_document: dict, label: str, objective: str = "p50") -> bool:
    """Is this configuration the exhaustive plan's first, or within its 95 % interval? The interval is over the
    fresh sessions (repeats) of the first, as methodology.md has it: samples within one session are correlated, so
    an interval from them alone would call a 3 % drift between two moments of the same board "different". A
    configuration compare's test does not call slower counts as well."""
    import statistics

    from ..results.stats import all_samples_ns, compare_samples

    ranking = exhaustive_document["ranking"]
    if not ranking:
        return False
    best = ranking[0]["config"]
    if label == best:
        return True
    documents = exhaustive_document["documents"]
    if label not in documents or objective == "energy":
        return False
    per_session = [_session_figures(documents[name], objective) for name in (best, label)]
    if all(len(figures) >= 2 for figures in per_session):
        ours, theirs = per_session
        t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78}.get(len(ours), 2.57)
        half = t * statistics.stdev(ours) / math.sqrt(len(ours))
        mean = statistics.fmean(theirs)
        if (mean <= statistics.fmean(ours) + half) if better(objective) < 0 else (mean >= statistics.fmean(ours) - half):
            return True
    verdict = compare_samples(all_samples_ns(documents[best]["measurements"]),
                              all_samples_ns(documents[label]["measurements"]), objective)
    return verdict["verdict"] != "slower"


def _session_figures(document: dict, objective: str) -> list[float]:
    """The objective of each fresh session (repeat) of one result."""
    import numpy as np

    from ..results.stats import metric_value

    figures = []
    for repeat in document["measurements"]["repeats"]:
        samples = np.asarray(repeat["samples_ns"], dtype=np.float64) / 1e6
        if samples.size:
            figures.append(float(1000.0 / samples.mean()) if objective == "throughput"
                           else metric_value(samples, "p99" if objective == "p99" else "p50"))
    return figures


# ------------------------------------------------------------------------------------------------ HTML
def pareto_plot(document: dict) -> str | None:
    """Every configuration's objective against its accuracy; the Pareto front joined, the pick circled."""
    from ..results.html import _png, _pyplot

    points = [(entry, (c.get("accuracy") or {})) for entry in document["finals"] for c in document["candidates"]
              if (c["runtime"], c["precision"]) == (entry["runtime"], entry["precision"]) and entry["value"] is not None]
    for rung in document["rungs"]:
        points += [(entry, c.get("accuracy") or {}) for entry in rung["configs"] for c in document["candidates"]
                   if (c["runtime"], c["precision"]) == (entry["runtime"], entry["precision"]) and entry["value"] is not None]
    if not points:
        return None
    metric = (document["pareto"][0]["accuracy_metric"] if document["pareto"] else "cosine")
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4))
    seen = {}
    for entry, figures in points:  # each configuration once, at its latest (longest) measurement
        accuracy = figures.get("top1_pct", figures.get("top1_agreement_pct")) if metric == "top1" else figures.get("cosine")
        if accuracy is not None and entry["config"] not in seen:
            seen[entry["config"]] = (entry["value"], accuracy)
    for label, (value, accuracy) in seen.items():
        axis.scatter(value, accuracy, color="#8a94a6", s=18)
        axis.annotate(label, (value, accuracy), fontsize=6, alpha=0.8)
    front = document["pareto"]
    axis.plot([p["value"] for p in front], [p["accuracy"] for p in front], "o-", color="#2f6db3", label="Pareto front")
    if document["recommended"]:
        pick = seen.get(document["recommended"]["config"])
        if pick:
            axis.scatter(*pick, s=160, facecolors="none", edgecolors="#b3261e", linewidths=2, label="recommended")
    axis.set_xlabel(document["objective"] + (" (higher is better)" if better(document["objective"]) > 0 else " (lower is better)"))
    axis.set_ylabel(metric)
    axis.legend(fontsize=8)
    return _png(figure)


def tune_html(documents: list[dict]) -> str:
    """The search as a page: per board, the summary, the Pareto plot."""
    import html

    from ..results.html import STYLE, drawn

    title = "edgebench tune: " + ", ".join(sorted({d["model"]["path"] for d in documents}))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for document in documents:
        parts.append(f"<h2>{html.escape(document['target'])}</h2><pre>" + html.escape("\n".join(summary_lines(document)))
                     + "</pre>")
        image = drawn(pareto_plot, document)
        if image and image.startswith("data:"):
            parts.append(f"<img alt='Pareto front' src='{image}'>")
        elif image:
            parts.append(f"<p class='muted'>{html.escape(image)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
