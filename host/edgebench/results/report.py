"""Compare: result documents into one pandas DataFrame, grouped tables in several formats.

pandas is imported inside the functions: `bench --help` must stay fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .schema import printable, spreadsheet_safe
from .view import Result
from .defaults import ANALYSIS_DEFAULTS
from .stats import (DEFAULT_ALPHA, DEFAULT_MIN_EFFECT, all_samples_ns, compare_samples, median_ci, percentiles,
                    scenario_metric, sketch_summary, summarize_ns)

DEFAULT_BY: tuple = ANALYSIS_DEFAULTS.by
KEYS = ("model", "variant", "target", "settings", "runtime", "provider", "threads", "inter_threads", "opt", "dims", "scenario",
        "plan")
# The parts of the `settings` key that a comparison can also group by on their own.
SETTINGS_PARTS = ("runtime", "provider", "threads", "inter_threads", "opt", "dims", "scenario")
# What must be the same for runs pooled in one group (the model file by its hash, not only its name).
POOLING_KEYS = ("model", "model_sha256", "variant", "target", "settings", "pipeline_code_and_samples")
FORMATS = ("table", "csv", "md", "json", "html", "parquet")

# Headers of the columns a table shows.
HEADERS = {
    "size_kib": "KiB", "runs": "runs", "failed": "failed", "n": "n", "p50_ms": "p50 ms", "ci": "p50 95% CI ms",
    "p90_ms": "p90 ms", "p99_ms": "p99 ms", "mean_ms": "mean ms", "throughput_per_s": "inf/s",
    "session_ms": "session ms", "first_ms": "first ms", "peak_rss_mib": "peak RSS MiB", "accuracy": "accuracy",
    "top1_pct": "top-1 %", "speedup": "speed-up", "speedup_ci": "speed-up 95% CI", "p_value": "p", "verdict": "vs baseline",
    "mixed": "MIXED", "p90_es_ms": "p90 ES ms", "p99_es_ms": "p99 ES ms", "qps": "QPS asked",
    "achieved_qps": "QPS", "issue_delay_p99_us": "issue p99 µs", "load_ms": "load ms", "preprocess_ms": "pre ms",
    "inference_ms": "infer ms", "postprocess_ms": "post ms", "pipeline_agree": "pipeline", "metric": "metric",
    "mj_per_inference": "mJ/inf", "mj_above_idle": "mJ/inf above idle", "average_power_w": "W", "idle_power_w": "idle W",
    "inferences_per_joule": "inf/J", "energy_scope": "energy scope", "energy_ratio": "energy vs baseline",
}


def settings_label(settings: dict) -> str:
    """Short, stable text for the settings that change what is measured."""
    runtime = settings.get("runtime") or "onnxruntime"
    if runtime == "onnxruntime":  # (the label of every run before other runtimes existed)
        provider = (settings.get("provider") or "?").replace("ExecutionProvider", "").lower()
        parts = [provider, f"threads={settings.get('intra_op_threads', 0)}/{settings.get('inter_op_threads', 0)}",
                 f"opt={settings.get('graph_optimization_level', 'all')}"]
    else:  # onnxruntime's provider, inter-op threads and graph level do not apply
        parts = [runtime, f"threads={settings.get('intra_op_threads', 0)}"]
    if settings.get("batch"):
        parts.append(f"batch={settings['batch']}")
    if settings.get("cpus"):
        parts.append("cpus=" + ",".join(map(str, settings["cpus"])))
    if settings.get("dims"):
        parts.append("dims=" + ",".join(f"{k}={v}" for k, v in sorted(settings["dims"].items())))
    if settings.get("scenario"):
        parts.append(scenario_label(settings))
    if settings.get("pipeline"):
        parts.append(f"pipeline={(settings['pipeline'] or {}).get('file')}")
    return " ".join(parts)


def scenario_label(settings: dict) -> str:
    """'single-stream', 'multi-stream x8', 'server qps=100', 'server qps=auto p99<=33ms', 'offline k=4'."""
    scenario = settings.get("scenario") or {}
    name = scenario.get("name") or "single-stream"
    if name == "multi-stream":
        name += f" x{scenario.get('samples_per_query')}"
    elif name == "server":
        name += f" qps={scenario.get('qps')}"
        if scenario.get("latency_bound_s"):
            name += f" p99<={scenario['latency_bound_s'] * 1e3:g}ms"
    if name.startswith(("server", "offline")) and (scenario.get("concurrency") or 1) > 1:
        name += f" k={scenario['concurrency']}"
    return name + (" mlperf" if scenario.get("mlperf") else "")


def scenario_figures(repeats: list[dict], samples_ns) -> dict:
    """What a load scenario adds to a row: LoadGen's early-stopping percentiles (p90 always; p99 for the
    multi-stream and server scenarios, whose metric it is), and the server's QPS and issue delay, or the offline
    throughput, over the repeats of one run or a group's pooled runs."""
    import numpy as np

    from ..agentlib import early_stopping_percentile

    ordered = np.sort(np.asarray(samples_ns, dtype=np.float64)).tolist()
    row: dict = {}
    p90 = early_stopping_percentile(ordered, 0.9)
    row["p90_es_ms"] = p90 / 1e6 if p90 is not None else None
    details = [r["scenario"] for r in repeats if r.get("scenario")]
    names = {d.get("name") for d in details}
    if names & {"multi-stream", "server"}:
        p99 = early_stopping_percentile(ordered, 0.99)
        row["p99_es_ms"] = p99 / 1e6 if p99 is not None else None
    # A file from elsewhere may lack a figure (the schema checks types, not presence): such a block adds nothing.
    server = [d for d in details if d.get("name") == "server" and d.get("qps") is not None
              and d.get("achieved_qps") is not None and d.get("issue_delays_ns")]
    if names == {"server"} and len(server) == len(details):
        row["qps"] = float(np.mean([d["qps"] for d in server]))
        row["achieved_qps"] = float(np.mean([d["achieved_qps"] for d in server]))
        delays = np.concatenate([np.asarray(d["issue_delays_ns"], dtype=np.float64) for d in server])
        row["issue_delay_p99_us"] = float(percentiles(delays, 99)) / 1e3
    offline = [d for d in details if d.get("samples") and d.get("wall_ns") and d["wall_ns"] > 0]
    if names == {"offline"} and len(offline) == len(details):  # workers overlap: samples over wall time, not 1/mean
        row["throughput_per_s"] = float(sum(d["samples"] for d in offline) * 1e9 / sum(d["wall_ns"] for d in offline))
    return row


def stage_figures(repeats: list[dict]) -> dict:
    """What a pipeline adds to a row: each stage's median (ms) and its share of the end-to-end time (%), over the
    repeats of one run or a group's pooled runs. Nothing when any repeat lacks its stages."""
    from ..agentlib import stage_summary

    summary = stage_summary(repeats) or {}
    row: dict = {}
    for stage, (median_ns, share) in summary.items():
        row[f"{stage}_ms"] = median_ns / 1e6
        row[f"{stage}_pct"] = share
    return row


# The figures an energy block gives a row (block key -> row column).
ENERGY_FIGURES = {"mj_per_inference": "mj_per_inference", "mj_per_inference_above_idle": "mj_above_idle",
                  "average_power_w": "average_power_w", "idle_power_w": "idle_power_w",
                  "inferences_per_joule": "inferences_per_joule"}


def energy_figures(document: dict) -> dict:
    """A run's energy columns, or its scope "unavailable" (never 0 for an unknown)."""
    block = Result(document).energy
    if block is None:
        return {}
    if not block.get("available"):
        return {"energy_scope": "unavailable"}
    row = {column: block.get(key) for key, column in ENERGY_FIGURES.items()}
    row["energy_scope"] = printable(block.get("scope") or "?")
    return row


def run_row(document: dict) -> dict:
    """One flat row per result (statistics over the pooled samples of its repeats). Text from the document is
    made printable here, once, so no table, export or terminal line shows an escape sequence from a file."""
    result = Result(document)
    error = result.error_message
    row = {
        "run_id": printable(result.run_id),
        "created_at": result.created_at,
        **run_keys(document),
        "origin": origin_label(document),
        "size_kib": (result.model.get("size_bytes") or 0) / 1024,
        "model_sha256": result.model.get("sha256"),
        "pipeline_code_and_samples": _pipeline_identity(result.settings),
        "status": result.status,
        "error": printable(error) if error is not None else None,
    }
    if result.ok:
        measurements = result.measurements
        samples = all_samples_ns(measurements)
        row.update(summarize_ns(samples))
        row.update(scenario_figures(result.repeats, samples))
        row.update(stage_figures(result.repeats))
        repeats = result.repeats
        row["session_ms"] = sum(r["session_create_ns"] for r in repeats) / len(repeats) / 1e6
        row["first_ms"] = sum(r["first_inference_ns"] for r in repeats) / len(repeats) / 1e6
        peak = result.peak_rss_bytes
        row["peak_rss_mib"] = peak / 2**20 if peak else None
    accuracy = result.accuracy
    if accuracy:
        row["accuracy"] = None if accuracy.get("passed") is None else ("PASS" if accuracy["passed"] else "FAIL")
        row["max_abs_diff"] = max((o["max_abs"] for o in result.outputs if o.get("max_abs") is not None),
                                  default=None)  # (a text output has no difference to show)
        row["top1_pct"] = result.top1_pct
    agreement = result.pipeline_results
    if agreement:
        row["pipeline_agree"] = f"{agreement['agree']}/{agreement['samples']}"
    if result.ok:
        row.update(energy_figures(document))
    return row


def _pipeline_identity(settings: dict) -> str | None:
    """A pipeline run's code and samples by content (runs of other code or other samples never pool silently)."""
    pipeline = settings.get("pipeline")
    if not isinstance(pipeline, dict):
        return None
    return f"{str(pipeline.get('sha256'))[:12]}/{str(pipeline.get('samples_sha256'))[:12]}"


def run_keys(document: dict) -> dict:
    """The values a comparison can group by, for one result. A variant is listed under its parent model."""
    result = Result(document)
    settings = result.settings
    target = result.target_name
    if result.imported:
        target = f"{target} (imported)"  # its digest proves integrity, not who wrote it: never pass as deployed
    return {
        "model": printable(result.family),
        "variant": printable(variant_label(result)),
        "target": printable(target),
        "settings": printable(settings_label(settings)),
        "runtime": printable(settings.get("runtime") or "onnxruntime"),
        "provider": printable((settings.get("provider") or "?").replace("ExecutionProvider", "").lower()),
        "threads": settings.get("intra_op_threads", 0),
        "inter_threads": settings.get("inter_op_threads", 0),
        "opt": printable(settings.get("graph_optimization_level", "all")),
        "dims": printable(",".join(f"{k}={v}" for k, v in sorted((settings.get("dims") or {}).items())) or "-"),
        "scenario": printable(scenario_label(settings)),
        "plan": printable(result.plan_name or "-"),
    }


def variant_label(result: Result) -> str:
    """A variant's name in tables: its conversion, and how many nodes an INT8 one keeps in float (`bench diverge
    --budget`), so the two INT8 variants of one parent are never pooled."""
    kept = result.kept_in_float
    label = str(result.provenance.get("variant") or "original")
    return f"{label}+float{len(kept)}" if kept else label


def origin_label(document: dict) -> str:
    """'deploy', or 'import from BOARD' for a result brought in by `bench import`."""
    result = Result(document)
    if result.imported:
        return printable(f"import from {result.origin.get('board') or result.target_name}")
    return printable(result.origin.get("kind") or "deploy")


def validity(document: dict) -> tuple[bool, list[str]]:
    block = Result(document).validity
    return bool(block.get("valid", True)), [printable(r) for r in block.get("reasons") or []]


@dataclass
class Comparison:
    """What `bench compare` found: a row per group, and the runs kept apart."""

    rows: list[dict]
    by: tuple
    metric: str
    baseline: tuple | None
    failed: list[dict] = field(default_factory=list)  # {run_id, model, target, reason}
    invalid: list[dict] = field(default_factory=list)  # {run_id, model, target, reasons}
    regressions: list[str] = field(default_factory=list)
    samples: dict = field(default_factory=dict)  # group label -> pooled samples (ns), for plots
    mixed: list[str] = field(default_factory=list)  # one warning per group that pools runs of different things
    scenarios: dict = field(default_factory=dict)  # group key -> the scenario names of its runs (None: none set)
    mix_energy_scopes: bool = False  # rank energy across scopes (wall, CPU package, board rails) anyway
    energy_refused: list[str] = field(default_factory=list)  # energy comparisons left out: different scopes
    drawn: list[str] = field(default_factory=list)  # groups tested on draws from their sketches, not raw samples

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


@dataclass
class RunRecord:
    """One run as a comparison sees it: its row, the facts grouping needs, and its samples — in memory (a result
    document) or as a sketch from the results index, with the document read from `path` only when asked for."""

    row: dict
    facts: dict  # valid, reasons, scenario (name or None), pipeline ([agree, samples] or None)
    sketch: dict | None = None
    path: Any = None  # the result file (a Path), when the run came from the index
    content_sha: str | None = None
    loaded: dict | None = None

    @classmethod
    def of(cls, document: dict) -> RunRecord:
        return cls(run_row(document), run_facts(document), loaded=document)

    def document(self) -> dict:
        if self.loaded is None:
            from pathlib import Path

            from .files import load_result

            self.loaded = load_result(Path(self.path))
        return self.loaded

    def samples(self):
        if self.loaded is not None:
            return all_samples_ns(self.loaded["measurements"])
        from pathlib import Path

        from .files import load_result

        return all_samples_ns(load_result(Path(self.path))["measurements"])  # read, not kept: memory stays flat


def run_facts(document: dict) -> dict:
    """What grouping needs of a result beyond its row (kept beside the row in the results index)."""
    valid, reasons = validity(document)
    result = Result(document)
    agreement = result.pipeline_results
    return {"valid": valid, "reasons": reasons,
            "scenario": result.scenario.get("name"),
            "pipeline": [agreement["agree"], agreement["samples"]] if agreement else None}


def compare_runs(documents: list[dict], by: tuple = DEFAULT_BY, metric: str = ANALYSIS_DEFAULTS.compare_metric, baseline: tuple | None = None,
                 include_invalid: bool = False, alpha: float = DEFAULT_ALPHA, min_effect: float = DEFAULT_MIN_EFFECT,
                 regression_threshold: float | None = None, mix_energy_scopes: bool = False) -> Comparison:
    """Group result documents, summarise each group from its pooled raw samples, compare against a baseline."""
    return compare_records([RunRecord.of(d) for d in documents], by, metric, baseline, include_invalid, alpha,
                           min_effect, regression_threshold, mix_energy_scopes)


def compare_records(records: list[RunRecord], by: tuple = DEFAULT_BY, metric: str = ANALYSIS_DEFAULTS.compare_metric,
                    baseline: tuple | None = None, include_invalid: bool = False, alpha: float = DEFAULT_ALPHA,
                    min_effect: float = DEFAULT_MIN_EFFECT, regression_threshold: float | None = None,
                    mix_energy_scopes: bool = False) -> Comparison:
    """Group runs and summarise each group: from the pooled raw samples when every run's document is in memory,
    else from the runs' sketches (the results index); a group tested against the baseline always uses its raw
    samples (read from the files then)."""
    import numpy as np

    by = tuple(by)
    if baseline and baseline[0] in SETTINGS_PARTS and "settings" in by:
        # `settings` already holds the baseline's key (threads=1 is inside "cpu threads=1/0 opt=all"): group by the
        # other parts instead, so threads=2 pairs with threads=1 and nothing else.
        by = tuple(k for k in by if k != "settings") + tuple(k for k in SETTINGS_PARTS if k not in by)
    if baseline and baseline[0] not in by:
        by = (*by, baseline[0])
    result = Comparison([], by, metric, baseline, mix_energy_scopes=mix_energy_scopes)
    groups: dict[tuple, list[RunRecord]] = {}
    for record in records:
        row, facts = record.row, record.facts
        if row["status"] != "ok":
            result.failed.append({"run_id": row["run_id"], "model": row["model"], "target": row["target"],
                                  "reason": row.get("error") or "unknown"})
        elif not facts["valid"]:
            result.invalid.append({"run_id": row["run_id"], "model": row["model"], "target": row["target"],
                                   "reasons": facts["reasons"]})
            if not include_invalid:
                continue
        groups.setdefault(tuple(str(row[k]) for k in by), []).append(record)
    pooled: dict = {}  # group key -> its raw samples (ns), or a function that reads them
    for key in sorted(groups):
        members = groups[key]
        ok = [m for m in members if m.row["status"] == "ok" and m.row.get("n")]
        rows = [m.row for m in ok]
        result.scenarios[key] = {m.facts["scenario"] for m in ok}
        row = dict(zip(by, key), runs=len(members), failed=len(members) - len(ok),
                   size_kib=members[0].row.get("size_kib"))
        differing = [k for k in POOLING_KEYS if k not in by and len({str(m.row.get(k)) for m in members}) > 1]
        if differing:  # never pool different models, variants, settings or boards without saying so
            row["mixed"] = ", ".join(differing)
            result.mixed.append(f"group {group_label(by, key)} pools {len(members)} runs that differ in "
                                f"{row['mixed']}: add {' and '.join(k for k in differing if k in KEYS) or 'them'} to "
                                "--by to compare them apart")
        if ok:
            if all(m.loaded is not None for m in ok):
                samples = np.concatenate([m.samples() for m in ok])
                pooled[key] = samples
                repeats = [r for m in ok for r in Result(m.loaded).repeats]  # type: ignore[arg-type]
                row.update(summarize_ns(samples))
                row.update(scenario_figures(repeats, samples))
                row.update(stage_figures(repeats))
                row["ci_low_ms"], row["ci_high_ms"] = median_ci(samples / 1e6)
            else:
                sketches = [m.sketch for m in ok if m.sketch]
                pooled[key] = _test_samples(ok, sketches, group_label(by, key), result)
                row.update(sketch_summary(sketches))  # its median's interval included
                row.update(_mean_columns(rows, SKETCHED_FIGURES))
            for column in ("session_ms", "first_ms", "peak_rss_mib", "top1_pct"):
                values = [r[column] for r in rows if r.get(column) is not None]
                row[column] = float(np.mean(values)) if values else None
            verdicts = [r["accuracy"] for r in rows if r.get("accuracy")]
            row["accuracy"] = ("FAIL" if "FAIL" in verdicts else "PASS") if verdicts else None
            _pool_energy(row, rows, result, key)
            agreements = [m.facts["pipeline"] for m in ok if m.facts["pipeline"]]
            if agreements:
                row["pipeline_agree"] = f"{sum(a[0] for a in agreements)}/{sum(a[1] for a in agreements)}"
        result.rows.append(row)
        result.samples[" / ".join(key)] = pooled.get(key) if not callable(pooled.get(key)) else None
    if baseline:
        _against_baseline(result, pooled, alpha, min_effect, regression_threshold)
    return result


# A group tested against the baseline reads its runs' raw samples when it has at most this many runs; a larger one
# (months of nightly runs) is tested on draws from its pooled quantile function: reading 2,000 files to keep the
# 2,000 samples the test uses would take minutes.
RAW_TEST_MAX_RUNS = 200
SKETCH_DRAWS = 20000


def _test_samples(members: list, sketches: list, label: str, result: Comparison):
    """What a significance test of an indexed group reads, when it is asked for."""
    import numpy as np

    def raw():
        return np.concatenate([m.samples() for m in members])

    def drawn():
        from .stats import sketch_quantile

        result.drawn.append(f"group {label} ({len(members)} runs) was tested on {SKETCH_DRAWS} draws from its runs' "
                            f"sketches (more than {RAW_TEST_MAX_RUNS} runs)")
        fractions = np.random.default_rng(0).random(min(SKETCH_DRAWS, sum(s["n"] for s in sketches)))
        return sketch_quantile(sketches, fractions)

    return raw if len(members) <= RAW_TEST_MAX_RUNS else drawn


# A sketched group's scenario and stage figures: the mean of its runs' own (exact for a one-run group).
SKETCHED_FIGURES = ("p90_es_ms", "p99_es_ms", "qps", "achieved_qps", "issue_delay_p99_us", "load_ms", "preprocess_ms",
                    "inference_ms", "postprocess_ms", "load_pct", "preprocess_pct", "inference_pct", "postprocess_pct")


def _mean_columns(rows: list[dict], columns: tuple) -> dict:
    found = {}
    for column in columns:
        values = [r[column] for r in rows if r.get(column) is not None]
        if values and len(values) == len(rows):
            found[column] = sum(values) / len(values)
    return found


def _pool_energy(row: dict, members: list[dict], result: Comparison, key: tuple) -> None:
    """A group's energy: the mean over its runs that measured it, when they share one scope (watts at the wall and
    watts of the CPU package are different quantities: a group mixing them shows no figure and says why)."""
    measured = [r for r in members if r.get("mj_per_inference") is not None]
    scopes = sorted({r["energy_scope"] for r in measured})
    if not measured:
        if any(r.get("energy_scope") == "unavailable" for r in members):
            row["energy_scope"] = "unavailable"
        return
    if len(scopes) > 1:
        row["energy_scope"] = "MIXED"
        result.mixed.append(f"group {group_label(result.by, key)} has energy measured with different scopes "
                            f"({'; '.join(scopes)}): no energy figure is shown for it")
        return
    row["energy_scope"] = scopes[0]
    for column in ENERGY_FIGURES.values():
        values = [r[column] for r in measured if r.get(column) is not None]
        row[column] = sum(values) / len(values) if values else None


def _against_baseline(result: Comparison, pooled: dict, alpha, min_effect, threshold) -> None:
    assert result.baseline is not None  # only called with a baseline
    key_name, value = result.baseline
    position = result.by.index(key_name)
    for row in result.rows:
        key = tuple(str(row[k]) for k in result.by)
        base_key = key[:position] + (value,) + key[position + 1:]
        if key not in pooled or base_key not in pooled:
            row["verdict"] = "no baseline run" if key != base_key else "baseline (no samples)"
            continue
        if key == base_key:
            row["verdict"] = "baseline"
            continue
        _energy_against(result, row, base_key)
        metric = result.metric
        if metric == "auto":  # the scenario's own metric: p99 under load, throughput offline
            metric = scenario_metric(result.scenarios.get(key, set()) | result.scenarios.get(base_key, set()))
        # An indexed group's raw samples are read now, for this test only (the baseline's are kept for the next).
        loader = pooled[key] if callable(pooled[key]) else None
        if callable(pooled[base_key]):
            pooled[base_key] = pooled[base_key]()
        found = compare_samples(pooled[base_key], loader() if loader else pooled[key], metric, alpha, min_effect)
        row.update(speedup=found["speedup"], speedup_low=found["speedup_low"], speedup_high=found["speedup_high"],
                   p_value=found["p_value"], change_pct=100 * found["change"], verdict=found["verdict"], metric=metric)
        if found["verdict"] == "slower" and threshold is not None and found["change"] > threshold:
            mixed = f" (a mixed group: {row['mixed']})" if row.get("mixed") else ""
            result.regressions.append(f"{group_label(result.by, key)}: {100 * found['change']:.1f}% slower than "
                                      f"{key_name}={value} ({metric}, p={found['p_value']:.2g}){mixed}")


def _energy_against(result: Comparison, row: dict, base_key: tuple) -> None:
    """Energy per inference against the baseline's (>1: this group spends less), only within one scope unless
    the comparison was told to mix them."""
    base = next((r for r in result.rows if tuple(str(r[k]) for k in result.by) == base_key), None)
    if not base or row.get("mj_per_inference") is None or base.get("mj_per_inference") is None:
        return
    if row["energy_scope"] != base["energy_scope"] and not result.mix_energy_scopes:
        result.energy_refused.append(f"energy of {group_label(result.by, tuple(str(row[k]) for k in result.by))} "
                                     f"({row['energy_scope']}) is not ranked against the baseline's "
                                     f"({base['energy_scope']}): different scopes measure different things "
                                     "(--mix-energy-scopes compares them anyway)")
        return
    if row["mj_per_inference"] > 0:
        row["energy_ratio"] = base["mj_per_inference"] / row["mj_per_inference"]


def group_label(by: tuple, key: tuple) -> str:
    """Every key of a group: model=digits, variant=original, target=pi4."""
    return ", ".join(f"{k}={v}" for k, v in zip(by, key))


def table_columns(comparison: Comparison) -> list[str]:
    """The group table's columns, most important first: a narrow terminal drops them from the end."""
    columns = [*comparison.by, "mixed", "n", "p50_ms", "ci"]
    if comparison.baseline:
        columns += ["speedup", "verdict", "metric", "speedup_ci", "p_value"]
    columns += ["p90_ms", "p90_es_ms", "p99_ms", "p99_es_ms", "achieved_qps", "issue_delay_p99_us", "load_ms",
                "preprocess_ms", "inference_ms", "postprocess_ms", "pipeline_agree", "mj_per_inference", "energy_ratio",
                "mj_above_idle", "average_power_w", "idle_power_w", "inferences_per_joule", "energy_scope", "accuracy",
                "top1_pct", "runs", "failed", "mean_ms", "throughput_per_s",
                "session_ms", "first_ms", "peak_rss_mib", "size_kib"]
    present = set().union(*[r.keys() for r in comparison.rows]) if comparison.rows else set()
    derived = {"ci": "ci_low_ms", "speedup_ci": "speedup_low"}
    return [c for c in columns if c in present or derived.get(c) in present or c in comparison.by]


# Per-inference latency columns: shown in µs when every group's median is under a millisecond.
LATENCY_COLUMNS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "ci", "p90_es_ms", "p99_es_ms",
                   "load_ms", "preprocess_ms", "inference_ms", "postprocess_ms")


def latency_unit(rows: list[dict]) -> tuple[str, float]:
    """("µs", 1000) when every p50 is below 1 ms (0.0134 ms reads badly), else ("ms", 1)."""
    medians = [r["p50_ms"] for r in rows if r.get("p50_ms") is not None]
    return ("µs", 1000.0) if medians and max(medians) < 1.0 else ("ms", 1.0)


def cells(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells, numbers rounded for people, latencies in µs or ms (the header says which)."""
    columns = table_columns(comparison)
    unit, scale = latency_unit(comparison.rows)
    headers = [unit_header(c, unit) for c in columns]
    rows = []
    for row in comparison.rows:
        line = []
        for column in columns:
            if column == "ci":
                line.append(f"[{row['ci_low_ms'] * scale:.4g}, {row['ci_high_ms'] * scale:.4g}]"
                            if row.get("ci_low_ms") is not None else "-")
            elif column in LATENCY_COLUMNS:
                line.append(format_cell(row[column] * scale if row.get(column) is not None else None))
            elif column == "speedup_ci":
                line.append(f"[{row['speedup_low']:.3f}, {row['speedup_high']:.3f}]" if "speedup_low" in row else "-")
            elif column == "speedup":
                line.append(f"{row['speedup']:.3f}x" if row.get("speedup") is not None else "-")
            elif column == "p_value":
                line.append(f"{row['p_value']:.2g}" if row.get("p_value") is not None else "-")
            else:
                line.append(format_cell(row.get(column)))
        rows.append(line)
    return headers, rows


# Headers of text columns (left-aligned, may wrap in a terminal table).
TEXT_HEADERS = ("model", "variant", "target", "settings", "status", "valid", "accuracy", "pipeline", "metric",
                "energy scope", "vs baseline", "MIXED", "run",
                "origin", "error")
PER_RUN_COLUMNS = ("model", "variant", "target", "settings", "status", "n", "p50_ms", "p90_ms", "p90_es_ms", "p99_ms",
                   "p99_es_ms", "achieved_qps", "issue_delay_p99_us", "load_ms", "preprocess_ms", "inference_ms",
                   "postprocess_ms", "pipeline_agree", "mj_per_inference", "mj_above_idle", "average_power_w",
                   "idle_power_w", "inferences_per_joule", "energy_scope", "valid",
                   "accuracy", "top1_pct", "mean_ms", "throughput_per_s", "session_ms", "first_ms", "peak_rss_mib",
                   "run_id", "origin", "error")


def per_run_cells(documents: list[dict], with_run_id: bool = True) -> tuple[list[str], list[list[str]]]:
    """The terminal table of `compare --per-run` and `deploy`: one row per run, most useful columns first."""
    rows = []
    for document in documents:
        row = run_row(document)
        valid, _ = validity(document)
        row["valid"] = "yes" if valid else "INVALID"
        rows.append(row)
    unit, scale = latency_unit(rows)
    # A column is shown when it says something: origin only when some run was imported, error only when one failed.
    columns = [c for c in PER_RUN_COLUMNS if (any(r.get(c) not in (None, "", "deploy") for r in rows)
                                              or c in ("model", "status")) and (with_run_id or c != "run_id")]
    headers = ["run" if c == "run_id" else unit_header(c, unit) for c in columns]
    text = [[format_cell(r[c] * scale if c in LATENCY_COLUMNS and r.get(c) is not None else r.get(c))
             for c in columns] for r in rows]
    return headers, text


def unit_header(column: str, unit: str) -> str:
    header = HEADERS.get(column, column)
    return header.replace(" ms", f" {unit}") if column in LATENCY_COLUMNS else header


def render(comparison: Comparison, fmt: str, per_run_documents: list[dict] | None = None) -> str:
    """csv, json or markdown ("md"/"table") text: of the groups, or one row per run when per_run_documents are
    given. The terminal table is drawn by the CLI, HTML by html.py."""
    frame = per_run_frame(per_run_documents) if per_run_documents is not None else comparison.frame()
    if fmt == "csv":
        for column in frame.columns:  # text columns may be object or string dtype: test the values themselves
            if not pd_numeric(frame[column]):
                frame[column] = frame[column].map(lambda v: spreadsheet_safe(v) if isinstance(v, str) else v)
        return frame.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(frame.to_json(orient="records")), indent=1)
    if fmt in ("md", "table"):
        if per_run_documents is None:
            return markdown_table(*cells(comparison))
        return markdown_table([str(c) for c in frame.columns],
                              [[format_cell(v) for v in record] for record in frame.itertuples(index=False)])
    raise ValueError(fmt)


def pd_numeric(series) -> bool:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return is_numeric_dtype(series) or is_bool_dtype(series)


def per_run_frame(documents: list[dict]):
    """One row per run with its keys and statistics: the export for pandas, DuckDB or a spreadsheet."""
    import pandas as pd

    rows = []
    for document in documents:
        valid, reasons = validity(document)
        rows.append({**run_row(document), "valid": valid, "invalid_reasons": "; ".join(reasons)})
    return pd.DataFrame(rows)


def format_cell(value) -> str:
    """Numbers for people: 1234.5, 12.345, 0.00512 (three significant digits below one)."""
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) >= 1:
            return f"{value:.3f}"
        return f"{value:.3g}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(spreadsheet_safe(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"



def runtime_ranking(documents: list[dict]) -> list[dict]:
    """Per model and board measured with more than one runtime: the runtimes fastest first (median latency of their
    pooled samples), each with its accuracy beside its speed. Failed and INVALID runs are left out."""
    import statistics

    groups: dict = {}
    for document in documents:
        result = Result(document)
        if not result.ok or not validity(document)[0]:
            continue
        keys = run_keys(document)
        samples = all_samples_ns(result.measurements).tolist()
        if not samples:
            continue
        entry = groups.setdefault((keys["model"], keys["target"]), {}).setdefault(keys["runtime"], {
            "samples": [], "accuracy": [], "top1": [], "version": None})
        entry["samples"].extend(samples)
        entry["version"] = result.runtime_version or entry["version"]
        if "passed" in result.accuracy:
            entry["accuracy"].append(bool(result.accuracy["passed"]))
        top1 = result.top1_pct
        if isinstance(top1, (int, float)):
            entry["top1"].append(float(top1))
    ranking = []
    for (model, target), runtimes in sorted(groups.items()):
        if len(runtimes) < 2:
            continue
        rows = sorted(({"runtime": name, "version": e["version"], "p50_ms": float(percentiles(e["samples"], 50)) / 1e6,
                        "accuracy": ("PASS" if all(e["accuracy"]) else "FAIL") if e["accuracy"] else "-",
                        "top1_pct": statistics.median(e["top1"]) if e["top1"] else None}
                       for name, e in runtimes.items()), key=lambda row: row["p50_ms"])
        for row in rows:
            row["vs_fastest"] = row["p50_ms"] / rows[0]["p50_ms"]
        ranking.append({"model": model, "target": target, "runtimes": rows})
    return ranking
