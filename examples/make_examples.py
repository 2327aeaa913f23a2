"""Build the demo models into examples/: cnn.onnx and setnet.onnx (seeded, so reproducible).

    python examples/make_examples.py [--out DIR]

(`bench demo` builds the same models, from `edgebench.stages.demo`, in a folder it names.)
"""

import argparse
from pathlib import Path

from edgebench.stages.demo import EXAMPLES, export_example


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    for name in EXAMPLES:
        print(f"built {export_example(name, args.out)}")


if __name__ == "__main__":
    main()
