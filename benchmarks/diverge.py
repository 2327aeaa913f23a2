"""What `bench diverge` costs: board runs and wall time of the bisection against measuring every tensor by its own
cut, and against the naive pass that makes every tensor an output in one run (the way a host-side debugger does it).

For models of growing depth whose INT8 loss has one known cause (tests/models/make_models.outlier_mlp: the last
layer's range is calibrated too low), on the built-in `local` target (or --target NAME with --inventory FILE):

- bisect: board runs against the target of <= 2*log2(matched tensors) + 3, and whether it names the known layer;
- every: one run per matched tensor (the same fidelity as bisect: every cut keeps the runtime's fusions);
- all-outputs: one run, but every tensor kept alive as an output, which changes the fusions the board runs;
  whether it still finds the same first tensor.

The thresholds are --min-cosine 0.95 --min-snr 12 here, not the command's 0.99 and 20 dB: a deep stack of INT8
layers loses about a decibel of SNR per layer on its own (r12 of a 24-layer stack is below 20 dB), and the
question here is the one large loss the model was built with.

    python benchmarks/diverge.py [--depths 6,12,24,32] [--target local] [--inventory FILE]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.models.make_models import outlier_data, outlier_mlp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="6,12,24,32")
    parser.add_argument("--target", default="local")
    parser.add_argument("--inventory", type=Path, default=None)
    parser.add_argument("--min-cosine", type=float, default=0.95)
    parser.add_argument("--min-snr", type=float, default=12.0)
    args = parser.parse_args()

    import onnx

    from edgebench.stages.convert import convert
    from edgebench.stages.diverge import DivergeRequest, Thresholds, diverge

    print(f"{'layers':>6} {'matched':>7} {'method':>11} {'runs':>5} {'target':>7} {'board s':>8} {'wall s':>7} {'its SNR':>7}  first divergence")
    with tempfile.TemporaryDirectory() as scratch:
        for depth in (int(d) for d in args.depths.split(",")):
            folder = Path(scratch) / f"depth{depth}"
            folder.mkdir()
            onnx.save(outlier_mlp(depth=depth, bad=depth - 1), str(folder / "mlp.onnx"))
            calibration, inputs = outlier_data(folder)
            (variant,) = convert(folder / "mlp.onnx", ["int8-static"], folder / "variants", calibration=calibration)
            known = f"layer{depth - 1}/MatMul"
            for method in ("bisect", "every", "all-outputs"):
                started = time.monotonic()
                document = diverge(DivergeRequest(variant.path, inputs=inputs, method=method, target=args.target,
                                                  inventory=args.inventory,
                                                  thresholds=Thresholds(args.min_cosine, args.min_snr)))
                wall = time.monotonic() - started
                matched = document["matched"]
                first = document["first_divergent"]
                named = "names " + known if first and first["nodes"][0] == known else f"MISSES {known}"
                bound = 2 * math.log2(matched) + 3
                print(f"{depth:>6} {matched:>7} {method:>11} {document['board_runs']:>5} "
                      f"{bound if method == 'bisect' else float('nan'):>7.1f} {document['board_seconds']:>8.2f} "
                      f"{wall:>7.2f} {first['snr_db'] if first else float('nan'):>7.2f}  {first['tensor'] if first else '-'} ({named})")


if __name__ == "__main__":
    main()
