"""sha256 of files: the one implementation is the agent's (numpy-free), so host and board always agree."""

from __future__ import annotations

from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    from edgebench_agent.runner import file_sha256 as agent_sha256

    return agent_sha256(str(path))
