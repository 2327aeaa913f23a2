"""`bench --help` start-up time against a bare `python -c "import typer"`.

Target: <= 150 ms and <= 1.4x the bare typer import. Medians of --runs alternating runs.

    python benchmarks/cli_start.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def wall_ms(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    bench = [sys.executable, "-m", "edgebench", "--help"]
    typer_only = [sys.executable, "-c", "import typer"]
    wall_ms(bench), wall_ms(typer_only)  # warm the OS file cache
    bench_ms, typer_ms = [], []
    for _ in range(args.runs):
        bench_ms.append(wall_ms(bench))
        typer_ms.append(wall_ms(typer_only))
    b, t = statistics.median(bench_ms), statistics.median(typer_ms)
    print(f"bench --help:         {b:6.1f} ms (median of {args.runs}; target <= 150 ms)")
    print(f"python -c import typer: {t:6.1f} ms")
    print(f"ratio:                {b / t:6.2f}x   (target <= 1.4x)")


if __name__ == "__main__":
    main()
