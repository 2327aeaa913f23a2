"""A model whose file also defines example_inputs(): `bench export tests/torch_mlp.py:batch_mlp` needs no --input."""

import torch
from torch import nn


class BatchMLP(nn.Module):
    """Works for any batch size: for dynamic-batch exports."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


def batch_mlp():
    torch.manual_seed(0)
    return BatchMLP().eval()


def example_inputs():
    """Batch of 4: found by `bench export` next to the factory."""
    return (torch.randn(4, 6, generator=torch.Generator().manual_seed(3)),)
