"""Command-line option values -> typed values: one parser per kind of option, one place for their errors.

The CLI's commands call these on their raw option strings before handing typed values to a stage (deploy,
compare, ...), so a bad option is one line naming the option, and the stages never see text to parse.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError


def names(text: str | None) -> list[str] | None:
    """--columns p50,p90 -> ["p50", "p90"]; None when not given."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def int_list(text: str | None, option: str) -> list[int] | None:
    """--threads 1,2,4 -> [1, 2, 4]; None when not given."""
    from .agentlib import parse_integer

    if text is None:
        return None
    try:
        values = [parse_integer(part, option) for part in text.split(",") if part.strip()]
    except ConfigError as exc:
        raise InputError(f"{option} {text!r} must be a number or a comma-separated list of numbers") from exc
    if not values:
        raise InputError(f"{option} {text!r} names no value")
    return values


def tolerances(atol: list[str] | None, rtol: list[str] | None):
    """--atol 1e-4 (every output) and --atol scores=1e-3 (one output), likewise --rtol -> parity.Tolerances."""
    from .models.parity import DEFAULT_ATOL, DEFAULT_RTOL, Tolerances

    defaults = {"atol": DEFAULT_ATOL, "rtol": DEFAULT_RTOL}
    per_output: dict[str, list] = {}
    for which, items in (("atol", atol), ("rtol", rtol)):
        for item in items or []:
            name, sep, text = item.rpartition("=")
            try:
                value = float(text)
            except ValueError as exc:
                raise InputError(f"--{which} {item!r} must be a number or OUTPUT=number") from exc
            if not value >= 0 or value == float("inf"):  # NaN compares false: it would pass nothing
                raise InputError(f"--{which} {item!r} must be a finite, non-negative number")
            if sep:
                per_output.setdefault(name, [None, None])[0 if which == "atol" else 1] = value
            else:
                defaults[which] = value
    return Tolerances(defaults["atol"], defaults["rtol"], tuple((n, a, r) for n, (a, r) in per_output.items()))


def percent(text: str, option: str) -> float:
    """--min-effect 2% -> 0.02."""
    try:
        value = float(text.strip().rstrip("%")) / 100.0
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r} must be a percentage like 5%") from exc
    if not value >= 0:
        raise ConfigError(f"{option} must not be negative")
    return value


def size(text: str, option: str) -> int:
    """--max-size 500M -> bytes (K, M, G, T are powers of 1024)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", text.strip(), re.IGNORECASE)
    if not match:
        raise InputError(f"{option} {text!r} must look like 500M, 2G or a byte count")
    return int(float(match[1]) * 1024 ** " KMGT".index((match[2] or " ").upper()))


def group_keys(text: str) -> tuple[str, ...]:
    """--by model,target -> ("model", "target"), each a key compare knows."""
    from .results.report import KEYS

    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in keys if k not in KEYS]
    if unknown or not keys:
        raise ConfigError(f"cannot group by {', '.join(unknown) or 'nothing'}", f"keys: {', '.join(KEYS)}")
    return keys


def key_value(text: str | None, option: str) -> tuple[str, str] | None:
    """--baseline target=pi4 -> ("target", "pi4")."""
    from .results.report import KEYS

    if not text:
        return None
    key, sep, value = text.partition("=")
    if not sep or key not in KEYS or not value:
        raise ConfigError(f"{option} {text!r} must look like KEY=VALUE with KEY one of {', '.join(KEYS)}")
    return key, value


# Options that sweep on the host (a list: one run each), set on the agent one value at a time.
SWEPT = ("threads", "batch")


def run_flags() -> dict[str, str]:
    """`bench deploy` parameter -> the agent request field it sets: the protocol's run options (RUN_OPTIONS) but
    the swept ones, and --spin-wait (None: leave the agent's default)."""
    from .agentlib import RUN_OPTIONS

    return {**{o.name: o.field for o in RUN_OPTIONS if o.flag and o.name not in SWEPT}, "spin_wait": "spin_wait"}


def scenario_options(given: dict[str, Any]) -> dict | None:
    """--scenario server --qps auto --latency-bound 33ms ... -> the request's scenario object (None: not asked)."""
    from .agentlib import normalize_scenario, scenario_from_flags

    fields = scenario_from_flags(given["scenario"], given["samples_per_query"], given["concurrency"], given["qps"],
                                 given["latency_bound"], given["mlperf"])
    if fields is None:
        return None
    scenario = normalize_scenario(fields)
    return {key: value for key, value in scenario.items() if value is not None}


def runtime_names(text: str | None) -> list[str] | None:
    """--runtime onnxruntime,openvino: the runtimes to sweep (each known), or None."""
    from .agentlib import RUNTIMES

    if text is None:
        return None
    aliases = {"tflite": "litert", "ort": "onnxruntime"}  # what people also call them
    chosen = [aliases.get(part.strip().lower(), part.strip().lower()) for part in text.split(",")]
    for name in chosen:
        if name not in RUNTIMES:
            raise ConfigError(f"unknown runtime {name!r}" if name else f"--runtime {text!r} names an empty runtime",
                              f"choose from {', '.join(RUNTIMES)}")
        if chosen.count(name) > 1:
            raise ConfigError(f"--runtime names {name} twice", "list each runtime once")
    return chosen


def deploy_request(given: dict[str, Any]):
    """`bench deploy`'s options (by parameter name) -> a deploy.DeployRequest."""
    from .agentlib import PASS_OPTIONS, parse_assignments, parse_scalar, pass_blocks
    from .stages.deploy import AccuracyOptions, DeployRequest, RunSettings

    options: dict[str, Any] = {
        "values": parse_assignments(given["value"], "--value", parse_scalar),
        "dims": parse_assignments(given["dim"], "--dim", int),
        "provider_options": parse_assignments(given["provider_option"], "--provider-option", str),
    }
    options.update({field: given[flag] for flag, field in run_flags().items() if given[flag] is not None})
    if given["cpus"] is not None:
        options["cpus"] = int_list(given["cpus"], "--cpus")
    if given["verbose"]:
        options["verbose"] = True
    options.update(pass_blocks({"cooldown": given["cooldown"], "profile": given["profile"], "energy": given["energy"]},
                               {option.name: given[option.name] for option in PASS_OPTIONS}))
    scenario = scenario_options(given)
    if scenario is not None:
        options["scenario"] = scenario
    accuracy = AccuracyOptions.asked(accuracy=given["accuracy"], reference=given["reference"], dataset=given["dataset"],
                                     test_data=given["test_data"], variants=given["variants"],
                                     samples=given["accuracy_samples"], batch_size=given["batch_size"],
                                     tolerances=tolerances(given["atol"], given["rtol"]),
                                     tolerances_given=bool(given["atol"] or given["rtol"]))
    from .stages.energy import power_argv
    from .stages.pipeline import check_options

    settings = RunSettings(options=options, inputs=given["inputs"], timeout_s=given["timeout"], accuracy=accuracy,
                           strict_dims=given["strict_dims"], pipeline=check_options(given["pipeline"], given["samples"]),
                           power_command=power_argv(given["power_command"]))
    return DeployRequest(models=[Path(m) for m in given["models"]], target=given["target"], results=given["results"],
                         inventory=given["inventory"], coordinator=given.get("coordinator"), settings=settings,
                         variants=given["variants"],
                         threads=int_list(given["threads"], "--threads"), batches=int_list(given["batch"], "--batch"),
                         providers=names(given["provider"]), runtimes=runtime_names(given.get("runtime")))


def diverge_request(given: dict[str, Any]):
    """`bench diverge`'s options (by parameter name) -> a diverge.DivergeRequest."""
    from .agentlib import parse_assignments, parse_scalar
    from .stages.accuracy import AccuracyBudget
    from .stages.diverge import DivergeRequest, Thresholds

    sources = [flag for flag in ("dataset", "test_data", "inputs") if given[flag] is not None]
    if len(sources) > 1:
        raise InputError(f"--{sources[0].replace('_', '-')} and --{sources[1].replace('_', '-')} both give the inputs",
                         "give one of them")
    return DivergeRequest(
        variant=Path(given["variant"]), parent=given["parent"], target=given["target"], inventory=given["inventory"],
        runtime=given["runtime"], dataset=given["dataset"], test_data=given["test_data"], inputs=given["inputs"],
        samples=given["samples"], dims=parse_assignments(given["dim"], "--dim", int),
        values=parse_assignments(given["value"], "--value", parse_scalar),
        thresholds=Thresholds(given["min_cosine"], given["min_snr"]), method=given["method"],
        budget=AccuracyBudget.parse(given["budget"]) if given["budget"] is not None else None,
        calibration=given["calibration"], results=given["results"], output_dir=given["output_dir"], html=given["html"])


def duration_s(text: str | None, option: str) -> float | None:
    """--time-limit 10m -> 600.0: a number with s, m or h (a bare number is seconds); None when not given."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|h|min)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise InputError(f"{option} {text!r} is not a duration", "e.g. 90s, 10m or 1h")
    return float(match.group(1)) * {"s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[match.group(2)]


def tune_request(given: dict[str, Any]):
    """`bench tune`'s options (by parameter name) -> a tune.TuneRequest."""
    from .stages.accuracy import AccuracyBudget
    from .agentlib import parse_assignments, parse_scalar
    from .stages.tune import Timing, TuneRequest

    for flag in ("rung_seconds", "final_seconds"):
        if not (given[flag] > 0 and given[flag] < 3600):
            raise InputError(f"--{flag.replace('_', '-')} must be a number of seconds above 0, got {given[flag]}")
    if given["final_repeats"] < 1:
        raise InputError("--final-repeats must be at least 1")
    if given["samples"] < 1:
        raise InputError("--samples must be at least 1")
    from .fileio import check_output_file

    for flag in ("html", "plan_out"):  # what tune writes at the end, checked before its runs
        if given[flag] is not None:
            check_output_file(given[flag], f"--{flag.replace('_', '-')}")
    return TuneRequest(
        model=Path(given["model"]), target=given["target"], inventory=given["inventory"],
        budget=AccuracyBudget.parse(given["budget"]) if given["budget"] is not None else None,
        objective=given["objective"], space=given["space"], runtimes=names(given["runtime"]),
        precisions=names(given["precision"]), threads=int_list(given["threads"], "--threads"),
        batches=int_list(given["batch"], "--batch"), time_limit_s=duration_s(given["time_limit"], "--time-limit"),
        dataset=given["dataset"], calibration=given["calibration"], inputs=given["inputs"], samples=given["samples"],
        dims=parse_assignments(given["dim"], "--dim", int), values=parse_assignments(given["value"], "--value", parse_scalar),
        results=given["results"], variants_dir=given["variants_dir"], plan_out=given["plan_out"],
        timing=Timing(given["rung_seconds"], given["final_seconds"], given["final_repeats"]))
