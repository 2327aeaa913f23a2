"""`bench compare` as a stage: read results, compare their groups, give the report in any format.

The numbers come from report.py (grouping, statistics, tables) and html.py (the page with plots); this module is
what the CLI (and a notebook) calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..results.report import DEFAULT_BY, FORMATS, Comparison, RunRecord, compare_records, per_run_frame, render
from ..results.defaults import ANALYSIS_DEFAULTS
from ..results.stats import DEFAULT_ALPHA, DEFAULT_MIN_EFFECT


@dataclass
class CompareRequest:
    """What `bench compare` is asked, as typed values (options.py parses the command line)."""

    paths: list
    by: tuple = DEFAULT_BY
    baseline: tuple | None = None  # (key, value): every group against the one where key == value
    metric: str = ANALYSIS_DEFAULTS.compare_metric  # the scenario's metric (p50 for plain runs), or p50, p90, p99, mean, throughput
    include_invalid: bool = False
    alpha: float = DEFAULT_ALPHA
    min_effect: float = DEFAULT_MIN_EFFECT
    fail_above: float | None = None  # a significant slow-down beyond this fraction is a regression
    mix_energy_scopes: bool = False  # rank energy measured with different scopes (wall, package, rails) anyway
    use_index: bool = True  # read folders through their results index (the HTML page and --per-run read the files)


@dataclass
class CompareResult:
    comparison: Comparison
    documents: list[dict]  # empty when the runs came from the results index
    skipped: list[str]  # result files that could not be read, each with its reason
    index_notes: list[str] = field(default_factory=list)  # what the index mended or doubts, and any fallback


def check_output(fmt: str, output, per_run: bool, grouping_asked: bool) -> None:
    """Refuse an output format or option combination before reading any result."""
    from ..errors import ConfigError

    if per_run and grouping_asked:
        raise ConfigError("--per-run lists every run on its own: --by, --baseline and --fail-on-regression do not apply",
                          "leave out --per-run to compare groups")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}", f"choose one of: {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        raise ConfigError("--format parquet needs --output FILE")


def compare(request: CompareRequest) -> CompareResult:
    """Read the results (skipping unreadable files) and compare their groups."""
    from ..errors import ConfigError, ResultError
    from ..results.stats import METRICS

    if request.metric not in METRICS:
        raise ConfigError(f"unknown metric {request.metric!r}", f"choose one of: {', '.join(METRICS)}")
    if request.fail_above is not None and request.baseline is None:
        raise ConfigError("--fail-on-regression needs --baseline KEY=VALUE to know what a regression is against")
    records, skipped, notes = load_records(request.paths, request.use_index)
    documents = [r.loaded for r in records if r.loaded is not None]  # none when the runs came from the index
    if not records:
        raise ResultError(f"no readable results in {', '.join(map(str, request.paths))}", "run `bench deploy` first")
    comparison = compare_records(records, request.by, request.metric, request.baseline, request.include_invalid,
                                 request.alpha, request.min_effect, request.fail_above, request.mix_energy_scopes)
    base = request.baseline
    if base and not any(r.get("verdict") == "baseline" for r in comparison.rows):
        raise ConfigError(f"no runs with {base[0]}={base[1]} to compare against",
                          f"values present: {', '.join(sorted({str(r.get(base[0])) for r in comparison.rows}))}")
    return CompareResult(comparison, documents, skipped, notes)


def load_records(paths: list, use_index: bool = True) -> tuple[list, list[str], list[str]]:
    """(runs, skipped files, notes): through the folders' results indexes when they can be used, else every
    result file read whole (its runs then hold their documents)."""
    from ..results.files import load_results

    records, skipped, notes = _indexed(paths) if use_index else (None, [], [])
    if records is None:
        documents, skipped = load_results(paths)
        records = [RunRecord.of(d) for d in documents]
    return records, skipped, notes


def _indexed(paths: list) -> tuple[list | None, list[str], list[str]]:
    """(records, skipped files, notes) from the folders' results indexes; records None when the JSON files must be
    read instead (a file named rather than a folder, no DuckDB, an index that cannot be used: said in a note)."""
    from pathlib import Path

    from ..results import index

    if not index.available() or not all(Path(p).is_dir() for p in paths):
        return None, [], []
    try:
        found = index.records(list(paths))
    except index.IndexUnusable as exc:
        return None, [], [f"warning: {exc}; reading the result files instead"]
    return found.runs, found.problems, [f"warning: {w}" for w in found.warnings] + [f"note: {n}" for n in found.notes]


def report_bytes(result: CompareResult, fmt: str, per_run: bool = False) -> bytes:
    """The comparison in a file format: csv, md, json, html (always grouped: its plots are of groups), parquet."""
    if fmt == "parquet":
        import io

        buffer = io.BytesIO()
        (per_run_frame(result.documents) if per_run else result.comparison.frame()).to_parquet(buffer, index=False)
        return buffer.getvalue()
    if fmt == "html":
        from ..results.html import render_html

        return render_html(result.comparison, result.documents, result.skipped).encode("utf-8")
    return render(result.comparison, fmt, result.documents if per_run else None).encode("utf-8")


def notes(result: CompareResult, include_invalid: bool = False) -> list[str]:
    """What a reader must know beside the table: mixed groups, unpaired groups, failed and INVALID runs."""
    comparison = result.comparison
    lines = list(result.index_notes)
    lines += [f"warning: {warning}" for warning in comparison.mixed + comparison.energy_refused]
    lines += [f"note: {line}" for line in comparison.drawn]
    unpaired = [r for r in comparison.rows if r.get("verdict") == "no baseline run"]
    if unpaired and comparison.baseline:
        key, value = comparison.baseline
        lines.append(f"warning: {len(unpaired)} group(s) have no run with {key}={value} to compare with, so they "
                     "cannot count as regressions: " + "; ".join(", ".join(f"{k}={r[k]}" for k in comparison.by)
                                                                for r in unpaired[:3]) + (" ..." if len(unpaired) > 3 else ""))
    lines += [f"failed run {run['run_id']} ({run['model']} on {run['target']}): {run['reason']}" for run in comparison.failed]
    lines += [f"INVALID run {run['run_id']} ({run['model']} on {run['target']}): {'; '.join(run['reasons'])}"
              + ("" if include_invalid else " (left out; --include-invalid keeps it)") for run in comparison.invalid]
    return lines
