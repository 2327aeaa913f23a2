"""Build the demo models into examples/: cnn.onnx and setnet.onnx (seeded, so reproducible).

    python examples/make_examples.py [--out DIR]
"""

import argparse
import logging
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import setnet, small_cnn  # noqa: E402

BUILDERS = {
    "cnn": (small_cnn, "image"),
    "setnet": (setnet, "grid"),
}


def export(name: str, out_dir: Path) -> Path:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" noise
    factory, input_name = BUILDERS[name]
    model = factory()
    example = torch.randn(*model.input_shape, generator=torch.Generator().manual_seed(1))
    path = out_dir / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # One self-contained file (the dynamo exporter would write a .onnx.data sidecar otherwise).
        torch.onnx.export(model, (example,), str(path), input_names=[input_name], output_names=["scores"],
                          dynamo=True, external_data=False, verbose=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    for name in BUILDERS:
        print(f"built {export(name, args.out)}")


if __name__ == "__main__":
    main()
