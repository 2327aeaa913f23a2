"""How the host reaches a board: one Transport protocol with a local twin and an SSH implementation.

A transport runs commands (argv lists, never shell strings built from user data) and moves files; everything
above it (board.py: agent bootstrap, uploads by hash, detached runs) is written once against this protocol,
so the full round trip runs in tests with no board.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from ...agentlib import EVENT_PREFIX

EventCallback = Callable[[dict], None]
ProgressCallback = Callable[[int, int], None]  # bytes done, bytes total

# How many plain stderr lines of a remote command are kept for error messages.
STDERR_TAIL_LINES = 20


@dataclass
class CommandResult:
    returncode: int
    stdout: bytes
    stderr_tail: list[str] = field(default_factory=list)


class Transport(Protocol):
    name: str
    kind: str  # "local" or "ssh"
    bytes_uploaded: int  # a counter over the transport's life: tests and benchmarks read it

    def exec(self, argv: list[str], stdin: bytes = b"", timeout: float | None = None,
             on_event: EventCallback | None = None) -> CommandResult:
        """Run argv on the board; on timeout kill it and raise AgentTimeout; a lost link raises LinkLost."""

    def home(self) -> str:
        """The login user's home folder on the board."""

    def exists(self, path: str) -> bool: ...

    def listdir(self, path: str) -> list[str]:
        """Names in a folder; [] when it does not exist."""

    def makedirs(self, path: str) -> None: ...

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a small file atomically."""

    def read_bytes(self, path: str) -> bytes | None: ...

    def upload(self, local: Path, path: str, progress: ProgressCallback | None = None) -> None:
        """Copy a file to the board under a temporary name; the caller verifies and renames it."""

    def rename(self, source: str, destination: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def reconnect(self) -> None: ...

    def close(self) -> None: ...

    def open_stream(self, argv: list[str]) -> "Stream":
        """Start argv on the board and keep talking to it: a line in, a line out (Stream.ask)."""


class Stream(Protocol):
    """A long-lived command on the board that answers each line sent to it with one line on its stdout (its stderr
    carries progress events meanwhile). A board's launcher for a plan's runs: board.py."""

    def ask(self, line: bytes, timeout: float | None, on_event: EventCallback | None) -> tuple[bytes, list[str]]:
        """Send one line; the next line it prints on stdout, and the plain stderr lines seen meanwhile. On timeout
        the command is ended (AgentTimeout); if it ends or the link drops, LinkLost."""

    def close(self) -> None: ...


class StderrSplitter:
    """Feeds stderr lines either to the event callback (marked JSON) or to a bounded tail."""

    def __init__(self, on_event: EventCallback | None):
        self.on_event = on_event
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._partial = ""

    def feed(self, text: str) -> None:
        """Accept a chunk of text; complete lines are dispatched."""
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self.line(line)

    def flush(self) -> None:
        if self._partial:
            self.line(self._partial)
            self._partial = ""

    def line(self, text: str) -> None:
        text = text.rstrip("\r\n")
        if text.startswith(EVENT_PREFIX):
            try:
                event = json.loads(text[len(EVENT_PREFIX):])
            except ValueError:
                self.tail.append(text)
                return
            if self.on_event is not None:
                self.on_event(event)
        elif text.strip():
            self.tail.append(text)
