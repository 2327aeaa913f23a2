"""Train the demo classifier: a tiny CNN on scikit-learn's bundled digits (8 x 8 images, no download).

Writes examples/digits.onnx (input `image` [batch, 1, 8, 8], output `scores` [batch, 10]) and
examples/digits_test.npz (the held-out split: `image` and `labels`), so `make demo` shows real accuracy.
Seeded and CPU-only; takes a few seconds.

    python examples/train_digits.py [--out DIR] [--epochs 40]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

TEST_SAMPLES = 360


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, image):
        return self.head(torch.flatten(self.features(image), 1))


def load_split(seed: int = 0):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    test, train = order[:TEST_SAMPLES], order[TEST_SAMPLES:]
    return (images[train], labels[train]), (images[test], labels[test])


def train(epochs: int, seed: int = 0) -> tuple[nn.Module, tuple]:
    torch.manual_seed(seed)
    (x_train, y_train), test = load_split(seed)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(64):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
    return model.eval(), test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    model, (x_test, y_test) = train(args.epochs)
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "digits.onnx"
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x_test[:4]),), str(onnx_path), input_names=["image"],
                          output_names=["scores"], dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}},
                          dynamo=True, external_data=False, verbose=False)
    np.savez(args.out / "digits_test.npz", image=x_test, labels=y_test)
    print(f"trained {args.epochs} epochs: PyTorch top-1 accuracy {100 * accuracy:.2f}% on {len(y_test)} held-out digits")
    print(f"wrote {onnx_path} and {args.out / 'digits_test.npz'}")


if __name__ == "__main__":
    main()
