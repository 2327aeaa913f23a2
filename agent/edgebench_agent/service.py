"""The agent's two services, as functions: `info()` (the handshake) and `run()` (one benchmark, whose every
failure comes back as a reply with a true kind). The command line (__main__) and detached jobs (jobs) call them."""

from __future__ import annotations

import datetime
import json
import os
import sys

from . import __version__, device
from .protocol import EVENT_PREFIX, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, PROTOCOL_VERSION, USAGE_KINDS, reply_digest


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def info(cache=None):
    """The handshake: what this agent speaks and what the board can run."""
    facts = {
        "protocol_version": PROTOCOL_VERSION,
        "agent_version": __version__,
        "python": device.python_info(),
        "machine": device.machine_info(),
    }
    try:
        import numpy

        facts["numpy_version"] = numpy.__version__
    except ImportError as exc:
        facts["numpy_version"] = None
        facts.setdefault("missing", []).append("numpy (%s)" % exc)
    try:
        import onnxruntime

        facts["onnxruntime_version"] = onnxruntime.__version__
        facts["providers"] = onnxruntime.get_available_providers()
    except ImportError as exc:
        facts["onnxruntime_version"] = None
        facts["providers"] = []
        facts.setdefault("missing", []).append("onnxruntime (%s)" % exc)
    from .runtimes import versions

    facts["runtimes"] = versions()
    from .energy import sources_info

    facts["energy"] = sources_info()
    if cache:
        from .cache import disk_free_bytes

        facts["cache"] = {"path": os.path.abspath(os.path.expanduser(cache)), "free_bytes": disk_free_bytes(cache)}
    return facts


class _Events(object):
    """Progress for the host (marked JSON lines on stderr) or for a person at the board's terminal."""

    def __init__(self, machine_readable):
        self.machine_readable = machine_readable

    def __call__(self, event):
        if self.machine_readable:
            sys.stderr.write(EVENT_PREFIX + json.dumps(event) + "\n")
        elif event.get("event") == "phase":
            sys.stderr.write("[%d/%d] %s\n" % (event["repeat"], event["repeats"], event["phase"]))
        elif event.get("event") == "progress":
            sys.stderr.write("      %d iterations, %.1f s\n" % (event["iterations"], event["elapsed_s"]))
        sys.stderr.flush()


def run(request, machine_readable=True):
    """Run a request; returns (exit code, reply document). Never raises: every failure becomes a reply whose
    error has a true kind (see FAILURE_KINDS in protocol.py)."""
    reply = {
        "protocol_version": PROTOCOL_VERSION,
        "agent_version": __version__,
        "command": "run",
        "status": "ok",
        "error": None,
        "request": request,
        "started_at": _now(),
    }
    code = EXIT_OK
    try:
        from .runner import run_benchmark

        reply["info"] = info()
        reply.update(run_benchmark(request, emit=_Events(machine_readable)))
    except BaseException as exc:  # noqa: BLE001 - every failure, ours included, must reach the host as data
        if isinstance(exc, SystemExit):
            raise
        kind, message, detail = classify_failure(exc)
        reply["status"] = "failed"
        reply["error"] = {"kind": kind, "message": message}
        if detail:
            reply["error"]["traceback"] = detail
        code = EXIT_USAGE if kind in USAGE_KINDS else EXIT_RUN_FAILED
    reply["finished_at"] = _now()
    reply["digest"] = reply_digest(reply)
    return code, reply


def classify_failure(exc):
    """(kind, message, traceback tail or None) for an exception that ended a run.

    RunError carries its own kind; onnxruntime's exceptions are `onnxruntime`; Ctrl-C or SIGTERM is
    `interrupted`; memory exhaustion is `killed`-like but we saw it, so `oom`; anything else is our bug:
    `internal`, with the traceback's last lines kept so it can be reported.
    """
    import traceback

    if getattr(exc, "kind", None) and type(exc).__name__ == "RunError":
        return exc.kind, str(exc), None
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "interrupted (SIGINT or SIGTERM) before the run finished", None
    if isinstance(exc, MemoryError):
        return "oom", "out of memory on the board", None
    if type(exc).__module__.startswith("onnxruntime"):
        return "onnxruntime", "onnxruntime failed: %s" % _one_line(exc), None
    if isinstance(exc, ImportError):
        return "missing", "cannot import %s on this board: install numpy and onnxruntime (pip install numpy onnxruntime)" % (
            getattr(exc, "name", None) or exc), None
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    tail = "".join(lines)[-2000:]
    return "internal", "edgebench agent bug: %s (the traceback is kept in the result; please report it)" % _one_line(
        exc, with_type=True), tail


def _one_line(exc, limit=400, with_type=False):
    text = " ".join(str(exc).split()) or type(exc).__name__
    if with_type:
        text = "%s: %s" % (type(exc).__name__, text)
    return text if len(text) <= limit else text[:limit - 3] + "..."
