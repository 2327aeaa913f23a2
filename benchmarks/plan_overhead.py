"""What a plan pays per cell beyond the agent's own runs, over loopback SSH (a real sshd started here; needs root).

An 8-cell plan (two tiny models x four thread counts) on one SSH board; the agent and the models are uploaded by a
first run, then `bench run --force` is timed. Per-cell overhead = (the plan's wall time - the sum of the agent's
own run durations, from each result's started_at/finished_at) / cells. The board is a non-root user with a
/bin/sh login shell (like a Pi), or with --arm64 the emulated aarch64 Pi (qemu: its Python start is the cost).

    python benchmarks/plan_overhead.py [--rounds 3] [--arm64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.sshd import NON_ROOT_USER, SshServer, board_site_packages, ensure_user, keygen  # noqa: E402

THREADS = [1, 2, 3, 4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arm64", action="store_true", help="the emulated aarch64 Pi (scripts/build_arm64_board.py)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks/plan_overhead.py starts its own sshd and needs root")
    import yaml

    from tests.models.make_models import build_all

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        key = keygen(scratch / "id_ed25519")
        server = SshServer.create()
        server.start()
        try:
            if args.arm64:
                arm = Path(os.environ.get("EDGEBENCH_ARM64_BOARD", "/var/cache/edgebench/arm64-board"))
                server.authorize("root", (scratch / "id_ed25519.pub").read_text())
                board = {"user": "root", "python": str(arm / "bin" / "python3"), "work_dir": str(scratch / "board")}
                label = "the emulated aarch64 Pi (qemu)"
            else:
                server.authorize(NON_ROOT_USER, (scratch / "id_ed25519.pub").read_text())
                site = board_site_packages(Path(tempfile.gettempdir()) / "edgebench-test-board-python")
                board = {"user": ensure_user(), "python": "/usr/bin/python3", "env": {"PYTHONPATH": str(site)},
                         "work_dir": "~/.cache/edgebench-plan-benchmark"}
                label = f"{NON_ROOT_USER} over loopback SSH (/bin/sh login shell)"
            configs = scratch / "configs"
            configs.mkdir()
            (configs / "known_hosts").write_text(server.known_hosts_line())
            (configs / "targets.yaml").write_text(yaml.safe_dump({"targets": {"bench": {
                "host": "127.0.0.1", "port": server.port, "identity_file": str(key), **board}}}))
            models = build_all(scratch / "models")
            plan = {"name": "overhead", "targets": ["bench"],
                    "models": [{"name": "matmul", "path": str(models["matmul"])},
                               {"name": "identity", "path": str(models["identity_float32"])}],
                    "settings": {"threads": THREADS, "warmup": 5, "min_iterations": 20, "min_seconds": 0.3,
                                 "max_seconds": 5}}
            (scratch / "plan.yaml").write_text(yaml.safe_dump(plan))
            env = {**os.environ, "EDGEBENCH_CACHE": str(scratch / "host-cache")}
            argv = [sys.executable, "-m", "edgebench", "run", str(scratch / "plan.yaml"), "--inventory",
                    str(configs / "targets.yaml"), "--force"]
            cells = 2 * len(THREADS)
            subprocess.run([*argv, "--results", str(scratch / "warm")], check=True, capture_output=True, env=env)
            per_cell = []
            for round_index in range(args.rounds):
                results = scratch / f"r{round_index}"
                start = time.perf_counter()
                subprocess.run([*argv, "--results", str(results)], check=True, capture_output=True, env=env)
                wall = time.perf_counter() - start
                ran = 0.0
                for path in results.glob("*.json"):
                    measurements = json.loads(path.read_text())["measurements"]
                    ran += (datetime.fromisoformat(measurements["finished_at"])
                            - datetime.fromisoformat(measurements["started_at"])).total_seconds()
                per_cell.append((wall - ran) / cells)
                print(f"  round {round_index + 1}: wall {wall:.2f} s, agent runs {ran:.2f} s, "
                      f"{per_cell[-1]:.3f} s per cell")
            print(f"plan overhead per cell, {cells}-cell plan, {label}: median {statistics.median(per_cell):.3f} s "
                  f"over {args.rounds} rounds (target <= 0.25 s over loopback SSH)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
