"""PyTorch models for the export/validate tests: each one shows one thing tracing or exporting can get wrong.

Used as MODEL_SPECs, e.g. `tests/torch_models.py:branchy`.
"""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from models import SetNet, SmallCNN  # noqa: E402


class Branchy(nn.Module):
    """A data-dependent branch: tracing bakes in the branch the example input took."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1


class Looped(nn.Module):
    """A recurrence over the sequence axis: a Python loop whose length is the input's length.
    Tracing unrolls it for the example's length."""

    def forward(self, x):
        h = torch.zeros_like(x[0])
        for t in range(x.shape[0]):
            h = torch.tanh(x[t] + 0.5 * h)
        return h


class MultiIO(nn.Module):
    """Two inputs, two outputs."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 4)

    def forward(self, features, mask):
        hidden = self.proj(features) * mask
        return hidden.relu(), hidden.sum(dim=-1)


def _seeded(cls):
    torch.manual_seed(0)
    return cls().eval()


def cnn():
    return _seeded(SmallCNN)


def setnet():
    return _seeded(SetNet)


def branchy():
    return Branchy()


def looped():
    return Looped()


def multi_io():
    return _seeded(MultiIO)


def raising():
    raise RuntimeError("the factory needs a GPU")


def needs_a_size(width):  # a factory called with no arguments: the user's TypeError, one line
    return nn.Linear(width, 2)


NOT_CALLABLE = 3


def not_a_module():
    return 42


class TwoHeads(nn.Module):
    """One input, two outputs: a wrong reference for a one-output model."""

    def forward(self, x):
        return x * 2, x.sum(dim=-1)


def two_heads():
    return TwoHeads()
