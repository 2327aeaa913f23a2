"""`bench`: the host command line. Thin typer commands; the work lives in the stage modules.

Only typer (and rich, which typer uses) is imported at start: each command imports what it needs, so
`bench --help` never loads torch, onnx or pandas. Typed errors become one line and an exit code here,
and only here.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import BenchError, EXIT_USAGE

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


def _stdout():
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # a pipe or a file: never cut a table at 80 columns
        console = Console(highlight=False, width=250)
    return console


def cli_errors(command):
    """Map BenchError to one readable line and its exit code; Ctrl-C to 130. Nothing else is swallowed."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BenchError as exc:
            # One line, never wrapped, so scripts and people both read it whole.
            typer.echo(f"error: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""), err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


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
@app.command()
@cli_errors
def deploy(
    models: Annotated[list[Path], typer.Argument(help="ONNX model files to benchmark.", show_default=False)],
    target: Annotated[str, typer.Option("--target", "-t", help="Target to run on (`local` or an inventory name).")] = "local",
    results: Annotated[Path, typer.Option(help="Folder for result files.")] = Path("results"),
    inputs: Annotated[Optional[Path], typer.Option(help="Input arrays by input name (.npz, no pickled objects).")] = None,
    value: Annotated[Optional[list[str]], typer.Option("--value", help="Fill an input with a value: NAME=VALUE (e.g. sample_rate=16000).")] = None,
    dim: Annotated[Optional[list[str]], typer.Option("--dim", help="Size of a free dimension: NAME=N or INPUT:AXIS=N.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of generated inputs.")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="Minimum warm-up iterations (then until the median settles).")] = None,
    min_iterations: Annotated[Optional[int], typer.Option(help="Timed iterations at least.")] = None,
    min_seconds: Annotated[Optional[float], typer.Option(help="Timed seconds at least (both minimums must be met).")] = None,
    max_iterations: Annotated[Optional[int], typer.Option(help="Timed iterations at most.")] = None,
    max_seconds: Annotated[Optional[float], typer.Option(help="Timed seconds at most.")] = None,
    repeats: Annotated[Optional[int], typer.Option(help="Fresh sessions to measure.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Intra-op threads (0 = onnxruntime's default).")] = None,
    inter_op_threads: Annotated[Optional[int], typer.Option(help="Inter-op threads (0 = default).")] = None,
    provider: Annotated[Optional[str], typer.Option(help="Execution provider: cpu, cuda, tensorrt, xnnpack, ... or a full name.")] = None,
    provider_option: Annotated[Optional[list[str]], typer.Option("--provider-option", help="Execution provider option KEY=VALUE.")] = None,
    graph_optimization: Annotated[Optional[str], typer.Option(help="Graph optimisation level: disable, basic, extended, all.")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds before a run is killed (default: from the run's maximums).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
):
    """Benchmark ONNX models on a target; one result file per model in results/."""
    from edgebench_agent.protocol import RequestError, parse_assignments, parse_scalar

    from .deploy import RunSettings, deploy as run_deploy
    from .errors import InputError, RunFailed
    from .targets import resolve_target

    try:
        options = {
            "values": parse_assignments(value, "--value", parse_scalar),
            "dims": parse_assignments(dim, "--dim", int),
            "provider_options": parse_assignments(provider_option, "--provider-option", str),
        }
    except RequestError as exc:
        raise InputError(str(exc)) from None
    flags = {"seed": seed, "warmup_min_iterations": warmup, "min_iterations": min_iterations,
             "min_seconds": min_seconds, "max_iterations": max_iterations, "max_seconds": max_seconds,
             "repeats": repeats, "intra_op_threads": threads, "inter_op_threads": inter_op_threads,
             "provider": provider, "graph_optimization_level": graph_optimization}
    options.update({k: v for k, v in flags.items() if v is not None})
    settings = RunSettings(options=options, inputs=inputs, timeout_s=timeout)
    resolved = resolve_target(target)

    with DeployProgress(_stderr(), [m.stem for m in models]) as progress:
        outcomes = run_deploy(models, resolved, settings, results, on_event=progress.event)

    documents = [o.document for o in outcomes]
    if json_output:
        import json

        typer.echo(json.dumps(documents, indent=1))
    else:
        _print_summary(documents)
        for outcome in outcomes:
            typer.echo(f"result: {outcome.path}")
    failed = [d for d in documents if d["status"] != "ok"]
    if failed:
        raise RunFailed(f"{len(failed)} of {len(documents)} runs failed: "
                        + "; ".join(f"{d['model']['name']}: {d['error']['message']}" for d in failed),
                        "the failed runs are recorded in results/ with their reason")


class DeployProgress:
    """A progress line per model, fed by the agent's events; silent when stderr is not a terminal."""

    def __init__(self, console, names: list[str]):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.fields[name]:<16}"), BarColumn(), TextColumn("{task.description}"),
                                 TimeElapsedColumn(), console=console, transient=True,
                                 disable=not console.is_terminal)
        self.tasks = {name: self.progress.add_task("waiting", total=1.0, name=name) for name in names}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def event(self, name: str, event: dict) -> None:
        task = self.tasks.get(name)
        if task is None:
            return
        kind = event.get("event")
        if kind == "phase":
            self.progress.update(task, description=f"{event['phase']} {event['repeat']}/{event['repeats']}")
        elif kind == "progress":
            done = min(event["iterations"] / max(event["min_iterations"], 1),
                       event["elapsed_s"] / max(event["min_seconds"], 1e-9))
            self.progress.update(task, completed=min(done, 1.0),
                                 description=f"measure: {event['iterations']} iterations")
        elif kind == "done":
            self.progress.update(task, completed=1.0, description=event["status"])


def _print_summary(documents: list[dict]) -> None:
    from rich.table import Table

    from .report import format_cell, run_row

    columns = [("model", "model"), ("target", "target"), ("status", "status"), ("n", "n"),
               ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"), ("mean_ms", "mean ms"),
               ("std_ms", "std ms"), ("throughput_per_s", "inf/s"), ("session_ms", "session ms"),
               ("first_ms", "first ms"), ("peak_rss_mib", "peak RSS MiB")]
    table = Table(box=None, pad_edge=False)
    for _, header in columns:
        table.add_column(header, justify="left" if header in ("model", "target", "status") else "right")
    for document in documents:
        row = run_row(document)
        table.add_row(*[format_cell(row.get(key)) for key, _ in columns])
    _stdout().print(table)


# --------------------------------------------------------------------------------------------- compare
@app.command()
@cli_errors
def compare(
    paths: Annotated[list[Path], typer.Argument(help="Result files or folders (searched recursively).")],
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv, md or json.")] = "table",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
):
    """Compare results: one row per model x target x settings."""
    from .errors import ConfigError, ResultError
    from .report import FORMATS, formatted_cells, grouped, render
    from .results import load_results

    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}", f"choose one of: {', '.join(FORMATS)}")
    documents, problems = load_results(paths)
    for problem in problems:
        typer.echo(f"warning: skipped {problem}", err=True)
    if not documents:
        raise ResultError(f"no readable results in {', '.join(map(str, paths))}", "run `bench deploy` first")
    frame = grouped(documents)
    if format == "table" and output is None:
        from rich.table import Table

        headers, cells = formatted_cells(frame)
        table = Table(box=None, pad_edge=False)
        for header in headers:
            table.add_column(header, justify="left" if header in ("model", "target", "settings") else "right")
        for row in cells:
            table.add_row(*row)
        _stdout().print(table)
        return
    text = render(frame, "md" if format == "table" else format)
    if output is None:
        sys.stdout.write(text)
    else:
        from .results import write_text_atomically

        write_text_atomically(output, text)
        typer.echo(f"wrote {output}", err=True)


def main() -> None:
    app()
