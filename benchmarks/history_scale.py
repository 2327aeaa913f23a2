"""The results index at scale: `bench compare` and `bench history` over 100,000 result files.

Builds synthetic results (1,000 samples each, and every 100th file 100,000 samples: 50 groups, one run per night
per group) in a folder, then times, each as a fresh process with its peak memory (ru_maxrss of the child):
  - the first `bench index` (every file read once),
  - `bench compare` with a warm index, and with --baseline (raw samples read for the tested groups only),
  - `bench history` with a warm index,
  - adding 100 new files, then `bench index`.
Targets: compare <= 5 s and <= 1 GiB with a warm index; adding 100 files <= 1 s.

    python benchmarks/history_scale.py [--files 100000] [--folder DIR]   (about 1.5 GB of files)
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.synthetic import lognormal_ns, result  # noqa: E402

GROUPS = 50


def make(folder: Path, start: int, count: int, rng) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    day0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    for i in range(start, start + count):
        samples = 100_000 if i % 100 == 0 else 1_000
        document = result(lognormal_ns(rng, 5.0 + (i % GROUPS) * 0.1, samples), run_id=f"run-{i:06d}",
                          model=f"model{i % 10}", target=f"board{(i // 10) % 5}")
        document["created_at"] = (day0 + datetime.timedelta(hours=i // GROUPS)).isoformat(timespec="seconds")
        (folder / f"run-{i:06d}.json").write_text(json.dumps(document, separators=(",", ":")))


def timed(*args: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of `python -m edgebench ARGS` as a fresh process (its own rusage: wait4)."""
    import os

    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "edgebench", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        sys.exit(child.stderr.read().decode() if child.stderr else "failed")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folder", type=Path, default=None, help="keep the files here (default: a temp folder)")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="edgebench-history-"))
    rng = np.random.default_rng(0)
    try:
        if not any(folder.glob("*.json")):
            start = time.perf_counter()
            make(folder, 0, args.files, rng)
            print(f"made {args.files} result files in {time.perf_counter() - start:.0f} s "
                  f"({sum(p.stat().st_size for p in folder.glob('*.json')) / 2**30:.2f} GiB)")
        shutil.rmtree(folder / ".edgebench", ignore_errors=True)
        wall, peak = timed("index", str(folder))
        print(f"first bench index (every file read once)      {wall:7.2f} s   peak RSS {peak:7.0f} MiB")
        for label, extra in (("bench history", ["history", str(folder), "--format", "json", "-o", str(folder / ".h.json")]),
                             ("bench compare (warm index)", ["compare", str(folder)]),
                             ("bench compare --baseline target=board0", ["compare", str(folder), "--baseline", "target=board0"])):
            wall, peak = timed(*extra)
            print(f"{label:46s} {wall:7.2f} s   peak RSS {peak:7.0f} MiB")
        make(folder, args.files, 100, rng)
        wall, peak = timed("index", str(folder))
        print(f"adding 100 new files (bench index)             {wall:7.2f} s   peak RSS {peak:7.0f} MiB (process start "
              "included)")
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
