"""The demo models, defined in code (no downloads): a small CNN and setnet — as a model spec for `bench export`
(`examples/models.py:setnet`). The definitions live in the package (`edgebench.demo`), so `bench demo` builds the
same models from an installed edgebench.

setnet is the field note's model: one input of shape (2, 2, 14, 17) - two samples of a two-channel
14 x 17 grid - and ten scores per sample.
"""

from edgebench.demo import SetNet, SmallCNN, setnet, small_cnn

__all__ = ["SetNet", "SmallCNN", "setnet", "small_cnn"]
