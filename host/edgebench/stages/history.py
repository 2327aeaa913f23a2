"""`bench history`: each group's latency over time, and the points where it changed.

A group is what `compare` groups (model, variant, target, settings by default); its runs are ordered by when they
were made. A change point is where the runs after a point differ from the runs before it by the rule `compare`
uses between two groups, applied to consecutive windows of runs: a Mann-Whitney U test (exact for these small
windows) on the runs' own medians (each run one value, so a long run does not outvote a short one) at --alpha, and a change of at least
--min-effect between the windows' medians. Where several neighbouring points pass, the clearest split (the
smallest p-value, then the windows' means furthest apart) is kept.
This is a sliding-window form of the two-sample approach used for CI performance data (cf. Daly et al., "The
Use of Change Point Detection to Identify Software Performance Regressions in a Continuous Integration System",
ICPE 2020, which uses E-Divisive means); it needs `window` runs on each side of a change before it can see it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..results.files import parse_time
from ..results.defaults import ANALYSIS_DEFAULTS
from ..results.stats import DEFAULT_ALPHA, DEFAULT_MIN_EFFECT

DEFAULT_WINDOW: int = ANALYSIS_DEFAULTS.window
HISTORY_METRICS = ("p50", "p90", "p99", "mean")


@dataclass
class HistoryRequest:
    paths: list
    by: tuple = ANALYSIS_DEFAULTS.by
    metric: str = ANALYSIS_DEFAULTS.history_metric
    since: datetime.datetime | None = None  # change points from then on count as recent
    window: int = DEFAULT_WINDOW
    alpha: float = DEFAULT_ALPHA
    min_effect: float = DEFAULT_MIN_EFFECT
    fail_above: float | None = None  # a recent slow-down beyond this fraction fails the command


@dataclass
class Series:
    key: dict  # group key -> value
    points: list[dict]  # {run_id, created_at, value_ms, ci_low_ms, ci_high_ms}, oldest first
    changes: list[dict] = field(default_factory=list)  # {index, run_id, created_at, before_ms, after_ms, change_pct, p_value, recent}


@dataclass
class History:
    series: list[Series]
    request: HistoryRequest
    skipped: list[str]
    notes: list[str]

    def regressions(self) -> list[str]:
        """Recent slow-downs beyond the threshold, one line each (what --fail-on-regression fails on)."""
        limit = self.request.fail_above
        if limit is None:
            return []
        return [f"{label(s.key)}: {c['change_pct']:+.1f}% from run {c['run_id']} ({c['created_at']})"
                for s in self.series for c in s.changes if c["recent"] and c["change_pct"] > 100 * limit]


def label(key: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())


def parse_since(text: str | None, now: datetime.datetime | None = None) -> datetime.datetime | None:
    """--since 2026-11-01, 2026-11-01T12:00, or 7d / 12h (that long ago)."""
    if text is None:
        return None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    stripped = text.strip().lower()
    wrong = ConfigError(f"--since {text!r} must be a date (2026-11-01), a time (2026-11-01T12:00) or an age (7d, 12h)")
    for unit, seconds in (("d", 86400), ("h", 3600)):
        number = stripped[:-1]
        if stripped.endswith(unit) and number.isascii() and number.replace(".", "", 1).isdecimal():
            try:
                return now - datetime.timedelta(seconds=float(number) * seconds)
            except (OverflowError, ValueError) as exc:  # further back than the calendar goes
                raise ConfigError(f"--since {text!r} reaches further back than a date can", "give a date") from exc
    try:
        value = datetime.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise wrong from exc
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)



def change_points(values: list[float], window: int, alpha: float, min_effect: float) -> list[dict]:
    """Indices where the `window` values after differ from the `window` values before (see the module doc)."""
    import numpy as np

    from ..results.stats import mann_whitney_small

    found = []
    for index in range(window, len(values) - window + 1):
        before, after = values[index - window:index], values[index:index + window]
        p_value = mann_whitney_small(before, after)
        base = float(np.median(before))
        change = float(np.median(after)) / base - 1 if base > 0 else 0.0
        if p_value < alpha and abs(change) >= min_effect:
            separation = abs(float(np.mean(after)) / float(np.mean(before)) - 1) if np.mean(before) > 0 else 0.0
            found.append({"index": index, "change": change, "p_value": p_value, "separation": separation,
                          "before": base, "after": float(np.median(after))})
    kept: list[dict] = []
    for candidate in found:  # neighbours within a window see the same change: keep the clearest split
        if kept and candidate["index"] - kept[-1]["index"] < window:
            if (candidate["p_value"], -candidate["separation"]) < (kept[-1]["p_value"], -kept[-1]["separation"]):
                kept[-1] = candidate
            continue
        kept.append(candidate)
    return kept


def history(request: HistoryRequest) -> History:
    """Read the runs (through the results index when it can be used), build each group's series, find changes."""
    from .compare import load_records
    from ..results.stats import sketch_median_ci, sketch_of

    if request.metric not in HISTORY_METRICS:
        raise ConfigError(f"unknown metric {request.metric!r}", f"choose one of: {', '.join(HISTORY_METRICS)}")
    if request.window < 2:
        raise ConfigError("--window must be at least 2 runs")
    records, skipped, notes = load_records(request.paths, use_index=True)
    groups: dict[tuple, list] = {}
    for record in records:
        row = record.row
        if row["status"] != "ok" or not record.facts["valid"] or not row.get("n"):
            continue  # failed and INVALID runs are not points of a trend
        groups.setdefault(tuple(str(row[k]) for k in request.by), []).append(record)
    series = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda r: (parse_time(r.row.get("created_at")) or datetime.datetime.min.replace(
            tzinfo=datetime.timezone.utc), r.row["run_id"]))
        points = []
        for record in members:
            sketch = record.sketch or sketch_of(record.samples())
            low, high = sketch_median_ci([sketch])
            points.append({"run_id": record.row["run_id"], "created_at": record.row.get("created_at"),
                           "value_ms": record.row[f"{request.metric}_ms"], "ci_low_ms": low, "ci_high_ms": high})
        found = Series(dict(zip(request.by, key)), points)
        for change in change_points([p["value_ms"] for p in points], request.window, request.alpha, request.min_effect):
            point = points[change["index"]]
            when = parse_time(point["created_at"])
            found.changes.append({"index": change["index"], "run_id": point["run_id"], "created_at": point["created_at"],
                                  "before_ms": change["before"], "after_ms": change["after"],
                                  "change_pct": 100 * change["change"], "p_value": change["p_value"],
                                  "recent": request.since is None or (when is not None and when >= request.since)})
        series.append(found)
    if not series:
        from ..errors import ResultError

        raise ResultError(f"no successful runs in {', '.join(map(str, request.paths))}", "run `bench deploy` first")
    return History(series, request, skipped, notes)


def table(result: History) -> tuple[list[str], list[list[str]]]:
    """One row per group: its runs, span, latest value and the changes found (recent ones marked)."""
    from ..results.report import format_cell
    from ..results.schema import printable

    by = list(result.request.by)
    headers = [*by, "runs", "first", "last", f"latest {result.request.metric} ms", "changes"]
    rows = []
    for s in result.series:
        changes = "; ".join(f"{c['change_pct']:+.1f}% at {str(c['created_at'])[:16]}" + (" (recent)" if c["recent"] and
                                                                                      result.request.since else "")
                            for c in s.changes) or "none"
        rows.append([*(str(s.key[k]) for k in by), str(len(s.points)), printable(str(s.points[0]["created_at"])[:16]),
                     printable(str(s.points[-1]["created_at"])[:16]), format_cell(float(s.points[-1]["value_ms"])),
                     printable(changes)])
    return headers, rows


def to_json(result: History) -> str:
    import json

    return json.dumps([{"group": s.key, "metric": result.request.metric, "points": s.points, "changes": s.changes}
                       for s in result.series], indent=1, default=str)


def to_html(result: History, title: str = "edgebench history") -> str:
    """One self-contained page: a plot per group (the metric per run, its run's median CI as a band, change points
    as vertical lines), then the table."""
    import html as escape

    from ..results.html import STYLE, drawn

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{escape.escape(title)}</h1>",
             f"<p class='muted'>{sum(len(s.points) for s in result.series)} runs in {len(result.series)} groups; metric "
             f"{result.request.metric}; change points: Mann-Whitney U on {result.request.window}-run windows, alpha "
             f"{result.request.alpha:g}, minimum effect {100 * result.request.min_effect:g}%.</p>"]
    for s in result.series[:60]:
        image = drawn(_series_plot, s, result.request.metric)
        if image and image.startswith("data:"):
            parts.append(f"<img alt='{escape.escape(label(s.key))}' src='{image}'>")
        elif image:
            parts.append(f"<p class='muted'>{escape.escape(label(s.key))}: {escape.escape(image)}</p>")
    headers, rows = table(result)
    parts.append("<h2>Groups</h2><table><tr>" + "".join(f"<th>{escape.escape(h)}</th>" for h in headers) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td class='text'>{escape.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                 + "</table>")
    if result.skipped:
        parts.append("<h2>Skipped files</h2><ul>" + "".join(f"<li class='muted'>{escape.escape(p)}</li>"
                                                            for p in result.skipped) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _series_plot(s: Series, metric: str) -> str:
    """One group's metric per run, its run's median CI as a band, change points as vertical lines."""
    from ..results.html import _png, _pyplot

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(9, 3.2))
    x = list(range(len(s.points)))
    axis.fill_between(x, [p["ci_low_ms"] for p in s.points], [p["ci_high_ms"] for p in s.points], color="#cfe0f6",
                      label="median 95% CI of each run")
    axis.plot(x, [p["value_ms"] for p in s.points], color="#3466a4", marker="o", markersize=3,
              label=f"{metric} per run")
    for change in s.changes:
        axis.axvline(change["index"] - 0.5, color="#b3261e", linestyle="--")
        axis.annotate(f"{change['change_pct']:+.1f}%", (change["index"] - 0.5, max(p["value_ms"] for p in s.points)),
                      color="#b3261e", fontsize=8, xytext=(3, 0), textcoords="offset points")
    ticks = x[:: max(1, len(x) // 8)]
    axis.set_xticks(ticks, [str(s.points[i]["created_at"])[:10] for i in ticks], fontsize=7)
    axis.set_ylabel(f"{metric} (ms)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="upper left")
    axis.set_title(label(s.key), fontsize=9)
    return _png(figure)


def write(path: Path, text: str) -> None:
    from ..fileio import write_atomically

    write_atomically(Path(path), text)
