"""Output comparison: does the exported model compute what the reference computes?

Comparison results are objects: truthy when they pass, and their text says the tolerance that would have
passed (Polygraphy's OutputCompareResult). Tolerances are per output, with a default.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..agentlib import PASS_DEFAULTS

DEFAULT_ATOL = PASS_DEFAULTS["accuracy"]["atol"]
DEFAULT_RTOL = PASS_DEFAULTS["accuracy"]["rtol"]


@dataclass(frozen=True)
class Tolerances:
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    per_output: tuple = ()  # ((output name, atol or None, rtol or None), ...)

    def check_outputs(self, names: list[str], model: str = "the model") -> None:
        """A tolerance for an output the model lacks is a typo that would silently judge nothing: refuse it."""
        from ..errors import InputError

        unknown = [output for output, _, _ in self.per_output if output not in names]
        if unknown:
            raise InputError(f"--atol/--rtol name output {unknown[0]!r}, which {model} does not have",
                             f"its outputs: {', '.join(names)}")

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
    text: bool = False  # string outputs: compared element by element for equality

    @property
    def shape_ok(self) -> bool:
        return tuple(self.expected_shape) == tuple(self.actual_shape)

    def __bool__(self) -> bool:
        from ..agentlib import output_passes

        return output_passes({"expected_shape": list(self.expected_shape), "actual_shape": list(self.actual_shape),
                              "nonfinite": self.nonfinite, "out_of_tolerance_pct": self.out_of_tolerance_pct})

    def __str__(self) -> str:
        if not self.shape_ok:
            return f"{self.name}: shape {list(self.actual_shape)} but the reference has {list(self.expected_shape)}"
        if self.text:
            return (f"{self.name}: every string equal" if self else
                    f"{self.name}: {self.out_of_tolerance_pct:.2f}% of the strings differ from the reference")
        text = (f"{self.name}: max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}, mean abs {self.mean_abs:.3g}, "
                f"cosine {self.cosine:.6f}")
        if self:
            return text + f" (within atol {self.atol:g}, rtol {self.rtol:g})"
        if self.nonfinite:
            return text + f"; {self.nonfinite} NaN/Inf values where the reference is finite"
        return text + (f"; {self.out_of_tolerance_pct:.2f}% of elements beyond atol {self.atol:g}, rtol {self.rtol:g} "
                       f"(would pass with atol {self.needed_atol:.3g})")


def compare_output(name: str, expected, actual, atol: float, rtol: float) -> OutputComparison:
    from ..agentlib import compare_arrays

    metrics = compare_arrays(expected, actual, atol, rtol)
    return OutputComparison(name, tuple(metrics.pop("expected_shape")), tuple(metrics.pop("actual_shape")), **metrics)


def compare_outputs(names: list[str], expected: list, actual: list, tolerances: Tolerances) -> list[OutputComparison]:
    comparisons = []
    for name, e, a in zip(names, expected, actual):
        atol, rtol = tolerances.for_output(name)
        comparisons.append(compare_output(name, e, a, atol, rtol))
    return comparisons
