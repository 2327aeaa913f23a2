"""Build an emulated aarch64 board (a Raspberry Pi 4 stand-in): qemu-user, Debian's arm64 Python 3.11 userland
unpacked into a folder (the host's dpkg untouched), and aarch64 wheels of numpy and onnxruntime.

    python scripts/build_arm64_board.py [--root DIR] [--force]

Cached outside the repository ($EDGEBENCH_ARM64_BOARD, default /var/cache/edgebench/arm64-board) and reused when
complete. Prints the board's python (a wrapper that runs the aarch64 interpreter under qemu) and the agent's
`info` as the board sees itself. Needs root (binfmt_misc, so the emulated python can start subprocesses) and
qemu-user-static. Emulated speed is not board speed: use this board for the correctness of the aarch64 path,
never for latency claims.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_ROOT = Path(os.environ.get("EDGEBENCH_ARM64_BOARD", "/var/cache/edgebench/arm64-board"))
DEBS = ["python3.11", "libstdc++6", "tzdata"]
QEMU = "/usr/bin/qemu-aarch64-static"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
# The board's /proc/cpuinfo: onnxruntime parses it at import and crashes on the host's x86 one. qemu's prefix
# lookup finds this file first. Four Cortex-A72 cores (CPU part 0xd08) and the BCM2835 of a Raspberry Pi 4.
CPUINFO = "".join(
    f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
    f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n" for n in range(4)
) + "Hardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 10000000edbe0001\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"


def run(argv, **kwargs):
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        sys.exit(f"build-arm64-board: `{' '.join(map(str, argv[:6]))} ...` failed:\n{(done.stderr or done.stdout)[-2000:]}")
    return done.stdout


def arm64_sources(work: Path) -> Path:
    """The host's Debian sources, restricted to arm64 (so apt fetches arm64 indexes only)."""
    parts = work / "sources.list.d"
    parts.mkdir(parents=True, exist_ok=True)
    found = 0
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        stanzas = [s for s in source.read_text().split("\n\n") if s.strip()]
        kept = []
        for stanza in stanzas:
            if "debian" not in stanza or re.search(r"^Architectures:", stanza, re.MULTILINE):
                continue  # third-party repositories and ones pinned to an architecture
            kept.append(stanza.strip() + "\nArchitectures: arm64")
        if kept:
            (parts / source.name).write_text("\n\n".join(kept) + "\n")
            found += len(kept)
    lines = []
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            if line.startswith("deb ") and "debian" in line:
                lines.append(line.replace("deb ", "deb [arch=arm64] ", 1) if "[" not in line else line.replace("[", "[arch=arm64 ", 1))
    (work / "sources.list").write_text("\n".join(lines) + "\n")
    if not found and not lines:
        sys.exit("build-arm64-board: no Debian sources in /etc/apt to fetch arm64 packages from")
    return parts


def apt_config(work: Path) -> Path:
    for sub in ("state/lists/partial", "cache/archives/partial", "preferences.d"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "state" / "status").touch()
    arm64_sources(work)
    config = work / "apt.conf"
    config.write_text(f"""APT::Architecture "arm64";
APT::Architectures {{ "arm64"; }};
Dir::State "{work}/state";
Dir::State::status "{work}/state/status";
Dir::Cache "{work}/cache";
Dir::Etc::SourceList "{work}/sources.list";
Dir::Etc::SourceParts "{work}/sources.list.d";
Dir::Etc::PreferencesParts "{work}/preferences.d";
Acquire::Languages "none";
APT::Install-Recommends "false";
""")
    return config


def board_runtimes() -> list[str]:
    """The other runtimes of the emulated Pi (their aarch64 wheels), at the host's versions, so the tests run each
    runtime's board path: OpenVINO (and its telemetry helper) and ncnn."""
    from importlib.metadata import version

    return [f"openvino=={version('openvino')}", "openvino-telemetry", f"ncnn=={version('ncnn')}"]


def register_binfmt() -> None:
    """Let aarch64 binaries start other aarch64 binaries (the agent launches its detached job that way)."""
    if not BINFMT.joinpath("register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True)
    if BINFMT.joinpath("qemu-aarch64").exists():
        return
    rule = Path("/usr/lib/binfmt.d/qemu-aarch64.conf").read_text().strip()
    try:
        BINFMT.joinpath("register").write_text(rule)
    except OSError as exc:
        sys.exit(f"build-arm64-board: cannot register qemu-aarch64 with binfmt_misc ({exc}); run as root")


def build(root: Path) -> None:
    work = root / "apt"
    config = apt_config(work)
    env = {**os.environ, "APT_CONFIG": str(config), "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--download-only", *DEBS], env=env)
    userland = root / "userland"
    shutil.rmtree(userland, ignore_errors=True)
    userland.mkdir(parents=True)
    debs = sorted((work / "cache" / "archives").glob("*.deb"))
    for deb in debs:
        run(["dpkg-deb", "-x", str(deb), str(userland)])
    site = userland / "usr/local/lib/python3.11/dist-packages"
    import numpy
    import onnxruntime

    platforms = [arg for tag in ("manylinux_2_35_aarch64", "manylinux_2_31_aarch64", "manylinux_2_28_aarch64",
                                 "manylinux_2_27_aarch64", "manylinux_2_24_aarch64", "manylinux_2_17_aarch64")
                 for arg in ("--platform", tag)]
    run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(site), "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
         "--abi", "cp311", *platforms, f"numpy=={numpy.__version__}", f"onnxruntime=={onnxruntime.__version__}",
         *board_runtimes()])
    (userland / "proc" / "device-tree").mkdir(parents=True, exist_ok=True)
    (userland / "proc" / "cpuinfo").write_text(CPUINFO)
    (userland / "proc" / "device-tree" / "model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    python = root / "bin" / "python3"
    python.parent.mkdir(exist_ok=True)
    python.write_text(f"""#!/bin/sh
# The emulated board's python3: Debian's arm64 Python 3.11 under qemu-user, as a Cortex-A72 (a Raspberry Pi 4).
export QEMU_LD_PREFIX={userland} QEMU_CPU=cortex-a72
exec {QEMU} {userland}/usr/bin/python3.11 "$@"
""")
    python.chmod(0o755)
    for folder in (root, root / "bin", userland):
        folder.chmod(0o755)
    (root / "complete").write_text(json.dumps({"debs": len(debs), "numpy": numpy.__version__,
                                                "onnxruntime": onnxruntime.__version__, "runtimes": board_runtimes()}))


def _has_runtimes(root: Path) -> bool:
    """A board cached before it had the other runtimes is rebuilt once."""
    try:
        return json.loads((root / "complete").read_text()).get("runtimes") == board_runtimes()
    except (OSError, ValueError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--force", action="store_true", help="rebuild even when a complete board is cached")
    args = parser.parse_args()
    if not Path(QEMU).exists():
        sys.exit(f"build-arm64-board: {QEMU} is missing: apt-get install qemu-user-static")
    register_binfmt()
    started = time.monotonic()
    if args.force or not (args.root / "complete").exists() or not _has_runtimes(args.root):
        args.root.mkdir(parents=True, exist_ok=True)
        build(args.root)
        print(f"built the emulated aarch64 board in {args.root} in {time.monotonic() - started:.0f} s")
    else:
        print(f"reusing the emulated aarch64 board in {args.root}")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "host"))
    from edgebench.boards.agent_bundle import ensure_bundle

    done = subprocess.run([str(args.root / "bin" / "python3"), str(ensure_bundle()), "info"], capture_output=True,
                          text=True, timeout=300)
    if done.returncode != 0:
        sys.exit(f"build-arm64-board: the aarch64 agent's info failed: {done.stderr[-2000:]}")
    info = json.loads(done.stdout)
    print(f"board python: {args.root / 'bin' / 'python3'}")
    print("aarch64 agent info: " + json.dumps({k: info[k] for k in ("agent_version", "python", "numpy_version",
                                                                      "onnxruntime_version", "providers", "machine")}))


if __name__ == "__main__":
    main()
