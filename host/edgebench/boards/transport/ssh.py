"""SSHTransport (paramiko): one verified connection per deploy, commands as quoted argv, files over SFTP.

Host keys are always verified: the user's ~/.ssh/known_hosts plus the project's known_hosts file beside the
inventory. `strict` (default) refuses an unknown key; `accept-new` trusts a key on first use and records it
in the project file. A CHANGED key is refused under every policy, showing both fingerprints.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shlex
import socket
import stat
import time
from typing import Any
from pathlib import Path

from ...errors import AgentTimeout, ConfigError, HostKeyError, LinkLost, TransportError
from . import CommandResult, EventCallback, ProgressCallback, StderrSplitter

KEEPALIVE_S = 15
# Bigger SSH windows and packets than paramiko's defaults: uploads run several times faster.
WINDOW_BYTES = 64 * 1024 * 1024
MAX_PACKET_BYTES = 32 * 1024  # SSH packets; the window does the pipelining
# SFTP write requests: paramiko sends 32 KiB; OpenSSH's sftp-server takes up to 256 KiB per message, and
# 128 KiB requests about double the upload rate (benchmarks/upload.py).
SFTP_REQUEST_BYTES = 128 * 1024
READ_BLOCK_BYTES = 1 << 20


def fingerprint(key) -> str:
    """OpenSSH's format: SHA256:base64 without padding."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def known_host_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _UnknownHostKey(Exception):
    def __init__(self, hostname, key):
        super().__init__(hostname)
        self.hostname, self.key = hostname, key


def _policies():
    import paramiko

    class RejectUnknown(paramiko.MissingHostKeyPolicy):
        """Like paramiko's RejectPolicy, but keeps the key so the error can show its fingerprint."""

        def missing_host_key(self, client, hostname, key):
            raise _UnknownHostKey(hostname, key)

    class AcceptNew(paramiko.MissingHostKeyPolicy):
        """OpenSSH's StrictHostKeyChecking=accept-new: trust an unknown key once, record it."""

        def __init__(self, known_hosts: Path):
            self.known_hosts = known_hosts

        def missing_host_key(self, client, hostname, key):
            client.get_host_keys().add(hostname, key.get_name(), key)
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with open(self.known_hosts, "a") as handle:
                handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")

    return RejectUnknown, AcceptNew


class SSHTransport:
    kind = "ssh"

    def __init__(self, target, jump_depth: int = 0):
        self.target = target
        self.name = target.name
        self.bytes_uploaded = 0
        self._jump_depth = jump_depth
        self._jump: SSHTransport | None = None
        self._client: Any = None  # paramiko.SSHClient once connected
        self._sftp = None
        self._home: str | None = None
        self.connect()

    # ------------------------------------------------------------------------------------- connection
    def _known_hosts_files(self) -> tuple[Path, Path]:
        user = Path(os.path.expanduser("~/.ssh/known_hosts"))
        project = Path(self.target.known_hosts) if self.target.known_hosts else Path(os.path.expanduser("~/.cache/edgebench/known_hosts"))
        return user, project

    def _check_identity_files(self) -> list[str]:
        import paramiko

        files = [os.path.expanduser(p) for p in self.target.identity_files]
        for path in files:
            if not os.path.isfile(path):
                raise ConfigError(f"identity file of target {self.name!r} not found: {path}")
            try:
                paramiko.PKey.from_path(path)
            except paramiko.PasswordRequiredException:
                pass  # encrypted: paramiko asks the agent or fails at auth with a clear message
            except (paramiko.SSHException, ValueError, OSError) as exc:
                raise ConfigError(f"identity file of target {self.name!r} is not a usable private key: {path} ({exc})",
                                  "point identity_file at a private key (e.g. ~/.ssh/id_ed25519), not a .pub file") from exc
        return files

    def _proxy_sock(self):
        """A channel through the first ProxyJump hop (resolved in targets.py, chains and loops checked there)."""
        import paramiko

        jump_target = self.target.jump
        if jump_target is None:
            if self.target.proxy_jump:  # a Target built by hand, not by resolve_target
                raise ConfigError(f"the ProxyJump of {self.name!r} was not resolved", "resolve targets with resolve_target()")
            return None
        jump = self._jump = SSHTransport(jump_target, self._jump_depth + 1)
        try:
            return jump._client.get_transport().open_channel(
                "direct-tcpip", (self.target.host, self.target.port), ("127.0.0.1", 0), timeout=self.target.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:  # ChannelException is an SSHException
            raise TransportError(f"jump host {jump_target.name} cannot reach {self.target.host}:{self.target.port}: "
                                 f"{exc or type(exc).__name__}", "check that the jump host can reach the board") from exc

    def connect(self) -> None:
        import paramiko

        target = self.target
        identity_files = self._check_identity_files()
        client = paramiko.SSHClient()
        user_known, project_known = self._known_hosts_files()
        if user_known.is_file():
            client.load_system_host_keys(str(user_known))
        if project_known.is_file():
            client.load_host_keys(str(project_known))
        reject, accept_new = _policies()
        client.set_missing_host_key_policy(accept_new(project_known) if target.host_key_policy == "accept-new" else reject())
        where = f"{target.address}"
        try:
            client.connect(
                hostname=target.host, port=target.port, username=target.user or _local_user(),
                key_filename=identity_files or None, look_for_keys=not identity_files, allow_agent=True,
                timeout=target.connect_timeout, banner_timeout=target.connect_timeout,
                auth_timeout=target.connect_timeout, sock=self._proxy_sock(),
            )
        except _UnknownHostKey as exc:
            client.close()
            raise HostKeyError(
                f"unknown SSH host key for {exc.hostname} ({exc.key.get_name()} {fingerprint(exc.key)}); refused",
                f"verify it, then add it: ssh-keyscan -p {target.port} {target.host} >> {project_known} "
                f"(or set host_key_policy: accept-new for target {self.name!r})") from exc
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"the SSH host key of {where} CHANGED: expected {fingerprint(exc.expected_key)}, got "
                f"{fingerprint(exc.key)}; refused (a reinstalled board, or someone in between)",
                f"if the board was reinstalled, remove its old line from {user_known} or {project_known}") from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise TransportError(f"SSH authentication to {where} failed ({exc})",
                                 "check the target's user and identity_file, or add your key to the board's authorized_keys") from exc
        except (socket.timeout, TimeoutError):
            client.close()
            raise TransportError(f"cannot reach {where}: no answer within {target.connect_timeout:.0f} s",
                                 "check that the board is on and reachable, or raise connect_timeout") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            if "No authentication methods" in str(exc):
                raise TransportError(f"no SSH key to offer to {where}",
                                     "set the target's identity_file, load a key into ssh-agent, or put one in ~/.ssh/") from exc
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise TransportError(f"cannot connect to {where}: {reason}", "check host, port and that sshd runs on the board") from exc
        transport = client.get_transport()
        transport.set_keepalive(KEEPALIVE_S)
        transport.default_window_size = WINDOW_BYTES
        self._client = client
        self._sftp = None

    def reconnect(self) -> None:
        self.close()
        self.connect()

    def close(self) -> None:
        for closable in (self._sftp, self._client):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # closing a dead link raises all sorts; it is closed either way
                    pass
        self._sftp = self._client = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    def _transport(self):
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            raise LinkLost(f"the SSH connection to {self.target.address} dropped")
        return transport

    def sftp(self):
        import paramiko

        if self._sftp is None:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(self._transport(), window_size=WINDOW_BYTES,
                                                                max_packet_size=MAX_PACKET_BYTES)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise LinkLost(f"cannot open SFTP to {self.target.address}: {exc}") from exc
        return self._sftp

    # -------------------------------------------------------------------------------------- commands
    def exec(self, argv, stdin=b"", timeout=None, on_event: EventCallback | None = None) -> CommandResult:
        import paramiko

        # Each argument quoted: a model called `a b; $(rm -rf ~)` is one argument, never shell syntax.
        command = " ".join(shlex.quote(str(a)) for a in argv)
        splitter = StderrSplitter(on_event)
        stdout = bytearray()
        try:
            channel = self._transport().open_session(timeout=self.target.connect_timeout)
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                busy = _receive(channel, stdout, splitter)
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                if not busy:
                    if channel.closed or not channel.get_transport().is_active():
                        raise LinkLost(f"the SSH connection to {self.target.address} dropped")
                    if deadline is not None and time.monotonic() > deadline:
                        channel.close()
                        raise AgentTimeout(f"{argv[-1] if argv else 'command'} did not finish within {timeout:.0f} s")
                    time.sleep(0.005)
            code = channel.recv_exit_status()
            channel.close()
        except (ConnectionError, socket.timeout, EOFError, paramiko.SSHException) as exc:
            raise LinkLost(f"the SSH connection to {self.target.address} dropped ({exc or type(exc).__name__})") from exc
        splitter.flush()
        if code == -1:  # closed without an exit status: the link went down under it
            raise LinkLost(f"the SSH connection to {self.target.address} dropped during a command")
        return CommandResult(code, bytes(stdout), list(splitter.tail))

    def open_stream(self, argv) -> "SSHStream":
        return SSHStream(self, argv)

    # ----------------------------------------------------------------------------------------- files
    def home(self) -> str:
        if self._home is None:
            self._home = str(self._sftp_call(lambda s: s.normalize(".")))
        return self._home

    def _sftp_call(self, action):
        import paramiko

        try:
            return action(self.sftp())
        except (ConnectionError, socket.timeout, EOFError, paramiko.SSHException) as exc:
            raise LinkLost(f"the SSH connection to {self.target.address} dropped ({exc or type(exc).__name__})") from exc
        except OSError as exc:
            # paramiko says a cut link with a bare OSError("Socket is closed"): a dead transport makes it a lost
            # link (retried after a reconnect), not a refusal by the board such as a full disk.
            transport = self._client.get_transport() if self._client else None
            if transport is None or not transport.is_active():
                raise LinkLost(f"the SSH connection to {self.target.address} dropped ({exc})") from exc
            raise

    def exists(self, path: str) -> bool:
        def check(sftp):
            try:
                sftp.stat(path)
                return True
            except FileNotFoundError:
                return False
        return self._sftp_call(check)

    def listdir(self, path: str) -> list[str]:
        def listing(sftp):
            try:
                return sorted(sftp.listdir(path))
            except FileNotFoundError:
                return []
        return self._sftp_call(listing)

    def makedirs(self, path: str) -> None:
        """mkdir -p in as few round trips as possible: one when the parent exists (the common case)."""
        def refused(folder, exc):  # a work_dir the SSH user may not create: say which, not a traceback
            return TransportError(f"cannot create {folder} on {self.name}: permission denied ({exc})",
                                  "set the target's work_dir to a folder that user can write")

        def make(sftp, folder):
            try:
                sftp.mkdir(folder, 0o700)
                return
            except OSError:
                pass  # exists already, or its parent does not
            try:
                found = sftp.stat(folder)
            except FileNotFoundError:
                parent = folder.rsplit("/", 1)[0]
                if parent and parent != folder:
                    make(sftp, parent)
                try:
                    sftp.mkdir(folder, 0o700)
                except PermissionError as exc:
                    raise refused(folder, exc) from exc
                return
            except PermissionError as exc:
                raise refused(folder, exc) from exc
            if not stat.S_ISDIR(found.st_mode):
                raise TransportError(f"{folder} on {self.name} is not a folder")
        self._sftp_call(lambda sftp: make(sftp, path.rstrip("/")))

    def write_bytes(self, path: str, data: bytes) -> None:
        temp = f"{path}.tmp-{os.getpid()}"

        def write(sftp):
            with sftp.open(temp, "wb") as handle:
                handle.write(data)
            sftp.posix_rename(temp, path)
        self._write_guard(path, lambda: self._sftp_call(write), leftover=temp)  # on failure the temp goes, not `path`

    def read_bytes(self, path: str) -> bytes | None:
        def read(sftp):
            try:
                with sftp.open(path, "rb") as handle:
                    return handle.read()
            except FileNotFoundError:
                return None
        return self._sftp_call(read)

    def upload(self, local: Path, path: str, progress: ProgressCallback | None = None) -> None:
        total = os.path.getsize(local)

        def put(sftp):
            done = 0
            with open(local, "rb") as source, sftp.open(path, "wb") as target:
                target.set_pipelined(True)
                target.MAX_REQUEST_SIZE = SFTP_REQUEST_BYTES
                for block in iter(lambda: source.read(READ_BLOCK_BYTES), b""):
                    target.write(block)
                    done += len(block)
                    self.bytes_uploaded += len(block)
                    if progress:
                        progress(done, total)
            arrived = sftp.stat(path).st_size
            if arrived != total:
                raise OSError(f"{arrived} of {total} bytes arrived")
        self._write_guard(path, lambda: self._sftp_call(put))

    def _write_guard(self, path: str, action, leftover: str | None = None) -> None:
        """Turn the board's refusals (a full disk, permissions) into one clear line; leave no partial file
        (`leftover`: the file a failed write leaves, when it is not `path` itself)."""
        leftover = leftover or path
        try:
            action()
        except PermissionError as exc:
            self.remove(leftover)
            raise TransportError(f"cannot write {path} on {self.name}: permission denied ({exc})",
                                 "check the permissions of the target's work_dir") from exc
        except OSError as exc:  # SFTP reports a full disk as a bare "Failure"
            self.remove(leftover)
            raise TransportError(f"cannot write {path} on {self.name}: {exc or type(exc).__name__} (is the board's disk full?)",
                                 "free space in the board's cache folder (bench clean --target ...) or set another work_dir") from exc

    def rename(self, source: str, destination: str) -> None:
        self._sftp_call(lambda s: s.posix_rename(source, destination))

    def remove(self, path: str) -> None:
        def remove(sftp):
            try:
                sftp.remove(path)
            except (FileNotFoundError, OSError):
                pass
        try:
            self._sftp_call(remove)
        except LinkLost:
            pass


def _local_user() -> str:
    import getpass

    return getpass.getuser()


def _receive(channel, stdout: bytearray, splitter: StderrSplitter) -> bool:
    """What a command's channel has ready: stdout appended, stderr to its splitter. Whether there was any."""
    busy = False
    if channel.recv_ready():
        stdout += channel.recv(1 << 16)
        busy = True
    if channel.recv_stderr_ready():
        splitter.feed(channel.recv_stderr(1 << 16).decode("utf-8", "replace"))
        busy = True
    return busy


class SSHStream:
    """A command kept running on one SSH channel: a line in, a line out (transport.Stream)."""

    def __init__(self, transport: SSHTransport, argv):
        import paramiko

        self.address = transport.target.address
        self.stdout = bytearray()
        self.splitter = StderrSplitter(None)
        try:
            self.channel = transport._transport().open_session(timeout=transport.target.connect_timeout)
            self.channel.exec_command(" ".join(shlex.quote(str(a)) for a in argv))
        except (ConnectionError, socket.timeout, EOFError, paramiko.SSHException) as exc:
            raise LinkLost(f"the SSH connection to {self.address} dropped ({exc or type(exc).__name__})") from exc

    def ask(self, line: bytes, timeout: float | None, on_event: EventCallback | None) -> tuple[bytes, list[str]]:
        import paramiko

        self.splitter.on_event = on_event
        self.splitter.tail.clear()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self.channel.sendall(line)
            while True:
                end = self.stdout.find(b"\n")
                if end >= 0:
                    answer = bytes(self.stdout[:end])
                    del self.stdout[:end + 1]
                    return answer, list(self.splitter.tail)
                if _receive(self.channel, self.stdout, self.splitter):
                    continue
                if self.channel.exit_status_ready() or self.channel.closed or not self.channel.get_transport().is_active():
                    raise LinkLost(f"the command on {self.address} ended or its link dropped")
                if deadline is not None and time.monotonic() > deadline:
                    self.close()
                    raise AgentTimeout(f"no answer from {self.address} within {timeout:.0f} s")
                time.sleep(0.005)
        except (OSError, EOFError, paramiko.SSHException) as exc:  # OSError: a channel closed under us, too
            raise LinkLost(f"the SSH connection to {self.address} dropped ({exc or type(exc).__name__})") from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing what may already be gone
            self.channel.shutdown_write()
            self.channel.close()
