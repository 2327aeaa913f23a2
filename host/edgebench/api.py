"""edgebench from Python: the pipeline `bench` runs, as functions that return objects.

    import edgebench.api as eb
    deployment = eb.deploy(["model.onnx"], target="local", min_seconds=2)
    frame = eb.load_results("results/")          # one row per run (pandas); also edgebench.load_results
    eb.compare("results/", by="model,variant")    # a table and a report, shown inline in a notebook

Every function does what its `bench` command does, through the same stages (the CLI only parses options and
prints). Bad input raises the same typed errors (edgebench.errors: InputError, ConfigError, ModelError, ...)
with the same messages and hints. Nothing is printed unless `progress=True`; `on_event(target, event)`
receives the agent's progress events. Heavy packages (torch, onnx, pandas) load only when a function needs them.

Running a file: `export` and `validate` with a `file.py:factory` spec run that file's code, as `bench` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .results.defaults import ANALYSIS_DEFAULTS

if TYPE_CHECKING:
    import pandas

    from .stages.compare import CompareResult
    from .stages.history import History
    from .stages.convert import Variant
    from .stages.deploy import DeployJob, FleetReport
    from .stages.plan import PlanJob, PlanRun
    from .stages.validate import ValidationReport

__all__ = ["export", "validate", "inspect", "convert", "deploy", "run_plan", "compare", "history", "load_results", "samples",
           "diverge", "tune", "Exported", "ModelSummary", "Deployment", "PlanOutcome", "Comparison", "Divergence",
           "Tuning"]

EventCallback = Callable[[str, dict], None]


def _paths(paths) -> list[Path]:
    """A path or a list of paths (str or Path); InputError for anything else."""
    if isinstance(paths, (str, Path)):
        return [Path(paths)]
    if isinstance(paths, (list, tuple)) and paths and all(isinstance(p, (str, Path)) for p in paths):
        return [Path(p) for p in paths]
    from .errors import InputError

    raise InputError(f"expected a path or a list of paths, got {paths!r}")


def _tolerances(atol: float | dict | None, rtol: float | dict | None):
    """atol=1e-3 (every output) or atol={"scores": 1e-3} (one output), likewise rtol -> parity.Tolerances."""
    from .options import tolerances

    def items(value, which):
        if value is None:
            return None
        if isinstance(value, dict):
            return [f"{name}={number!r}" for name, number in value.items()]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [repr(float(value))]
        from .errors import InputError

        raise InputError(f"{which} must be a number or {{output: number}}, got {value!r}")

    return tolerances(items(atol, "atol"), items(rtol, "rtol"))


# ------------------------------------------------------------------------------------------- export
@dataclass
class Exported:
    """What `bench export` made: the .onnx file (and sidecars), what the exporter noted, and the validation."""

    path: Path
    exporter: str
    mode: str
    files: list[Path]
    input_names: list[str]
    output_names: list[str]
    notes: list[str] = field(default_factory=list)
    test_data: Path | None = None
    validation: ValidationReport | None = None

    @property
    def passed(self) -> bool:
        return self.validation is None or self.validation.passed


def export(spec: str, output: str | Path, *, inputs: dict | str | Path | Sequence[str] | None = None,
           weights: str | Path | None = None, exporter: str | None = None, mode: str = "trace",
           dynamic: Sequence[str] = (), opset: int | None = None, output_names: Sequence[str] | None = None,
           save_test_data: str | Path | None = None, validate: bool = True, samples: int = 5,
           atol: float | dict | None = None, rtol: float | dict | None = None) -> Exported:
    """Export a PyTorch model (`file.py:factory`, `package.module:factory`, a TorchScript .pt or a .pt2) to ONNX,
    then validate it against PyTorch. `inputs`: arrays by name, an .npz, or specs like "image=1x3x224x224"."""
    from .stages.export import ExportOptions, check_output_path, export_model
    from .stages.export import save_test_data as write_test_data
    from .models.torchmodel import example_for, load_model

    tolerances = _tolerances(atol, rtol)
    output = Path(output)
    check_output_path(output)
    loaded = load_model(spec, Path(weights) if weights is not None else None)
    if isinstance(inputs, dict):
        example = dict(inputs)
    elif isinstance(inputs, (str, Path)):
        example = example_for(loaded, Path(inputs))
    else:
        example = example_for(loaded, None, list(inputs) if inputs else None)
    options = ExportOptions(exporter=exporter, mode=mode, dynamic=list(dynamic), opset=opset,
                            output_names=list(output_names) if output_names else None)
    result = export_model(loaded, example, output, options)
    exported = Exported(result.path, result.exporter, result.mode, list(result.files), list(result.input_names),
                        list(result.output_names), list(result.notes))
    if save_test_data is not None:
        exported.test_data = write_test_data(result, loaded, example, Path(save_test_data))
    if validate:
        from .stages.validate import validate as run_validate

        ordered = {n: example[n] for n in result.input_names}
        exported.validation = run_validate(result.path, reference=loaded, example=ordered, samples=samples,
                                           tolerances=tolerances)
    return exported


# -------------------------------------------------------------------------------------- validate / inspect
def validate(model: str | Path, *, reference: str | None = None, weights: str | Path | None = None,
             inputs: str | Path | None = None, dims: dict | None = None, samples: int = 5,
             atol: float | dict | None = None, rtol: float | dict | None = None,
             strict_dims: bool = False) -> ValidationReport:
    """Check an ONNX model (checker, shape inference, onnxruntime, parity against `reference`, a PyTorch spec).
    The report's `.passed`, `.failures()` and `.to_json()` are what `bench validate` prints."""
    from .stages.validate import validate as run_validate

    loaded = None
    if reference is not None:
        from .models.torchmodel import load_model

        loaded = load_model(reference, Path(weights) if weights is not None else None)
    return run_validate(Path(model), reference=loaded, inputs=Path(inputs) if inputs is not None else None,
                        samples=samples, tolerances=_tolerances(atol, rtol), dims=dict(dims or {}),
                        example=loaded.example_inputs if loaded is not None and inputs is None else None,
                        strict_dims=strict_dims)


@dataclass
class ModelSummary:
    """What `bench inspect` shows: format, inputs and outputs (free dims by name), graph, parameters, checks."""

    summary: dict
    checks: list

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict:
        return {**self.summary, "checks": [{"name": c.name, "ok": c.ok, "message": c.message} for c in self.checks]}


def inspect(model: str | Path) -> ModelSummary:
    """Read a model's summary without running it."""
    from .models.modelinfo import load_model_proto
    from .stages.validate import structural_checks, summarize

    path = Path(model)
    return ModelSummary(summarize(load_model_proto(path), path), structural_checks(path))


# ------------------------------------------------------------------------------------------- convert
def convert(model: str | Path, to: str | Sequence[str], output_dir: str | Path = "variants", *,
            calibration: str | Path | None = None, keep_io_types: bool = True, spec: str | None = None) -> list[Variant]:
    """Variants of a model for the board (int8-dynamic, int8-static, fp16, ort, optimized, opset:N; openvino, ncnn,
    litert bundles for those runtimes, litert from the PyTorch `spec`), each checked against its parent; a variant that failed has `.error` (and `.ok` False), the others were written."""
    from .stages.convert import convert as run_convert
    from .stages.convert import parse_kinds

    if not isinstance(to, (str, list, tuple)) or not all(isinstance(k, str) for k in ([to] if isinstance(to, str) else to)):
        from .errors import InputError

        raise InputError(f"to must be a variant kind or a list of them, got {to!r}", "e.g. ['fp16', 'int8-dynamic']")
    kinds = parse_kinds(to if isinstance(to, str) else ",".join(to))
    return run_convert(Path(model), kinds, Path(output_dir), calibration=Path(calibration) if calibration else None,
                       keep_io_types=keep_io_types, spec=spec)


# -------------------------------------------------------------------------------------------- deploy
@dataclass
class Deployment:
    """What `bench deploy` stored: one result document (and file) per model, settings cell and board."""

    documents: list[dict]
    paths: list[Path]
    problems: list[str]  # failed and INVALID runs, unreachable boards: each recorded with its reason
    _fleet: FleetReport | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        from .results.view import Result

        return not self.problems and all(Result(d).accuracy.get("passed", True) for d in self.documents)

    def raise_for_problems(self) -> None:
        """The errors `bench deploy` exits with: RunFailed for failed, INVALID or inaccurate runs."""
        if self._fleet is not None:
            self._fleet.raise_for_problems()

    def frame(self) -> pandas.DataFrame:
        """These runs, one row each, as load_results gives them."""
        from .results.report import per_run_frame

        return per_run_frame(self.documents)


def _events(progress: bool, on_event: EventCallback | None, names: list[str]):
    """A context giving the event callback: a rich bar on stderr when asked, else the caller's callback."""
    import contextlib

    if not progress:
        return contextlib.nullcontext(on_event)
    from rich.console import Console

    from .progress import DeployProgress

    @contextlib.contextmanager
    def bar():
        with DeployProgress(Console(stderr=True), names) as shown:
            def both(name: str, event: dict) -> None:
                shown.event(name, event)
                if on_event is not None:
                    on_event(name, event)
            yield both

    return bar()


def deploy(models: str | Path | Sequence[str | Path], target: str = "local", *, results: str | Path = "results",
           inventory: str | Path | None = None, coordinator: str | None = None, inputs: str | Path | None = None, values: dict | None = None,
           dims: dict | None = None, threads: int | Sequence[int] | None = None,
           batch: int | Sequence[int] | None = None, provider: str | Sequence[str] | None = None,
           runtime: str | Sequence[str] | None = None, provider_options: dict | None = None, variants: str | Path | None = None, accuracy: bool = False,
           reference: str | None = None, dataset: str | Path | None = None, test_data: str | Path | None = None,
           accuracy_samples: int | None = None, batch_size: int | None = None,
           atol: float | dict | None = None, rtol: float | dict | None = None, timeout: float | None = None,
           strict_dims: bool = False, scenario: str | dict | None = None, pipeline: str | Path | None = None,
           samples: str | Path | None = None, energy: bool = False, energy_seconds: float | None = None,
           energy_idle_seconds: float | None = None, power_command: str | None = None, progress: bool = False,
           on_event: EventCallback | None = None, **run_options: Any) -> Deployment:
    """Benchmark models on a target (`local`, an inventory name, "a,b" for a fleet, "tag:arm", or labgrid places:
    "lg:PLACE", "lg:board=pi4", with `coordinator` HOST:PORT unless LG_COORDINATOR or the inventory names it).

    run_options are named as `bench deploy`'s options and a plan's settings (warmup, min_iterations, min_seconds,
    max_iterations, max_seconds, repeats, seed, inter_op_threads, graph_optimization, telemetry_interval; the
    passes' profile=True, profile_iterations, cooldown=True, cooldown_margin, cooldown_timeout), or as the agent's
    request fields (warmup_min_iterations, cpus, spin_wait, ...): an unknown one is refused. Lists of threads, batch sizes, providers or runtimes (onnxruntime, openvino, ncnn,
    litert) sweep. `scenario` is a name
    ("multi-stream", "offline") or the scenario object, e.g. {"name": "server", "qps": "auto",
    "latency_bound_s": 0.033}. `pipeline` (a stages.py: its code runs, here and on the board) with `samples` (a
    folder of sample files) measures end to end. `energy` adds an energy pass (`energy_seconds` long, after an idle
    baseline of `energy_idle_seconds`; read from the board's sensor, or from `power_command` run on this host, printing watts per line). Failed and INVALID runs are recorded, not raised: see `.problems`,
    or call `.raise_for_problems()`."""
    from .stages.accuracy import DEFAULT_BATCH_SIZE, DEFAULT_SAMPLES
    from .stages.deploy import AccuracyOptions, DeployRequest, RunSettings, execute, prepare

    def as_list(value):
        return None if value is None else list(value) if isinstance(value, (list, tuple)) else [value]

    passes = _pass_blocks(run_options, energy, {"energy_seconds": energy_seconds,
                                                "energy_idle_seconds": energy_idle_seconds})
    options = {"values": dict(values or {}), "dims": dict(dims or {}),
               "provider_options": {str(k): str(v) for k, v in (provider_options or {}).items()},
               **_run_fields(run_options), **passes}
    if scenario is not None:
        if not isinstance(scenario, (str, dict)):
            from .errors import InputError

            raise InputError(f"scenario must be a name or a scenario object, got {scenario!r}",
                             'e.g. "offline" or {"name": "server", "qps": "auto", "latency_bound_s": 0.033}')
        options["scenario"] = {"name": scenario} if isinstance(scenario, str) else dict(scenario)
    accuracy_options = AccuracyOptions.asked(
        accuracy=accuracy, reference=reference, dataset=Path(dataset) if dataset else None,
        test_data=Path(test_data) if test_data else None, variants=Path(variants) if variants else None,
        samples=DEFAULT_SAMPLES if accuracy_samples is None else accuracy_samples,
        batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
        tolerances=_tolerances(atol, rtol), tolerances_given=atol is not None or rtol is not None)
    from .stages.energy import power_argv
    from .options import runtime_names
    from .stages.pipeline import check_options

    settings = RunSettings(options=options, inputs=Path(inputs) if inputs else None, timeout_s=timeout,
                           accuracy=accuracy_options, strict_dims=strict_dims,
                           pipeline=check_options(Path(pipeline) if pipeline else None, Path(samples) if samples else None),
                           power_command=power_argv(power_command))
    request = DeployRequest(models=_paths(models), target=target, results=Path(results),
                            inventory=Path(inventory) if inventory else None, coordinator=coordinator,
                            settings=settings, variants=Path(variants) if variants else None, threads=as_list(threads),
                            batches=as_list(batch), providers=as_list(provider),
                            runtimes=runtime_names(",".join(map(str, as_list(runtime)))) if runtime else None)
    job: DeployJob = prepare(request)
    with _events(progress, on_event, [t.name for t in job.targets if t.kind != "labgrid"]) as events:
        fleet = execute(job, on_event=events)
    return Deployment(fleet.documents, [o.path for o in fleet.outcomes], fleet.problems(), fleet)


def _pass_blocks(run_options: dict, energy: bool, values: dict) -> dict:
    """The passes' switches (energy, profile=True, cooldown=True) and options (protocol.PASS_OPTIONS, by name) ->
    the request's pass blocks, taken out of run_options; a profile or cooldown given as a dict is a request field."""
    from .agentlib import PASS_OPTION, pass_blocks

    values = {**values, **{name: run_options.pop(name) for name in list(run_options) if name in PASS_OPTION}}
    switches, given = {"energy": energy}, {}
    for block in ("profile", "cooldown"):
        if isinstance(run_options.get(block), bool):
            switches[block] = run_options.pop(block)
        elif isinstance(run_options.get(block), dict):  # the request's block itself: the options add to it
            given[block] = run_options.pop(block)
            switches[block] = True
    blocks = pass_blocks(switches, values)
    for block, fields in given.items():  # defaults, then the block as given, then the options named
        named = {o.key: blocks[block][o.key] for o in PASS_OPTION.values()
                 if o.block == block and values.get(o.name) is not None}
        blocks[block] = {**blocks[block], **fields, **named}
    return blocks


def _run_fields(run_options: dict) -> dict:
    """deploy()'s run options by the names every front uses (protocol.RUN_OPTIONS: warmup, graph_optimization,
    ...) -> the request fields they set; a request field's own name passes as it is."""
    from .agentlib import RUN_OPTION

    fields = {}
    for name, value in run_options.items():
        field_name = RUN_OPTION[name].field if name in RUN_OPTION else name
        if field_name in fields:
            from .errors import InputError

            raise InputError(f"{name} and {field_name} are the same option: give one")
        fields[field_name] = value
    return fields


# -------------------------------------------------------------------------------------------- plans
@dataclass
class PlanOutcome:
    """What `bench run` did: every cell with its status, result file or error."""

    cells: list[dict]
    ran: list[Path]
    failed: list[str]
    skipped: int
    _job: PlanJob | None = field(default=None, repr=False)
    _run: PlanRun | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.failed

    def raise_for_problems(self) -> None:
        if self._run is not None:
            from .stages.plan import raise_for_failures

            raise_for_failures(self._run)


def run_plan(plan_file: str | Path, *, only: Sequence[str] | None = None, results: str | Path | None = None,
             force: bool = False, dry_run: bool = False, inventory: str | Path | None = None,
             coordinator: str | None = None, progress: bool = False,
             on_event: EventCallback | None = None) -> PlanOutcome:
    """Run a benchmark plan (models x variants x targets x settings), resuming where an earlier run stopped.
    Models the plan exports from PyTorch specs run that code, as `bench run` does."""
    from .stages import plan as stage
    from .results.report import settings_label

    job = stage.prepare(Path(plan_file), Path(inventory) if inventory else None, list(only) if only else None,
                        Path(results) if results else None, force, dry_run, coordinator)

    def cell_row(cell, status: str, result=None, error=None) -> dict:
        return {"model": cell.model, "variant": cell.variant, "target": cell.target.name, "path": str(cell.path),
                "settings": settings_label(cell.settings.recorded()), "cell": cell.key, "status": status,
                "result": result, "error": error}

    if dry_run:
        return PlanOutcome([cell_row(c, job.status(c)) for c in job.cells], [], [], 0, job)
    with _events(progress, on_event, sorted({c.target.name for c in job.cells})) as events:
        run = stage.execute(job, on_event=events)
    ran = {c.key: p for c, p in run.ran}
    failed = {c.key: message for c, message in run.failed}
    cells = [cell_row(c, "failed" if c.key in failed else "ran" if c.key in ran else job.status(c),
                      str(ran[c.key]) if c.key in ran else None, failed.get(c.key)) for c in job.cells]
    return PlanOutcome(cells, list(ran.values()), [f"{c.model}/{c.variant} on {c.target.name}: {m}" for c, m in run.failed],
                       len(run.skipped), job, run)


# ------------------------------------------------------------------------------------------- compare
@dataclass
class Comparison:
    """What `bench compare` shows: `.table` (one row per group), `.regressions`, `.notes`, and the HTML report
    (`.to_html(path)`, and shown inline in a notebook)."""

    result: CompareResult = field(repr=False)
    request: Any = field(default=None, repr=False)  # the CompareRequest, to read the files for the HTML page
    _html: str | None = field(default=None, repr=False)  # the page, made once: a notebook shows what to_html wrote

    @property
    def table(self) -> pandas.DataFrame:
        return self.result.comparison.frame()

    @property
    def regressions(self) -> list[str]:
        return list(self.result.comparison.regressions)

    @property
    def skipped(self) -> list[str]:
        return list(self.result.skipped)

    @property
    def notes(self) -> list[str]:
        from .stages.compare import notes

        return notes(self.result)

    def to_json(self) -> Any:
        """The same document as `bench compare --json`."""
        import json

        from .stages.compare import report_bytes

        return json.loads(report_bytes(self.result, "json"))

    def to_html(self, path: str | Path | None = None) -> str:
        """The `bench compare -f html` page (made once per comparison, its time stamp with it); written
        (atomically) to `path` when given."""
        from dataclasses import replace

        from .stages.compare import compare as run_compare
        from .stages.compare import report_bytes

        if self._html is None:
            result = self.result
            if not result.documents and self.request is not None:  # from the results index: the plots read the files
                result = run_compare(replace(self.request, use_index=False))
            self._html = report_bytes(result, "html").decode("utf-8")
        text = self._html
        if path is not None:
            from .fileio import write_atomically

            write_atomically(Path(path), text)
        return text

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        groups = len(self.result.comparison.rows)
        return f"<Comparison: {groups} group(s) by {','.join(self.result.comparison.by)}, " \
               f"{len(self.regressions)} regression(s)>"


def compare(paths: str | Path | Sequence[str | Path], *, by: str | Sequence[str] = ANALYSIS_DEFAULTS.by,
            baseline: str | tuple[str, str] | None = None, metric: str = ANALYSIS_DEFAULTS.compare_metric,
            include_invalid: bool = False, alpha: float = ANALYSIS_DEFAULTS.alpha,
            min_effect: float = ANALYSIS_DEFAULTS.min_effect, fail_above: float | None = None,
            mix_energy_scopes: bool = False) -> Comparison:
    """Compare results: medians with confidence intervals, speed-ups with significance against `baseline`
    ("target=pi4" or ("target", "pi4")); a significant slow-down beyond `fail_above` (0.05 = 5 %) is a
    regression. Energy is ranked only within one scope unless `mix_energy_scopes`. Unreadable result files are
    skipped with a warning."""
    import warnings

    from .stages.compare import CompareRequest
    from .stages.compare import compare as run_compare
    from .options import group_keys, key_value

    _check_fractions(alpha=alpha, min_effect=min_effect)
    keys = group_keys(by if isinstance(by, str) else ",".join(by))
    base = key_value(baseline, "baseline") if isinstance(baseline, str) or baseline is None else tuple(baseline)
    request = CompareRequest(_paths(paths), keys, base, metric, include_invalid, alpha, min_effect, fail_above,
                             mix_energy_scopes)
    result = run_compare(request)
    for problem in result.skipped:
        warnings.warn(f"skipped {problem}", stacklevel=2)
    return Comparison(result, request)


def _check_fractions(**values) -> None:
    from .errors import ConfigError

    for name, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
            raise ConfigError(f"{name} must be a number from 0 to 1, got {value!r}")


def history(paths: str | Path | Sequence[str | Path], *, by: str | Sequence[str] = ANALYSIS_DEFAULTS.by,
            metric: str = ANALYSIS_DEFAULTS.history_metric, since: str | None = None,
            window: int = ANALYSIS_DEFAULTS.window, alpha: float = ANALYSIS_DEFAULTS.alpha,
            min_effect: float = ANALYSIS_DEFAULTS.min_effect, fail_above: float | None = None) -> History:
    """Each group's latency over time and the points where it changed, as `bench history` finds them: `.series`
    (each with its points and changes), `.regressions()` (recent slow-downs beyond `fail_above`, 0.05 = 5 %) and
    `.notes`. `since` is a date (2026-11-01) or an age (7d, 12h). Unreadable result files are skipped with a
    warning."""
    import warnings

    from .options import group_keys
    from .stages import history as stage

    _check_fractions(alpha=alpha, min_effect=min_effect)
    request = stage.HistoryRequest(_paths(paths), group_keys(by if isinstance(by, str) else ",".join(by)), metric,
                                   stage.parse_since(since), window, alpha, min_effect, fail_above)
    result = stage.history(request)
    for problem in result.skipped:
        warnings.warn(f"skipped {problem}", stacklevel=2)
    return result


# ------------------------------------------------------------------------------------------- results
def _documents(paths) -> list[dict]:
    import warnings

    from .results.files import load_results as read

    documents, skipped = read(_paths(paths))
    for problem in skipped:
        warnings.warn(f"skipped {problem}", stacklevel=3)
    return documents


def load_results(paths: str | Path | Sequence[str | Path] = "results") -> pandas.DataFrame:
    """One row per run under `paths` (files, or folders searched recursively): keys (model, variant, target,
    settings and its parts), statistics over the run's raw samples (ms), accuracy, validity, origin, run_id and
    created_at. Read by the same loader as `bench compare`; unreadable files are skipped with a warning."""
    from .results.report import per_run_frame

    return per_run_frame(_documents(paths))


def samples(paths: str | Path | Sequence[str | Path] = "results") -> pandas.DataFrame:
    """Every raw latency sample in long form, for seaborn or plotnine: run_id, the run's keys, repeat, index
    and latency_ms. Failed runs have no samples."""
    import pandas as pd

    from .results.report import KEYS, run_keys
    from .results.view import Result

    frames = []
    for document in _documents(paths):
        keys = {"run_id": document["run_id"], **run_keys(document)}
        for number, repeat in enumerate(Result(document).repeats):
            latency = pd.Series(repeat.get("samples_ns") or [], dtype="float64") / 1e6
            frames.append(pd.DataFrame({**{k: [v] * len(latency) for k, v in keys.items()}, "repeat": number,
                                        "index": range(len(latency)), "latency_ms": latency}))
    if not frames:
        return pd.DataFrame(columns=["run_id", *KEYS, "repeat", "index", "latency_ms"])
    return pd.concat(frames, ignore_index=True)


@dataclass
class Divergence:
    """What `bench diverge` reports: `.document` (the --json document), `.table` (the measured tensors in graph
    order as a DataFrame), `.first` (the first divergent tensor or None), `.budget`."""

    document: dict

    @property
    def table(self) -> pandas.DataFrame:
        from .stages.diverge import frame

        return frame(self.document)

    @property
    def first(self) -> dict | None:
        return self.document["first_divergent"]

    @property
    def budget(self) -> dict | None:
        return self.document["budget"]

    def to_json(self) -> dict:
        return self.document

    def to_html(self, path: str | Path | None = None) -> str:
        from .stages.diverge import divergence_html

        page = divergence_html(self.document)
        if path is not None:
            from .fileio import write_atomically

            write_atomically(Path(path), page)
        return page

    def __repr__(self) -> str:
        from .stages.diverge import summary_lines

        return "\n".join(summary_lines(self.document))


def diverge(variant: str | Path, *, parent: str | Path | None = None, target: str = "local",
            inventory: str | Path | None = None, runtime: str | None = None, dataset: str | Path | None = None,
            test_data: str | Path | None = None, inputs: str | Path | None = None, samples: int = 8,
            dims: dict | None = None, min_cosine: float = 0.99, min_snr: float = 20.0, method: str = "bisect",
            budget: str | None = None, calibration: str | Path | None = None, results: str | Path = "results",
            output_dir: str | Path | None = None) -> Divergence:
    """Where a converted variant parts from its parent, on the target's runtime (as `bench diverge`)."""
    from .stages.accuracy import AccuracyBudget
    from .stages.diverge import DivergeRequest, Thresholds
    from .stages.diverge import diverge as run_diverge

    def optional(value):
        return Path(value) if value is not None else None

    request = DivergeRequest(Path(variant), parent=optional(parent), target=target, inventory=optional(inventory),
                             runtime=runtime, dataset=optional(dataset), test_data=optional(test_data),
                             inputs=optional(inputs), samples=samples, dims=dict(dims or {}),
                             thresholds=Thresholds(min_cosine, min_snr), method=method,
                             budget=AccuracyBudget.parse(budget) if budget is not None else None,
                             calibration=optional(calibration), results=Path(results), output_dir=optional(output_dir))
    return Divergence(run_diverge(request))


@dataclass
class Tuning:
    """What `bench tune` reports, per board: `.documents` (the --json documents), `.recommended` (per target),
    `.table` (every configuration measured, per phase, as a DataFrame)."""

    documents: list[dict]

    @property
    def recommended(self) -> dict:
        return {d["target"]: d["recommended"] for d in self.documents}

    @property
    def table(self) -> pandas.DataFrame:
        from .stages.tune import frame

        return frame(self.documents)

    def to_json(self) -> list[dict]:
        return self.documents

    def to_html(self, path: str | Path | None = None) -> str:
        from .stages.tune import tune_html

        page = tune_html(self.documents)
        if path is not None:
            from .fileio import write_atomically

            write_atomically(Path(path), page)
        return page

    def __repr__(self) -> str:
        from .stages.tune import summary_lines

        return "\n".join(line for d in self.documents for line in summary_lines(d))


def tune(model: str | Path, target: str = "local", *, budget: str | None = None, objective: str = "p50",
         space: str | Path | None = None, runtimes: Sequence[str] | None = None,
         precisions: Sequence[str] | None = None, threads: Sequence[int] | None = None,
         batches: Sequence[int] | None = None, time_limit_s: float | None = None, dataset: str | Path | None = None,
         calibration: str | Path | None = None, inputs: str | Path | None = None, samples: int = 8,
         dims: dict | None = None, results: str | Path = "results", variants_dir: str | Path = "variants",
         plan_out: str | Path | None = None, inventory: str | Path | None = None, rung_seconds: float = 0.1,
         final_seconds: float = 1.0, final_repeats: int = 3, progress: bool = False) -> Tuning:
    """The best configuration under an accuracy budget, searched on the board (as `bench tune`)."""
    import sys

    from .stages.accuracy import AccuracyBudget
    from .stages.tune import Timing, TuneRequest, tune_fleet

    def optional(value):
        return Path(value) if value is not None else None

    request = TuneRequest(Path(model), target=target, inventory=optional(inventory),
                          budget=AccuracyBudget.parse(budget) if budget is not None else None, objective=objective,
                          space=optional(space), runtimes=list(runtimes) if runtimes else None,
                          precisions=list(precisions) if precisions else None,
                          threads=list(threads) if threads else None, batches=list(batches) if batches else None,
                          time_limit_s=time_limit_s, dataset=optional(dataset), calibration=optional(calibration),
                          inputs=optional(inputs), samples=samples, dims=dict(dims or {}), results=Path(results),
                          variants_dir=Path(variants_dir), plan_out=optional(plan_out),
                          timing=Timing(rung_seconds, final_seconds, final_repeats))
    say = (lambda line: print(line, file=sys.stderr)) if progress else None
    return Tuning(tune_fleet(request, say))
