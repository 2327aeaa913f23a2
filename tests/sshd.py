"""Real OpenSSH servers for the tests: on loopback, or inside a network namespace the test creates.

No mocks: sshd from Debian's openssh-server, started with its own config, host key and authorized keys, and
stopped by its PID (and its per-connection children). Needs root (sshd, useradd, ip netns).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
NON_ROOT_USER = "edgebench-test"


def require_root(what: str) -> None:
    import pytest

    if os.geteuid() != 0:
        pytest.fail(f"{what} needs root (sshd, useradd, ip netns); run the suite as root, as CI does")
    if not os.path.exists(SSHD):
        pytest.fail(f"{SSHD} is missing: install openssh-server (make test does)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgebench-test", "-f", str(path)], check=True)
    return path


def descendants(pid: int) -> list[int]:
    """Every process below pid (sshd's per-connection children), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")  # pytest-xdist's worker name ("gw0", ...), if any


@contextlib.contextmanager
def machine_lock(name: str):
    """One test process at a time for a step that changes the machine (a user, a venv in /tmp): pytest-xdist's
    workers start their session fixtures at the same moment."""
    import fcntl

    with open(Path(tempfile.gettempdir()) / f"edgebench-test-{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_user(name: str = NON_ROOT_USER) -> str:
    """A non-root login user (created once per machine; unlocked so public-key login works)."""
    with machine_lock("user"):
        if subprocess.run(["id", "-u", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
        subprocess.run(["usermod", "-p", "*", name], check=True)
    return name


@dataclass
class Netns:
    """A network namespace with a veth pair: the host side has .1, the board side .2 of a /24."""

    name: str
    host_address: str
    board_address: str
    host_if: str

    @classmethod
    def create(cls) -> "Netns":
        tag = secrets.token_hex(3)
        subnet = 200 + int(tag[:2], 16) % 50
        third = int(tag[2:4], 16)
        ns, host_if, board_if = f"eb-{tag}", f"ebh{tag}", f"ebb{tag}"
        host_addr, board_addr = f"10.{subnet}.{third}.1", f"10.{subnet}.{third}.2"
        for argv in (["ip", "netns", "add", ns],
                     ["ip", "link", "add", host_if, "type", "veth", "peer", "name", board_if],
                     ["ip", "link", "set", board_if, "netns", ns],
                     ["ip", "addr", "add", f"{host_addr}/24", "dev", host_if],
                     ["ip", "link", "set", host_if, "up"],
                     ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{board_addr}/24", "dev", board_if],
                     ["ip", "netns", "exec", ns, "ip", "link", "set", board_if, "up"],
                     ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]):
            subprocess.run(argv, check=True, capture_output=True)
        return cls(ns, host_addr, board_addr, host_if)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)


@dataclass
class SshServer:
    """One sshd: its folder holds the config, host key, pid file and authorized keys (per user)."""

    folder: Path
    address: str = "127.0.0.1"
    port: int = 0
    netns: Netns | None = None
    process: subprocess.Popen | None = None
    authorized: dict = field(default_factory=dict)  # user -> public key text
    extra_config: str = ""

    @classmethod
    def create(cls, address: str = "127.0.0.1", netns: Netns | None = None, extra_config: str = "") -> "SshServer":
        # Outside pytest's 0700 temp folders: sshd reads authorized_keys as the (non-root) user.
        folder = Path(tempfile.mkdtemp(prefix="edgebench-sshd-"))
        folder.chmod(0o755)
        (folder / "authorized_keys").mkdir(mode=0o755)
        keygen(folder / "ssh_host_ed25519_key")
        server = cls(folder, address, free_port(address if netns is None else "127.0.0.1"), netns,
                     extra_config=extra_config)
        server.write_config()
        return server

    @property
    def host_public_key(self) -> str:
        """'ssh-ed25519 AAAA...' of the server."""
        return " ".join((self.folder / "ssh_host_ed25519_key.pub").read_text().split()[:2])

    def known_hosts_line(self) -> str:
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {self.host_public_key}\n"

    def authorize(self, user: str, public_key: str) -> None:
        path = self.folder / "authorized_keys" / user
        path.write_text(public_key)
        path.chmod(0o644)

    def write_config(self) -> None:
        (self.folder / "sshd_config").write_text(f"""\
Port {self.port}
ListenAddress {self.address}
HostKey {self.folder}/ssh_host_ed25519_key
PidFile {self.folder}/sshd.pid
AuthorizedKeysFile {self.folder}/authorized_keys/%u
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
MaxStartups 100
MaxSessions 100
{self.extra_config}
""")

    def start(self, wait_s: float = 15.0) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation folder
        argv = [SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns.name, *argv]
        log = open(self.folder / "sshd.log", "ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.folder / 'sshd.log').read_text()[-2000:]}")
            if self._answers():
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on {self.address}:{self.port} within {wait_s} s")

    def _answers(self) -> bool:
        """Does sshd greet? Asked from where it listens: inside its namespace for a namespace's own loopback."""
        if self.netns is not None and self.address.startswith("127."):
            probe = ("import socket, sys\ntry:\n s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.5)\n"
                     " sys.exit(0 if s.recv(4).startswith(b'SSH-') else 1)\nexcept OSError:\n sys.exit(1)\n")
            return subprocess.run(["ip", "netns", "exec", self.netns.name, sys.executable, "-c", probe, self.address,
                                   str(self.port)], capture_output=True).returncode == 0
        try:
            with socket.create_connection((self.address, self.port), timeout=0.5) as probe:
                return probe.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL sshd and every connection it serves: the board's side of a dropped link or a reboot."""
        if self.process is None:
            return
        for pid in [self.process.pid, *descendants(self.process.pid)]:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip().startswith(("sshd", "ip")):
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def board_site_packages(folder: Path) -> Path:
    """numpy + onnxruntime for Debian's /usr/bin/python3, readable by every user (the non-root board)."""
    import numpy
    import onnxruntime

    import sys

    site = folder / "site"
    with machine_lock("board-site"):
        if not (site / "onnxruntime").is_dir():
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                            "--target", str(site), f"numpy=={numpy.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
                           check=True, capture_output=True)
    return site
