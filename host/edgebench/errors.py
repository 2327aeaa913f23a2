"""The user-fixable errors of edgebench, in one place.

Each carries a message naming the problem and a hint saying what to do. The CLI maps them to one line
on stderr and an exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re

# Exit codes of `bench`.
EXIT_OK = 0
EXIT_RUN_FAILED = 1  # the command ran, but one or more benchmark runs failed (recorded in results/)
EXIT_USAGE = 2  # bad input: a file, an option, a config
EXIT_TARGET = 3  # the board could not be reached or refused us
EXIT_AGENT = 4  # the agent on the board misbehaved (protocol, crash)


class BenchError(Exception):
    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(BenchError):
    """Inventory, plan or option problems."""


class ModelError(BenchError):
    """A model file that is missing, corrupt or unsafe."""


class InputError(BenchError):
    """Input data (npz, values, dims) that does not fit the model."""


class ExportFailed(ModelError):
    """The exporter could not turn the PyTorch model into ONNX (or not at the opset asked for)."""


class ValidationFailed(BenchError):
    """The model was checked and failed (a checker, parity): the report says where. Exit 1, like a failed run."""

    exit_code = EXIT_RUN_FAILED


class FileWriteError(BenchError):
    """A file edgebench writes could not be written (a full disk, a read-only folder, permissions)."""


class ResultError(BenchError):
    """A result file that cannot be read: corrupt, or from a newer edgebench."""


class IndexUnusable(ResultError):
    """The results index cannot be used (unsafe files, too new, locked by another process, DuckDB missing):
    compare and history read the JSON files instead."""


class CutFailed(BenchError):
    """`bench diverge`: a cut the conversion or the board could not run; that tensor is left out, the search
    goes on."""


class TransportError(BenchError):
    exit_code = EXIT_TARGET


class TargetsUnreachable(TransportError):
    """`bench targets --check`: some targets did not answer (each one's reason is in the table)."""


class BoardNotReady(BenchError):
    """`bench doctor` found the board lacking (an old Python, no onnxruntime, a full disk): each finding says what to
    install."""


class AgentError(BenchError):
    exit_code = EXIT_AGENT


class RunFailed(BenchError):
    """Some runs failed; their results were recorded with the reason."""

    exit_code = EXIT_RUN_FAILED


class AgentTimeout(AgentError):
    """The agent ran past its deadline and was killed (with its process group)."""


class LinkLost(TransportError):
    """The connection to the board dropped; a reconnect may recover the run."""


class HostKeyError(TransportError):
    """The board's SSH host key is unknown or changed."""


class BoardBusy(TransportError):
    """Another benchmark holds the board's lock."""


class FarmError(TransportError):
    """The labgrid coordinator cannot be reached, has no such place, or gave none before the deadline."""


def from_onnxruntime(exc: BaseException) -> bool:
    """onnxruntime raises its own exception types (Fail, InvalidArgument, ...) from its C++ core."""
    return type(exc).__module__.startswith("onnxruntime")


# The programming errors a wide `except Exception` around third-party code must let through when our own code
# raised them: a bug is a traceback to report, never "the converter failed" or a user's bad input.
_BUG_TYPES = (AssertionError, AttributeError, IndexError, KeyError, NameError, TypeError, ZeroDivisionError)


def is_our_bug(exc: BaseException) -> bool:
    """True for a programming error whose innermost frame is edgebench's own code (host or agent package)."""
    import os
    import sys

    if not isinstance(exc, _BUG_TYPES):
        return False
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    if frame is None:
        return False
    roots = [os.path.dirname(os.path.abspath(__file__))]
    agent = sys.modules.get("edgebench_agent")
    if agent is not None and getattr(agent, "__file__", None):
        roots.append(os.path.dirname(os.path.abspath(str(agent.__file__))))
    where = os.path.abspath(frame.tb_frame.f_code.co_filename)
    return any(where.startswith(root + os.sep) for root in roots)


def one_line(exc: BaseException, limit: int = 300, with_type: bool = False) -> str:
    """An exception as one readable line: colour codes stripped, whitespace collapsed, cut at `limit`."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split()) or type(exc).__name__
    if with_type:
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
