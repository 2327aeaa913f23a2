"""The defaults of the analyses over results, in a module light enough for the CLI to import for its help."""

from __future__ import annotations

from typing import NamedTuple


class AnalysisDefaults(NamedTuple):
    """The defaults of every comparison front — `bench compare` and `bench history`, api.compare and api.history,
    the stages and the functions under them — declared once (tests/test_run_options.py fails when a front drifts)."""

    by: tuple = ("model", "variant", "target", "settings")  # what a group is
    alpha: float = 0.01  # significance level of the Mann-Whitney U test
    min_effect: float = 0.02  # the smallest change that counts (2 %)
    compare_metric: str = "auto"  # the scenario's own metric
    history_metric: str = "p50"
    window: int = 5  # runs on each side of a change point that history's test compares


ANALYSIS_DEFAULTS = AnalysisDefaults()
