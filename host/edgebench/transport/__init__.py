"""How the host reaches the agent: one Transport protocol, a local twin and an SSH implementation.

A transport runs the agent bundle with arguments and a stdin payload, streams its event lines to a
callback, and makes files available where the agent runs (`stage`). Everything above it (deploy, doctor)
is written once against this interface, so the full round trip runs in tests with no board.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from edgebench_agent.protocol import EVENT_PREFIX

EventCallback = Callable[[dict], None]

# How many plain stderr lines of the agent are kept for error messages.
STDERR_TAIL_LINES = 20


@dataclass
class AgentProcessResult:
    returncode: int
    stdout: bytes
    stderr_tail: list[str] = field(default_factory=list)


class Transport(Protocol):
    name: str

    def run_agent(self, args: list[str], stdin: bytes, timeout: float, on_event: EventCallback | None = None) -> AgentProcessResult:
        """Run the agent with `args`, feeding `stdin`; kill it (and its process group) on timeout."""

    def stage(self, local_path: Path) -> str:
        """Make a file available to the agent; returns its path on the target."""

    def close(self) -> None: ...


class StderrSplitter:
    """Feeds agent stderr lines either to the event callback (marked JSON) or to a bounded tail."""

    def __init__(self, on_event: EventCallback | None):
        self.on_event = on_event
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

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
