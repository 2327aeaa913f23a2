"""Deploy: put the agent and the models on the target, run each one there, store one result per model.

Everything that can be refused is refused before anything is uploaded: a missing or corrupt model, unsafe
external data, bad options, a model too new for the board's onnxruntime, a provider the board lacks. A run
that fails on the board is recorded as a failed result and the other models go on.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..agentlib import Signature, accepted_dim_keys, dim_key, is_free, sizes_from_arrays
from ..agentlib import RUN_DEFAULTS, default_run_timeout, normalize_run_request

from ..boards.board import Board
from ..boards.compat import incompatibility
from ..errors import AgentError, ConfigError, FarmError, InputError, ModelError, TransportError
from ..fileio import file_sha256
from ..models.modelinfo import generation_rules, host_session, inspect_model, session_io
from .energy import result_block as energy_block
from ..results.files import build_result, new_run_id, utc_now, write_result
from .accuracy import DEFAULT_BATCH_SIZE, DEFAULT_SAMPLES
from ..models.parity import Tolerances
from .pipeline import PipelineOptions
from ..boards.targets import Target

# Request fields that describe how to measure (the rest say what to measure and where to write).
# What a result records as its settings. int_ranges follow from the model's graph (its sha256 names them) and are
# recorded per input in measurements.inputs; verbose changes no number.
SETTING_FIELDS = tuple(k for k in RUN_DEFAULTS
                       if k not in ("protocol_version", "model", "inputs", "out", "int_ranges", "verbose", "pipeline"))

ModelEvent = Callable[[str, dict], None]

# What deploy leaves beside each run on the board (host.json), so `bench fetch` can store its result later.
CONTEXT_KEYS = ("run_id", "created_at", "model", "target", "settings")


@dataclass
class AccuracyOptions:
    """The accuracy pass: where its inputs and reference come from, and the tolerances."""

    reference: str | None = None  # another .onnx, or a PyTorch MODEL_SPEC; None: the model itself on the host CPU
    dataset: Path | None = None  # labelled .npz (inputs + labels)
    test_data: Path | None = None  # an ONNX test_data_set_N folder
    samples: int = DEFAULT_SAMPLES
    batch_size: int = DEFAULT_BATCH_SIZE
    tolerances: Tolerances = field(default_factory=Tolerances)
    tolerances_given: bool = False  # False: a variant is judged by its conversion's stated tolerance

    def __post_init__(self) -> None:
        if self.samples < 1 or self.batch_size < 1:
            raise InputError("--accuracy-samples and --batch-size must be at least 1")

    @classmethod
    def asked(cls, *, accuracy: bool, reference: str | None, dataset: Path | None, test_data: Path | None,
              variants: Path | None, samples: int, batch_size: int, tolerances: Tolerances,
              tolerances_given: bool) -> AccuracyOptions | None:
        """The accuracy pass when anything asks for it (--accuracy, a reference, a dataset, test data, or variants,
        which are judged against their parent); None otherwise."""
        if not (accuracy or reference or dataset or test_data or variants):
            return None
        return cls(reference=reference, dataset=Path(dataset) if dataset else None,
                   test_data=Path(test_data) if test_data else None, samples=samples, batch_size=batch_size,
                   tolerances=tolerances, tolerances_given=tolerances_given)

    def recorded(self) -> dict:
        return {"reference": self.reference, "dataset": str(self.dataset) if self.dataset else None,
                "test_data": str(self.test_data) if self.test_data else None, "samples": self.samples,
                "batch_size": self.batch_size, "atol": self.tolerances.atol, "rtol": self.tolerances.rtol,
                "per_output": [list(t) for t in self.tolerances.per_output]}


@dataclass
class RunSettings:
    """How to measure: every run option of the agent, plus the host-side timeout."""

    options: dict = field(default_factory=dict)  # subset of SETTING_FIELDS overriding the agent's defaults
    inputs: Path | None = None  # user-supplied .npz: the inputs of every pass (timing, profile, accuracy)
    inputs_origin: str | None = None  # where `inputs` came from when edgebench made it (a test data set)
    strict_dims: bool = False  # refuse free dims nobody sized, instead of setting them to 1
    timeout_s: float | None = None  # None: derived from the run's own maximums
    accuracy: AccuracyOptions | None = None
    pipeline: PipelineOptions | None = None  # end to end: the user's stages around the model, on sample files
    power_command: list[str] | None = None  # an external meter on this host for the energy pass (argv)

    def request(self, model_path: str, inputs_path: str | None) -> dict:
        """The normalized agent request; raises InputError for an option the agent would refuse. A pipeline's
        paths are the host's here; a deploy stages them on the board and puts the board's in."""
        raw = {**self.options, "model": model_path, "inputs": inputs_path}
        if self.power_command is not None:
            if raw.get("energy") is None:
                raise InputError("--power-command reads a meter during the energy pass: add --energy")
            raw["energy"] = {**raw["energy"], "external": True}
        if self.pipeline is not None:
            if self.accuracy is not None:
                raise InputError("--pipeline checks the whole pipeline's results against the host's run; the accuracy "
                                 "pass (--accuracy, --reference, --dataset, --test-data, variants) is for bare models",
                                 "drop one of them")
            raw["pipeline"] = {"file": str(self.pipeline.file), "samples": str(self.pipeline.samples)}
        if self.timeout_s is not None and not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise InputError(f"--timeout must be a positive number of seconds, got {self.timeout_s}")
        try:
            return normalize_run_request(raw)
        except ConfigError as exc:  # an option the agent refuses is the user's input
            raise InputError(exc.message) from exc

    def recorded(self) -> dict:
        """What a result stores about its settings (every field, defaults included, so runs compare)."""
        request = self.request("-", None)
        recorded = {key: request[key] for key in SETTING_FIELDS if key != "accuracy"}
        recorded["accuracy"] = self.accuracy.recorded() if self.accuracy else None
        recorded["pipeline"] = self.pipeline.recorded() if self.pipeline else None
        if self.power_command is not None:
            recorded["energy"] = {**recorded["energy"], "power_command": " ".join(self.power_command)}
        if self.inputs is not None:
            recorded["inputs_file"] = {"path": self.inputs_origin or str(self.inputs), "sha256": file_sha256(self.inputs),
                                       "source": "test data set" if self.inputs_origin else "inputs file"}
        return recorded

    def timeout_for(self, request: dict) -> float:
        return self.timeout_s if self.timeout_s is not None else default_run_timeout(request)


@dataclass
class DeployOutcome:
    model_path: Path
    document: dict
    path: Path


@dataclass
class DeployReport:
    outcomes: list[DeployOutcome]
    recovered: list[Path]  # results of earlier runs that finished while nobody was listening
    uploaded_bytes: int  # what crossed the link: 0 when the agent and every model were cached on the board


def check_results_dir(results_dir: Path) -> None:
    """Fail before measuring anything when the results cannot be stored."""
    import tempfile

    from ..errors import ResultError

    folder = Path(results_dir)
    try:
        if folder.is_dir():
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
            return
        existing = next(p for p in [folder, *folder.absolute().parents] if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise OSError(f"{existing} is not a writable folder")  # created only when the first result is stored
    except OSError as exc:
        raise ResultError(f"cannot write results to {results_dir}: {exc.strerror or exc}",
                          "choose a writable folder with --results") from exc


def check_inputs(models: list[Path], settings: RunSettings) -> list[dict]:
    """Everything that can be checked before touching the target. Returns the model blocks."""
    settings.request("-", None)  # option errors first: they are the cheapest to fix
    if settings.inputs is not None and not Path(settings.inputs).is_file():
        raise InputError(f"inputs file not found: {settings.inputs}")
    if not models:
        raise ModelError("no model given", "pass one or more .onnx files")
    blocks = [inspect_model(Path(m)) for m in models]
    given = given_inputs(settings)
    for model in models:  # an input only the user can give (a shape, K of TopK) must be given: say so now
        if settings.pipeline is None:  # (a pipeline gives every input)
            generation_rules(Path(model)).check_given(given | {""})
    known = {key for block in blocks for key in accepted_dim_keys(_signature(block))}
    for key in settings.request("-", None)["dims"]:
        if key not in known:  # a typo would silently change the run's identity and size nothing
            raise InputError(f"--dim {key}: no model here has a free dimension called that",
                             "free dimensions: " + (", ".join(sorted(known)) or "none (every dimension is fixed)"))
    if settings.pipeline is None:  # a pipeline's feeds size every dimension themselves
        for block in blocks:
            resolve_dims(block, settings, given)  # --strict-dims: refused here, before anything runs
    return blocks


def _signature(block: dict) -> Signature:
    """The signature of a result's model block (what inspect_model recorded from session_signature)."""
    return Signature.from_block(block["inputs"])


def resolve_dims(block: dict, settings: RunSettings, given: set) -> tuple[dict, list]:
    """(the dims this model runs with, the keys set to 1 because nothing sized them).

    --batch N sizes every free leading dim and is written as dims, so `--batch 1` and `--dim batch=1` are the
    same run; a --dataset fixes every free dim but the batch; inputs the user gave fix their own."""
    from ..agentlib import declared_arrays, free_dim_keys

    request = settings.request("-", None)
    signature = _signature(block)
    known = accepted_dim_keys(signature)
    dims = {key: size for key, size in request["dims"].items() if key in known}  # only what applies to this model
    if settings.inputs is not None:  # given arrays fix their own free dims: recorded as the sizes they are
        shapes = {name: shape for name, shape, _ in declared_arrays(str(settings.inputs))}
        if "" in shapes and len(signature) == 1:  # a bare .npy feeds the one input
            shapes = {signature[0][0]: shapes[""]}
        for key, size in sizes_from_arrays(signature, shapes).items():
            if dims.get(key, size) != size:
                raise InputError(f"--dim {key}={dims[key]}, but the given inputs have {size} on that axis",
                                 "given inputs fix their own sizes: leave out the --dim, or give other inputs")
            dims[key] = size
    if request["batch"] is not None:
        for key in free_dim_keys([(n, t, shape[:1]) for n, t, shape in signature], dims, None, given):
            dims[key] = request["batch"]
    dataset = settings.accuracy.dataset if settings.accuracy else None
    if dataset is not None and Path(dataset).is_file():
        shapes = {name: shape for name, shape, _ in declared_arrays(str(dataset))}
        for key, size in sizes_from_arrays(signature, shapes, first_axis=1).items():  # samples run along axis 0
            dims.setdefault(key, size)
    unset = free_dim_keys(signature, dims, None, given)
    if unset and settings.strict_dims:
        raise InputError(f"{block['name']}: free dimension(s) {', '.join(unset)} have no size",
                         f"set them with --dim {unset[0]}=N (or drop --strict-dims to use 1)")
    dims.update({key: 1 for key in unset})
    return dims, unset


def given_inputs(settings: RunSettings) -> set:
    """Names of the inputs the user gave (an inputs file, or --value); "" stands for a bare .npy's one array."""
    from ..agentlib import load_npz

    names = set(settings.options.get("values") or {})
    if settings.inputs is not None:  # read whole (sizes checked first), so a corrupt member is found here, not on the board
        names |= set(load_npz(str(settings.inputs)))
    return names


def with_test_data_inputs(settings: RunSettings, model_path: Path) -> RunSettings:
    """--test-data without --inputs: the test data set's inputs become the inputs of every pass, so the timing
    pass runs the tensors the user gave (indices in range, shapes that fix free dims), not generated ones."""
    import io

    import numpy as np

    from ..fileio import cache_dir
    from ..models.testdata import io_types, read_test_data_set

    options = settings.accuracy
    if settings.inputs is not None and options is not None and options.test_data is not None:
        raise InputError("--inputs and --test-data both give the model's inputs", "give one: the inputs of every pass")
    if settings.inputs is not None or options is None or options.test_data is None:
        return settings
    session, signature, _ = session_io(Path(model_path))
    arrays, _ = read_test_data_set(Path(options.test_data), [name for name, _, _ in signature], io_types(session, signature))
    from ..agentlib import sha256_bytes, storable
    from ..fileio import write_atomically

    buffer = io.BytesIO()  # strings come from .pb as str objects: stored as unicode, never pickled
    np.savez(buffer, **{name: storable(array) for name, array in arrays.items()})
    data = buffer.getvalue()
    path = cache_dir() / "inputs" / f"{sha256_bytes(data)[:16]}.npz"  # by content: made once
    if not path.exists():
        write_atomically(path, data)
    return replace(settings, inputs=path, inputs_origin=str(options.test_data))


def plan_accuracy(model_path: Path, settings: RunSettings, model: dict):
    """The accuracy pass of one model, reference outputs included: made on the host before any upload, so a
    dataset that does not fit fails first. A converted variant is compared with its parent."""
    from . import accuracy

    options = settings.accuracy
    assert options is not None  # called only when the accuracy pass was asked for
    provenance = model.get("provenance")
    if provenance and options.reference is None:
        options = replace(options, reference=provenance["parent"]["path"])
    request = settings.request("-", None)
    dims, _ = resolve_dims(model, settings, given_inputs(settings))
    planned = accuracy.plan(Path(model_path), dataset=options.dataset, test_data=options.test_data,
                            inputs=settings.inputs if settings.inputs_origin is None else None,
                            samples=options.samples, batch_size=options.batch_size, dims=dims,
                            values=request["values"], seed=request["seed"], batch=None)
    options.tolerances.check_outputs(planned.output_names, Path(model_path).name)
    accuracy.compute_reference(planned, Path(model_path), options.reference)
    return planned


def accuracy_rule(model: dict, options: AccuracyOptions) -> tuple[Tolerances, float | None]:
    """(tolerances, min_cosine) for one model: a variant's conversion states its own unless the user set one."""
    from .convert import stated_tolerance

    provenance = model.get("provenance")
    if not provenance or options.tolerances_given:
        return options.tolerances, None
    rule = stated_tolerance(str(provenance.get("variant")))
    if rule is None:  # a variant kind this edgebench does not make: judge it like any model
        return options.tolerances, None
    if "min_cosine" in rule:
        return options.tolerances, rule["min_cosine"]
    return Tolerances(rule["atol"], rule["rtol"]), None


def _accuracy_request(board: Board, planned, run_id: str, tolerances: Tolerances) -> dict:
    from . import accuracy

    inputs_path = board.stage_bytes(planned.inputs_npz(), "accuracy-inputs.npz")
    reference_path = None
    if planned.expected_bytes() > accuracy.DOWNLOAD_LIMIT_BYTES:  # cheaper to send the reference (once, by hash)
        reference_path = board.stage_bytes(planned.reference_npz(), "accuracy-reference.npz")
    return accuracy.request_block(planned, inputs_path, tolerances, board.run_path(run_id, "outputs.npz"), reference_path)


def _accuracy_result(board: Board, planned, reply: dict, rule: tuple) -> dict | None:
    from . import accuracy

    tolerances, min_cosine = rule
    answer = reply.get("accuracy") if reply and reply.get("status") == "ok" else None
    if not answer:
        return None
    if answer["compared_on"] == "board":
        evaluated = answer
    else:
        data = board.transport.read_bytes(answer["outputs_file"])
        if data is None:
            raise AgentError(f"the accuracy outputs are missing on {board.target.name}: {answer['outputs_file']}")
        evaluated = accuracy.evaluate_on_host(planned, data, tolerances)
    return accuracy.result_block(planned, evaluated, answer["compared_on"], min_cosine)


# How old a remembered handshake the pre-upload gate accepts (results always carry the run's fresh info).
GATE_INFO_MAX_AGE_S = 600.0


def check_board(board: Board, model_blocks: list[dict], settings: RunSettings) -> dict:
    """The compatibility gate, before any upload: onnxruntime version against each model, and the provider."""
    info = board.info(max_age_s=GATE_INFO_MAX_AGE_S)
    if info.get("missing"):
        raise ModelError(f"{board.target.name} lacks {', '.join(info['missing'])}",
                         f"run `bench doctor --target {board.target.name}` for what to install")
    runtime = settings.request("-", None)["runtime"]
    if runtime != "onnxruntime":
        from ..agentlib import pip_line

        offered = info.get("runtimes") or {}
        if runtime not in offered:
            raise ModelError(f"{board.target.name} has no {runtime} (it offers: {', '.join(offered) or 'onnxruntime'})",
                             f"on the board: {pip_line(runtime)}")
        from ..models.runtimes import runtime_available_here, runtime_session

        if runtime_available_here(runtime):  # a bundle that does not load, or whose manifest lies: refused here
            for model in model_blocks:
                runtime_session(Path(model["path"]), runtime)
        return info
    import onnxruntime

    for model in model_blocks:
        problem = incompatibility(model, info.get("onnxruntime_version"))
        if problem:
            raise ModelError(*problem)
        if info.get("onnxruntime_version") == onnxruntime.__version__ and model.get("format") == "onnx":
            # The same onnxruntime here: a model it cannot load (an op without a kernel for its type or opset) is
            # refused now, before any upload. With another version only the board can tell (a failed result).
            host_session(Path(model["path"]), settings.options.get("verbose", False))
    provider = settings.request("-", None)["provider"]
    if provider not in info.get("providers", []):
        raise InputError(f"execution provider {provider} is not available on {board.target.name}",
                         f"it offers: {', '.join(info.get('providers', [])) or 'none'}")
    return info


def recover(board: Board, results_dir: Path | None, only: list[str] | None = None,
            wait_running: bool = False) -> list[Path]:
    """Store the results of runs that finished on the board but never reached results/ (a dropped link, a
    killed host), in the results folder each was started for: a run started for another folder stays on the
    board. results_dir None (`bench fetch` without --results): every run, each into its own folder. A result
    already stored is not stored again. wait_running also follows runs still going."""
    states = ("finished", "dead", "running") if wait_running else ("finished", "dead")
    written = []
    for run in board.runs():
        if run["state"] not in states or (only and run["run"] not in only):
            continue
        context = board.context(run["run"])
        if not isinstance(context, dict) or not all(k in context for k in CONTEXT_KEYS):
            continue  # not started by `bench deploy` (a hand-made run folder): not ours to store
        if not belongs_to(context, results_dir):
            continue  # started for another results folder: it stays on the board for that one (or `bench fetch`)
        reply, _ = board.fetch(run["run"])
        folder = Path(results_dir) if results_dir is not None else Path(context.get("results_dir") or "results")
        path = folder / f"{run['run']}.json"
        if not path.exists():
            document = build_result(run_id=context["run_id"], created_at=context["created_at"], model=context["model"],
                                    target=context["target"], settings=context["settings"], reply=reply,
                                    energy=energy_block((reply or {}).get("energy")))
            document.update(context.get("annotate") or {})  # e.g. the plan and cell it belongs to
            written.append(write_result(folder, document))
        board.mark_fetched(run["run"])
    return written


def belongs_to(context: dict, results_dir: Path | None) -> bool:
    """A run is stored in the results folder it was started for (recorded on the board). None: any folder
    (`bench fetch` with no --results stores each run in its own)."""
    recorded = context.get("results_dir")
    return results_dir is None or recorded is None or Path(recorded) == Path(results_dir).resolve()


def expand_sweep(settings: RunSettings, threads: list[int] | None = None, batches: list[int] | None = None,
                 providers: list[str] | None = None, runtimes: list[str] | None = None) -> list[RunSettings]:
    """The matrix of a sweep: one RunSettings per (runtime, threads, batch, provider) cell."""
    import itertools

    cells = []
    none: list[Any] = [None]  # an axis not swept: the agent's default
    for runtime, thread, batch, provider in itertools.product(runtimes or none, threads or none, batches or none,
                                                              providers or none):
        options = dict(settings.options)
        for key, value in (("runtime", runtime), ("intra_op_threads", thread), ("batch", batch), ("provider", provider)):
            if value is not None:
                options[key] = value
        cells.append(replace(settings, options=options))
    return cells


def _profile_summary(board: Board, reply: dict | None) -> dict | None:
    """Pull the profile pass's trace home and keep its top operators (the trace itself stays on the board)."""
    from ..agentlib import top_operators

    answer = (reply or {}).get("profile")
    if not answer:
        return None
    data = board.transport.read_bytes(answer["file"])
    if data is None:
        return {"iterations": answer["iterations"], "file": answer["file"], "error": "the profile trace is missing"}
    import json

    try:
        events = json.loads(data)
    except ValueError:
        return {"iterations": answer["iterations"], "file": answer["file"], "error": "the profile trace is not valid JSON"}
    return {"iterations": answer["iterations"], "file": answer["file"], **top_operators(events)}


def deploy(models: list[Path], target: Target, settings: RunSettings | list[RunSettings], results_dir: Path,
           on_event: ModelEvent | None = None, annotate: dict | list[dict] | None = None,
           board: Board | None = None) -> DeployReport:
    """Every model under every settings cell (a sweep) on one target, over one connection: `board`, an open one
    the caller keeps (a plan's cells share it), or one opened and closed here. annotate: what every result also
    records (a plan's cell), or a list of it, one per settings cell."""
    cells = settings if isinstance(settings, list) else [settings]
    if models:
        cells = [with_test_data_inputs(cell, Path(models[0])) for cell in cells]
    model_blocks = check_inputs(models, cells[0])
    check_results_dir(results_dir)
    for cell in cells[1:]:
        cell.request("-", None)
    # Each cell's models for its runtime (a bundle beside an .onnx for ncnn and LiteRT), checked before any upload.
    cells, per_cell = runtime_cells(cells, models, model_blocks)
    # Accuracy plans (and their references) before touching the board: a dataset that does not fit fails first.
    plans = {(i, j): plan_accuracy(m, cell, block) if cell.accuracy else None
             for i, cell in enumerate(cells) for j, (m, block) in enumerate(per_cell[i])}
    pipelines = plan_pipelines(models, cells)
    outcomes = []
    runs = sum(len(models) for models in per_cell)
    with contextlib.nullcontext(board) if board is not None else Board(target).expect_runs(runs) as board:
        infos = [check_board(board, [block for _, block in per_cell[i]], cell) for i, cell in enumerate(cells)]
        target_block = {**target.describe(), "info": infos[0]}
        recovered = recover(board, results_dir) if board.first_visit(results_dir) else []
        inputs_remote = None
        if cells[0].inputs is not None:
            inputs_remote = board.stage(Path(cells[0].inputs), file_sha256(cells[0].inputs))
        for i, cell in enumerate(cells):
            recorded_settings = cell.recorded()
            for j, (model_path, model) in enumerate(per_cell[i]):
                outcomes.append(_run_one(board, target, target_block, cell, recorded_settings, Path(model_path), model,
                                         plans[(i, j)], inputs_remote, results_dir, on_event,
                                         annotate[i] if isinstance(annotate, list) else annotate,
                                         pipelines.get(str(model_path))))
        uploaded = board.transport.bytes_uploaded
    return DeployReport(outcomes, recovered, uploaded)


def plan_pipelines(models: list[Path], cells: list[RunSettings]) -> dict:
    """model path -> its pipeline plan (the host's reference run), made before any board is touched: a pipeline
    that fails does so here, once, naming the stage and the sample."""
    from . import pipeline

    options = cells[0].pipeline if cells else None
    if options is None:
        return {}
    return {str(m): pipeline.plan(options, Path(m)) for m in models}


def runtime_cells(cells: list[RunSettings], models: list[Path], blocks: list[dict]):
    """(cells, per cell the (path, block) of each model it runs). A cell that names a runtime runs every model with
    it: an .onnx as it is on onnxruntime and OpenVINO, as the bundle `bench convert` made of it on ncnn and LiteRT.
    A cell that names none runs each model on its own runtime (a bundle or .tflite on its runtime, an .onnx on
    onnxruntime): one cell per runtime found, so `--variants` with bundles among them just works."""
    from ..models.runtimes import ACCEPTS, runtime_of

    resolved_cells, per_cell = [], []
    for cell in cells:
        asked = cell.options.get("runtime")
        if asked is None:
            by_runtime: dict = {}
            for path, block in zip(models, blocks):
                by_runtime.setdefault(runtime_of(block) or "onnxruntime", []).append((Path(path), block))
            for runtime, pairs in by_runtime.items():
                resolved_cells.append(cell if runtime == "onnxruntime" else
                                      replace(cell, options={**cell.options, "runtime": runtime}))
                per_cell.append(pairs)
            continue
        pairs = []
        for path, block in zip(models, blocks):
            if block["format"] in ACCEPTS[asked]:
                pairs.append((Path(path), block))
            elif block["format"] == "onnx":
                pairs.append(_bundle_for(Path(path), block, asked))
            else:
                raise InputError(f"{Path(path).name} is a model for {runtime_of(block)}: --runtime {asked} cannot run it",
                                 f"use --runtime {runtime_of(block)}, or give the .onnx it came from")
        resolved_cells.append(cell)
        per_cell.append(pairs)
    return resolved_cells, per_cell


def _bundle_for(model_path: Path, block: dict, runtime: str) -> tuple[Path, dict]:
    """The bundle `bench convert --to RUNTIME` made of this exact model (by its provenance), beside it or in
    ./variants."""
    from ..models.provenance import read_provenance
    from ..models.runtimes import bundle_name

    name = bundle_name(model_path, runtime)
    for folder in (model_path.resolve().parent, Path("variants").resolve()):
        candidate = folder / name
        provenance = read_provenance(candidate) if candidate.is_file() else None
        if provenance and (provenance.get("parent") or {}).get("sha256") == block["sha256"]:
            return candidate, inspect_model(candidate)
    raise InputError(f"no {runtime} model of {model_path.name} (by this model's sha256) beside it or in ./variants",
                     f"make one: bench convert {model_path} --to {runtime}" + (" --spec FILE.py:FACTORY" if runtime == "litert" else ""))


def dims_by_axis(model: dict, dims: dict) -> dict:
    """OpenVINO reading an .onnx keeps no dimension names: every sized dimension as input:axis."""
    by_axis = {}
    for entry in model["inputs"]:
        for axis, dim in enumerate(entry["shape"] or []):
            key = dim_key(entry["name"], axis, dim)
            if key in dims and is_free(dim):
                by_axis[f"{entry['name']}:{axis}"] = dims[key]
            elif f"{entry['name']}:{axis}" in dims:
                by_axis[f"{entry['name']}:{axis}"] = dims[f"{entry['name']}:{axis}"]
    return by_axis


def _run_one(board, target, target_block, settings, recorded_settings, model_path, model, planned, inputs_remote,
             results_dir, on_event, annotate=None, pipeline_plan=None) -> DeployOutcome:
    meter = None  # an external meter (--power-command): it sees the board's energy phases as they arrive

    def forward(event: dict, name=model["name"]) -> None:
        if meter is not None:
            meter.event(event)
        if on_event is not None:
            on_event(target.name, {**event, "model": name})

    def uploaded(done: int, total: int) -> None:
        forward({"event": "upload", "done": done, "total": total})

    sidecars = [model_path.resolve().parent / name for name in model["external_data"]]
    remote_model = board.stage(model_path, model["sha256"], uploaded, companions=sidecars)
    created = utc_now()
    run_id = new_run_id(model["name"], target.name, created)
    request = settings.request(remote_model, inputs_remote)
    given = given_inputs(settings)
    defaulted: list = []
    if pipeline_plan is not None:  # the samples, through the user's stages, make the feeds
        from .pipeline import request_block

        request["pipeline"] = request_block(board, pipeline_plan, run_id)
    else:
        dims, defaulted = resolve_dims(model, settings, given)
        request["dims"] = dims_by_axis(model, dims) if request["runtime"] == "openvino" else dims
        recorded_settings = {**recorded_settings, "dims": dims, "batch": None}  # the sizes this run really had
        if model["format"] == "onnx":  # generated integers that index a table stay within its rows
            request["int_ranges"] = generation_rules(model_path).ranges_for(given)
    rule = None
    if planned is not None and settings.accuracy is not None:
        rule = accuracy_rule(model, settings.accuracy)
        request["accuracy"] = _accuracy_request(board, planned, run_id, rule[0])
    context = {"run_id": run_id, "created_at": created.isoformat(timespec="seconds"), "model": model,
               "target": target_block, "settings": recorded_settings, "annotate": annotate or {},
               "results_dir": str(Path(results_dir).resolve())}
    reply, error = None, None
    if settings.power_command is not None:  # the external meter runs on this host for the whole run
        from .energy import PowerCommand

        meter = PowerCommand(settings.power_command)
        meter.start()
    try:
        reply = board.run(request, run_id, context, settings.timeout_for(request), forward)
    except AgentError as exc:  # the agent misbehaved: record it, go on with the next model
        error = {"kind": "agent", "message": str(exc)}
    except KeyboardInterrupt:  # the board killed the run (Board.run): store it here, as interrupted, then stop
        document = build_result(run_id=run_id, created_at=context["created_at"], model=model, target=target_block,
                                settings=recorded_settings, reply=None,
                                error={"kind": "interrupted", "message": "interrupted from the host (Ctrl-C)"})
        document.update(annotate or {})
        write_result(results_dir, document)
        board.mark_fetched(run_id)
        raise
    finally:
        if meter is not None:
            meter.stop()
    # Failures are data: a wrong model hash or lost accuracy outputs fail this run's result, never the models after it.
    if reply and reply.get("status") == "ok" and reply["model"]["sha256"] != model["sha256"]:
        error = {"kind": "agent", "message": f"{target.name} ran a model whose sha256 differs from {model_path} "
                                             "(the file changed during the run, or the board's copy is corrupt); run again"}
    fresh_target = {**target_block, "info": reply["info"]} if reply and reply.get("info") else target_block
    accuracy_block = pipeline_block = None
    if planned is not None and rule is not None and reply is not None and error is None:
        try:
            accuracy_block = _accuracy_result(board, planned, reply, rule)
        except AgentError as exc:
            error = {"kind": "agent", "message": str(exc)}
    if pipeline_plan is not None and reply is not None and error is None:
        from .pipeline import result_block

        try:
            pipeline_block = result_block(board, pipeline_plan, reply)
        except AgentError as exc:
            error = {"kind": "agent", "message": str(exc)}
    energy = (reply or {}).get("energy") if (reply or {}).get("status") == "ok" else None
    if energy and meter is not None:  # the board kept only the windows: the readings are the host's meter's
        energy = meter.board_block()
    document = build_result(run_id=run_id, created_at=context["created_at"], model=model, target=fresh_target,
                            settings=recorded_settings, reply=reply, error=error, accuracy=accuracy_block,
                            profile=_profile_summary(board, reply), pipeline=pipeline_block,
                            energy=energy_block(energy))
    if defaulted:  # like onnxruntime_perf_test: said, and recorded in settings.dims
        document["validity"]["warnings"].append(
            f"{model['name']}: free dimension(s) {', '.join(defaulted)} set to 1 (size them with --dim NAME=N; "
            "--strict-dims refuses instead)")
    document.update(annotate or {})
    outcome = DeployOutcome(model_path, document, write_result(results_dir, document))
    board.mark_fetched(run_id)
    forward({"event": "done", "status": document["status"]})
    return outcome


@dataclass
class FleetReport:
    reports: dict  # target name -> DeployReport
    failures: dict  # target name -> BenchError

    @property
    def outcomes(self) -> list[DeployOutcome]:
        return [outcome for report in self.reports.values() for outcome in report.outcomes]

    @property
    def documents(self) -> list[dict]:
        return [outcome.document for outcome in self.outcomes]

    def problems(self) -> list[str]:
        """Failed runs, INVALID runs and unreachable boards, one line each (all of them are recorded)."""
        documents = self.documents
        found = [f"{d['model']['name']} on {d['target']['name']}: {d['error']['message']}"
                 for d in documents if d["status"] != "ok"]
        found += [f"{d['model']['name']} on {d['target']['name']} is INVALID: {'; '.join(d['validity']['reasons'])}"
                  for d in documents if d["status"] == "ok" and not d["validity"]["valid"]]
        return found + [f"{name}: {exc}" for name, exc in self.failures.items()]

    def raise_for_problems(self) -> None:
        """The deploy's verdict as a typed error: a lone board's own error when nothing ran, RunFailed for failed
        or INVALID runs, then for accuracy outside tolerance."""
        from ..errors import RunFailed

        if not self.outcomes and len(self.failures) == 1:
            raise next(iter(self.failures.values()))
        problems = self.problems()
        if problems:
            raise RunFailed(f"{len(problems)} problem(s): " + "; ".join(problems),
                            "failed and INVALID runs are recorded in results/ with their reason")
        from ..results.view import Result

        runs = [Result(d) for d in self.documents]
        differ = [f"{r.model_name} on {r.target_name} ({r.pipeline_results['agree']} of "
                  f"{r.pipeline_results['samples']} samples agree)"
                  for r in runs if r.pipeline_results and not r.pipeline_results["passed"]]
        if differ:
            raise RunFailed(f"the pipeline's final results on the board differ from the host's: {', '.join(differ)}",
                            "the result's pipeline block names the first samples that differ")
        wrong = [r.model_name for r in runs if r.accuracy and r.accuracy.get("passed") is False]
        if wrong:
            raise RunFailed(f"accuracy check failed for {', '.join(wrong)}: the board's outputs differ from the "
                            "reference beyond tolerance", "see the accuracy lines above; --atol/--rtol set tolerances")


@dataclass
class DeployRequest:
    """What `bench deploy` is asked, as typed values (options.deploy_request parses the command line)."""

    models: list[Path]
    target: str = "local"  # `local`, an inventory name, a,b for a fleet, tag:arm
    results: Path = Path("results")
    inventory: Path | None = None  # None: $EDGEBENCH_INVENTORY or configs/targets.yaml
    coordinator: str | None = None  # --coordinator, for labgrid targets (None: targets.resolve_target's order)
    settings: RunSettings = field(default_factory=RunSettings)
    variants: Path | None = None  # a folder of `bench convert` variants to run beside each model
    threads: list[int] | None = None  # sweeps: one settings cell per (threads, batch, provider)
    batches: list[int] | None = None
    providers: list[str] | None = None
    runtimes: list[str] | None = None  # onnxruntime, openvino, ncnn, litert: one cell each


@dataclass
class DeployJob:
    """A prepared deploy: the models (variants included), the boards and the settings cells."""

    models: list[Path]
    targets: list[Target]
    cells: list[RunSettings]
    results: Path


def prepare(request: DeployRequest) -> DeployJob:
    """Check what can be checked before any board is touched, and expand variants, sweeps and fleets."""
    from ..boards.targets import inventory_path, load_inventory, select_targets

    models = list(request.models)
    settings = request.settings
    if request.variants is not None:
        from ..models.provenance import variants_of

        if not request.variants.is_dir():
            raise InputError(f"variants folder not found: {request.variants}")
        found = {m: variants_of(m, request.variants) for m in models if m.is_file()}
        if not any(found.values()):
            raise InputError(f"no variant of {', '.join(m.name for m in models)} in {request.variants}",
                             f"make them with: bench convert {models[0]} --to int8-dynamic,fp16 -o {request.variants}")
        models = [path for m in models for path in [m, *found.get(m, [])]]
        if settings.accuracy is None:  # a variant is judged against its parent
            settings = replace(settings, accuracy=AccuracyOptions())
    cells = expand_sweep(settings, request.threads, request.batches, request.providers, request.runtimes)
    for cell in cells:  # an option the agent would refuse is refused here, before a target is even looked up
        cell.request("-", None)
    targets = select_targets(request.target,
                             load_inventory(inventory_path(request.inventory)).with_coordinator(request.coordinator))
    return DeployJob(models, targets, cells, Path(request.results))


def execute(job: DeployJob, on_event: ModelEvent | None = None, say=None) -> FleetReport:
    """Run a prepared deploy: one board over one connection, or a fleet in parallel (a labgrid target's work spread
    over its places). `say(target, message)` hears what the farm does (a place acquired, a wait)."""
    if len(job.targets) == 1 and job.targets[0].kind != "labgrid":
        return FleetReport({job.targets[0].name: deploy(job.models, job.targets[0], job.cells, job.results, on_event)}, {})
    return deploy_fleet(job.models, job.targets, job.cells, job.results, on_event, say)


def deploy_fleet(models: list[Path], targets: list[Target], cells: list[RunSettings], results_dir: Path,
                 on_event: ModelEvent | None = None, say=None) -> FleetReport:
    """Boards in parallel (one connection and one board lock each); a board that fails does not stop the others."""
    import threading

    from ..errors import BenchError
    from ..boards.threads import run_all

    check_inputs(models, cells[0])  # bad input fails once, before any board is touched
    fleet = FleetReport({}, {})
    merging = threading.Lock()

    def one(target: Target):
        try:
            report = deploy(models, target, cells, results_dir, on_event)
            with merging:
                fleet.reports[target.name] = report
        except BenchError as exc:
            fleet.failures[target.name] = exc

    def farm(target: Target):
        """Each (model, cell) on whichever matching place is free: a place is held only while work is left."""
        from ..boards.farm import spread

        def work(place: Target, take) -> None:
            with Board(place).expect_runs(len(models) * len(cells)) as board:
                while (unit := take()) is not None:
                    model, cell = unit
                    try:
                        report = deploy([model], place, [cell], results_dir, on_event, None, board)
                    except TransportError:  # this place's board cannot: another place runs it
                        take.put_back(unit)
                        raise
                    except BenchError as exc:
                        fleet.failures[f"{place.name} ({Path(model).name})"] = exc
                        continue
                    with merging:
                        known = fleet.reports.get(place.name)
                        fleet.reports[place.name] = report if known is None else DeployReport(
                            known.outcomes + report.outcomes, known.recovered + report.recovered,
                            known.uploaded_bytes + report.uploaded_bytes)

        def fail(unit, why: BenchError) -> None:
            fleet.failures.setdefault(target.name, why)

        for problem in spread(target, [(m, c) for c in cells for m in models], work, fail, say):
            fleet.failures[f"{target.name} (release)"] = FarmError(problem)

    run_all([functools.partial(farm if t.kind == "labgrid" else one, t) for t in targets])
    return fleet
