"""Compare: result documents into one pandas DataFrame, grouped tables in several formats.

pandas is imported inside the functions: `bench --help` must stay fast.
"""

from __future__ import annotations

import json

from .stats import all_samples_ns, summarize_ns

GROUP_KEYS = ("model", "variant", "target", "settings")
FORMATS = ("table", "csv", "md", "json")

# Columns shown in tables, with their headers.
TABLE_COLUMNS = {
    "model": "model",
    "variant": "variant",
    "size_kib": "KiB",
    "target": "target",
    "settings": "settings",
    "runs": "runs",
    "failed": "failed",
    "n": "n",
    "p50_ms": "p50 ms",
    "p90_ms": "p90 ms",
    "p99_ms": "p99 ms",
    "mean_ms": "mean ms",
    "std_ms": "std ms",
    "throughput_per_s": "inf/s",
    "session_ms": "session ms",
    "first_ms": "first ms",
    "peak_rss_mib": "peak RSS MiB",
    "accuracy": "accuracy",
    "top1_pct": "top-1 %",
}


def settings_label(settings: dict) -> str:
    """Short, stable text for the settings that change what is measured."""
    provider = settings.get("provider", "?").replace("ExecutionProvider", "").lower()
    parts = [provider, f"threads={settings.get('intra_op_threads', 0)}/{settings.get('inter_op_threads', 0)}",
             f"opt={settings.get('graph_optimization_level', 'all')}"]
    if settings.get("dims"):
        parts.append("dims=" + ",".join(f"{k}={v}" for k, v in sorted(settings["dims"].items())))
    return " ".join(parts)


def run_row(document: dict) -> dict:
    """One flat row per result (statistics over the pooled samples of its repeats)."""
    measurements = document.get("measurements") or {}
    ok = document["status"] == "ok" and measurements.get("repeats")
    provenance = document["model"].get("provenance") or {}
    row = {
        "run_id": document["run_id"],
        "created_at": document.get("created_at"),
        # A variant is listed under its parent, so a model and its conversions sit together.
        "model": provenance.get("parent", {}).get("name") or document["model"].get("name"),
        "variant": provenance.get("variant", "original"),
        "size_kib": (document["model"].get("size_bytes") or 0) / 1024,
        "model_sha256": document["model"].get("sha256"),
        "target": document["target"].get("name"),
        "settings": settings_label(document["settings"]),
        "status": document["status"],
        "error": (document.get("error") or {}).get("message"),
    }
    if ok:
        row.update(summarize_ns(all_samples_ns(measurements)))
        repeats = measurements["repeats"]
        row["session_ms"] = sum(r["session_create_ns"] for r in repeats) / len(repeats) / 1e6
        row["first_ms"] = sum(r["first_inference_ns"] for r in repeats) / len(repeats) / 1e6
        peak = (measurements.get("memory") or {}).get("peak_rss_bytes")
        row["peak_rss_mib"] = peak / 2**20 if peak else None
    accuracy = document.get("accuracy")
    if accuracy:
        row["accuracy"] = "PASS" if accuracy["passed"] else "FAIL"
        row["max_abs_diff"] = max((o["max_abs"] for o in accuracy["outputs"]), default=None)
        labels = accuracy.get("labels")
        row["top1_pct"] = labels["board"]["top1_pct"] if labels else None
    return row


def results_frame(documents: list[dict]):
    import pandas as pd

    return pd.DataFrame([run_row(d) for d in documents])


def grouped(documents: list[dict]):
    """One row per model x target x settings; latency statistics over all samples of the group's ok runs."""
    import numpy as np
    import pandas as pd

    groups: dict[tuple, list[dict]] = {}
    for document in documents:
        row = run_row(document)
        groups.setdefault(tuple(row[k] for k in GROUP_KEYS), []).append((row, document))
    rows = []
    for key, members in sorted(groups.items(), key=lambda item: tuple(str(k) for k in item[0])):
        ok = [(r, d) for r, d in members if r["status"] == "ok" and "n" in r]
        row = dict(zip(GROUP_KEYS, key), runs=len(members), failed=len(members) - len(ok),
                   size_kib=members[0][0]["size_kib"])
        if ok:
            pooled = np.concatenate([all_samples_ns(d["measurements"]) for _, d in ok])
            row.update(summarize_ns(pooled))
            for column in ("session_ms", "first_ms", "peak_rss_mib", "top1_pct"):
                values = [r[column] for r, _ in ok if r.get(column) is not None]
                row[column] = float(np.mean(values)) if values else None
            verdicts = [r["accuracy"] for r, _ in ok if r.get("accuracy")]
            row["accuracy"] = ("FAIL" if "FAIL" in verdicts else "PASS") if verdicts else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=[c for c in TABLE_COLUMNS if c in frame.columns or c in GROUP_KEYS])


def render(frame, fmt: str) -> str:
    """csv, md or json text of a table (the rich table is drawn by the CLI)."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(frame.to_json(orient="records")), indent=1)
    if fmt == "md":
        return markdown_table(frame)
    raise ValueError(fmt)


def formatted_cells(frame) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells, numbers rounded for people."""
    headers = [TABLE_COLUMNS.get(c, c) for c in frame.columns]
    cells = []
    for record in frame.itertuples(index=False):
        cells.append([format_cell(v) for v in record])
    return headers, cells


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


def markdown_table(frame) -> str:
    headers, cells = formatted_cells(frame)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"
