"""LocalTransport: the built-in `local` target. Commands are subprocesses, files are local files."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from ...errors import AgentTimeout, LinkLost, TransportError
from . import CommandResult, EventCallback, ProgressCallback, StderrSplitter


class LocalTransport:
    kind = "local"

    def __init__(self, name: str = "local"):
        self.name = name
        self.bytes_uploaded = 0

    def exec(self, argv, stdin=b"", timeout=None, on_event: EventCallback | None = None) -> CommandResult:
        try:
            # A new session gives the command its own process group, so a timeout or Ctrl-C kills all of it.
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       start_new_session=True)
        except OSError as exc:
            raise TransportError(f"cannot run {argv[0]}: {exc.strerror}",
                                 "set the target's python to an interpreter with numpy and onnxruntime") from exc
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None  # all PIPEs
        stdout, stderr, stdin_pipe = process.stdout, process.stderr, process.stdin
        splitter = StderrSplitter(on_event)
        stdout_chunks: list[bytes] = []
        readers = [
            threading.Thread(target=_pump_lines, args=(stderr, splitter), daemon=True),
            threading.Thread(target=_read_all, args=(stdout, stdout_chunks), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            try:
                stdin_pipe.write(stdin)
                stdin_pipe.close()
            except BrokenPipeError:
                pass  # the command exited early; its output says why
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise AgentTimeout(f"{argv[-1] if argv else 'command'} did not finish within {timeout:.0f} s") from None
        except BaseException:  # Ctrl-C included: never leave a process burning the CPU
            _kill_group(process)
            raise
        finally:
            for reader in readers:
                reader.join(5)
        return CommandResult(process.returncode, b"".join(stdout_chunks), list(splitter.tail))

    def open_stream(self, argv) -> "LocalStream":
        return LocalStream(argv)

    def home(self) -> str:
        return os.path.expanduser("~")

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    def makedirs(self, path: str) -> None:
        with self._write_guard(path):
            os.makedirs(path, exist_ok=True)

    def write_bytes(self, path: str, data: bytes) -> None:
        from ...agentlib import write_atomically

        with self._write_guard(path):
            write_atomically(path, data)

    def read_bytes(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except OSError:
            return None

    def upload(self, local: Path, path: str, progress: ProgressCallback | None = None) -> None:
        with self._write_guard(path):
            shutil.copyfile(local, path)
        size = os.path.getsize(path)
        self.bytes_uploaded += size
        if progress:
            progress(size, size)

    def rename(self, source: str, destination: str) -> None:
        with self._write_guard(destination):
            os.replace(source, destination)

    @contextlib.contextmanager
    def _write_guard(self, path: str):
        """The work folder's OSErrors as TransportError, like SSHTransport's: one line naming the path."""
        try:
            yield
        except OSError as exc:
            raise TransportError(f"cannot write {path} on {self.name}: {exc.strerror or exc}",
                                 "check the target's work_dir: free space and permissions") from exc

    def remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def reconnect(self) -> None:
        pass

    def close(self) -> None:
        pass


class LocalStream:
    """A command kept running here: a line in, a line out (transport.Stream)."""

    def __init__(self, argv):
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise TransportError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        self.splitter = StderrSplitter(None)
        self.lines: queue.Queue = queue.Queue()  # stdout lines; None once stdout closed (the command ended)
        threading.Thread(target=_pump_lines, args=(self.process.stderr, self.splitter), daemon=True).start()
        threading.Thread(target=self._read_lines, daemon=True).start()

    def _read_lines(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            self.lines.put(raw.rstrip(b"\n"))
        self.lines.put(None)

    def ask(self, line: bytes, timeout: float | None, on_event) -> tuple[bytes, list[str]]:
        self.splitter.on_event = on_event
        self.splitter.tail.clear()
        assert self.process.stdin is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self.process.stdin.write(line)
            self.process.stdin.flush()
            while True:  # short waits: a Ctrl-C passed on to this thread is taken between two of them
                try:
                    answer = self.lines.get(timeout=0.2)
                    break
                except queue.Empty:
                    if deadline is not None and time.monotonic() > deadline:
                        self.close()
                        raise AgentTimeout(f"no answer within {timeout:.0f} s") from None
        except BrokenPipeError:
            answer = None
        if answer is None:
            raise LinkLost("the command ended")
        return answer, list(self.splitter.tail)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin:
                self.process.stdin.close()  # end of input: it ends
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            _kill_group(self.process)


def _read_all(stream, chunks: list[bytes]) -> None:
    with stream:  # closed when read: no ResourceWarning for a pipe left open
        chunks.append(stream.read())


def _pump_lines(stream, splitter: StderrSplitter) -> None:
    for raw in iter(stream.readline, b""):
        splitter.line(raw.decode("utf-8", "replace"))
    stream.close()


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
