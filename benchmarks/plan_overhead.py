"""What a plan pays per cell beyond the agent's own runs, over loopback SSH (a real sshd started here; needs root).

An 8-cell plan (the example models cnn and setnet, or --tiny test models, x four thread counts) on one SSH board; the agent and the models are uploaded by a
first run, then `bench run --force` is timed. Per-cell overhead = (the plan's wall time - the sum of the agent's
own run durations, from each result's started_at/finished_at) / cells. The board is a non-root user with a
/bin/sh login shell (like a Pi), or with --arm64 the emulated aarch64 Pi (qemu: its Python start is the cost).

The same plan also runs with EDGEBENCH_WARM_AGENT=0 (every cell a fresh process, as before the warm agent), in
alternating rounds: the overhead of both, and for each cell a Mann-Whitney U test between its latency samples
in fresh and in forked processes (alpha 0.01): a forked cell must measure what a fresh one does.

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
    parser.add_argument("--tiny", action="store_true", help="two ~3 µs test models instead of the examples")
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
            if args.tiny:
                built = build_all(scratch / "models")
                models = {"matmul": built["matmul"], "identity": built["identity_float32"]}
            else:  # the README's example models (about 40 µs each on this host)
                examples = Path(__file__).resolve().parent.parent / "examples"
                models = {"cnn": examples / "cnn.onnx", "setnet": examples / "setnet.onnx"}
            plan = {"name": "overhead", "targets": ["bench"],
                    "models": [{"name": name, "path": str(path)} for name, path in models.items()],
                    "settings": {"threads": THREADS, "warmup": 5, "min_iterations": 20, "min_seconds": 0.3,
                                 "max_seconds": 5}}
            (scratch / "plan.yaml").write_text(yaml.safe_dump(plan))
            env = {**os.environ, "EDGEBENCH_CACHE": str(scratch / "host-cache")}
            argv = [sys.executable, "-m", "edgebench", "run", str(scratch / "plan.yaml"), "--inventory",
                    str(configs / "targets.yaml"), "--force"]
            cells = 2 * len(THREADS)
            subprocess.run([*argv, "--results", str(scratch / "warm")], check=True, capture_output=True, env=env)
            overhead: dict = {"fresh": [], "warm": []}
            samples: dict = {"fresh": {}, "warm": {}}
            run_p50s: dict = {"fresh": {}, "warm": {}}  # one median per process: the unit that forking could shift
            for round_index in range(args.rounds):
                for mode in ("fresh", "warm"):  # alternating: drift in the machine's speed hits both alike
                    results = scratch / f"{mode}{round_index}"
                    mode_env = {**env, "EDGEBENCH_WARM_AGENT": "1" if mode == "warm" else "0"}
                    start = time.perf_counter()
                    subprocess.run([*argv, "--results", str(results)], check=True, capture_output=True, env=mode_env)
                    wall = time.perf_counter() - start
                    ran = 0.0
                    for path in results.glob("*.json"):
                        document = json.loads(path.read_text())
                        measurements = document["measurements"]
                        ran += (datetime.fromisoformat(measurements["finished_at"])
                                - datetime.fromisoformat(measurements["started_at"])).total_seconds()
                        cell = (document["model"]["name"], document["settings"]["intra_op_threads"])
                        run_samples = [s for repeat in measurements["repeats"] for s in repeat["samples_ns"]]
                        samples[mode].setdefault(cell, []).extend(run_samples)
                        run_p50s[mode].setdefault(cell, []).append(statistics.median(run_samples))
                    overhead[mode].append((wall - ran) / cells)
                    print(f"  round {round_index + 1} {mode:5s}: wall {wall:.2f} s, agent runs {ran:.2f} s, "
                          f"{overhead[mode][-1]:.3f} s per cell")
            for mode in ("fresh", "warm"):
                print(f"plan overhead per cell, {cells}-cell plan, {label}, {mode} processes: median "
                      f"{statistics.median(overhead[mode]):.3f} s over {args.rounds} rounds")
            print("  (target <= 0.25 s per cell over loopback SSH; the agent's own run includes its imports when fresh)")
            from edgebench.results.stats import mann_whitney

            print("  per cell, all samples pooled (these differ between any two processes, forked or not: the test "
                  "below compares processes):")
            for cell in sorted(samples["fresh"]):
                fresh, warm = samples["fresh"][cell], samples["warm"][cell]
                _, p_value = mann_whitney(fresh, warm)
                print(f"    {cell[0]} threads={cell[1]}: p50 fresh {statistics.median(fresh) / 1e3:.2f} us, forked "
                      f"{statistics.median(warm) / 1e3:.2f} us, Mann-Whitney p = {p_value:.3g}")
            # Each run's p50 relative to its cell's median run: does a forked process measure differently?
            normalized: dict = {"fresh": [], "warm": []}
            for cell in run_p50s["fresh"]:
                scale = statistics.median(run_p50s["fresh"][cell] + run_p50s["warm"][cell])
                for mode in ("fresh", "warm"):
                    normalized[mode] += [value / scale for value in run_p50s[mode][cell]]
            _, p_value = mann_whitney(normalized["fresh"], normalized["warm"])
            shift = statistics.median(normalized["warm"]) / statistics.median(normalized["fresh"]) - 1
            verdict = "no significant difference" if p_value >= 0.01 else "a significant difference"
            print(f"forked vs fresh processes ({len(normalized['warm'])} runs each, each run's p50 over its cell's "
                  f"median run): median shift {shift:+.2%}, Mann-Whitney p = {p_value:.3g}: {verdict} at alpha 0.01")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
