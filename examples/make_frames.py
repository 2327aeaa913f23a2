"""Write examples/digits_frames/: camera-like frames of held-out digits for the end-to-end pipeline example.

Each 8 x 8 test image of examples/digits_test.npz becomes a 32 x 32 8-bit PGM (P5), named <n>_<label>.pgm so a
person can check the pipeline's answers by eye.

    python examples/make_frames.py [--count 48] [--out DIR]
"""

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SCALE = 4  # 8 x 8 -> 32 x 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--out", type=Path, default=HERE / "digits_frames")
    args = parser.parse_args()
    with np.load(HERE / "digits_test.npz") as data:
        images, labels = data["image"][: args.count, 0], data["labels"][: args.count]
    args.out.mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels)):
        pixels = np.kron(np.round(image * 255), np.ones((SCALE, SCALE))).astype(np.uint8)
        header = b"P5\n# edgebench digits example\n%d %d\n255\n" % (pixels.shape[1], pixels.shape[0])
        (args.out / f"{index:03d}_{label}.pgm").write_bytes(header + pixels.tobytes())


if __name__ == "__main__":
    main()
