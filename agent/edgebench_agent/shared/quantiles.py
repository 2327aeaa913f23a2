"""Percentiles of latency samples, plain and with MLPerf LoadGen's early-stopping bound. Standard library only.

Early stopping (MLPerf Inference rules, "early stopping criteria"): with n queries, the reported p-th percentile
is not the plain order statistic but an upper confidence bound for it: the k-th smallest latency, k the
smallest rank with P(Binomial(n, p) < k) >= confidence. Fewer queries give a more pessimistic (higher) rank, so
a short run cannot report a lucky tail; with too few queries there is no bound at all.
"""

import math

EARLY_STOPPING_CONFIDENCE = 0.99


def percentile(sorted_values, fraction):
    """The nearest-rank percentile of ascending values (fraction 0.9 for p90); None for no values."""
    if not sorted_values:
        return None
    rank = max(1, int(math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def early_stopping_rank(n, fraction, confidence=EARLY_STOPPING_CONFIDENCE):
    """The 1-based rank k of the upper confidence bound of the `fraction` quantile among n samples, or None when
    n samples cannot bound it at this confidence (k would exceed n)."""
    if n <= 0:
        return None
    if fraction <= 0.0:
        return 1
    if fraction >= 1.0:
        return None
    log_p, log_q = math.log(fraction), math.log1p(-fraction)
    mean, spread = n * fraction, math.sqrt(n * fraction * (1.0 - fraction))
    start = max(0, int(mean - 10.0 * spread) - 1)  # the binomial's mass below this is negligible (< 1e-20)
    log_n = math.lgamma(n + 1)
    total = 0.0
    for count in range(start, n + 1):
        total += math.exp(log_n - math.lgamma(count + 1) - math.lgamma(n - count + 1) + count * log_p + (n - count) * log_q)
        if total >= confidence:  # P(Bin <= count) >= confidence: the (count + 1)-th smallest bounds the quantile
            return count + 1 if count + 1 <= n else None
    return None


def early_stopping_percentile(sorted_values, fraction, confidence=EARLY_STOPPING_CONFIDENCE):
    """The early-stopping estimate of the percentile (see the module's doc), or None with too few samples."""
    rank = early_stopping_rank(len(sorted_values), fraction, confidence)
    return None if rank is None else sorted_values[rank - 1]


def early_stopping_or_max(sorted_values, fraction, confidence=EARLY_STOPPING_CONFIDENCE):
    """The early-stopping estimate, or the plain maximum when too few samples bound it (a short QPS probe is
    judged by its worst query); None for no values."""
    if not sorted_values:
        return None
    bound = early_stopping_percentile(sorted_values, fraction, confidence)
    return bound if bound is not None else sorted_values[-1]
