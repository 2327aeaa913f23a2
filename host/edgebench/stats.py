"""Statistics of latency samples, computed on the host from the raw samples the agent sends."""

from __future__ import annotations

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def all_samples_ns(measurements: dict) -> np.ndarray:
    """Steady-state samples of every repeat, pooled."""
    parts = [np.asarray(r["samples_ns"], dtype=np.int64) for r in measurements["repeats"]]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def summarize_ns(samples_ns) -> dict:
    """n, min, p50/p90/p95/p99, max, mean, std, MAD in milliseconds, and throughput per second."""
    values = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if values.size == 0:
        return {"n": 0}
    p50, p90, p95, p99 = np.percentile(values, PERCENTILES)
    mean = float(values.mean())
    return {
        "n": int(values.size),
        "min_ms": float(values.min()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(values.max()),
        "mean_ms": mean,
        "std_ms": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "mad_ms": float(np.median(np.abs(values - p50))),
        "throughput_per_s": 1000.0 / mean if mean > 0 else float("nan"),
    }
