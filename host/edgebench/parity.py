"""Output comparison: does the exported model compute what the reference computes?

Comparison results are objects: truthy when they pass, and their text says the tolerance that would have
passed (Polygraphy's OutputCompareResult). Tolerances are per output, with a default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3


@dataclass(frozen=True)
class Tolerances:
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    per_output: tuple = ()  # ((output name, atol or None, rtol or None), ...)

    def for_output(self, name: str) -> tuple[float, float]:
        atol, rtol = self.atol, self.rtol
        for output, a, r in self.per_output:
            if output == name:
                atol = a if a is not None else atol
                rtol = r if r is not None else rtol
        return atol, rtol


@dataclass
class OutputComparison:
    name: str
    expected_shape: tuple
    actual_shape: tuple
    atol: float
    rtol: float
    max_abs: float = 0.0
    max_rel: float = 0.0
    mean_abs: float = 0.0
    cosine: float = 1.0
    out_of_tolerance_pct: float = 0.0
    nonfinite: int = 0  # NaN/Inf in the actual output where the expected one is finite
    needed_atol: float = 0.0  # the smallest atol that would pass with this rtol

    @property
    def shape_ok(self) -> bool:
        return tuple(self.expected_shape) == tuple(self.actual_shape)

    def __bool__(self) -> bool:
        return self.shape_ok and self.out_of_tolerance_pct == 0.0 and self.nonfinite == 0

    def __str__(self) -> str:
        if not self.shape_ok:
            return f"{self.name}: shape {list(self.actual_shape)} but the reference has {list(self.expected_shape)}"
        text = (f"{self.name}: max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}, mean abs {self.mean_abs:.3g}, "
                f"cosine {self.cosine:.6f}")
        if self:
            return text + f" (within atol {self.atol:g}, rtol {self.rtol:g})"
        if self.nonfinite:
            return text + f"; {self.nonfinite} NaN/Inf values where the reference is finite"
        return text + (f"; {self.out_of_tolerance_pct:.2f}% of elements beyond atol {self.atol:g}, rtol {self.rtol:g} "
                       f"(would pass with atol {self.needed_atol:.3g})")


def compare_output(name: str, expected, actual, atol: float, rtol: float) -> OutputComparison:
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    result = OutputComparison(name, tuple(expected.shape), tuple(actual.shape), atol, rtol)
    if not result.shape_ok:
        return result
    if expected.size == 0:
        return result
    e = expected.astype(np.float64)
    a = actual.astype(np.float64)
    finite = np.isfinite(e)
    result.nonfinite = int(np.count_nonzero(finite & ~np.isfinite(a)))
    both = finite & np.isfinite(a)
    # Elements non-finite in both (NaN where the reference has NaN) count as agreeing.
    diff = np.where(both, np.abs(a - e), 0.0)
    scale = np.abs(e)
    result.max_abs = float(diff.max())
    result.mean_abs = float(diff[both].mean()) if both.any() else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(both & (scale > 0), diff / scale, 0.0)
    result.max_rel = float(rel.max())
    beyond = diff > atol + rtol * scale
    result.out_of_tolerance_pct = float(100.0 * np.count_nonzero(beyond) / e.size)
    result.needed_atol = float(np.max(diff - rtol * scale)) if beyond.any() else 0.0
    ev, av = e[both].ravel(), a[both].ravel()
    norms = float(np.linalg.norm(ev) * np.linalg.norm(av))
    result.cosine = float(np.dot(ev, av) / norms) if norms > 0 else (1.0 if np.array_equal(ev, av) else 0.0)
    return result


def compare_outputs(names: list[str], expected: list, actual: list, tolerances: Tolerances) -> list[OutputComparison]:
    comparisons = []
    for name, e, a in zip(names, expected, actual):
        atol, rtol = tolerances.for_output(name)
        comparisons.append(compare_output(name, e, a, atol, rtol))
    return comparisons
