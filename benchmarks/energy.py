"""Energy pass cost: the model's latency in the energy pass (power read at 10 Hz) against the timing pass's, in the
same runs on `local`, with a fixture power sensor (an INA226 through hwmon: the same sysfs reads a board does).

Each round is one agent run (timing pass, then energy pass, one process, one thread for onnxruntime); the figure is
the median over rounds of (energy-pass mean latency / timing-pass mean latency - 1). Target: <= 1 %.

    python benchmarks/energy.py [--rounds 7] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edgebench-energy-"))
    sensor = root / "sys/class/hwmon/hwmon0"
    sensor.mkdir(parents=True)
    (sensor / "name").write_text("ina226\n")
    (sensor / "power1_input").write_text("4500000\n")
    os.environ["EDGEBENCH_SYSROOT"] = str(root)

    from edgebench_agent.protocol import normalize_run_request
    from edgebench_agent.runner import run_benchmark

    request = normalize_run_request({"model": str(EXAMPLES / "cnn.onnx"), "intra_op_threads": 1,
                                     "min_seconds": args.seconds, "max_iterations": 10**7,
                                     "energy": {"seconds": args.seconds, "idle_seconds": 0.2, "rate_hz": 10.0}})
    costs = []
    for _ in range(args.rounds):
        reply = run_benchmark(request)
        samples = reply["repeats"][0]["samples_ns"]
        timing_us = sum(samples) / len(samples) / 1e3
        energy = reply["energy"]
        energy_us = (energy["load"][1] - energy["load"][0]) / energy["inferences"] * 1e6
        costs.append(energy_us / timing_us - 1)
        print(f"timing pass {timing_us:7.2f} us/inference   energy pass {energy_us:7.2f} us/inference   "
              f"{len(energy['readings'])} power readings   cost {100 * costs[-1]:+.2f} %")
    print(f"median cost of sampling power at 10 Hz: {100 * statistics.median(costs):+.2f} % of latency (target <= 1 %)")


if __name__ == "__main__":
    main()
