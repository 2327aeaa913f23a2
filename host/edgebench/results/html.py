"""The HTML report: one self-contained file (plots inlined as PNG, no network, no CDN).

Plots a person would rather look at than read: latency distributions per group, speed against accuracy for a
model's variants, per-operator time when profiles are present; then the table, the failed and the INVALID runs.
matplotlib is imported here only, with the Agg backend (no display).
"""

from __future__ import annotations

import base64
import datetime
import html
import io

import numpy as np

from .report import Comparison, cells, runtime_ranking

MAX_BOX_SAMPLES = 3000
MAX_GROUPS_PLOTTED = 40

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1d2430; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border-bottom: 1px solid #d8dde6; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f1f4f8; } td.text { text-align: left; }
.faster { color: #11772f; font-weight: 600; } .slower { color: #b3261e; font-weight: 600; }
.muted { color: #6b7380; } img { max-width: 100%; border: 1px solid #e3e7ee; margin: 0.5em 0; }
"""


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    # Names in a plot come from result files, which come from anywhere: text is drawn as it is, never parsed as
    # TeX ("$\\frac{$" in a model name would otherwise stop the report with a mathtext error).
    matplotlib.rcParams.update({"text.usetex": False, "text.parse_math": False})
    import matplotlib.pyplot as plt

    return plt


def drawn(plot, *args) -> str | None:
    """A plot's image, or one line saying why it was left out: figures from result files (which come from anywhere)
    may be finite yet beyond what matplotlib can lay out (1e308 on a log axis), and that must not stop the report."""
    try:
        return plot(*args)
    except (ValueError, OverflowError) as exc:
        _pyplot().close("all")
        return f"plot left out: its values cannot be drawn ({' '.join(str(exc).split())[:120]})"


def latency_plot(comparison: Comparison) -> str | None:
    """Box plots of each group's latency (ms), subsampled, one box per group."""
    groups = [(label, samples) for label, samples in comparison.samples.items() if samples is not None][:MAX_GROUPS_PLOTTED]
    if not groups:
        return None
    plt = _pyplot()
    rng = np.random.default_rng(0)
    data = []
    for _, samples in groups:
        values = samples / 1e6
        if values.size > MAX_BOX_SAMPLES:
            values = rng.choice(values, MAX_BOX_SAMPLES, replace=False)
        data.append(values)
    figure, axis = plt.subplots(figsize=(9, 0.45 * len(groups) + 1.4))
    axis.boxplot(data, orientation="horizontal", showfliers=False, widths=0.6, patch_artist=True,
                 boxprops={"facecolor": "#cfe0f6", "edgecolor": "#3466a4"}, medianprops={"color": "#b3261e"})
    axis.set_yticks(range(1, len(groups) + 1), [label for label, _ in groups], fontsize=8)
    axis.set_xlabel("latency per inference (ms); whiskers 1.5 IQR, outliers hidden")
    if max(v.max() for v in data) / max(min(v.min() for v in data), 1e-9) > 50:
        axis.set_xscale("log")
    axis.grid(axis="x", alpha=0.3)
    axis.set_title("Latency distributions")
    return _png(figure)


def accuracy_plot(comparison: Comparison) -> str | None:
    """Speed against accuracy: a point per group that has a top-1 accuracy (p50 against top-1 %); the title says
    how many of the groups that is. Points are labelled by their full group (every --by key but the model,
    which is the legend)."""
    timed = [r for r in comparison.rows if r.get("p50_ms") is not None]
    rows = [r for r in timed if r.get("top1_pct") is not None]
    if len(rows) < 2:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4.6))
    series = [k for k in comparison.by if k == "model"]
    label_keys = [k for k in comparison.by if k != "model"]
    for name in sorted({r.get(series[0], "") for r in rows} if series else {""}):
        points = [r for r in rows if not series or r[series[0]] == name]
        axis.scatter([r["p50_ms"] for r in points], [r["top1_pct"] for r in points], s=40, label=name or None)
        for index, r in enumerate(points):
            label = ", ".join(str(r[k]) for k in label_keys) or str(r.get("model", ""))
            # Alternate the label above and below its point: neighbours with close latencies stay readable.
            axis.annotate(label, (r["p50_ms"], r["top1_pct"]), fontsize=7, xytext=(4, 6 if index % 2 else -10),
                          textcoords="offset points")
    axis.set_xlabel("p50 latency (ms)")
    axis.set_ylabel("top-1 accuracy on the board (%)")
    axis.grid(alpha=0.3)
    if series:
        axis.legend(fontsize=8, title="model")
    axis.set_title(f"Speed against top-1 accuracy: the {len(rows)} of {len(timed)} groups with a labelled dataset\n"
                   f"(one point per group: {', '.join(comparison.by)})", fontsize=10)
    return _png(figure)


def operator_plot(documents: list[dict]) -> str | None:
    """Top operators by total time, from the profile pass of the newest run that has one."""
    from .view import Result

    profiled = [r for r in map(Result, documents) if r.top_operators]
    if not profiled:
        return None
    result = max(profiled, key=lambda r: r.created_at or "")
    top = result.top_operators[:15]
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 0.35 * len(top) + 1.2))
    names = [f"{op['op_type']}" + (f" ({op['node']})" if op.get("node") else "") for op in top][::-1]
    axis.barh(names, [op["total_us"] / 1000 for op in top][::-1], color="#3466a4")
    axis.set_xlabel("total time in the profile pass (ms)")
    axis.tick_params(axis="y", labelsize=7)
    axis.set_title(f"Per-operator time: {result.model_name} on {result.target_name}")
    return _png(figure)


def _scenario_repeats(documents: list[dict], name: str) -> list[tuple[str, dict]]:
    """('MODEL on TARGET', repeat) of every repeat of an ok run of one scenario."""
    from .view import Result

    return [(f"{d.model_name} on {d.target_name}", r) for d in map(Result, documents) if d.status == "ok"
            for r in d.repeats if (r.get("scenario") or {}).get("name") == name]


def qps_plot(documents: list[dict]) -> str | None:
    """Server runs: p99 ES (early-stopping bound) latency against the offered QPS, from every probe of a QPS search and every fixed-rate run,
    one line per model and board, with the latency bounds asked for."""
    points: dict[str, list] = {}
    bounds = set()
    from ..agentlib import early_stopping_or_max

    for label, repeat in _scenario_repeats(documents, "server"):
        block = repeat["scenario"]
        for probe in block.get("probes") or []:
            points.setdefault(label, []).append((probe["qps"], probe["p99_ns"] / 1e6, probe["met"]))
        # The search's probes are judged by LoadGen's early-stopping p99 (the maximum when too short to bound it):
        # a fixed-rate run is drawn by the same rule.
        p99_es = early_stopping_or_max(sorted(repeat.get("samples_ns") or []), 0.99)
        if p99_es is not None and block.get("qps") is not None:
            points.setdefault(label, []).append((block["qps"], p99_es / 1e6, None))
        if block.get("latency_bound_s"):
            bounds.add(block["latency_bound_s"] * 1e3)
    if not points:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4.2))
    for label, values in sorted(points.items())[:MAX_GROUPS_PLOTTED]:
        values.sort()
        axis.plot([v[0] for v in values], [v[1] for v in values], marker="o", markersize=3, linewidth=1, label=label)
        missed = [v for v in values if v[2] is False]
        axis.scatter([v[0] for v in missed], [v[1] for v in missed], marker="x", color="#b3261e", zorder=3)
    for bound in sorted(bounds):
        axis.axhline(bound, color="#b3261e", linestyle="--", linewidth=0.8)
    axis.set_yscale("log")
    axis.set_xlabel("offered load (queries per second, Poisson arrivals)")
    axis.set_ylabel("p99 ES latency incl. queueing (ms; max when too few queries)")
    axis.set_title("Server scenario: latency against load (x: a probe that missed the bound; dashed: the bound)",
                   fontsize=10)
    axis.legend(fontsize=8)
    return _png(figure)


def throughput_plot(documents: list[dict]) -> str | None:
    """Offline runs: inferences per second, one bar per model, board and worker count."""
    bars: dict[str, list] = {}
    for run, repeat in _scenario_repeats(documents, "offline"):
        block = repeat["scenario"]
        if not (block.get("samples") and block.get("wall_ns")):
            continue  # a file from elsewhere without the figures
        label = f"{run}, {block.get('concurrency')} worker(s)"
        bars.setdefault(label, []).append(block["samples"] * 1e9 / max(block["wall_ns"], 1))
    if not bars:
        return None
    plt = _pyplot()
    labels = sorted(bars)[:MAX_GROUPS_PLOTTED]
    figure, axis = plt.subplots(figsize=(8, 0.4 * len(labels) + 1.2))
    axis.barh(labels, [float(np.mean(bars[label])) for label in labels], color="#3466a4")
    axis.set_xlabel("inferences per second (offline scenario: all samples at once)")
    axis.tick_params(axis="y", labelsize=8)
    return _png(figure)


def energy_plot(comparison: Comparison) -> str | None:
    """Energy per inference against latency: a point per group that measured energy, one series per scope (a wall
    meter and a CPU package are never drawn as one series)."""
    rows = [r for r in comparison.rows if r.get("mj_per_inference") is not None and r.get("p50_ms") is not None]
    if not rows:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4.6))
    for scope in sorted({r["energy_scope"] for r in rows}):
        points = [r for r in rows if r["energy_scope"] == scope]
        axis.scatter([r["p50_ms"] for r in points], [r["mj_per_inference"] for r in points], s=40, label=scope)
        for r in points:
            axis.annotate(" / ".join(str(r[k]) for k in comparison.by), (r["p50_ms"], r["mj_per_inference"]),
                          fontsize=7, xytext=(4, 4), textcoords="offset points")
    axis.set_xlabel("p50 latency (ms)")
    axis.set_ylabel("energy per inference (mJ)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, title="energy scope")
    axis.set_title("Energy against latency (one point per group)", fontsize=10)
    return _png(figure)


# Stacked-bar colours of a pipeline's stages, in order (load, preprocess, inference, postprocess).
STAGE_COLOURS = ("#9db4d3", "#e0a458", "#3466a4", "#7fb77e")


def stage_plot(comparison: Comparison) -> str | None:
    """End-to-end pipelines: one stacked bar per group, each stage's median (ms), so the cost of decode and
    resize shows beside the model's."""
    from ..agentlib import STAGES

    rows = [r for r in comparison.rows if all(r.get(f"{stage}_ms") is not None for stage in STAGES)][:MAX_GROUPS_PLOTTED]
    if not rows:
        return None
    plt = _pyplot()
    labels = [" / ".join(str(r[k]) for k in comparison.by) for r in rows]
    figure, axis = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6))
    left = np.zeros(len(rows))
    for stage, colour in zip(STAGES, STAGE_COLOURS):
        widths = np.array([r[f"{stage}_ms"] for r in rows])
        axis.barh(labels, widths, left=left, color=colour, label=stage)
        left += widths
    axis.set_xlabel("median time per sample (ms), stage by stage")
    axis.tick_params(axis="y", labelsize=8)
    axis.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35), frameon=False)
    axis.set_title("End-to-end pipelines: where a sample's time goes", fontsize=10)
    return _png(figure)


def runtime_tables(documents: list[dict]) -> list[str]:
    """'Which runtime wins': per model and board measured with several runtimes, fastest first, accuracy beside."""
    ranking = runtime_ranking(documents)
    if not ranking:
        return []
    parts = ["<h2>Runtimes, fastest first</h2>"]
    for group in ranking:
        rows = []
        for rank, row in enumerate(group["runtimes"], 1):
            top1 = "-" if row["top1_pct"] is None else f"{row['top1_pct']:.2f}"
            failed = " slower" if row["accuracy"] == "FAIL" else ""
            rows.append(f"<tr><td>{rank}</td><td class='text'>{html.escape(row['runtime'])} "
                        f"{html.escape(str(row['version'] or ''))}</td><td>{row['p50_ms'] * 1e3:.2f}</td>"
                        f"<td>{row['vs_fastest']:.2f}&times;</td><td class='text{failed}'>{row['accuracy']}</td>"
                        f"<td>{top1}</td></tr>")
        parts.append(f"<p>{html.escape(group['model'])} on {html.escape(group['target'])}</p><table><tr><th>#</th>"
                     "<th>runtime</th><th>p50 µs</th><th>× the fastest's p50</th><th>accuracy</th><th>top-1 %</th></tr>"
                     + "".join(rows) + "</table>")
    return parts


def render_html(comparison: Comparison, documents: list[dict], problems: list[str], title: str = "edgebench report") -> str:
    headers, rows = cells(comparison)
    verdict_column = headers.index("vs baseline") if "vs baseline" in headers else None
    text_columns = {i for i, h in enumerate(headers) if h in (*comparison.by, "accuracy", "vs baseline", "MIXED")
                    or h.startswith("p50 95% CI")}
    table = ["<div style='overflow-x:auto'><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>"]
    for row in rows:
        cells_html = []
        for index, cell in enumerate(row):
            css = ["text"] if index in text_columns else []
            if index == verdict_column and cell in ("faster", "slower"):
                css.append(cell)
            cells_html.append(f"<td class='{' '.join(css)}'>{html.escape(cell)}</td>")
        table.append("<tr>" + "".join(cells_html) + "</tr>")
    table.append("</table></div>")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='muted'>{len(documents)} results; grouped by {', '.join(comparison.by)}; metric "
             f"{comparison.metric}" + (f"; baseline {comparison.baseline[0]}={html.escape(str(comparison.baseline[1]))}"
                                       if comparison.baseline else "")
             + f"; made {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by edgebench.</p>"]
    for heading, plot, data in (("Latency", latency_plot, comparison), ("Speed and accuracy", accuracy_plot, comparison),
                                ("Latency under load", qps_plot, documents), ("Throughput", throughput_plot, documents),
                                ("End to end", stage_plot, comparison), ("Energy", energy_plot, comparison),
                                ("Where the time goes", operator_plot, documents)):
        image = drawn(plot, data)
        if image and image.startswith("data:"):
            parts.append(f"<h2>{heading}</h2><img alt='{heading}' src='{image}'>")
        elif image:
            parts.append(f"<h2>{heading}</h2><p class='muted'>{html.escape(image)}</p>")
    parts.extend(runtime_tables(documents))
    parts.append("<h2>Table</h2>" + "".join(table))
    if comparison.regressions:
        parts.append("<h2>Regressions</h2><ul>" + "".join(f"<li class='slower'>{html.escape(r)}</li>" for r in comparison.regressions) + "</ul>")
    if comparison.invalid:
        parts.append("<h2>INVALID runs (left out of the comparison)</h2><ul>" + "".join(
            f"<li>{html.escape(r['model'])} on {html.escape(r['target'])} ({html.escape(r['run_id'])}): "
            f"{html.escape('; '.join(r['reasons']) or 'marked invalid')}</li>" for r in comparison.invalid) + "</ul>")
    if comparison.failed:
        parts.append("<h2>Failed runs</h2><ul>" + "".join(
            f"<li>{html.escape(r['model'])} on {html.escape(r['target'])} ({html.escape(r['run_id'])}): "
            f"{html.escape(r['reason'])}</li>" for r in comparison.failed) + "</ul>")
    if problems:
        parts.append("<h2>Skipped files</h2><ul>" + "".join(f"<li class='muted'>{html.escape(p)}</li>" for p in problems) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
