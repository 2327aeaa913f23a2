"""Upload throughput and deploy overhead over loopback SSH (a real sshd started here; needs root).

1. A 100 MB file: edgebench's SFTP upload (SSHTransport.upload) against `scp` to the same sshd.
   Target: >= 0.9x scp's throughput.
2. `bench deploy` wall time minus the time the agent spent measuring, with the agent and the model already
   cached on the board. Target: <= 1.0 s.

    python benchmarks/upload.py [--megabytes 100] [--rounds 3]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks/upload.py starts its own sshd and needs root")

    from edgebench.boards.targets import Target
    from edgebench.boards.transport.ssh import SSHTransport

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        key = keygen(scratch / "id_ed25519")
        server = SshServer.create()
        server.authorize("root", (scratch / "id_ed25519.pub").read_text())
        server.start()
        try:
            known = scratch / "known_hosts"
            known.write_text(server.known_hosts_line())
            payload = scratch / "payload.bin"
            payload.write_bytes(os.urandom(args.megabytes * 2**20))
            target = Target("bench", kind="ssh", host="127.0.0.1", port=server.port, user="root",
                            identity_files=(str(key),), known_hosts=str(known))
            transport = SSHTransport(target)
            remote = scratch / "remote"
            remote.mkdir()
            ours, theirs = [], []
            for index in range(args.rounds):
                start = time.perf_counter()
                transport.upload(payload, str(remote / f"sftp-{index}"))
                ours.append(time.perf_counter() - start)
                start = time.perf_counter()
                subprocess.run(["scp", "-q", "-i", str(key), "-P", str(server.port), "-o", f"UserKnownHostsFile={known}",
                                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", str(payload),
                                f"root@127.0.0.1:{remote / f'scp-{index}'}"], check=True)
                theirs.append(time.perf_counter() - start)
            transport.close()
            mb = args.megabytes * 2**20 / 1e6
            ours_mbs, theirs_mbs = mb / statistics.median(ours), mb / statistics.median(theirs)
            print(f"upload {args.megabytes} MiB over loopback SSH (median of {args.rounds}):")
            print(f"  edgebench SFTP: {ours_mbs:7.1f} MB/s ({statistics.median(ours):.2f} s)")
            print(f"  scp:            {theirs_mbs:7.1f} MB/s ({statistics.median(theirs):.2f} s)")
            print(f"  ratio:          {ours_mbs / theirs_mbs:7.2f}x  (target >= 0.9x)")

            print(f"bench deploy overhead, agent and model cached (wall time minus the agent's run; "
                  f"median of {args.rounds}; target <= 1.0 s):")
            server.authorize(NON_ROOT_USER, (scratch / "id_ed25519.pub").read_text())
            site = board_site_packages(Path(tempfile.gettempdir()) / "edgebench-test-board-python")
            for label, board in (
                (f"{NON_ROOT_USER} (/bin/sh login shell, like a board)",
                 {"user": ensure_user(), "python": "/usr/bin/python3", "env": {"PYTHONPATH": str(site)},
                  "work_dir": "~/.cache/edgebench-benchmark"}),
                ("root (this machine's .bashrc runs `pyenv init`: ~0.1 s per remote command)",
                 {"user": "root", "python": sys.executable, "work_dir": str(scratch / "board")}),
            ):
                overhead = deploy_overhead(server, key, known, scratch, args.rounds, board)
                print(f"  {statistics.median(overhead):.2f} s as {label}")
        finally:
            server.stop()


def deploy_overhead(server, key: Path, known: Path, scratch: Path, rounds: int, board: dict) -> list[float]:
    import yaml

    from tests.models.make_models import build_all

    models = build_all(scratch / "models")
    configs = scratch / "configs"
    configs.mkdir(exist_ok=True)
    (configs / "known_hosts").write_text(known.read_text())
    (configs / "targets.yaml").write_text(yaml.safe_dump({"targets": {"bench": {
        "host": "127.0.0.1", "port": server.port, "identity_file": str(key), **board}}}))
    env = {**os.environ, "EDGEBENCH_CACHE": str(scratch / f"host-cache-{board['user']}")}
    argv = [sys.executable, "-m", "edgebench", "deploy", str(models["matmul"]), "--target", "bench",
            "--inventory", str(configs / "targets.yaml"), "--results", str(scratch / "results"),
            "--min-seconds", "0.5", "--warmup", "5"]
    subprocess.run(argv, check=True, capture_output=True, env=env)  # first deploy: uploads the agent and the model
    overheads = []
    for _ in range(rounds):
        before = set((scratch / "results").glob("*.json"))
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        wall = time.perf_counter() - start
        (path,) = set((scratch / "results").glob("*.json")) - before
        measurements = json.loads(path.read_text())["measurements"]
        ran = (datetime.fromisoformat(measurements["finished_at"]) - datetime.fromisoformat(measurements["started_at"]))
        overheads.append(wall - ran.total_seconds())
    return overheads


if __name__ == "__main__":
    main()
