"""`bench compare` on 10,000 result files: builds synthetic results (200 samples each, 50 groups) in a temp
folder and times the whole command, process start included. Target: <= 5 s on this 2-core machine.

    python benchmarks/compare_scale.py [--files 10000] [--samples 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.synthetic import lognormal_ns, result, write  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        documents = (result(lognormal_ns(rng, 5.0 + (i % 50) * 0.1, args.samples), run_id=f"run-{i:05d}",
                            model=f"model{i % 10}", target=f"board{(i // 10) % 5}") for i in range(args.files))
        write(folder, documents)
        size = sum(p.stat().st_size for p in folder.iterdir())
        times = {}
        for label, extra in (("table", []), ("with --baseline target=board0", ["--baseline", "target=board0"])):
            walls = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "edgebench", "compare", str(folder), *extra],
                                      capture_output=True, text=True)
                walls.append(time.perf_counter() - start)
                if done.returncode != 0:
                    sys.exit(done.stderr)
            times[label] = sorted(walls)[len(walls) // 2]
    print(f"bench compare over {args.files} result files ({size / 2**20:.0f} MiB, {args.samples} samples each, "
          f"50 groups), median of {args.rounds}:")
    for label, wall in times.items():
        print(f"  {label:32s} {wall:.2f} s  (target <= 5 s)")


if __name__ == "__main__":
    main()
