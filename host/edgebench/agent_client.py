"""Speaks the agent protocol over any Transport: the `info` handshake and `run` requests."""

from __future__ import annotations

import json

from edgebench_agent.protocol import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, PROTOCOL_VERSION

from .errors import AgentError, InputError
from .transport import EventCallback, Transport

INFO_TIMEOUT_S = 60.0


class AgentClient:
    def __init__(self, transport: Transport):
        self.transport = transport
        self._info: dict | None = None

    def info(self) -> dict:
        """The handshake, done once per client: refuses an agent that speaks another protocol."""
        if self._info is None:
            result = self.transport.run_agent(["info"], b"", INFO_TIMEOUT_S)
            document = self._parse(result, "info")
            version = document.get("protocol_version")
            if version != PROTOCOL_VERSION:
                raise AgentError(
                    f"the agent on {self.transport.name} speaks protocol {version}, this host speaks {PROTOCOL_VERSION}",
                    "upgrade edgebench on the side that is older",
                )
            self._info = document
        return self._info

    def run(self, request: dict, timeout: float, on_event: EventCallback | None = None) -> dict:
        """Send a run request. Returns the reply (status ok or failed); raises InputError for bad input."""
        result = self.transport.run_agent(["run", "--request", "-"], json.dumps(request).encode(), timeout, on_event)
        reply = self._parse(result, "run")
        if result.returncode == EXIT_USAGE:
            raise InputError(reply.get("error", {}).get("message", "the agent refused the request"))
        if result.returncode not in (EXIT_OK, EXIT_RUN_FAILED):
            raise AgentError(f"the agent exited with code {result.returncode}", _tail_hint(result.stderr_tail))
        if reply.get("status") == "failed":
            reply["error"]["stderr_tail"] = result.stderr_tail
        return reply

    def _parse(self, result, command: str) -> dict:
        try:
            document = json.loads(result.stdout.decode("utf-8"))
            if not isinstance(document, dict):
                raise ValueError("not an object")
        except ValueError:
            how = f"was killed by signal {-result.returncode}" if result.returncode < 0 else f"exited with code {result.returncode}"
            raise AgentError(
                f"the agent's `{command}` on {self.transport.name} {how} without a valid reply",
                _tail_hint(result.stderr_tail),
            ) from None
        return document


def _tail_hint(tail: list[str]) -> str:
    return ("its last words: " + " | ".join(tail[-3:])) if tail else "it printed nothing on stderr"
