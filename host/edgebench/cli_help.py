"""Readable `--help`: metavars a person understands (N, FILE, NAME=N) and the default of every measuring option.

typer (without rich) prints a parameter's Python type as its metavar (`<list[str]>`, `<int>`) and shows no
default when the real default lives in the agent's protocol (None here means "the agent's default"). This module
fills both in once, when a command is built, so the help of `bench` and of the agent speak the same language.
"""

from __future__ import annotations

# Option -> metavar; the run options' come from the protocol (as on the agent's `run`), the rest from their type.
METAVARS = {
    "--scenario": "single-stream|multi-stream|server|offline", "--qps": "X|auto", "--latency-bound": "DURATION",
    "--target": "NAME[,NAME]|tag:TAG", "--results": "DIR", "--inputs": "FILE.npz", "--value": "NAME=VALUE",
    "--dim": "NAME=N", "--provider-option": "KEY=VALUE", "--threads": "N[,N...]", "--batch": "N[,N...]",
    "--provider": "NAME[,NAME...]", "--cpus": "CPU[,CPU...]",
    "--reference": "MODEL", "--dataset": "FILE.npz", "--test-data": "DIR", "--atol": "[OUTPUT=]X",
    "--rtol": "[OUTPUT=]X", "--variants": "DIR", "--inventory": "FILE.yaml", "--output": "FILE", "-o": "FILE",
    "--output-dir": "DIR", "--calibration": "FILE.npz", "--weights": "FILE.pt", "--example-inputs": "FILE.npz",
    "--input": "NAME=1x3x224x224[:DTYPE]", "--dynamic": "NAME:AXIS[=LABEL]", "--exporter": "dynamo|torchscript",
    "--mode": "trace|script", "--output-names": "NAME[,NAME...]", "--save-test-data": "DIR", "--by": "KEY[,KEY...]",
    "--baseline": "KEY=VALUE", "--metric": "NAME", "--format": "FORMAT", "--fail-on-regression": "PERCENT",
    "--min-effect": "PERCENT", "--columns": "NAME[,NAME...]", "--max-size": "SIZE", "--model": "FILE.onnx",
    "--to": "KIND[,KIND...]", "--only": "MODEL", "--timeout": "SECONDS", "--cooldown-timeout": "SECONDS",
    "--cooldown-margin": "DEGREES",
}
ARGUMENTS = {"models": "MODEL.onnx", "model": "MODEL.onnx", "spec": "MODEL_SPEC", "paths": "RESULTS",
             "files": "RESULT.json", "runs": "RUN_ID", "plan_file": "PLAN.yaml"}


def agent_defaults() -> dict[str, str]:
    """Options whose None default means "the agent's default": option -> the request field holding it (the
    protocol's run options, and --provider)."""
    from .agentlib import RUN_OPTIONS

    return {**{o.flag: o.field for o in RUN_OPTIONS if o.flag}, "--provider": "provider"}


def run_help(name: str, more: str = "") -> str:
    """A run option's help on `bench deploy`: the protocol's text (RUN_OPTIONS, which the agent's `run --help`
    shows too), as a sentence, with what the host adds (`more`, e.g. that a list sweeps)."""
    from .agentlib import RUN_OPTION

    text = RUN_OPTION[name].help
    if not text.startswith("onnxruntime"):  # a name keeps its case
        text = text[0].upper() + text[1:]
    return f"{text}{'; ' + more if more else ''}."


# A command with many options shows them in panels (by parameter name), in this order; --help comes last.
PANELS = {
    "deploy": (
        ("Where", ("target", "inventory", "coordinator")),
        ("What to run", ("runtime", "provider", "provider_option", "graph_optimization", "threads", "batch",
                         "inter_op_threads", "variants")),
        ("Inputs and sizes", ("inputs", "value", "dim", "seed", "strict_dims")),
        ("Measuring", ("warmup", "min_iterations", "min_seconds", "max_iterations", "max_seconds", "repeats", "timeout",
                       "telemetry_interval", "cpus", "spin_wait", "cooldown", "cooldown_margin", "cooldown_timeout")),
        ("Accuracy pass", ("accuracy", "reference", "dataset", "test_data", "accuracy_samples", "batch_size", "atol",
                           "rtol")),
        ("Profile, energy and pipeline passes", ("profile", "profile_iterations", "energy", "energy_seconds",
                                                 "energy_idle_seconds",
                                                 "power_command", "pipeline", "samples")),
        ("Load scenarios", ("scenario", "samples_per_query", "qps", "latency_bound", "concurrency", "mlperf")),
        ("Output", ("results", "json_output", "columns", "verbose")),
    ),
    "tune": (
        ("Where", ("target", "inventory")),
        ("The space", ("space", "runtime", "precision", "threads", "batch")),
        ("The goal", ("objective", "budget", "time_limit")),
        ("Inputs and data", ("dataset", "calibration", "inputs", "samples", "dim", "value")),
        ("Measuring", ("rung_seconds", "final_seconds", "final_repeats")),
        ("Output", ("results", "variants_dir", "plan_out", "html", "json_output")),
    ),
    "diverge": (
        ("What to compare", ("parent", "runtime", "method", "min_cosine", "min_snr")),
        ("Where", ("target", "inventory")),
        ("Inputs", ("dataset", "test_data", "inputs", "samples", "dim", "value")),
        ("Keeping nodes in float (--budget)", ("budget", "calibration", "results", "output_dir")),
        ("Output", ("html", "json_output")),
    ),
}


def _format_in_panels(panels):
    """A click format_options that writes the arguments, then one section per panel, then what no panel names."""

    def format_options(self, ctx, formatter) -> None:
        records = {param.name: param.get_help_record(ctx) for param in self.get_params(ctx)}
        arguments = [records[p.name] for p in self.get_params(ctx) if p.param_type_name == "argument" and records[p.name]]
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        placed = {"help"}
        for title, names in panels:
            rows = [records[name] for name in names if records.get(name)]
            placed.update(names)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        rest = [records[p.name] for p in self.get_params(ctx) if p.param_type_name == "option"
                and p.name not in placed and records[p.name]]
        with formatter.section("Other options" if rest else "Help"):
            formatter.write_dl(rest + [records["help"]] if records.get("help") else rest)

    return format_options


def readable(command):
    """Set metavars and agent defaults on a click command's parameters (in place), and its option panels;
    returns it."""
    import types

    from .agentlib import OPTION_METAVARS, PASS_DEFAULTS, RUN_DEFAULTS, RUN_OPTIONS

    if command.name in PANELS:
        command.format_options = types.MethodType(_format_in_panels(PANELS[command.name]), command)

    defaults = agent_defaults()
    metavars = {**{o.flag: OPTION_METAVARS[o.kind] for o in RUN_OPTIONS if o.flag}, **METAVARS}
    for param in command.params:  # click's classes, as typer vendors them: told apart by their kind
        if param.param_type_name == "argument":
            param.metavar = ARGUMENTS.get(param.name, param.name.upper())
            param.display_type_rich = lambda ctx=None: ""  # the metavar says it all
            continue
        if param.param_type_name != "option" or getattr(param, "is_flag", False):
            continue
        names = [*param.opts, *param.secondary_opts]
        chosen = param.metavar or next((metavars[n] for n in names if n in metavars), None)  # its own first
        if chosen is None:
            annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
            kinds: dict = {int: "N", float: "X"}
            chosen = kinds.get(annotation, "PATH" if "Path" in str(annotation) else "TEXT")
        param.metavar = chosen
        # typer's help prints its own type label (`<int>`), not the metavar: give this parameter ours instead
        param.display_type_rich = lambda ctx=None, shown=chosen: shown
        if param.default is None and any(n in ("--atol", "--rtol") for n in names):
            param.help = f"{param.help}  [default: {PASS_DEFAULTS['accuracy'][names[0].lstrip('-')]:g}]"
        field = next((defaults[n] for n in names if n in defaults), None)
        if field is not None and param.default is None and "[default:" not in (param.help or "") \
                and RUN_DEFAULTS[field] is not None:
            value = RUN_DEFAULTS[field]
            shown = {0: "0 (onnxruntime's own)"}.get(value, value) if field.endswith("threads") else value
            param.help = f"{param.help}  [default: {shown}]"
    return command
