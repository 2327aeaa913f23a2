"""Load scenarios on the built-in `local` target (examples/cnn.onnx), through the real agent.

1. Server at 1,000 QPS: the issuer thread's lateness (issue delay p99). Target: <= 50 µs. onnxruntime gets one
   thread fewer than the cores, so the issuer has a core (the result warns when it had none).
2. `--qps auto --latency-bound B`: the QPS found, then the server scenario rerun at that QPS (must meet B) and
   at +10 % (expected to miss it), in the same benchmark run.

    python benchmarks/scenarios.py [--seconds 5] [--bound-ms 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "cnn.onnx"


def server_p99_ms(eb, folder: Path, scenario: dict, seconds: float, threads: int) -> tuple[float, dict]:
    """(early-stopping p99 in ms, the repeat's scenario block) of one server run."""
    from edgebench.results.report import run_row

    deployment = eb.deploy(MODEL, results=folder, scenario=scenario, threads=threads, min_seconds=seconds,
                           max_seconds=max(60.0, seconds * 3), warmup_min_iterations=50)
    deployment.raise_for_problems()
    (document,) = deployment.documents
    row = run_row(document)
    return row["p99_es_ms"] or row["p99_ms"], document["measurements"]["repeats"][0]["scenario"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--bound-ms", type=float, default=1.0)
    args = parser.parse_args()
    import edgebench.api as eb
    from edgebench_agent.shared.quantiles import percentile

    threads = max(1, (os.cpu_count() or 2) - 1)
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        _, block = server_p99_ms(eb, base / "1000", {"name": "server", "qps": 1000}, args.seconds, threads)
        delays = sorted(block["issue_delays_ns"])
        p99 = percentile(delays, 0.99) / 1e3
        print(f"server at 1000 QPS ({threads} onnxruntime thread(s)): issue delay p50 {delays[len(delays) // 2] / 1e3:.1f} µs, "
              f"p99 {p99:.1f} µs over {len(delays)} queries (target p99 <= 50 µs); achieved {block['achieved_qps']:.1f} QPS")

        bound = args.bound_ms / 1e3
        _, found = server_p99_ms(eb, base / "auto", {"name": "server", "qps": "auto", "latency_bound_s": bound},
                                 args.seconds, threads)
        qps = found["qps"]
        probes = ", ".join("%.0f%s" % (p["qps"], "+" if p["met"] else "-") for p in found["probes"])
        print(f"qps auto, p99 bound {args.bound_ms:g} ms: {qps:.1f} QPS after {len(found['probes'])} probes ({probes})")
        at, _ = server_p99_ms(eb, base / "at", {"name": "server", "qps": qps}, args.seconds, threads)
        above, _ = server_p99_ms(eb, base / "above", {"name": "server", "qps": qps * 1.1}, args.seconds, threads)
        print(f"  rerun at {qps:.1f} QPS: p99 {at:.3f} ms ({'meets' if at <= args.bound_ms else 'MISSES'} the bound)")
        print(f"  rerun at {qps * 1.1:.1f} QPS (+10 %): p99 {above:.3f} ms "
              f"({'misses, as expected' if above > args.bound_ms else 'still meets it'})")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "host"))
    main()
