"""`bench demo`: the README's demo from an installed package — example models built in a folder it names, measured
on the built-in `local` target, then compared.

The models are defined here in code (no downloads): a small CNN and setnet (one `(2, 2, 14, 17)` input, ten scores
per sample), exported with torch; and a tiny CNN trained on scikit-learn's bundled digits (8 x 8 images), when
scikit-learn is installed (`pip install 'edgebench[examples]'`), so the demo shows real top-1 accuracy.
`examples/` in a checkout builds the same models through this module. Importing it imports torch: the CLI imports
it only inside `bench demo`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

DIGITS_TEST_SAMPLES = 360


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


class DigitsCNN(nn.Module):
    """The digits classifier: [batch, 1, 8, 8] -> ten scores."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, image):
        return self.head(torch.flatten(self.features(image), 1))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN().eval()


def setnet() -> nn.Module:
    torch.manual_seed(0)
    return SetNet().eval()


EXAMPLES = {"cnn": (small_cnn, "image"), "setnet": (setnet, "grid")}


def _export(model: nn.Module, example: tuple, path: Path, input_name: str, dynamic: dict | None = None) -> Path:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # One self-contained file (the dynamo exporter would write a .onnx.data sidecar otherwise).
        torch.onnx.export(model, example, str(path), input_names=[input_name], output_names=["scores"],
                          dynamic_axes=dynamic, dynamo=True, external_data=False, verbose=False)
    return path


def export_example(name: str, folder: Path) -> Path:
    """cnn.onnx or setnet.onnx in folder (seeded: the same bytes every time)."""
    factory, input_name = EXAMPLES[name]
    model = factory()
    shape: tuple = getattr(model, "input_shape")  # (a class attribute of both example models)
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    folder.mkdir(parents=True, exist_ok=True)
    return _export(model, (example,), folder / f"{name}.onnx", input_name)


def digits_split(seed: int = 0):
    """((train images, labels), (test images, labels)) of scikit-learn's bundled digits, scaled to [0, 1]."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    test, train = order[:DIGITS_TEST_SAMPLES], order[DIGITS_TEST_SAMPLES:]
    return (images[train], labels[train]), (images[test], labels[test])


def train_digits(folder: Path, epochs: int = 40, seed: int = 0) -> tuple[Path, Path, float]:
    """digits.onnx (input `image` [batch, 1, 8, 8]) and digits_test.npz (the held-out split: `image`, `labels`) in
    folder, and PyTorch's top-1 accuracy on that split. Seeded and CPU-only: a few seconds."""
    import numpy as np

    torch.manual_seed(seed)
    (x_train, y_train), (x_test, y_test) = digits_split(seed)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = _export(model, (torch.from_numpy(x_test[:4]),), folder / "digits.onnx", "image",
                        {"image": {0: "batch"}, "scores": {0: "batch"}})
    np.savez(folder / "digits_test.npz", image=x_test, labels=y_test)
    return onnx_path, folder / "digits_test.npz", accuracy


def has_digits() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def build(folder: Path, say=print) -> dict[str, Path]:
    """The demo's files in folder (made once: kept when there)."""
    made = {}
    for name in EXAMPLES:
        path = folder / f"{name}.onnx"
        made[name] = path if path.is_file() else export_example(name, folder)
    if has_digits():
        if not (folder / "digits.onnx").is_file() or not (folder / "digits_test.npz").is_file():
            _, _, accuracy = train_digits(folder)
            say(f"trained the digits classifier: PyTorch top-1 {100 * accuracy:.2f}% on {DIGITS_TEST_SAMPLES} held-out digits")
        made["digits"], made["digits_test"] = folder / "digits.onnx", folder / "digits_test.npz"
    else:
        say("note: scikit-learn is not installed: the digits model (real top-1 accuracy) is left out; "
            "pip install 'edgebench[examples]' adds it")
    say(f"example models in {folder}: {', '.join(p.name for p in made.values())}")
    return made


def commands(made: dict[str, Path], results: Path) -> list[list[str]]:
    """The README's demo, as `bench` command lines."""
    steps = [["deploy", "--target", "local", str(made["cnn"]), str(made["setnet"]), "--accuracy", "--results", str(results)]]
    if "digits" in made:
        steps.append(["deploy", "--target", "local", str(made["digits"]), "--dim", "batch=1", "--dataset",
                      str(made["digits_test"]), "--results", str(results)])
    steps.append(["compare", str(results)])
    return steps


def run(folder: Path, results: Path, say=print) -> int:
    """Build, measure and compare; each step is the `bench` command a user would type (shown before it runs)."""
    made = build(folder, say)
    for step in commands(made, results):
        say("$ bench " + " ".join(step))
        code = subprocess.run([sys.executable, "-m", "edgebench", *step]).returncode
        if code != 0:
            return code
    return 0
