"""Targets: where a benchmark runs. The built-in `local` target, and the inventory in configs/.

A Target is frozen: what the inventory said, validated, with a method to open its transport.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from .errors import ConfigError

LOCAL = "local"


@dataclass(frozen=True)
class Target:
    name: str
    kind: str = "local"  # "local" or "ssh"
    python: str | None = None  # interpreter that runs the agent; None = this host's for local

    def open_transport(self):
        if self.kind == "local":
            from .transport.local import LocalTransport

            return LocalTransport(python=self.python, name=self.name)
        raise ConfigError(f"target {self.name!r} has unknown kind {self.kind!r}")

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "python": self.python or sys.executable}


def resolve_target(name: str) -> Target:
    if name == LOCAL:
        return Target(name=LOCAL)
    raise ConfigError(f"unknown target {name!r}", "known targets: local (see `bench targets`)")
