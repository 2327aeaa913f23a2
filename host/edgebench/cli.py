"""`bench`: the host command line. Thin typer commands; the work lives in the stage modules.

entry.py starts `bench` and imports this module only to run a command. Each command imports what it needs,
so nothing heavy (torch, onnx, pandas) loads before it is used. Typed errors become one line and an exit code
here, and only here.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .agentlib import PASS_DEFAULTS
from .results.defaults import ANALYSIS_DEFAULTS
from .cli_help import run_help
from .errors import BenchError

app = typer.Typer(
    name="bench",
    help="edgebench: how fast and how accurately your PyTorch model runs on a real edge board.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rendering help with rich would double `bench --help` start-up time
)


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _say(name: str, message: str) -> None:
    """What a labgrid lease does (a place acquired, released, waited for), one line on stderr (place names and
    holders come from the coordinator: no escape sequence of theirs reaches the terminal)."""
    from .results.schema import printable

    typer.echo(printable(f"{name}: {message}"), err=True)


def _say_line(line: str) -> None:
    """A stage's progress line on stderr, made printable (it may hold file and tensor names)."""
    from .results.schema import printable

    typer.echo(printable(line), err=True)


def _stdout():
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # a pipe or a file: never cut or wrap a table at 80 columns
        console = Console(highlight=False, width=1000)
    return console


def _working(text: str):
    """A spinner on a terminal's stderr while something slow runs (an export takes seconds); nothing elsewhere."""
    import contextlib

    console = _stderr()
    return console.status(text) if console.is_terminal else contextlib.nullcontext()


def cli_errors(command):
    """Map BenchError to one readable line and its exit code; Ctrl-C to 130. Nothing else is swallowed."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BenchError as exc:
            from .results.schema import printable

            if os.environ.get("EDGEBENCH_DEBUG"):  # the whole chain of causes, for a bug report
                import traceback

                traceback.print_exc()
            # One line, never wrapped, so scripts and people both read it whole; no escape sequence from a file
            # name or a result reaches the terminal.
            text = f"error: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else "")
            typer.echo(printable(" ".join(text.split())), err=True)
            raise typer.Exit(exc.exit_code) from exc
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


# compare's and history's defaults (results.stats.ANALYSIS_DEFAULTS), written as the options take them
DEFAULT_BY = ",".join(ANALYSIS_DEFAULTS.by)
DEFAULT_MIN_EFFECT = f"{ANALYSIS_DEFAULTS.min_effect * 100:g}%"
INVENTORY_OPTION = typer.Option("--inventory", help="Target inventory (default: $EDGEBENCH_INVENTORY or configs/targets.yaml).")
COORDINATOR_OPTION = typer.Option("--coordinator", metavar="HOST:PORT", help="labgrid coordinator of labgrid targets (default: an inventory entry's own, else $LG_COORDINATOR, else the inventory's labgrid: block).")


def _version(value: bool):
    if value:
        typer.echo(f"edgebench {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
):
    """edgebench: how fast and how accurately your PyTorch model runs on a real edge board."""


# ---------------------------------------------------------------------------------------------- deploy
def _protocol_option(option, **settings):
    """A declared option of the protocol as a typer option, its text read as the agent reads it
    (protocol.parse_option), so `bench deploy` and the agent's `run` take the same spellings."""
    from .agentlib import parse_option

    def parse(text: str):
        try:
            return parse_option(option, text)
        except BenchError as exc:
            raise typer.BadParameter(exc.message) from None

    return typer.Option(option.flag, parser=parse, **settings)


def _run_option(name: str):
    """A run option (protocol.RUN_OPTIONS), with the agent's help."""
    from .agentlib import RUN_OPTION

    return _protocol_option(RUN_OPTION[name], help=run_help(name))


def _pass_option(name: str):
    """A pass option (protocol.PASS_OPTIONS: --energy-seconds, --profile-iterations, ...); its bounds are checked
    with the request (protocol.pass_blocks)."""
    from .agentlib import PASS_DEFAULTS, PASS_OPTION, PASS_SWITCHES

    option = PASS_OPTION[name]
    default = PASS_DEFAULTS[option.block][option.key]
    return _protocol_option(option, metavar=option.metavar,
                            help=f"With {PASS_SWITCHES[option.block]}: {option.help}.  [default: {default:g}]")


@app.command()
@cli_errors
def deploy(
    models: Annotated[list[Path], typer.Argument(help="Models to benchmark: .onnx, or another runtime's bundle from `bench convert` (.ncnn.tar, .openvino.tar, .litert.tar) or a .tflite.", show_default=False)],
    target: Annotated[str, typer.Option("--target", "-t", help="Target(s): `local`, inventory names, a,b for a fleet, tag:arm for every target so tagged, lg:PLACE or lg:board=pi4 for labgrid places (the work spread over every free match).")] = "local",
    results: Annotated[Path, typer.Option(help="Folder for result files.")] = Path("results"),
    inputs: Annotated[Optional[Path], typer.Option(help="Input arrays by input name (.npz, no pickled objects).")] = None,
    value: Annotated[Optional[list[str]], typer.Option("--value", help="Fill an input with a value: NAME=VALUE (e.g. sample_rate=16000).")] = None,
    dim: Annotated[Optional[list[str]], typer.Option("--dim", help="Size of a free dimension: NAME=N or INPUT:AXIS=N.")] = None,
    # The run options' help and defaults are the protocol's (RUN_OPTIONS): the agent's `run --help` says the same.
    seed: Annotated[Optional[int], _run_option("seed")] = None,
    warmup: Annotated[Optional[int], _run_option("warmup")] = None,
    min_iterations: Annotated[Optional[int], _run_option("min_iterations")] = None,
    min_seconds: Annotated[Optional[float], _run_option("min_seconds")] = None,
    max_iterations: Annotated[Optional[int], _run_option("max_iterations")] = None,
    max_seconds: Annotated[Optional[float], _run_option("max_seconds")] = None,
    repeats: Annotated[Optional[int], _run_option("repeats")] = None,
    threads: Annotated[Optional[str], typer.Option("--threads", help=run_help("threads", "a list sweeps: 1,2,4"))] = None,
    batch: Annotated[Optional[str], typer.Option("--batch", help=run_help("batch", "a list sweeps: 1,8"))] = None,
    inter_op_threads: Annotated[Optional[int], _run_option("inter_op_threads")] = None,
    provider: Annotated[Optional[str], typer.Option(help="onnxruntime's execution provider: cpu, cuda, tensorrt, xnnpack, ... or a full name; a list sweeps.")] = None,
    runtime: Annotated[Optional[str], typer.Option("--runtime", metavar="NAME[,NAME]", help="Runtime(s) that measure the model: onnxruntime (default for an .onnx), openvino, ncnn, litert; a list sweeps. An .onnx runs as it is on onnxruntime and openvino, as its `bench convert` bundle on ncnn and litert; a bundle or .tflite runs on its own runtime.")] = None,
    provider_option: Annotated[Optional[list[str]], typer.Option("--provider-option", help="Execution provider option KEY=VALUE.")] = None,
    graph_optimization: Annotated[Optional[str], _run_option("graph_optimization")] = None,
    telemetry_interval: Annotated[Optional[float], _run_option("telemetry_interval")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds before a run is killed (default: from the run's maximums).")] = None,
    cpus: Annotated[Optional[str], typer.Option(help="Pin the run to these CPUs of the board, e.g. 2,3.")] = None,
    spin_wait: Annotated[Optional[bool], typer.Option("--spin-wait/--no-spin-wait", help="onnxruntime thread spinning (default: its own).")] = None,
    cooldown: Annotated[bool, typer.Option("--cooldown", help="Before each session, wait until the board is back near its idle temperature.")] = False,
    cooldown_margin: Annotated[Optional[float], _pass_option("cooldown_margin")] = None,
    cooldown_timeout: Annotated[Optional[float], _pass_option("cooldown_timeout")] = None,
    profile: Annotated[bool, typer.Option("--profile", help="Also run a separate onnxruntime profiling pass and keep the top operators.")] = False,
    profile_iterations: Annotated[Optional[int], _pass_option("profile_iterations")] = None,
    accuracy: Annotated[bool, typer.Option("--accuracy", help="Also check the board's outputs against a reference (a separate pass).")] = False,
    reference: Annotated[Optional[str], typer.Option(help="Accuracy reference: another .onnx, or a PyTorch MODEL_SPEC (default: the model on this host's CPU).")] = None,
    dataset: Annotated[Optional[Path], typer.Option(help="Labelled .npz (inputs + labels) for top-1/top-5 accuracy; implies --accuracy.")] = None,
    test_data: Annotated[Optional[Path], typer.Option(help="ONNX test_data_set_N folder as accuracy inputs and reference; implies --accuracy.")] = None,
    accuracy_samples: Annotated[int, typer.Option(help="Generated inputs for the accuracy pass (without --dataset).")] = PASS_DEFAULTS["accuracy"]["samples"],
    batch_size: Annotated[int, typer.Option(help="Dataset batch size when the model's batch dim is free.")] = PASS_DEFAULTS["accuracy"]["batch_size"],
    atol: Annotated[Optional[list[str]], typer.Option("--atol", help="Accuracy tolerance, or OUTPUT=value.")] = None,
    rtol: Annotated[Optional[list[str]], typer.Option("--rtol", help="Relative accuracy tolerance, or OUTPUT=value.")] = None,
    variants: Annotated[Optional[Path], typer.Option(help="Folder of `bench convert` variants: benchmark each model with its variants (accuracy against the parent).")] = None,
    inventory: Annotated[Optional[Path], INVENTORY_OPTION] = None,
    coordinator: Annotated[Optional[str], COORDINATOR_OPTION] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Let onnxruntime's own log lines through.")] = False,
    columns: Annotated[Optional[str], typer.Option("--columns", metavar="NAME,...", help="Table columns to show, by header (default: all that fit the terminal).")] = None,
    strict_dims: Annotated[bool, typer.Option("--strict-dims", help="Refuse free dimensions nothing sizes instead of setting them to 1.")] = False,
    scenario: Annotated[Optional[str], typer.Option("--scenario", metavar="NAME", help="Load scenario: single-stream (default: back to back), multi-stream, server (Poisson arrivals) or offline (throughput).")] = None,
    samples_per_query: Annotated[Optional[str], typer.Option(metavar="N", help="multi-stream: samples per query.  [default: 8]")] = None,
    qps: Annotated[Optional[str], typer.Option("--qps", metavar="X|auto", help="server: arrival rate, or auto to find the highest rate whose p99 meets --latency-bound.")] = None,
    latency_bound: Annotated[Optional[str], typer.Option("--latency-bound", metavar="DURATION", help="server: the p99 bound, e.g. 33ms, 250us or 0.5s (a bare number is seconds).")] = None,
    concurrency: Annotated[Optional[str], typer.Option(metavar="K", help="server and offline: worker threads on the board.  [default: 1]")] = None,
    mlperf: Annotated[bool, typer.Option("--mlperf", help="MLPerf LoadGen's minimums: 600 s and its query counts (slow; the result says so).")] = False,
    pipeline: Annotated[Optional[Path], typer.Option("--pipeline", metavar="STAGES.py", help="End to end: this Python file's load/preprocess/postprocess run around the model, here and on the board (it runs the file's code).")] = None,
    samples: Annotated[Optional[Path], typer.Option("--samples", metavar="DIR", help="With --pipeline: the folder of sample files (images, .npy, .pgm, ...) fed through it.")] = None,
    energy: Annotated[bool, typer.Option("--energy", help="Also an energy pass: an idle baseline, then the model in a loop while the board's power sensor is read (mJ per inference).")] = False,
    energy_seconds: Annotated[Optional[float], _pass_option("energy_seconds")] = None,
    energy_idle_seconds: Annotated[Optional[float], _pass_option("energy_idle_seconds")] = None,
    power_command: Annotated[Optional[str], typer.Option("--power-command", metavar="CMD", help="With --energy: read an external meter instead, a command run on this host printing watts per line (no shell).")] = None,
):
    """Benchmark ONNX models on a target; one result file per model in results/."""
    from .stages import deploy as stage
    from .options import deploy_request
    from .progress import DeployProgress

    job = stage.prepare(deploy_request(locals()))  # every option above, by parameter name
    with DeployProgress(_stderr(), [t.name for t in job.targets if t.kind != "labgrid"]) as progress:
        fleet = stage.execute(job, on_event=progress.event, say=progress.say)
    _print_deploy(job, fleet, json_output, columns)
    fleet.raise_for_problems()


def _print_deploy(job, fleet, json_output: bool, columns: str | None) -> None:
    """What a deploy found: recovered runs and uploads on stderr, then the table (or JSON) and result paths."""
    kinds = {t.name: t.kind for t in job.targets}
    for name, report in fleet.reports.items():
        for path in report.recovered:
            typer.echo(f"recovered an earlier run on {name} ({_run_status(path)}): {path}", err=True)
        if kinds.get(name, "ssh") != "local":  # (a labgrid place is reached over SSH)
            typer.echo(f"uploaded {report.uploaded_bytes / 1024:.1f} KiB to {name}"
                       + (" (agent and models were cached there)" if report.uploaded_bytes == 0 else ""), err=True)
    documents = fleet.documents
    if json_output:
        typer.echo(json.dumps(documents, indent=1))
    from .results.view import Result

    for warning in sorted({w for d in documents for w in Result(d).warnings}):
        typer.echo(f"warning: {warning}", err=True)  # before the table: a warning after it is easy to miss
    if json_output or not documents:
        return
    _print_summary(documents, columns)
    from .stages.accuracy import verdict_text

    from .stages.energy import summary_line
    from .stages.pipeline import stage_lines

    for document in documents:
        if document.get("accuracy"):
            typer.echo(f"accuracy {document['model']['name']}: {verdict_text(document['accuracy'])}")
        for line in stage_lines(document):
            typer.echo(line)
        energy_line = summary_line(document)
        if energy_line:
            typer.echo(energy_line)
        for line in _profile_lines(document):
            typer.echo(line)
    for outcome in fleet.outcomes:
        typer.echo(f"result: {outcome.path}")


def _run_status(path) -> str:
    """'ok', or 'failed: interrupted' / 'failed: timeout': how a recovered run ended (never just "finished")."""
    from .errors import ResultError
    from .results.files import load_result

    try:
        document = load_result(path)
    except ResultError:
        return "unreadable"
    from .results.view import Result

    return "ok" if document["status"] == "ok" else f"failed: {Result(document).error_kind or 'unknown'}"


def _profile_lines(document: dict) -> list[str]:
    from .results.view import Result

    result = Result(document)
    top = result.top_operators
    if not top:
        return []
    ops = ", ".join(f"{op['op_type']} {op['pct']:.0f}%" for op in top[:5])
    return [f"profile {result.model_name}: {result.profile['iterations']} inferences, top operators: {ops}"]


def _print_summary(documents: list[dict], columns: str | None = None) -> None:
    from .results.report import TEXT_HEADERS, per_run_cells
    from .results.tables import print_table

    from .options import names

    headers, rows = per_run_cells(documents, with_run_id=False)
    print_table(_stdout(), headers, rows, set(TEXT_HEADERS), names(columns), _stderr())


# ------------------------------------------------------------------------------------- export / validate
def _print_validation(report, as_json: bool) -> None:
    from .errors import ValidationFailed
    from .stages.validate import report_lines

    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=1, default=float))
    else:
        for line in report_lines(report):
            typer.echo(line)
    if not report.passed:
        failures = report.failures()
        raise ValidationFailed(f"validation failed: {failures[0]}" + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""),
                               report.diagnosis[0] if report.diagnosis else None)


@app.command()
@cli_errors
def export(
    spec: Annotated[str, typer.Argument(help="file.py:factory, package.module:factory, a TorchScript .pt/.jit or an ExportedProgram .pt2.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .onnx file to write.")],
    input: Annotated[Optional[list[str]], typer.Option("--input", help="Example input NAME=1x3x224x224[:dtype] (repeatable).")] = None,
    example_inputs: Annotated[Optional[Path], typer.Option(help="Example inputs as .npz (names = forward() parameters).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="state_dict for a factory (loaded with weights_only=True).")] = None,
    exporter: Annotated[Optional[str], typer.Option(help="dynamo or torchscript (default: dynamo; torchscript for --mode script).")] = None,
    mode: Annotated[str, typer.Option(help="trace, or script (torch.jit.script first: keeps control flow).")] = "trace",
    dynamic: Annotated[Optional[list[str]], typer.Option("--dynamic", help="Dynamic axis NAME:AXIS[=label], e.g. image:0=batch (repeatable).")] = None,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset version.")] = None,
    output_names: Annotated[Optional[str], typer.Option(help="Comma-separated output names.")] = None,
    save_test_data_to: Annotated[Optional[Path], typer.Option("--save-test-data", help="Write DIR/test_data_set_0 (example inputs and PyTorch outputs as .pb).")] = None,
    validate_after: Annotated[bool, typer.Option("--validate/--no-validate", help="Validate against PyTorch right after export.")] = True,
    samples: Annotated[int, typer.Option(help="Parity inputs to check.")] = 5,
    atol: Annotated[Optional[list[str]], typer.Option("--atol", help="Absolute tolerance, or OUTPUT=value.")] = None,
    rtol: Annotated[Optional[list[str]], typer.Option("--rtol", help="Relative tolerance, or OUTPUT=value.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the validation report as JSON.")] = False,
):
    """Export a PyTorch model to ONNX, then validate it against PyTorch."""
    from .stages.export import ExportOptions, check_output_path, export_model, save_test_data
    from .options import names
    from .options import tolerances as parse_tolerances
    from .models.torchmodel import example_for, load_model

    tolerances = parse_tolerances(atol, rtol)
    check_output_path(output)
    loaded = load_model(spec, weights)
    example = example_for(loaded, example_inputs, input)
    options = ExportOptions(exporter=exporter, mode=mode, dynamic=dynamic or [], opset=opset, output_names=names(output_names))
    with _working(f"exporting {spec} ({exporter or 'default'} exporter, {mode} mode)"):
        result = export_model(loaded, example, output, options)
    sidecars = [p.name for p in result.files if p != result.path]
    typer.echo(f"exported {result.path} ({result.exporter} exporter, {result.mode} mode)"
               + (f" with {', '.join(sidecars)}" if sidecars else ""), err=json_output)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if save_test_data_to is not None:
        typer.echo(f"wrote {save_test_data(result, loaded, example, save_test_data_to)}", err=json_output)
    if validate_after:
        from .stages.validate import validate as run_validate

        ordered = {n: example[n] for n in result.input_names}
        _print_validation(run_validate(result.path, reference=loaded, example=ordered, samples=samples,
                                       tolerances=tolerances), json_output)


@app.command()
@cli_errors
def validate(
    model: Annotated[Path, typer.Argument(help="The .onnx file.", show_default=False)],
    reference: Annotated[Optional[str], typer.Option(help="PyTorch MODEL_SPEC to compare against.")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="state_dict for the reference factory.")] = None,
    inputs: Annotated[Optional[Path], typer.Option(help="Inputs: an .npz, or an ONNX test_data_set_N/ folder (its output_K.pb are a reference).")] = None,
    dim: Annotated[Optional[list[str]], typer.Option("--dim", help="Size of a free dimension when no inputs are given: NAME=N.")] = None,
    samples: Annotated[int, typer.Option(help="Parity inputs to check.")] = 5,
    atol: Annotated[Optional[list[str]], typer.Option("--atol", help="Absolute tolerance, or OUTPUT=value.")] = None,
    rtol: Annotated[Optional[list[str]], typer.Option("--rtol", help="Relative tolerance, or OUTPUT=value.")] = None,
    graph: Annotated[bool, typer.Option("--graph", help="Print the readable graph (onnx.printer).")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Let onnxruntime's own log lines through.")] = False,
    strict_dims: Annotated[bool, typer.Option("--strict-dims", help="Refuse free dimensions without a --dim instead of setting them to 1.")] = False,
):
    """Check an ONNX model: checker, shape inference, onnxruntime, summary, parity against a reference."""
    from .agentlib import parse_assignments
    from .options import tolerances as parse_tolerances
    from .stages.validate import validate as run_validate

    dims, tolerances = parse_assignments(dim, "--dim", int), parse_tolerances(atol, rtol)
    loaded = None
    if reference is not None:
        from .models.torchmodel import load_model

        loaded = load_model(reference, weights)
    report = run_validate(model, reference=loaded, inputs=inputs, samples=samples, tolerances=tolerances, dims=dims,
                          example=loaded.example_inputs if loaded is not None and inputs is None else None,
                          verbose=verbose, strict_dims=strict_dims)
    if graph and not json_output:
        from .models.modelinfo import load_model_proto
        from .stages.validate import readable_graph

        typer.echo(readable_graph(load_model_proto(model)))
    _print_validation(report, json_output)


@app.command()
@cli_errors
def inspect(
    model: Annotated[Path, typer.Argument(help="The .onnx file.", show_default=False)],
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
):
    """What a model is: format, inputs and outputs (free dims by name), graph, parameters, checks. Runs nothing."""
    from .models.modelinfo import load_model_proto
    from .stages.validate import structural_checks, summarize, summary_lines

    summary = summarize(load_model_proto(model), model)
    checks = structural_checks(model)
    if json_output:
        typer.echo(json.dumps({**summary, "checks": [{"name": c.name, "ok": c.ok, "message": c.message} for c in checks]},
                              indent=1, default=str))
    else:
        for line in summary_lines(summary, checks):
            typer.echo(line)
    if not all(c.ok for c in checks):
        from .errors import ValidationFailed

        failed = next(c for c in checks if not c.ok)
        raise ValidationFailed(f"{model}: {failed.name} failed: {failed.message}")


@app.command()
@cli_errors
def convert(
    model: Annotated[Path, typer.Argument(help="The parent .onnx model.", show_default=False)],
    to: Annotated[str, typer.Option("--to", help="Comma-separated: int8-dynamic, int8-static, fp16, ort, optimized, opset:N; other runtimes: openvino, ncnn, litert.")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for the variants.")] = Path("variants"),
    calibration: Annotated[Optional[Path], typer.Option(help="int8-static calibration data: .npz of inputs by name (samples on axis 0).")] = None,
    keep_io_types: Annotated[bool, typer.Option("--keep-io-types/--no-keep-io-types", help="fp16: keep float32 inputs and outputs.")] = True,
    spec: Annotated[Optional[str], typer.Option("--spec", metavar="FILE.py:FACTORY", help="litert: the PyTorch module the model was exported from (runs that file's code; weights come from the .onnx).")] = None,
    keep_float: Annotated[Optional[str], typer.Option("--keep-float", metavar="NODE,...", help="int8: leave these nodes of the parent in float (what `bench diverge --budget` proposes).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the variants and their provenance as JSON.")] = False,
):
    """Convert a model for the board; each variant is checked against its parent and records its provenance."""
    from .stages.convert import convert as run_convert
    from .stages.convert import parse_kinds, raise_for_failures
    from .options import names

    produced = run_convert(model, parse_kinds(to), output_dir, calibration=calibration, keep_io_types=keep_io_types,
                           spec=spec, keep_float=names(keep_float))
    if json_output:
        typer.echo(json.dumps([{"variant": v.kind, "path": str(v.path) if v.path else None, "error": v.error,
                                "provenance": v.provenance} for v in produced], indent=1, default=str))
    else:
        _print_variants(produced)
    raise_for_failures(produced)


def _print_variants(produced) -> None:
    from rich.table import Table

    from .results.report import format_cell

    table = Table(box=None, pad_edge=False)
    for header in ("variant", "file", "KiB", "max abs", "cosine", "top-1 agree %", "parity"):
        table.add_column(header, justify="left" if header in ("variant", "file", "parity") else "right")
    for variant in produced:
        if variant.error:
            table.add_row(variant.kind, "-", "-", "-", "-", "-", f"FAILED: {variant.error}")
            continue
        worst = max(variant.parity["outputs"], key=lambda o: o["max_abs"])
        rule = variant.parity["tolerance"]
        stated = f"cosine >= {rule['min_cosine']}" if "min_cosine" in rule else f"atol {rule['atol']:g}, rtol {rule['rtol']:g}"
        table.add_row(variant.kind, variant.path.name, format_cell(variant.path.stat().st_size / 1024),
                      format_cell(worst["max_abs"]), f"{worst['cosine']:.6f}", format_cell(worst.get("top1_agreement_pct")),
                      ("ok" if variant.parity["passed"] else "FAIL") + f" ({stated})")
    _stdout().print(table)


agent_app = typer.Typer(help="The board agent on its own: one file to copy to a board.", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(agent_app, name="agent")


@agent_app.command("bundle")
@cli_errors
def agent_bundle(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .pyz.")] = Path("edgebench-agent.pyz"),
):
    """Write the single-file agent (the same build deploy ships): `python3 edgebench-agent.pyz --help` on a board."""
    from .boards.agent_bundle import ensure_bundle
    from .agentlib import sha256_bytes
    from .fileio import write_atomically

    bundle = ensure_bundle()
    data = bundle.read_bytes()
    write_atomically(output, data, mode=0o755)
    typer.echo(f"wrote {output} ({len(data) / 1024:.1f} KiB, sha256 {sha256_bytes(data)[:12]}; "
               f"deploy ships it as {bundle.name})")


@app.command("import")
@cli_errors
def import_(
    files: Annotated[list[Path], typer.Argument(help="result.json files written by `edgebench-agent run --out`.")],
    target: Annotated[Optional[str], typer.Option("--target", "-t", help="Name the board (default: its hostname).")] = None,
    model: Annotated[Optional[Path], typer.Option(help="The model file the board ran: its sha256 must match.")] = None,
    results: Annotated[Path, typer.Option(help="Folder for result files.")] = Path("results"),
    json_output: Annotated[bool, typer.Option("--json", help="Print the stored result files as JSON.")] = False,
):
    """Bring results made by the agent standing alone on a board into results/, as full results."""
    from .stages.importer import DIGEST_MEANING, import_reply

    stored = [import_reply(file, results, model=model, target=target) for file in files]
    if json_output:
        typer.echo(json.dumps([{"source": str(f), "path": str(p)} for f, p in zip(files, stored)], indent=1))
    else:
        for path in stored:
            typer.echo(f"result: {path}")
    typer.echo(f"note: {DIGEST_MEANING}", err=True)


# ------------------------------------------------------------------------------------------- boards
@app.command()
@cli_errors
def targets(
    check: Annotated[bool, typer.Option("--check", help="Connect to every target in parallel and run the agent's info (labgrid targets: list the places that match).")] = False,
    inventory: Annotated[Optional[Path], INVENTORY_OPTION] = None,
    coordinator: Annotated[Optional[str], COORDINATOR_OPTION] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the targets as JSON.")] = False,
):
    """List the targets of the inventory (and `local`), and the places of a labgrid coordinator with who holds them."""
    from .stages.doctor import probe_all, raise_for_unreachable
    from .boards.targets import inventory_path, load_inventory, resolve_target

    loaded = load_inventory(inventory_path(inventory)).with_coordinator(coordinator)
    resolved = [resolve_target(name, loaded) for name in loaded.names()]
    probes = probe_all(resolved) if check else {}
    farms = _farms(loaded, resolved)
    if json_output:
        typer.echo(json.dumps([{**t.describe(), "source": t.source, **({"check": probes[t.name].text} if check else {})}
                               for t in resolved] + [
            {"name": f"lg:{p.name}", "kind": "labgrid place", "coordinator": address, "tags": p.tags,
             "held_by": p.acquired, "reserved": p.reserved, "address": _service_address(p), "comment": p.comment}
            for address, places in farms.items() if not isinstance(places, Exception) for p in places], indent=1))
    else:
        _print_targets(resolved, probes if check else None, farms)
    failed = [places for places in farms.values() if isinstance(places, Exception)]
    if failed:
        raise failed[0]
    raise_for_unreachable(probes)


def _farms(loaded, resolved) -> dict:
    """The places of every coordinator named: --coordinator, the inventory's, and LG_COORDINATOR when labgrid is
    installed (a variable set for labgrid's own tools is no reason to fail here). address -> places or an error."""
    import importlib.util
    import os

    from_env = os.environ.get("LG_COORDINATOR") if importlib.util.find_spec("labgrid") else None
    addresses = [loaded.coordinator, from_env] + [t.coordinator for t in resolved] + [
        loaded.labgrid.coordinator if loaded.labgrid else None]
    return {address: _places(address) for address in dict.fromkeys(a for a in addresses if a)}


def _print_targets(resolved, probes: dict | None, farms: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    from .results.schema import printable

    table = Table(box=None, pad_edge=False)
    for header in ("name", "kind", "address", "tags", "python") + (("check",) if probes is not None else ()):
        table.add_column(header)
    for target in resolved:
        row = [target.name, target.kind, target.address, ",".join(target.tags) or "-",
               target.python or ("this python" if target.kind == "local" else "python3")]
        table.add_row(*row, *((probes[target.name].text,) if probes is not None else ()))
    _stdout().print(table)
    for address, places in farms.items():
        if isinstance(places, Exception):
            continue
        _stdout().print(f"\nlabgrid places at {address} (use as --target lg:PLACE or lg:TAG=VALUE):")
        table = Table(box=None, pad_edge=False)
        for header in ("place", "tags", "held by", "board", "comment"):
            table.add_column(header)
        for p in places:  # the coordinator's text: shown as text, never as markup or escape sequences
            cells = [f"lg:{p.name}", ",".join(f"{k}={v}" for k, v in sorted(p.tags.items())) or "-",
                     p.acquired or ("(reserved)" if p.reserved else "free"), _service_address(p), p.comment or ""]
            table.add_row(*(Text(printable(cell)) for cell in cells))
        _stdout().print(table)


def _places(address: str):
    """A coordinator's places, or the error that says why not (raised once the inventory is printed)."""
    from .errors import BenchError
    from .boards.farm import coordinator_for
    from .boards.targets import Target

    try:
        return coordinator_for(Target(name=f"coordinator {address}", kind="labgrid", coordinator=address)).places()
    except BenchError as exc:
        return exc


def _service_address(place) -> str:
    if place.service is None:
        return "(no NetworkService)"
    service = place.service
    where = f"{service.get('username') + '@' if service.get('username') else ''}{service['address']}:{service.get('port', 22)}"
    return where + ("" if place.online else " (exporter offline)")


@app.command()
@cli_errors
def doctor(
    target: Annotated[str, typer.Option("--target", "-t", help="Target to check.")] = "local",
    inventory: Annotated[Optional[Path], INVENTORY_OPTION] = None,
    coordinator: Annotated[Optional[str], COORDINATOR_OPTION] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the agent's info as JSON.")] = False,
):
    """Check a board: connection, python >= 3.8, numpy, onnxruntime, providers, arch, free disk."""
    from .boards.board import Board
    from .stages.doctor import diagnose, raise_for_findings
    from .boards.farm import leased
    from .boards.targets import find_target

    with leased(find_target(target, inventory, coordinator), _say) as resolved, Board(resolved) as board:
        info = board.info()
    if json_output:
        typer.echo(json.dumps(info, indent=1))
    findings = diagnose(resolved, info)
    if not json_output:
        for finding in findings:
            typer.echo(f"{'ok  ' if finding.ok else 'FAIL'}  {finding.what:<12} {finding.detail}")
    raise_for_findings(resolved, findings)


@app.command()
@cli_errors
def fetch(
    target: Annotated[str, typer.Option("--target", "-t", help="Target to collect from.")],
    runs: Annotated[Optional[list[str]], typer.Argument(help="Run ids (default: every finished run not yet stored).")] = None,
    results: Annotated[Optional[Path], typer.Option(help="Collect only the runs started for this results folder (default: each run into the folder it was started for).")] = None,
    inventory: Annotated[Optional[Path], INVENTORY_OPTION] = None,
    coordinator: Annotated[Optional[str], COORDINATOR_OPTION] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the stored result files as JSON.")] = False,
):
    """Collect results of runs that finished on a board while the host was away (a dropped link)."""
    from .boards.board import Board
    from .stages.deploy import recover
    from .boards.farm import leased
    from .boards.targets import find_target

    with leased(find_target(target, inventory, coordinator), _say) as resolved, Board(resolved) as board:
        written = recover(board, results, only=runs or None)
    if json_output:
        typer.echo(json.dumps([{"path": str(p), "status": _run_status(p)} for p in written], indent=1))
    for path in [] if json_output else written:
        typer.echo(f"result: {path} ({_run_status(path)})")
    if not written:
        typer.echo(f"nothing to fetch from {resolved.name}", err=True)


@app.command()
@cli_errors
def clean(
    target: Annotated[str, typer.Option("--target", "-t", help="Target whose cache to trim.")],
    max_size: Annotated[str, typer.Option(help="Size budget of the board's cache, e.g. 500M or 2G.")] = "1G",
    inventory: Annotated[Optional[Path], INVENTORY_OPTION] = None,
    coordinator: Annotated[Optional[str], COORDINATOR_OPTION] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print what was removed as JSON.")] = False,
):
    """Trim a board's cache folder (models, old runs, old agents) to a size budget, least recently used first."""
    from .boards.board import Board
    from .boards.farm import leased
    from .options import size
    from .boards.targets import find_target

    budget = size(max_size, "--max-size")
    with leased(find_target(target, inventory, coordinator), _say) as resolved, Board(resolved) as board:
        summary = board.clean(budget)
    if json_output:
        typer.echo(json.dumps({"target": resolved.name, **summary}, indent=1))
        return
    typer.echo(f"removed {summary['removed']} entries ({summary['freed_bytes'] / 2**20:.1f} MiB) from {resolved.name}; "
               f"{summary['remaining_bytes'] / 2**20:.1f} MiB left of a {summary['max_bytes'] / 2**20:.1f} MiB budget")


# ------------------------------------------------------------------------------------------------ plans
@app.command("run")
@cli_errors
def run_plan(
    plan_file: Annotated[Path, typer.Argument(help="A benchmark plan (YAML), e.g. configs/plan.yaml.", show_default=False)],
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only this plan model (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the matrix (and what is already measured); run nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run every cell again, even those already measured.")] = False,
    results: Annotated[Optional[Path], typer.Option(help="Folder for result files (default: the plan's, else results/).")] = None,
    inventory: Annotated[Optional[Path], INVENTORY_OPTION] = None,
    coordinator: Annotated[Optional[str], COORDINATOR_OPTION] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the cells (and what they stored) as JSON instead of the table.")] = False,
):
    """Run a benchmark plan: models x variants x targets x settings; resumes where an earlier run stopped."""
    from .stages import plan as stage
    from .progress import DeployProgress

    job = stage.prepare(plan_file, inventory, only, results, force, dry_run, coordinator)
    for path in job.recovered:
        typer.echo(f"recovered an earlier run of this plan ({_run_status(path)}): {path}", err=True)
    if not json_output:
        _print_plan_cells(job)
    typer.echo(f"plan {job.plan.name} (sha256 {job.plan.sha256[:12]}): {len(job.cells)} cells, "
               f"{sum(1 for c in job.cells if job.status(c) == 'done')} already measured", err=True)
    if dry_run:
        if json_output:
            typer.echo(json.dumps([_cell_json(job, c) for c in job.cells], indent=1))
        if job.pending_builds():
            typer.echo(f"dry run: {len(job.pending_builds())} model file(s) would be exported or converted first: "
                       + ", ".join(job.pending_builds()), err=True)
        typer.echo("dry run: nothing was built or run", err=True)
        return
    with DeployProgress(_stderr(), sorted({c.target.name for c in job.cells if c.target.kind != "labgrid"})) as progress:
        outcome = stage.execute(job, on_event=progress.event, say=progress.say)
    if json_output:
        ran, failed = {c.key: str(p) for c, p in outcome.ran}, {c.key: message for c, message in outcome.failed}
        typer.echo(json.dumps([{**_cell_json(job, c), "result": ran.get(c.key), "error": failed.get(c.key),
                                **({"status": "ran"} if c.key in ran else {"status": "failed"} if c.key in failed else {})}
                               for c in job.cells], indent=1))
    for _, path in [] if json_output else outcome.ran:
        typer.echo(f"result: {path}")
    typer.echo(f"ran {len(outcome.ran)} cells, skipped {len(outcome.skipped)} already measured, "
               f"{len(outcome.failed)} failed", err=True)
    stage.raise_for_failures(outcome)


PLAN_STATUS_TEXT = {"done": "done (skipped)", "to build": "to build, then run", "to run": "to run"}


def _print_plan_cells(job) -> None:
    from rich.table import Table

    from .results.report import settings_label

    table = Table(box=None, pad_edge=False)
    for header in ("model", "variant", "target", "settings", "cell", "status"):
        table.add_column(header, no_wrap=True)
    for cell in job.cells:
        table.add_row(cell.model, cell.variant, cell.target.name, settings_label(cell.settings.recorded()), cell.key,
                      PLAN_STATUS_TEXT[job.status(cell)])
    _stdout().print(table)


def _cell_json(job, cell) -> dict:
    from .results.report import settings_label

    return {"model": cell.model, "variant": cell.variant, "target": cell.target.name, "path": str(cell.path),
            "settings": settings_label(cell.settings.recorded()), "cell": cell.key, "status": job.status(cell)}


# --------------------------------------------------------------------------------------------- history
@app.command()
@cli_errors
def history(
    paths: Annotated[list[Path], typer.Argument(help="Result files or folders (searched recursively).")],
    by: Annotated[str, typer.Option(help="Group by these keys, as compare does.")] = DEFAULT_BY,
    metric: Annotated[str, typer.Option(help="p50, p90, p99 or mean of each run.")] = ANALYSIS_DEFAULTS.history_metric,
    since: Annotated[Optional[str], typer.Option(help="Changes from then on are recent: 2026-11-01, 2026-11-01T12:00, 7d or 12h.")] = None,
    window: Annotated[int, typer.Option(help="Runs on each side of a change point that the test compares.")] = ANALYSIS_DEFAULTS.window,
    fail_on_regression: Annotated[Optional[str], typer.Option(help="Exit 1 when a recent change slows a group down by more than this, e.g. 5%.")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table, json or html.")] = "table",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the Mann-Whitney U test between windows.")] = ANALYSIS_DEFAULTS.alpha,
    min_effect: Annotated[str, typer.Option(help="Smallest change that counts, e.g. 2%.")] = DEFAULT_MIN_EFFECT,
):
    """Each group's latency over time, with the points where it changed (for CI: --since, --fail-on-regression)."""
    from .stages import history as stage
    from .errors import ConfigError, RunFailed
    from .options import group_keys, percent

    if format not in ("table", "json", "html"):
        raise ConfigError(f"unknown format {format!r}", "choose one of: table, json, html")
    request = stage.HistoryRequest(paths, group_keys(by), metric, stage.parse_since(since), window, alpha,
                                   percent(min_effect, "--min-effect"),
                                   percent(fail_on_regression, "--fail-on-regression") if fail_on_regression else None)
    result = stage.history(request)
    for problem in result.skipped:
        typer.echo(f"warning: skipped {problem}", err=True)
    for note in result.notes:
        typer.echo(note, err=True)
    if format == "table" and output is None:
        from .results.tables import print_table

        headers, rows = stage.table(result)
        print_table(_stdout(), headers, rows, set(headers) - {"runs"}, None, _stderr())
    else:
        if format == "table":  # to a file: tab-separated
            headers, rows = stage.table(result)
            text = "\n".join("\t".join(line) for line in [headers, *rows])
        else:
            text = stage.to_json(result) if format == "json" else stage.to_html(result)
        if output is None:
            sys.stdout.write(text + "\n")
        else:
            stage.write(output, text)
            typer.echo(f"wrote {output}", err=True)
    regressions = result.regressions()
    if regressions:
        raise RunFailed(f"{len(regressions)} regression(s): " + "; ".join(regressions),
                        "bench history --format html shows where each group changed")


@app.command()
@cli_errors
def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Where the example models are built (kept: a second run reuses them).")] = Path("edgebench-demo"),
    results: Annotated[Path, typer.Option(help="Folder for result files.")] = Path("results"),
):
    """Run the demo: example models built in a folder, measured on the built-in `local` target, compared."""
    from .stages import demo as stage

    code = stage.run(folder, results, say=lambda line: typer.echo(line, err=True))
    if code:
        raise typer.Exit(code)


@app.command()
@cli_errors
def diverge(
    variant: Annotated[Path, typer.Argument(help="The converted variant: an .onnx from `bench convert`, an .ort, or an OpenVINO/ncnn bundle.", show_default=False)],
    parent: Annotated[Optional[Path], typer.Option(help="The model it was converted from (default: the one its provenance names).")] = None,
    target: Annotated[str, typer.Option("--target", "-t", metavar="NAME", help="Where to run the variant: `local` or an inventory name.")] = "local",
    runtime: Annotated[Optional[str], typer.Option(help="Runtime of an .onnx variant: onnxruntime (default) or openvino.")] = None,
    dataset: Annotated[Optional[Path], typer.Option(help="Inputs (.npz by input name, samples on axis 0; labels optional).")] = None,
    test_data: Annotated[Optional[Path], typer.Option(help="An ONNX test_data_set_N folder as the inputs.")] = None,
    inputs: Annotated[Optional[Path], typer.Option(help="Input arrays by input name (.npz): one batch.")] = None,
    samples: Annotated[int, typer.Option(help="Generated inputs (without --dataset, --test-data or --inputs).")] = PASS_DEFAULTS["accuracy"]["samples"],
    dim: Annotated[Optional[list[str]], typer.Option("--dim", help="Size of a free dimension: NAME=N or INPUT:AXIS=N.")] = None,
    value: Annotated[Optional[list[str]], typer.Option("--value", help="Fill an input with a value: NAME=VALUE.")] = None,
    min_cosine: Annotated[float, typer.Option(help="A tensor diverges below this cosine similarity with the parent's.")] = 0.99,
    min_snr: Annotated[float, typer.Option(help="... or below this signal-to-noise ratio, in dB.")] = 20.0,
    method: Annotated[str, typer.Option(help="bisect (about log2(tensors) board runs), every (one run per tensor) or all-outputs (one run with every tensor an output: fast, but the fusions change).")] = "bisect",
    budget: Annotated[Optional[str], typer.Option(help="INT8: propose the fewest nodes to keep in float to meet cosine=0.999 (every output) or top1=0.5% (the most top-1 disagreement with the parent), re-convert, measure.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="With --budget, int8-static: calibration data (default: the file the provenance names).")] = None,
    results: Annotated[Path, typer.Option(help="With --budget: folder for the result files of both variants.")] = Path("results"),
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", "-o", help="With --budget: folder for the new variant (default: beside the variant).")] = None,
    inventory: Annotated[Optional[Path], INVENTORY_OPTION] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write an HTML page: divergence along the graph, the kept nodes marked.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the divergence as JSON.")] = False,
):
    """Where a converted variant parts from its parent, tensor by tensor, on the target's own runtime."""
    from .stages import diverge as stage
    from .options import diverge_request

    document = stage.diverge(diverge_request(locals()), say=_say_line)
    if html is not None:
        from .fileio import write_atomically
        from .stages.diverge import divergence_html

        write_atomically(html, divergence_html(document))
    if json_output:
        typer.echo(json.dumps(document, indent=1))
    else:
        _stdout().print("\n".join(stage.summary_lines(document)), markup=False, highlight=False)
    stage.raise_for_budget(document)


@app.command()
@cli_errors
def tune(
    model: Annotated[Path, typer.Argument(help="The .onnx model (its variants are made as needed).", show_default=False)],
    target: Annotated[str, typer.Option("--target", "-t", help="Where to search: `local`, an inventory name, or a,b / tag:X (each board tuned on its own).")] = "local",
    budget: Annotated[Optional[str], typer.Option(help="Accuracy each configuration must keep: cosine=0.999 or top1=1% (default: each variant's stated tolerance).")] = None,
    objective: Annotated[str, typer.Option(help="What to optimise: p50, p99 (ms), throughput (samples/s) or energy (mJ per inference; needs a power sensor).")] = "p50",
    space: Annotated[Optional[Path], typer.Option(help="YAML with lists under runtime, precision, threads, batch (default: what the target has).")] = None,
    runtime: Annotated[Optional[str], typer.Option(help="Runtimes to search: onnxruntime, openvino, ncnn.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="Precisions to search: fp32, fp16, int8-dynamic, int8-static.")] = None,
    threads: Annotated[Optional[str], typer.Option(help="Thread counts to search (default: 1, 2, 4, ... up to the board's cores).")] = None,
    batch: Annotated[Optional[str], typer.Option(help="Batch sizes to search, for a model with a free batch dimension.")] = None,
    time_limit: Annotated[Optional[str], typer.Option(help="Stop halving after this long (e.g. 10m) and run the final.")] = None,
    dataset: Annotated[Optional[Path], typer.Option(help="Labelled .npz for top-1 on the board (unlabelled: the inputs); also int8-static's calibration.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="int8-static calibration data (.npz of inputs by name).")] = None,
    inputs: Annotated[Optional[Path], typer.Option(help="Input arrays by input name (.npz).")] = None,
    samples: Annotated[int, typer.Option(help="Generated inputs of the accuracy pass (without --dataset).")] = PASS_DEFAULTS["accuracy"]["samples"],
    dim: Annotated[Optional[list[str]], typer.Option("--dim", help="Size of a free dimension: NAME=N or INPUT:AXIS=N.")] = None,
    value: Annotated[Optional[list[str]], typer.Option("--value", help="Fill an input with a value: NAME=VALUE.")] = None,
    rung_seconds: Annotated[float, typer.Option(help="Timed seconds of the first rung (each next rung doubles it).")] = 0.1,
    final_seconds: Annotated[float, typer.Option(help="Timed seconds of each final run.")] = 1.0,
    final_repeats: Annotated[int, typer.Option(help="Fresh sessions of each finalist.")] = 3,
    results: Annotated[Path, typer.Option(help="Folder for the result files (every run is one; a rerun reuses them).")] = Path("results"),
    variants_dir: Annotated[Path, typer.Option("--variants-dir", help="Where the variants are made (reused when there).")] = Path("variants"),
    plan_out: Annotated[Optional[Path], typer.Option("--plan-out", help="The plan that measures the pick again (default: configs/tuned-MODEL-TARGET.yaml).")] = None,
    inventory: Annotated[Optional[Path], INVENTORY_OPTION] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write an HTML page with the Pareto plot.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the search as JSON.")] = False,
):
    """The best runtime x precision x threads x batch under an accuracy budget, searched on the board."""
    from .stages import tune as stage
    from .options import tune_request

    documents = stage.tune_fleet(tune_request(locals()), say=_say_line)
    if html is not None:
        from .fileio import write_atomically
        from .stages.tune import tune_html

        write_atomically(html, tune_html(documents))
    if json_output:
        typer.echo(json.dumps(documents if len(documents) > 1 else documents[0], indent=1, default=str))
    else:
        lines = [line for d in documents for line in stage.summary_lines(d)]
        differ = stage.fleet_differences(documents)
        _stdout().print("\n".join(lines + (["the best configuration differs between boards:", *differ] if differ else [])),
                        markup=False, highlight=False)
    stage.raise_for_budget(documents)


@app.command("index")
@cli_errors
def index_command(
    paths: Annotated[list[Path], typer.Argument(help="Results folders.")],
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Remake the index from the result files (it holds nothing else).")] = False,
):
    """Bring the results index (under compare and history) up to date, or remake it from the result files."""
    from .results import index
    from .errors import ConfigError

    for folder in paths:
        if not Path(folder).is_dir():
            raise ConfigError(f"{folder} is not a folder", "the index covers a folder of results")
        report = index.update(Path(folder), rebuild=rebuild)
        for line in [*(f"warning: {w}" for w in report.warnings), *(f"note: {n}" for n in report.notes), *report.skipped]:
            typer.echo(line, err=True)
        typer.echo(f"{index.index_path(Path(folder))}: {report.added} added, {report.changed} re-read, "
                   f"{report.removed} removed")


# --------------------------------------------------------------------------------------------- compare
@app.command()
@cli_errors
def compare(
    paths: Annotated[list[Path], typer.Argument(help="Result files or folders (searched recursively).")],
    by: Annotated[str, typer.Option(help="Group by these keys: model, variant, target, settings, provider, threads, inter_threads, opt, dims, plan.")] = DEFAULT_BY,
    baseline: Annotated[Optional[str], typer.Option(help="Compare every group with the one where KEY=VALUE, e.g. target=pi4 or variant=original.")] = None,
    metric: Annotated[str, typer.Option(help="What a speed-up compares: auto (the scenario's own: p50 for plain runs, p90 single-stream, p99 multi-stream and server, throughput offline), p50, p90, p99, mean or throughput.")] = ANALYSIS_DEFAULTS.compare_metric,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv, md, json, html or parquet.")] = "table",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    fail_on_regression: Annotated[Optional[str], typer.Option(help="Exit 1 when a group is significantly slower than the baseline by more than this, e.g. 5%.")] = None,
    include_invalid: Annotated[bool, typer.Option("--include-invalid", help="Keep INVALID runs (e.g. throttled) in the comparison.")] = False,
    per_run: Annotated[bool, typer.Option("--per-run", help="One row per run instead of per group.")] = False,
    columns: Annotated[Optional[str], typer.Option("--columns", metavar="NAME,...", help="Table columns to show, by header (default: all that fit the terminal).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON (the same as -f json).")] = False,
    alpha: Annotated[float, typer.Option(help="Significance level of the Mann-Whitney U test.")] = ANALYSIS_DEFAULTS.alpha,
    min_effect: Annotated[str, typer.Option(help="Smallest change that counts, e.g. 2%.")] = DEFAULT_MIN_EFFECT,
    mix_energy_scopes: Annotated[bool, typer.Option("--mix-energy-scopes", help="Rank energy per inference across different scopes (wall meter, CPU package, board rails) anyway.")] = False,
):
    """Compare results: medians with confidence intervals, speed-ups with significance, regressions, HTML."""
    from .stages import compare as stage
    from .errors import RunFailed
    from .options import group_keys, key_value, percent

    fmt = "json" if json_output else format
    stage.check_output(fmt, output, per_run, grouping_asked=bool(baseline or fail_on_regression or by != DEFAULT_BY))
    request = stage.CompareRequest(paths, group_keys(by), key_value(baseline, "--baseline"), metric, include_invalid,
                                   alpha, percent(min_effect, "--min-effect"),
                                   percent(fail_on_regression, "--fail-on-regression") if fail_on_regression else None,
                                   mix_energy_scopes, use_index=fmt != "html" and not per_run)
    result = stage.compare(request)
    for problem in result.skipped:
        typer.echo(f"warning: skipped {problem}", err=True)
    _print_comparison(result, fmt, output, per_run, columns)
    for line in stage.notes(result, include_invalid):
        typer.echo(line, err=True)
    if result.comparison.regressions:
        raise RunFailed(f"{len(result.comparison.regressions)} regression(s) beyond {fail_on_regression}: "
                        + "; ".join(result.comparison.regressions))


def _print_comparison(result, fmt: str, output: Path | None, per_run: bool, columns: str | None) -> None:
    from .stages.compare import report_bytes
    from .results.report import TEXT_HEADERS, cells, per_run_cells

    if fmt == "table" and output is None:
        from .options import names
        from .results.tables import print_table

        headers, rows = per_run_cells(result.documents) if per_run else cells(result.comparison)
        print_table(_stdout(), headers, rows, {*result.comparison.by, *TEXT_HEADERS}, names(columns), _stderr())
    elif output is None:
        sys.stdout.write(report_bytes(result, fmt, per_run).decode("utf-8"))
    else:
        from .fileio import write_atomically

        write_atomically(output, report_bytes(result, fmt, per_run))
        typer.echo(f"wrote {output}", err=True)

