"""Statistics of latency samples, computed on the host from the raw samples the agent sends."""

from __future__ import annotations

import functools
from typing import Final

import numpy as np

from .defaults import ANALYSIS_DEFAULTS

PERCENTILES = (50, 90, 95, 99)
# Every reported latency percentile (tables, verdicts, plots, the index, tune) is the nearest-rank one: the
# smallest sample with at least q % of the samples at or below it, a latency that was measured. It is numpy's
# "inverted_cdf" and the agent's quantiles.percentile, the same number on both sides. The early-stopping
# bound of a load scenario is another statistic and is always named apart ("p99 ES").
PERCENTILE_METHOD: Final = "inverted_cdf"


def percentiles(values, qs, axis=None):
    """Nearest-rank percentiles (qs in 0..100) of samples, the one definition every reported figure uses."""
    return np.percentile(values, qs, axis=axis, method=PERCENTILE_METHOD)


def all_samples_ns(measurements: dict) -> np.ndarray:
    """Steady-state samples of every repeat, pooled."""
    parts = [np.asarray(r["samples_ns"], dtype=np.int64) for r in measurements["repeats"]]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def summarize_ns(samples_ns) -> dict:
    """n, min, p50/p90/p95/p99, max, mean, std, MAD in milliseconds, and throughput per second."""
    values = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if values.size == 0:
        return {"n": 0}
    p50, p90, p95, p99 = percentiles(values, PERCENTILES)
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


# ------------------------------------------------------------------------------------- inference
# Samples within one run are autocorrelated (caches, clocks, the OS), so a test on 100,000 raw samples would
# call every difference "significant". Tests and intervals use a seeded subsample of at most this many per
# side, and a difference must also exceed a minimum effect size to count.
MAX_TEST_SAMPLES = 2000
DEFAULT_ALPHA = ANALYSIS_DEFAULTS.alpha
DEFAULT_MIN_EFFECT = ANALYSIS_DEFAULTS.min_effect
METRICS = ("auto", "p50", "p90", "p99", "mean", "throughput")
# What `auto` compares, by the runs' load scenario (MLPerf's metric for each; a run without one: the median).
# Offline throughput comes from the mean per-sample latency, so it compares runs with the same concurrency.
SCENARIO_METRICS = {None: "p50", "single-stream": "p90", "multi-stream": "p99", "server": "p99", "offline": "throughput"}


def scenario_metric(names: set) -> str:
    """The metric `auto` uses between two groups whose runs have these scenario names (None: no scenario set):
    the scenario's own when they share one, else the median."""
    return SCENARIO_METRICS.get(next(iter(names)), "p50") if len(names) == 1 else "p50"


def subsample(values, limit: int = MAX_TEST_SAMPLES, seed: int = 0) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.size <= limit:
        return values
    return np.random.default_rng(seed).choice(values, size=limit, replace=False)


def metric_value(values, metric: str) -> float:
    """The chosen statistic of latency samples (throughput is per second, from the mean)."""
    values = np.asarray(values, dtype=np.float64)
    if metric == "mean":
        return float(values.mean())
    if metric == "throughput":
        return float(1e9 / values.mean())
    return float(percentiles(values, {"p50": 50, "p90": 90, "p99": 99}[metric]))


def median_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the median from order statistics (binomial, normal approximation)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = ordered.size
    if n == 0:
        return float("nan"), float("nan")
    low, high = median_ranks(n, confidence)
    return float(ordered[low]), float(ordered[high])


def median_ranks(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """The order-statistic ranks (0-based) bounding the median of n values (binomial, normal approximation)."""
    z = _z(confidence)
    return max(int(np.floor(n / 2 - z * np.sqrt(n) / 2)), 0), min(int(np.ceil(n / 2 + z * np.sqrt(n) / 2)), n - 1)


@functools.lru_cache(maxsize=None)
def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def bootstrap_ratio(baseline, candidate, metric: str, rounds: int = 400, confidence: float = 0.95,
                    seed: int = 0) -> tuple[float, float, float, float]:
    """Speed-up of candidate over baseline (>1 = faster), its bootstrap interval, and the two-sided bootstrap
    p-value of "no change": (speed-up, low, high, p)."""
    rng = np.random.default_rng(seed)
    a = subsample(baseline, 1000, seed)
    b = subsample(candidate, 1000, seed + 1)
    ratio = _speedup(metric_value(a, metric), metric_value(b, metric), metric)
    ra = a[rng.integers(0, a.size, size=(rounds, a.size))]
    rb = b[rng.integers(0, b.size, size=(rounds, b.size))]
    if metric in ("mean", "throughput"):
        sa, sb = ra.mean(axis=1), rb.mean(axis=1)
    else:
        q = {"p50": 50, "p90": 90, "p99": 99}[metric]
        sa, sb = percentiles(ra, q, axis=1), percentiles(rb, q, axis=1)
    ratios = sa / sb  # latency ratios: baseline / candidate; throughput ratio is the same (1/mean)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])  # an interval of resampled ratios, not a latency
    # The share of resampled ratios on the far side of 1, both ways (never below one resample's worth).
    p_value = min(1.0, max(2 * min(float(np.mean(ratios >= 1.0)), float(np.mean(ratios <= 1.0))), 1.0 / rounds))
    return ratio, float(low), float(high), p_value


def _speedup(baseline_value: float, candidate_value: float, metric: str) -> float:
    if metric == "throughput":
        return candidate_value / baseline_value
    return baseline_value / candidate_value


def mann_whitney(a, b) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test (normal approximation with tie and continuity correction).

    Returns (U of a, p-value). Ranks are computed on the pooled samples."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        return float("nan"), 1.0
    pooled = np.concatenate([a, b])
    order = np.argsort(pooled, kind="mergesort")
    ranks = np.empty(pooled.size, dtype=np.float64)
    sorted_values = pooled[order]
    # Average ranks of ties.
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [pooled.size]])
    average = (starts + ends + 1) / 2.0  # 1-based average rank of each tie block
    ranks[order] = np.repeat(average, ends - starts)
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    tie_sizes = (ends - starts).astype(np.float64)
    n = n1 + n2
    tie_term = ((tie_sizes ** 3 - tie_sizes).sum()) / (n * (n - 1)) if n > 1 else 0.0
    sigma = np.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term))
    if sigma == 0:
        return float(u1), 1.0
    mu = n1 * n2 / 2.0
    z = (abs(u1 - mu) - 0.5) / sigma
    from math import erfc, sqrt

    return float(u1), float(min(1.0, erfc(max(z, 0.0) / sqrt(2.0))))


def compare_samples(baseline, candidate, metric: str = "p50", alpha: float = DEFAULT_ALPHA,
                    min_effect: float = DEFAULT_MIN_EFFECT, seed: int = 0) -> dict:
    """Is candidate faster or slower than baseline? Both a significant test AND an effect beyond min_effect
    are needed; otherwise the verdict is 'no significant difference'.

    The test: Mann-Whitney U for the median, the mean and throughput (where the whole distribution moves); for a
    tail percentile (p90, p99) the bootstrap of that percentile itself, since a tail that moves alone leaves the
    rank test blind."""
    speedup, low, high, p_value = bootstrap_ratio(baseline, candidate, metric, seed=seed)
    if metric not in ("p90", "p99"):
        a = subsample(baseline, seed=seed)
        b = subsample(candidate, seed=seed + 1)
        _, p_value = mann_whitney(a, b)
    change = 1.0 / speedup - 1.0  # relative change of latency: +0.05 = 5 % slower
    significant = p_value < alpha and abs(change) >= min_effect and not (low <= 1.0 <= high)
    verdict = "no significant difference"
    if significant:
        verdict = "faster" if speedup > 1 else "slower"
    return {"speedup": speedup, "speedup_low": low, "speedup_high": high, "change": change,
            "p_value": p_value, "significant": significant, "verdict": verdict}


# ------------------------------------------------------------------------------------------ sketches
# A run kept in the results index as 101 quantiles (0th to 100th percentile, nearest-rank like the tables) plus exact
# count, sum and sum of squares: a one-run group's p50/p90/p95/p99, mean and std are exact from it; a pooled group's
# percentiles come from the mixture of its runs' quantile functions (within half a percentile rank of each run).
SKETCH_POINTS = 101
_GRID = np.linspace(0.0, 1.0, SKETCH_POINTS)


def sketch_of(samples_ns) -> dict:
    """{n, sum, sumsq, q: 101 quantiles} of raw samples (ns)."""
    values = np.asarray(samples_ns, dtype=np.float64)
    return {"n": int(values.size), "sum": float(values.sum()), "sumsq": float(np.square(values).sum()),
            "q": percentiles(values, np.arange(SKETCH_POINTS)).tolist()}


def sketch_quantile(sketches: list[dict], fractions) -> np.ndarray:
    """Quantiles (ns) of the pooled samples the sketches summarise, at `fractions` in [0, 1]."""
    return _mixture(sketches)(fractions)


def _mixture(sketches: list[dict]):
    """The inverse of the pooled CDF of the sketches (each run weighted by its count), as a function of fractions.
    Each run's 101 quantiles are atoms carrying its count in trapezoid weights (half at the two ends); one sort of
    every atom gives the pooled CDF."""
    if len(sketches) == 1:  # one run: its own quantile function, exact at whole percentiles
        only = np.asarray(sketches[0]["q"], dtype=np.float64)
        return lambda fractions: np.interp(np.atleast_1d(np.asarray(fractions, dtype=np.float64)), _GRID, only)
    quantiles = np.vstack([np.asarray(s["q"], dtype=np.float64) for s in sketches])
    shape = np.full(SKETCH_POINTS, 1.0 / (SKETCH_POINTS - 1))
    shape[0] = shape[-1] = 0.5 / (SKETCH_POINTS - 1)
    weights = np.outer(np.array([s["n"] for s in sketches], dtype=np.float64), shape).ravel()
    values = quantiles.ravel()
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cdf = (np.cumsum(weights) - weights / 2) / weights.sum()  # each atom at the middle of its own mass
    return lambda fractions: np.interp(np.atleast_1d(np.asarray(fractions, dtype=np.float64)), cdf, values)


def sketch_summary(sketches: list[dict]) -> dict:
    """summarize_ns' figures (ms) from sketches: count, mean and std exact; percentiles from the pooled quantile
    function; and the median's interval (median_ci's order-statistic ranks, read from it)."""
    n = sum(s["n"] for s in sketches)
    if n == 0:
        return {"n": 0}
    quantile = _mixture(sketches)
    total = sum(s["sum"] for s in sketches)
    mean = total / n
    variance = (sum(s["sumsq"] for s in sketches) - n * mean * mean) / (n - 1) if n > 1 else 0.0
    low, high = (rank / max(n - 1, 1) for rank in median_ranks(n))
    p50, p90, p95, p99, ci_low, ci_high = quantile([0.5, 0.9, 0.95, 0.99, low, high]) / 1e6
    return {"n": n, "min_ms": min(s["q"][0] for s in sketches) / 1e6, "p50_ms": float(p50), "p90_ms": float(p90),
            "p95_ms": float(p95), "p99_ms": float(p99), "max_ms": max(s["q"][-1] for s in sketches) / 1e6,
            "mean_ms": mean / 1e6, "std_ms": float(np.sqrt(max(variance, 0.0))) / 1e6,
            "throughput_per_s": 1e9 / mean if mean > 0 else float("nan"),
            "ci_low_ms": float(ci_low), "ci_high_ms": float(ci_high)}


def sketch_median_ci(sketches: list[dict], confidence: float = 0.95) -> tuple[float, float]:
    """median_ci's order-statistic ranks, read from the sketches' pooled quantile function (ms)."""
    n = sum(s["n"] for s in sketches)
    if n == 0:
        return float("nan"), float("nan")
    low, high = median_ranks(n, confidence)
    bounds = sketch_quantile(sketches, [low / max(n - 1, 1), high / max(n - 1, 1)]) / 1e6
    return float(bounds[0]), float(bounds[1])


def mann_whitney_small(a, b) -> float:
    """Two-sided exact Mann-Whitney p-value for small samples without ties (history's windows of a few runs, where
    the normal approximation cannot go below ~0.012 with 5 runs a side); mann_whitney's otherwise."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m, n = a.size, b.size
    if m == 0 or n == 0 or m > 25 or n > 25 or np.unique(np.concatenate([a, b])).size < m + n:
        return mann_whitney(a, b)[1]
    u = int((a[:, None] > b[None, :]).sum())
    counts = _u_counts(m, n)
    low = min(u, m * n - u)
    return min(1.0, 2.0 * float(counts[: low + 1].sum()) / float(counts.sum()))


@functools.lru_cache(maxsize=None)
def _u_counts(m: int, n: int) -> np.ndarray:
    """How many arrangements of m and n values give each U (0 .. m*n): the exact null distribution."""
    if m == 0 or n == 0:
        return np.ones(1, dtype=np.int64)
    counts = np.zeros(m * n + 1, dtype=np.int64)
    shorter = _u_counts(m - 1, n)  # the largest value is one of a's: it beats all n of b's
    counts[n: n + shorter.size] += shorter
    other = _u_counts(m, n - 1)  # the largest value is one of b's
    counts[: other.size] += other
    return counts
