"""The `bench` entry point: a lazy command group.

`bench --help` and `bench --version` are answered from the table below without importing the commands (which
build some 70 typed options); `bench COMMAND ...` imports the typer app in cli.py and runs that command.
tests/test_results_and_cli.py checks that the table matches the commands' own help.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from . import __version__

# name -> the first line of the command's docstring (its help)
COMMANDS = {
    "export": "Export a PyTorch model to ONNX, then validate it against PyTorch.",
    "inspect": "What a model is: format, inputs and outputs (free dims by name), graph, parameters, checks. Runs nothing.",
    "validate": "Check an ONNX model: checker, shape inference, onnxruntime, summary, parity against a reference.",
    "convert": "Convert a model for the board; each variant is checked against its parent and records its provenance.",
    "deploy": "Benchmark ONNX models on a target; one result file per model in results/.",
    "run": "Run a benchmark plan: models x variants x targets x settings; resumes where an earlier run stopped.",
    "compare": "Compare results: medians with confidence intervals, speed-ups with significance, regressions, HTML.",
    "tune": "The best runtime x precision x threads x batch under an accuracy budget, searched on the board.",
    "diverge": "Where a converted variant parts from its parent, tensor by tensor, on the target's own runtime.",
    "history": "Each group's latency over time, with the points where it changed (for CI: --since, --fail-on-regression).",
    "index": "Bring the results index (under compare and history) up to date, or remake it from the result files.",
    "import": "Bring results made by the agent standing alone on a board into results/, as full results.",
    "fetch": "Collect results of runs that finished on a board while the host was away (a dropped link).",
    "targets": "List the targets of the inventory (and `local`), and the places of a labgrid coordinator with who holds them.",
    "doctor": "Check a board: connection, python >= 3.8, numpy, onnxruntime, providers, arch, free disk.",
    "clean": "Trim a board's cache folder (models, old runs, old agents) to a size budget, least recently used first.",
    "agent": "The board agent on its own: one file to copy to a board.",
    "demo": "Run the demo: example models built in a folder, measured on the built-in `local` target, compared.",
}
HELP = "edgebench: how fast and how accurately your PyTorch model runs on a real edge board."


class LazyGroup(TyperGroup):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        from .cli import app  # the real commands, built only now
        from .cli_help import readable

        group = typer.main.get_command(app)
        assert isinstance(group, TyperGroup)  # typer makes a group of an app with several commands
        command = group.get_command(ctx, name)
        for sub in getattr(command, "commands", {}).values():  # `bench agent bundle`
            readable(sub)
        return readable(command)

    def format_options(self, ctx, formatter):
        with formatter.section("Options"):
            formatter.write_dl([("--version", "Print the version and exit."), ("--help", "Show this message and exit.")])
        self.format_commands(ctx, formatter)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, text in COMMANDS.items()])


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console script `bench`."""
    import warnings

    if not sys.warnoptions:  # library warnings (torch, onnx) are noise on a CLI; PYTHONWARNINGS=default shows them
        warnings.simplefilter("ignore")
    if sys.argv[1:] == ["--version"]:
        print(f"edgebench {__version__}")
        return
    import signal

    # SIGTERM (a cancelled CI job, `timeout`, `kill`) ends a command like Ctrl-C does: the run on the board is
    # killed and stored as interrupted, instead of `bench` vanishing and leaving it holding the board's lock.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        LazyGroup(name="bench", help=HELP, no_args_is_help=True, rich_markup_mode=None)(prog_name="bench")
    except SystemExit as done:
        _end_despite_threads(done.code)
        raise


def _end_despite_threads(code) -> None:
    """A user's code (a --pipeline file, a model spec) may leave a thread running that would keep the interpreter
    alive after the command is done: the command's answer is out, so end now."""
    import os
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)
