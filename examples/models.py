"""The demo models, defined in code (no downloads): a small CNN and setnet — as a model spec for `bench export`
(`examples/models.py:setnet`). The definitions live in the package (`edgebench.stages.demo`, loaded by path: see
_demo.py), so `bench demo` builds the same models from an installed edgebench.

setnet is the field note's model: one input of shape (2, 2, 14, 17) - two samples of a two-channel
14 x 17 grid - and ten scores per sample.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _demo import load  # noqa: E402

_demo = load()
SetNet, SmallCNN, setnet, small_cnn = _demo.SetNet, _demo.SmallCNN, _demo.setnet, _demo.small_cnn

__all__ = ["SetNet", "SmallCNN", "setnet", "small_cnn"]
