"""`bench --help` start-up time against a bare `python -c "import typer"`, and `import edgebench` (and its API)
against a bare `python -c pass`.

Targets: `bench --help` <= 150 ms and <= 1.4x the bare typer import; `import edgebench` and `import edgebench.api`
each <= 50 ms over bare Python. Medians of --runs alternating runs.

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
    commands = {
        "bench --help": [sys.executable, "-m", "edgebench", "--help"],
        "import typer": [sys.executable, "-c", "import typer"],
        "bare python": [sys.executable, "-c", "pass"],
        "import edgebench": [sys.executable, "-c", "import edgebench"],
        "import edgebench.api": [sys.executable, "-c", "import edgebench.api"],
    }
    for command in commands.values():
        wall_ms(command)  # warm the OS file cache
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            times[name].append(wall_ms(command))
    ms = {name: statistics.median(values) for name, values in times.items()}
    print(f"bench --help:           {ms['bench --help']:6.1f} ms (median of {args.runs}; target <= 150 ms)")
    print(f"python -c import typer: {ms['import typer']:6.1f} ms")
    print(f"ratio:                  {ms['bench --help'] / ms['import typer']:6.2f}x   (target <= 1.4x)")
    for name in ("import edgebench", "import edgebench.api"):
        print(f"{name + ':':<24}{ms[name] - ms['bare python']:6.1f} ms over bare Python ({ms['bare python']:.1f} ms) "
              "(target <= 50 ms)")


if __name__ == "__main__":
    main()
