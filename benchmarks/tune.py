"""What `bench tune` saves: its board time against the exhaustive plan over the same space (every configuration at
full length, with the accuracy pass, one cell at a time as `bench run` measures a plan), and whether it found the
configuration the exhaustive plan ranks first (or one within its 95 % interval over fresh sessions; otherwise how
much slower the pick measured there: near-ties of a few percent can swap between two moments of one board).

For the example models on the built-in `local` target (or --target NAME with --inventory FILE), in the space tune
takes by default: onnxruntime (fp32, fp16, int8-dynamic, int8-static with the digits' data), OpenVINO and ncnn
(fp32), threads 1 to the board's cores. Target: tune <= 40 % of the exhaustive board time.

    python benchmarks/tune.py [--models digits,cnn,setnet] [--target local] [--inventory FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = {
    "digits": dict(model=REPO / "examples" / "digits.onnx", dims={"batch": 1},
                   dataset=REPO / "examples" / "digits_test.npz"),
    "cnn": dict(model=REPO / "examples" / "cnn.onnx"),
    "setnet": dict(model=REPO / "examples" / "setnet.onnx"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,cnn,setnet")
    parser.add_argument("--target", default="local")
    parser.add_argument("--inventory", type=Path, default=None)
    args = parser.parse_args()

    from edgebench.stages.tune import TuneRequest, exhaustive, tune, within_best

    print(f"{'model':<8} {'configs':>7} {'tune s':>7} {'runs':>5} {'exhaustive s':>12} {'runs':>5} {'ratio':>6}  "
          f"pick (its exhaustive rank) / exhaustive first")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            base = dict(MODELS[name], target=args.target, inventory=args.inventory, variants_dir=folder / "variants",
                        plan_out=folder / "plan.yaml")
            searched = tune(TuneRequest(**base, results=folder / "tune"))
            full = exhaustive(TuneRequest(**base, results=folder / "exhaustive"))
            pick = (searched["recommended"] or {}).get("config")
            ranks = [entry["config"] for entry in full["ranking"]]
            rank = ranks.index(pick) + 1 if pick in ranks else None
            values = {entry["config"]: entry["value"] for entry in full["ranking"]}
            gap = (values[pick] / values[ranks[0]] - 1) * 100 if pick in values else float("nan")
            verdict = "same" if rank == 1 else (f"{gap:+.1f} %, " + ("within its CI" if within_best(full, pick)
                                                                     else "outside its CI"))
            print(f"{name:<8} {len(ranks):>7} {searched['board_seconds']:>7.1f} {searched['board_runs']:>5} "
                  f"{full['board_seconds']:>12.1f} {full['board_runs']:>5} "
                  f"{searched['board_seconds'] / full['board_seconds']:>6.0%}  {pick} (#{rank}, {verdict}) / {ranks[0]}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
