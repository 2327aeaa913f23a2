"""The demo models, defined in code (no downloads): a small CNN and setnet.

setnet is the field note's model: one input of shape (2, 2, 14, 17) - two samples of a two-channel
14 x 17 grid - and ten scores per sample.
"""

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv + BatchNorm + ReLU blocks and a linear head, on a 3 x 32 x 32 image."""

    input_shape = (1, 3, 32, 32)

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, image):
        return self.head(torch.flatten(self.features(image), 1))


class SetNet(nn.Module):
    """Takes (2, 2, 14, 17): convolutions over the grid, pooled, then ten scores per sample."""

    input_shape = (2, 2, 14, 17)

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 2)),
        )
        self.head = nn.Linear(16 * 2 * 2, classes)

    def forward(self, grid):
        return self.head(torch.flatten(self.conv(grid), 1))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN().eval()


def setnet() -> nn.Module:
    torch.manual_seed(0)
    return SetNet().eval()
