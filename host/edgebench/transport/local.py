"""LocalTransport: the built-in `local` target. Runs the agent bundle as a subprocess on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from ..agent_bundle import ensure_bundle
from ..errors import AgentTimeout, TransportError
from . import AgentProcessResult, EventCallback, StderrSplitter


class LocalTransport:
    def __init__(self, python: str | None = None, name: str = "local"):
        self.name = name
        self.python = python or sys.executable
        self.bundle = ensure_bundle()

    def stage(self, local_path: Path) -> str:
        return str(Path(local_path).resolve())

    def run_agent(self, args, stdin, timeout, on_event: EventCallback | None = None) -> AgentProcessResult:
        command = [self.python, str(self.bundle), *args]
        try:
            # A new session gives the agent its own process group, so a timeout or Ctrl-C kills all of it.
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise TransportError(f"cannot start the agent with {self.python}: {exc.strerror}",
                                 "set the target's python to an interpreter with numpy and onnxruntime") from exc
        splitter = StderrSplitter(on_event)
        stdout_chunks: list[bytes] = []
        readers = [
            threading.Thread(target=_pump_lines, args=(process.stderr, splitter), daemon=True),
            threading.Thread(target=lambda: stdout_chunks.append(process.stdout.read()), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            try:
                process.stdin.write(stdin)
                process.stdin.close()
            except BrokenPipeError:
                pass  # the agent exited early; its reply says why
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise AgentTimeout(f"the agent did not finish within {timeout:.0f} s and was killed",
                                 "raise --timeout or lower --max-seconds") from None
        except BaseException:  # Ctrl-C included: never leave the agent burning the CPU
            _kill_group(process)
            raise
        finally:
            for reader in readers:
                reader.join(5)
        return AgentProcessResult(process.returncode, b"".join(stdout_chunks), list(splitter.tail))

    def close(self) -> None:
        pass


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
