"""The transport that reaches a Target (kept apart from the protocol types in __init__, which both transports
import, so nothing imports in a circle)."""

from __future__ import annotations


def open_transport(target):
    """A subprocess transport for `local`, paramiko for an SSH board (a labgrid target once leased: farm.py)."""
    if target.kind == "labgrid":
        raise AssertionError(f"{target.name}: a labgrid target is reached through farm.leased or farm.spread")
    if target.kind == "local":
        from .local import LocalTransport

        return LocalTransport(name=target.name)
    from .ssh import SSHTransport

    return SSHTransport(target)
