"""Train the demo classifier: a tiny CNN on scikit-learn's bundled digits (8 x 8 images, no download).

Writes examples/digits.onnx (input `image` [batch, 1, 8, 8], output `scores` [batch, 10]) and
examples/digits_test.npz (the held-out split: `image` and `labels`), so `make demo` shows real accuracy.
Seeded and CPU-only; takes a few seconds. `DigitsCNN` here is the model spec of the runtime examples
(`examples/train_digits.py:DigitsCNN`); the code lives in `edgebench.stages.demo`, which `bench demo` uses too.

    python examples/train_digits.py [--out DIR] [--epochs 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _demo import load  # noqa: E402

_demo = load()
DIGITS_TEST_SAMPLES, DigitsCNN, train_digits = _demo.DIGITS_TEST_SAMPLES, _demo.DigitsCNN, _demo.train_digits

__all__ = ["DigitsCNN"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    onnx_path, data_path, accuracy = train_digits(args.out, args.epochs)
    print(f"trained {args.epochs} epochs: PyTorch top-1 accuracy {100 * accuracy:.2f}% on {DIGITS_TEST_SAMPLES} held-out digits")
    print(f"wrote {onnx_path} and {data_path}")


if __name__ == "__main__":
    main()
