"""One pass rule for outputs: validate's parity, convert's variant check and deploy's accuracy verdict agree."""

from __future__ import annotations

import numpy as np
import pytest

from edgebench.stages.accuracy import AccuracyPlan, result_block
from edgebench.models.parity import compare_output
from edgebench_agent.shared.metrics import compare_arrays, output_passes

REFERENCE = np.linspace(-1.0, 1.0, 20, dtype=np.float32).reshape(2, 10)
CASES = {
    "equal": (REFERENCE.copy(), True, True),
    "within tolerance": (REFERENCE + 1e-6, True, True),
    "beyond tolerance, same direction": (REFERENCE * 1.05, False, True),
    "NaN where the reference is finite": (np.where(REFERENCE > 0.9, np.nan, REFERENCE).astype(np.float32), False, False),
    "other shape": (REFERENCE.reshape(4, 5), False, False),
}


@pytest.mark.parametrize("case", CASES)
def test_every_stage_judges_an_output_by_the_same_rule(case):
    actual, passes, passes_by_cosine = CASES[case]
    metrics = compare_arrays(REFERENCE, actual, 1e-4, 1e-3)
    assert output_passes(metrics) is passes
    # a NaN never passes, even where a quantized variant is judged by direction only
    assert output_passes(metrics, min_cosine=0.98) is passes_by_cosine
    assert bool(compare_output("y", REFERENCE, actual, 1e-4, 1e-3)) is passes  # bench validate
    plan = AccuracyPlan("generated", ["x"], ["y"], [], 1)
    block = result_block(plan, {"outputs": [{"name": "y", **metrics}]}, "host")  # bench deploy --accuracy
    assert block["passed"] is passes
    quantized = result_block(plan, {"outputs": [{"name": "y", **metrics}]}, "host", min_cosine=0.98)
    assert quantized["passed"] is passes_by_cosine
