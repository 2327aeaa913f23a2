"""Benchmark plans: one YAML file drives models x variants x targets x settings, reproducibly and resumably.

    name: demo
    models:
      - {name: cnn, path: ../examples/cnn.onnx}                     # paths are relative to the plan file
      - {name: mlp, export: ../tests/torch_mlp.py:batch_mlp, dynamic: ["x:0=batch"], dims: {batch: 1}}
      - {name: digits, path: ../examples/digits.onnx, dims: {batch: 1}, dataset: ../examples/digits_test.npz}
    variants: [fp16]                  # conversions of every model (a model may list its own)
    targets: [local]                  # names or tag:NAME
    settings: {min_seconds: 1, repeats: 3, threads: [1, 2]}      # a list sweeps

Every result records the plan's name, its sha256 and its cell; rerunning a plan skips the cells already
measured with the same model sha256, target and settings (unless --force), so a board farm run that died
halfway is not redone from scratch.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..agentlib import PASS_OPTIONS, PASS_SWITCHES, RUN_OPTION, RUN_OPTIONS, check_option, pass_blocks, sha256_bytes
from .deploy import RunSettings
from ..errors import ConfigError, InputError
from ..fileio import file_sha256
from .pipeline import PipelineOptions
from ..boards.targets import Target
from ..yamlconf import YamlDoc, check_type, load_yaml

TOP_KEYS = {"name": "string", "description": "string", "models": "list", "variants": "list of strings",
            "targets": "list of strings", "settings": "mapping", "results": "string"}
MODEL_KEYS = {"name": "string", "path": "string", "export": "string", "inputs": "list of strings",
              "dynamic": "list of strings", "exporter": "string", "mode": "string", "dims": "mapping",
              "values": "mapping", "dataset": "string", "variants": "list of strings", "pipeline": "string",
              "samples": "string"}
# settings: key -> (type, request field). Lists of threads, batch, provider and runtime sweep. The run options'
# keys, types and bounds are the protocol's (RUN_OPTIONS): a plan reads them as `bench deploy` and the agent do.
_YAML_TYPES = {"int": "integer", "float": "number", "choice": "string"}
SETTINGS = {
    **{o.plan: ("sweep" if o.name in ("threads", "batch") else _YAML_TYPES[o.kind], o.field)
       for o in RUN_OPTIONS if o.plan},
    "cpus": ("list", "cpus"), "spin_wait": ("boolean", "spin_wait"), "provider": ("sweep", "provider"),
    "runtime": ("sweep", "runtime"),
    "accuracy": ("boolean", None), "profile": ("boolean", None), "cooldown": ("boolean", None),
    "timeout": ("number", None), "scenario": ("mapping", "scenario"), "energy": ("boolean", None),
    # the passes' options (protocol.PASS_OPTIONS), each with its pass's switch above
    **{o.plan: (_YAML_TYPES[o.kind], None) for o in PASS_OPTIONS},
}


@dataclass
class PlanModel:
    name: str
    path: Path | None
    export: str | None = None
    inputs: list = field(default_factory=list)
    dynamic: list = field(default_factory=list)
    exporter: str | None = None
    mode: str = "trace"
    dims: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    dataset: Path | None = None
    pipeline: PipelineOptions | None = None  # end to end: the model's stages.py and its samples folder
    variants: list = field(default_factory=list)


@dataclass
class Plan:
    name: str
    path: Path
    sha256: str
    models: list
    targets: list
    settings: dict
    variants: list
    results: Path | None


def load_plan(path: Path, inventory) -> Plan:
    """Read and validate a plan, every error naming its file and line, before anything runs."""
    from .convert import parse_kinds
    from ..boards.targets import select_targets

    doc = load_yaml(path)
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error((), "a plan is a mapping with name, models, targets and settings")
    for key, value in data.items():
        if key not in TOP_KEYS:
            raise doc.error((key,), "unknown key", f"a plan's keys: {', '.join(TOP_KEYS)}")
        check_type(doc, (key,), value, TOP_KEYS[key])
    for key in ("name", "models", "targets"):
        if key not in data:
            raise doc.error((), f"the plan has no '{key}'")
    _check_name(doc, ("name",), data["name"], "a plan name")
    base = Path(path).resolve().parent
    models = [_model(doc, index, entry, base) for index, entry in enumerate(data["models"])]
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise doc.error(("models",), f"model name {duplicates[0]!r} appears twice")
    try:
        variants = parse_kinds(",".join(data.get("variants") or [])) if data.get("variants") else []
    except ConfigError as exc:
        raise doc.error(("variants",), exc.message, exc.hint) from exc
    for index, target in enumerate(data["targets"]):
        try:
            select_targets(target, inventory)
        except ConfigError as exc:
            raise doc.error(("targets", index), exc.message, exc.hint) from exc
    settings = data.get("settings") or {}
    for key, value in settings.items():
        if key not in SETTINGS:
            raise doc.error(("settings", key), "unknown setting", f"settings: {', '.join(SETTINGS)}")
        kind = SETTINGS[key][0]
        if kind == "sweep":
            values = value if isinstance(value, list) else [value]
            expected = "string" if key in ("provider", "runtime") else "integer"
            for index, item in enumerate(values):
                where = ("settings", key, index) if isinstance(value, list) else ("settings", key)
                check_type(doc, where, item, expected)
                _check_run_option(doc, where, key, item)
        else:
            check_type(doc, ("settings", key), value, kind)
            _check_run_option(doc, ("settings", key), key, value)
    if settings.get("scenario") is not None:
        from ..agentlib import normalize_scenario

        try:  # the agent's own rule, so a plan is refused at its line, not on a board halfway through
            settings = {**settings, "scenario": normalize_scenario(settings["scenario"])}
        except ConfigError as exc:
            raise doc.error(("settings", "scenario"), exc.message) from exc
    for option in PASS_OPTIONS:  # the agent's own bounds, at the plan's line
        if settings.get(option.plan) is None:
            continue
        if not settings.get(option.block):
            raise doc.error(("settings", option.plan), f"{option.plan} goes with {option.block}: true")
        try:
            check_option(option, settings[option.plan], option.plan)
        except ConfigError as exc:
            raise doc.error(("settings", option.plan), exc.message) from exc
    if settings.get("energy"):  # and the rules across its fields (an idle baseline of two readings at least)
        from ..agentlib import normalize_energy

        try:
            normalize_energy(pass_blocks({"energy": True}, {o.name: settings.get(o.plan) for o in PASS_OPTIONS
                                                            if o.block == "energy"})["energy"])
        except ConfigError as exc:
            raise doc.error(("settings", "energy"), exc.message) from exc
    for index, model in enumerate(models):
        if model.pipeline is None:  # a pipeline's feeds size every dimension themselves
            _check_dims_sized(doc, index, model, settings.get("batch"))
    return Plan(name=data["name"], path=Path(path), sha256=file_sha256(path),
                models=models, targets=list(data["targets"]), settings=settings, variants=variants,
                results=_results_folder(doc, base, data.get("results")))


def _check_run_option(doc: YamlDoc, where: tuple, key: str, value) -> None:
    """A run option's bounds, the agent's own rule (protocol.check_option), refused at the plan's line."""
    if key in RUN_OPTION:
        try:
            check_option(RUN_OPTION[key], value)
        except ConfigError as exc:
            raise doc.error(where, exc.message) from exc


def _results_folder(doc: YamlDoc, base: Path, given) -> Path | None:
    """A plan's `results:` folder: inside the plan's own folder (a plan from elsewhere must not make edgebench write
    anywhere else; --results names any folder)."""
    if not given:
        return None
    relative = Path(given)
    if relative.is_absolute() or ".." in relative.parts:
        raise doc.error(("results",), f"{given!r} must be a folder inside the plan's folder (no absolute path, "
                        "no '..'); give --results to write elsewhere")
    folder = base / relative
    if not os.path.realpath(folder).startswith(os.path.join(os.path.realpath(base), "")):
        raise doc.error(("results",), f"{given!r} leads out of the plan's folder (a link); give --results "
                        "to write elsewhere")
    return folder


def _check_dims_sized(doc: YamlDoc, index: int, model: PlanModel, batch) -> None:
    """A plan is strict where `bench deploy` is lenient: every free dimension of a model needs a size, in the
    plan (dims: or settings: batch:), so --dry-run shows the error with its line, before anything runs."""
    from ..agentlib import Input, Signature
    from ..models.modelinfo import graph_inputs, load_model_proto

    if model.path is not None and model.path.suffix == ".onnx":
        signature = Signature.from_block(graph_inputs(load_model_proto(model.path).graph))
    elif model.export and model.dynamic:
        signature = Signature()
        for spec in model.dynamic:  # x:0=batch -> input x, axis 0 free, named batch
            name, _, rest = spec.partition(":")
            axis, _, label = rest.partition("=")
            if not axis.isdigit():
                continue
            shape: list = [0] * (int(axis) + 1)
            shape[int(axis)] = label or None
            signature.append(Input(name, "", shape))
    else:
        return
    unset = signature.free_dim_keys(model.dims, batch[0] if isinstance(batch, list) else batch)
    if unset:
        raise doc.error(("models", index), f"{model.name} has free dimension(s) {', '.join(unset)} with no size",
                        f"add dims: {{{unset[0]}: N}} to this model, or settings: batch: N")


# Plan and model names become folder names under the build folder: never a path that could leave it.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _check_name(doc: YamlDoc, keys: tuple, name: str, what: str) -> None:
    if not SAFE_NAME.fullmatch(name) or ".." in name:  # fullmatch: "$" would let a trailing newline through
        raise doc.error(keys, f"{what} is letters, digits, '.', '_' or '-' (it names a build folder), got {name!r}")


def _model(doc: YamlDoc, index: int, entry, base: Path) -> PlanModel:
    from .convert import parse_kinds

    keys = ("models", index)
    check_type(doc, keys, entry, "mapping")
    for key, value in entry.items():
        if key not in MODEL_KEYS:
            raise doc.error(keys + (key,), "unknown key", f"a model's keys: {', '.join(MODEL_KEYS)}")
        check_type(doc, keys + (key,), value, MODEL_KEYS[key])
    if "name" not in entry:
        raise doc.error(keys, "a model needs a name")
    _check_name(doc, keys + ("name",), entry["name"], "a model name")
    if ("path" in entry) == ("export" in entry):
        raise doc.error(keys, "a model needs exactly one of path (an .onnx) or export (a PyTorch MODEL_SPEC)")
    path = None
    if "path" in entry:
        path = (base / entry["path"]).resolve()
        if not path.is_file():
            raise doc.error(keys + ("path",), f"model file not found: {path}")
    export = entry.get("export")
    if export:
        location = export.rpartition(":")[0]
        if location.endswith(".py"):
            export = f"{(base / location).resolve()}:{export.rpartition(':')[2]}"
            if not Path(export.rpartition(":")[0]).is_file():
                raise doc.error(keys + ("export",), f"model spec file not found: {export.rpartition(':')[0]}")
    dataset = (base / entry["dataset"]).resolve() if entry.get("dataset") else None
    if dataset is not None and not dataset.is_file():
        raise doc.error(keys + ("dataset",), f"dataset not found: {dataset}")
    pipeline = None
    if entry.get("pipeline") or entry.get("samples"):
        from .pipeline import check_options

        try:
            pipeline = check_options((base / entry["pipeline"]).resolve() if entry.get("pipeline") else None,
                                     (base / entry["samples"]).resolve() if entry.get("samples") else None)
        except InputError as exc:
            field_name = "samples" if exc.message.startswith("samples") else "pipeline"
            raise doc.error(keys + (field_name,), exc.message, exc.hint) from exc
        if dataset is not None:
            raise doc.error(keys + ("dataset",), "a model with a pipeline is checked end to end against the host; "
                            "a dataset is for the bare model: give one of them")
    for key in ("dims", "values"):
        for name, value in (entry.get(key) or {}).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or (key == "dims" and (not isinstance(value, int) or value < 1)):
                raise doc.error(keys + (key, name), f"must be a {'positive integer' if key == 'dims' else 'number'}, got {value!r}")
    try:
        variants = parse_kinds(",".join(entry["variants"])) if entry.get("variants") else []
    except ConfigError as exc:
        raise doc.error(keys + ("variants",), exc.message, exc.hint) from exc
    return PlanModel(name=entry["name"], path=path, export=export, inputs=entry.get("inputs") or [],
                     dynamic=entry.get("dynamic") or [], exporter=entry.get("exporter"), mode=entry.get("mode", "trace"),
                     dims=dict(entry.get("dims") or {}), values=dict(entry.get("values") or {}), dataset=dataset,
                     variants=variants, pipeline=pipeline)


# ------------------------------------------------------------------------------------------- the matrix
@dataclass
class Cell:
    model: str  # the plan's model name
    variant: str  # "original" or a conversion
    path: Path
    target: Target
    settings: RunSettings
    key: str  # identity for resuming: model sha256 + target + settings
    done: bool = False


def build_models(plan: Plan, build_dir: Path, force: bool = False, dry_run: bool = False) -> dict:
    """Plan model name -> [(variant, path)]: exports PyTorch models and converts variants into build_dir
    (reused when present, so the model hashes stay stable and resuming works). dry_run builds nothing: the
    paths are where the files would be (those not there yet are "to build")."""
    from .convert import convert, variant_name
    from .export import ExportOptions, export_model
    from ..models.torchmodel import example_inputs_from_specs, load_model

    built = {}
    for model in plan.models:
        folder = build_dir / model.name
        path = model.path or folder / f"{model.name}.onnx"
        kinds = list(dict.fromkeys([*plan.variants, *model.variants]))
        if dry_run:
            built[model.name] = [("original", path), *((kind, folder / variant_name(path, kind)) for kind in kinds)]
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if model.export:
            if force or not path.exists():
                loaded = load_model(model.export)
                example = example_inputs_from_specs(model.inputs) if model.inputs else loaded.example_inputs
                if example is None:
                    raise ConfigError(f"plan model {model.name!r}: no example input", "give inputs: [NAME=1x3x224x224]")
                export_model(loaded, example, path, ExportOptions(exporter=model.exporter, mode=model.mode,
                                                                  dynamic=model.dynamic))
        entries = [("original", path)]
        missing = [k for k in kinds if force or not (folder / variant_name(path, k)).exists()]
        if missing:
            convert(path, missing, folder, calibration=model.dataset)
        for kind in kinds:
            variant = folder / variant_name(path, kind)
            if variant.exists():
                entries.append((kind, variant))
        built[model.name] = entries
    return built


def cell_key(model_sha: str, target_name: str, recorded_settings: dict) -> str:
    blob = json.dumps({"model": model_sha, "target": target_name, "settings": recorded_settings}, sort_keys=True, default=str)
    return sha256_bytes(blob.encode())[:16]


def matrix(plan: Plan, built: dict, inventory, only: list[str] | None = None) -> list[Cell]:
    from .deploy import AccuracyOptions, RunSettings, expand_sweep

    from ..boards.targets import select_targets

    options, sweeps = {}, {}
    for key, value in plan.settings.items():
        kind, field_name = SETTINGS[key]
        if kind == "sweep":
            sweeps[key] = value if isinstance(value, list) else [value]
        elif field_name:
            options[field_name] = value
    options.update(pass_blocks({block: bool(plan.settings.get(block)) for block in PASS_SWITCHES},
                               {o.name: plan.settings.get(o.plan) for o in PASS_OPTIONS}))
    targets = [t for spec in plan.targets for t in select_targets(spec, inventory)]
    cells = []
    for model in plan.models:
        if only and model.name not in only:
            continue
        for variant, path in built[model.name]:
            sha = file_sha256(path) if path.exists() else None  # None: not built yet (a dry run)
            accuracy = None
            if (plan.settings.get("accuracy") or model.dataset or variant != "original") and model.pipeline is None:
                accuracy = AccuracyOptions(dataset=model.dataset)  # (a pipeline checks its final results instead)
            base = RunSettings(options={**options, "dims": model.dims, "values": model.values},
                               timeout_s=plan.settings.get("timeout"), accuracy=accuracy, pipeline=model.pipeline)
            for settings in expand_sweep(base, sweeps.get("threads"), sweeps.get("batch"), sweeps.get("provider"),
                                         sweeps.get("runtime")):
                for target in targets:
                    cells.append(Cell(model.name, variant, path, target, settings,
                                      cell_key(sha, target.name, settings.recorded()) if sha else "-"))
    return cells


def collect_unfinished(cells: list[Cell], results_dir: Path) -> list[Path]:
    """Before deciding what is done: store every run the plan's boards still hold (finished, or still running
    for a host that died), so a resumed plan neither loses nor repeats them. (A labgrid target's places are not
    taken for this: each cell's deploy collects its place's finished runs when it gets one.)"""
    from ..boards.board import Board
    from .deploy import recover

    written = []
    for target in {c.target.name: c.target for c in cells if c.target.kind != "labgrid"}.values():
        with Board(target) as board:
            written += recover(board, results_dir, wait_running=True)
    return written


def mark_done(cells: list[Cell], plan: Plan, results_dir: Path) -> None:
    """A cell is done when results/ holds an ok result of this plan with its key."""
    from ..results.files import load_results

    if not Path(results_dir).is_dir():
        return
    from ..fileio import file_sha256

    documents, _ = load_results([results_dir])
    # A result counts for a cell only when it measured that cell's model file on that cell's target: a results
    # folder from elsewhere may claim any cell.
    from ..results.view import Result

    finished = {(r.plan_cell, r.model.get("sha256"), r.target_name) for r in map(Result, documents)
                if r.status == "ok" and r.plan_name == plan.name and r.plan_cell}
    for cell in cells:
        sha = file_sha256(cell.path) if cell.path.is_file() else None
        cell.done = (cell.key, sha, cell.target.name) in finished


@dataclass
class PlanRun:
    ran: list = field(default_factory=list)  # (cell, result path)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # (cell, message)
    problems: list = field(default_factory=list)  # not a cell's: a labgrid place that could not be released


def run_plan(plan: Plan, cells: list[Cell], results_dir: Path, force: bool = False, on_event=None,
             say=None) -> PlanRun:
    """Every cell not yet done; targets in parallel (one connection and lock each), cells of a target in order; a
    labgrid target's cells spread over its free places. A cell that fails is recorded and the plan goes on."""
    from .deploy import deploy
    from ..errors import BenchError, TransportError
    from ..boards.threads import run_all

    outcome = PlanRun()
    todo = [c for c in cells if force or not c.done]
    outcome.skipped = [c for c in cells if c not in todo]
    by_target: dict = {}
    for cell in todo:
        by_target.setdefault(cell.target.name, []).append(cell)

    def on_board(target, take, cells: int) -> None:
        """Cells from `take()` until it has none (at most `cells`), on one board over one connection."""
        from ..boards.board import Board

        with Board(target).expect_runs(cells) as board:
            while (cell := take()) is not None:
                annotate = {"plan": {"name": plan.name, "sha256": plan.sha256, "file": str(plan.path), "cell": cell.key,
                                     "model": cell.model, "variant": cell.variant}}
                try:
                    report = deploy([cell.path], target, [cell.settings], results_dir, on_event, annotate, board)
                    outcome.ran += [(cell, o.path) for o in report.outcomes]
                    outcome.failed += [(cell, o.document["error"]["message"]) for o in report.outcomes
                                       if o.document["status"] != "ok"]
                except TransportError as exc:
                    if hasattr(take, "put_back"):  # a labgrid place whose board cannot: another place runs it
                        take.put_back(cell)
                        raise
                    outcome.failed.append((cell, str(exc)))
                except BenchError as exc:
                    outcome.failed.append((cell, str(exc)))

    def one_target(target_cells) -> None:
        target, count = target_cells[0].target, len(target_cells)
        if target.kind == "labgrid":
            from ..boards.farm import spread

            outcome.problems.extend(spread(target, target_cells, lambda place, take: on_board(place, take, count),
                                           lambda cell, why: outcome.failed.append((cell, str(why))), say))
            return
        queue = list(target_cells)
        try:
            on_board(target, lambda: queue.pop(0) if queue else None, count)
        except BenchError as exc:  # the board could not be reached: its cells fail with the reason
            outcome.failed += [(cell, str(exc)) for cell in queue]

    run_all([functools.partial(one_target, group) for group in by_target.values()], name="target")
    return outcome


# ------------------------------------------------------------------------------------------ the stage
@dataclass
class PlanJob:
    """A plan made ready to run: its cells, which are done, and runs of an earlier `bench run` collected."""

    plan: Plan
    cells: list[Cell]
    results: Path
    force: bool
    recovered: list[Path] = field(default_factory=list)

    def status(self, cell: Cell) -> str:
        if cell.done and not self.force:
            return "done"
        return "to build" if not cell.path.exists() else "to run"

    def pending_builds(self) -> list[str]:
        return sorted({str(c.path) for c in self.cells if not c.path.exists()})


def prepare(plan_file: Path, inventory_file: Path | None = None, only: list[str] | None = None,
            results: Path | None = None, force: bool = False, dry_run: bool = False,
            coordinator: str | None = None) -> PlanJob:
    """Load and check a plan, build its models (unless a dry run), lay out its matrix, and mark the cells already
    measured in its results folder (collecting runs an interrupted `bench run` left on the boards first)."""
    from ..boards.targets import inventory_path, load_inventory

    inventory = load_inventory(inventory_path(inventory_file)).with_coordinator(coordinator)
    plan = load_plan(plan_file, inventory)
    unknown = [name for name in only or [] if name not in {m.name for m in plan.models}]
    if unknown:
        raise ConfigError(f"--only {unknown[0]}: no such model in {plan_file}",
                          f"its models: {', '.join(m.name for m in plan.models)}")
    results_dir = results or plan.results or Path("results")
    built = build_models(plan, Path(plan_file).resolve().parent / ".edgebench-build" / plan.name, force=force,
                         dry_run=dry_run)
    job = PlanJob(plan, matrix(plan, built, inventory, only), results_dir, force)
    if not dry_run:
        job.recovered = collect_unfinished(job.cells, results_dir)
    mark_done(job.cells, plan, results_dir)
    return job


def execute(job: PlanJob, on_event=None, say=None) -> PlanRun:
    return run_plan(job.plan, job.cells, job.results, force=job.force, on_event=on_event, say=say)


def raise_for_failures(outcome: PlanRun) -> None:
    from ..errors import RunFailed

    lines = [f"{c.model}/{c.variant} on {c.target.name}: {message}" for c, message in outcome.failed]
    if lines or outcome.problems:
        head = f"{len(outcome.failed)} cell(s) failed: " if outcome.failed else ""
        raise RunFailed(head + "; ".join(lines + outcome.problems))
