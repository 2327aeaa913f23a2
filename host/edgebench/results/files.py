"""Result files: one versioned JSON document per run in results/, written atomically, read defensively.

SCHEMA_VERSION history:
  1 - first version: run id, versions, model identity and signature, target + agent info, run settings,
      raw samples per repeat (ns), memory, board telemetry and placement, status with error, validity
      (VALID/INVALID with reasons, warnings), accuracy block (or null), profile summary (or null), origin
      (deploy, or import of a standalone agent result, with the agent's reply digest).
  2 - load scenarios: settings.scenario (null: single-stream, back to back; else the scenario object), and for a
      scenario run each measurements.repeats[] has `scenario` (its own figures: server issue delays, achieved
      QPS and QPS-search probes, offline throughput). samples_ns holds one latency per query.
      A version 1 file reads as version 2 with settings.scenario null.
  3 - end-to-end pipelines: settings.pipeline (null, or the pipeline file by name and sha256 and the samples
      folder), each measurements.repeats[] of a pipeline run has `stages_ns` ({load, preprocess, inference,
      postprocess}: ns per sample; samples_ns is end to end), and a top-level `pipeline` block (what ran, and the
      board's final results against the host's). A version 2 file reads as version 3 with both null.
  4 - energy: settings.energy (null, or the energy pass asked for) and a top-level `energy` block (null; or the
      source, scope, rails, sample rate, idle and load windows, raw readings and the figures: average and idle
      power, mJ per inference total and above idle with a batch-means interval, inferences per joule; or
      `available: false` with the reason). A version 3 file reads as version 4 with both null.
  5 - runtimes: settings.runtime (onnxruntime, openvino, ncnn, litert) and measurements.runtime (name, version,
      and what the runtime was told and did: threads, precision). A version 4 file reads as version 5 with
      onnxruntime, its version from the target's info.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
from pathlib import Path
from typing import Callable

from .. import __version__
from ..agentlib import atomic_file
from ..errors import ResultError

SCHEMA_VERSION = 5

# What a result keeps of the agent's run reply.
MEASUREMENT_KEYS = ("started_at", "finished_at", "providers", "runtime", "inputs", "outputs", "repeats", "memory", "telemetry",
                    "placement")

# Older schema versions and the step that lifts a document one version up (asv-style migrations).
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}


def _v1_to_v2(document: dict) -> dict:
    """Every version 1 run was single-stream: the settings say so explicitly now."""
    settings = document.get("settings")
    if isinstance(settings, dict):
        settings = {**settings, "scenario": settings.get("scenario")}
    return {**document, "schema_version": 2, **({"settings": settings} if isinstance(settings, dict) else {})}


def _v2_to_v3(document: dict) -> dict:
    """Every version 2 run measured the bare model: no pipeline."""
    settings = document.get("settings")
    if isinstance(settings, dict):
        settings = {**settings, "pipeline": settings.get("pipeline")}
    return {**document, "schema_version": 3, "pipeline": document.get("pipeline"),
            **({"settings": settings} if isinstance(settings, dict) else {})}


def _v3_to_v4(document: dict) -> dict:
    """No version 3 run had an energy pass."""
    settings = document.get("settings")
    if isinstance(settings, dict):
        settings = {**settings, "energy": settings.get("energy")}
    return {**document, "schema_version": 4, "energy": document.get("energy"),
            **({"settings": settings} if isinstance(settings, dict) else {})}


def _v4_to_v5(document: dict) -> dict:
    """Every version 4 run was measured by onnxruntime."""
    settings = document.get("settings")
    if isinstance(settings, dict):
        settings = {**settings, "runtime": settings.get("runtime") or "onnxruntime"}
    measurements = document.get("measurements")
    if isinstance(measurements, dict) and "runtime" not in measurements:
        info = (document.get("target") or {}).get("info") if isinstance(document.get("target"), dict) else None
        version = info.get("onnxruntime_version") if isinstance(info, dict) else None
        measurements = {**measurements, "runtime": {"name": "onnxruntime", "version": version}}
    return {**document, "schema_version": 5, **({"settings": settings} if isinstance(settings, dict) else {}),
            **({"measurements": measurements} if isinstance(measurements, dict) else {})}


MIGRATIONS[1] = _v1_to_v2
MIGRATIONS[2] = _v2_to_v3
MIGRATIONS[3] = _v3_to_v4
MIGRATIONS[4] = _v4_to_v5


def parse_time(text) -> datetime.datetime | None:
    """A result's created_at as an aware time (a time without a zone is UTC); None when it is not a time."""
    try:
        value = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.")[:40] or "x"


def new_run_id(model_name: str, target_name: str, when: datetime.datetime | None = None) -> str:
    """Sortable, unique and safe as a file name: 20261127T160512Z-setnet-local-3fa2c1d0."""
    when = when or utc_now()
    return f"{when:%Y%m%dT%H%M%SZ}-{_slug(model_name)}-{_slug(target_name)}-{secrets.token_hex(4)}"


def build_result(*, run_id: str, created_at: str, model: dict, target: dict, settings: dict,
                 reply: dict | None, error: dict | None = None, accuracy: dict | None = None,
                 profile: dict | None = None, pipeline: dict | None = None, energy: dict | None = None) -> dict:
    """Assemble a result document from the host's view (model, target) and the agent's reply."""
    reply = reply or {}
    status = "ok" if error is None and reply.get("status") == "ok" else "failed"
    if status == "failed" and error is None:
        error = reply.get("error") or {"kind": "internal", "message": "the agent reported a failure without a reason"}
    measurements = None
    validity = {"valid": True, "reasons": [], "warnings": []}
    if status == "ok":
        from ..agentlib import assess

        measurements = {key: reply.get(key) for key in MEASUREMENT_KEYS}
        validity = assess(reply.get("telemetry"), reply.get("repeats"))  # the host analyses; the board only recorded
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created_at": created_at,
        "edgebench_version": __version__,
        "agent_version": reply.get("agent_version"),
        "protocol_version": reply.get("protocol_version"),
        "status": status,
        "error": error,
        "model": model,
        "target": target,
        "settings": settings,
        "measurements": measurements,
        "validity": validity,
        "accuracy": accuracy,
        "profile": profile,
        "pipeline": pipeline,
        "energy": energy,
        "origin": {"kind": "deploy", "digest": reply.get("digest")},
    }


# A temp file older than this was left by a writer that was killed (a live writer's is seconds old).
STALE_TEMP_S = 3600


def _remove_stale_temps(results_dir: Path) -> None:
    import time

    # Temp names of the shared atomic writer, and of edgebench 0.1.0 (".tmp-*.json").
    for temp in [*results_dir.glob(".*.json.*.tmp"), *results_dir.glob(".tmp-*.json")]:
        try:
            if time.time() - temp.stat().st_mtime > STALE_TEMP_S:
                temp.unlink()
        except OSError:
            pass  # another writer got there first


def write_result(results_dir: Path, document: dict) -> Path:
    """Write results_dir/<run_id>.json atomically; never replaces an existing file."""
    results_dir = Path(results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(results_dir)
    except OSError as exc:
        raise ResultError(f"cannot write results to {results_dir}: {exc.strerror}",
                          "choose a writable folder with --results") from exc
    final = results_dir / f"{document['run_id']}.json"
    try:
        with atomic_file(final, binary=False, replace=False) as out:  # never replaces: runs cannot clobber
            json.dump(document, out, indent=1)
            out.write("\n")
    except FileExistsError:
        raise ResultError(f"result {final} already exists") from None
    except OSError as exc:
        raise ResultError(f"cannot write {final}: {exc.strerror}", "check free space and permissions") from exc
    return final


# A result is tens of KiB (a few MiB with long sample lists); a bigger file is not one of ours.
MAX_RESULT_BYTES = 64 * 2**20


def read_json_file(path: Path, limit: int = MAX_RESULT_BYTES, what: str = "result"):
    """JSON from a regular file of at most `limit` bytes. A FIFO, a device or a folder is refused without
    blocking (opened non-blocking, checked with fstat), and so is nesting deep enough to exhaust the stack."""
    import stat

    path = Path(path)
    try:
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ResultError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise ResultError(f"{path}: not a regular file; skipped")
        if info.st_size > limit:
            raise ResultError(f"{path}: {info.st_size / 2**20:.0f} MiB is too large for a {what} file "
                              f"(limit {limit // 2**20} MiB)")
        with os.fdopen(os.dup(handle), "rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise ResultError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    finally:
        os.close(handle)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ResultError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except RecursionError:
        raise ResultError(f"{path}: JSON nested too deeply to be a {what}") from None
    except ValueError as exc:
        where = f" at line {exc.lineno}" if hasattr(exc, "lineno") else ""
        raise ResultError(f"{path}: not valid JSON ({getattr(exc, 'msg', exc)}{where})") from exc


def load_result(path: Path) -> dict:
    """Read one result file, migrating older schemas and checking its shape. Raises ResultError for anything
    unusable: a report skips that file with a warning and goes on."""
    from .schema import ShapeError, check

    path = Path(path)
    document = read_json_file(path)
    if not isinstance(document, dict) or not isinstance(document.get("schema_version"), int):
        raise ResultError(f"{path}: not an edgebench result (no schema_version)")
    version = document["schema_version"]
    if version > SCHEMA_VERSION:
        raise ResultError(f"{path}: result schema {version} is newer than this edgebench understands ({SCHEMA_VERSION})",
                          "upgrade edgebench")
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise ResultError(f"{path}: result schema {version} is too old to read")
        document = MIGRATIONS[version](document)
        version = document["schema_version"]
    try:
        check(document)
    except ShapeError as exc:
        raise ResultError(f"{path}: not a valid result: {exc}") from exc
    return document


def walk_result_files(folder: Path | str, skipped: list[str] | None = None) -> list[str]:
    """Paths of the result files (*.json) under a folder, sorted: hidden files and folders (the index's
    `.edgebench/`) are skipped, linked folders are not entered, and a linked file is listed only when it stays
    inside the folder (a results folder from elsewhere must not make a report read ~/.ssh or /proc). A FIFO, a
    device or a dangling link named *.json is listed: reading it refuses it, and the report says so. What is passed
    over that a reader must know of (links out of the folder, names that are not UTF-8) goes to `skipped`, one line
    each, when given."""
    root = os.path.join(str(folder), "")
    inside = os.path.join(os.path.realpath(root), "")
    found = []
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:  # bytes that are no UTF-8 name: nothing can print or store it as given
                if skipped is not None:
                    shown = os.fsencode(entry.path).decode("utf-8", "backslashreplace")
                    skipped.append(f"{shown}: a name that is not UTF-8 text; not read")
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.name.endswith(".json"):
                if entry.is_symlink() and not os.path.realpath(entry.path).startswith(inside):
                    if skipped is not None:
                        skipped.append(f"{entry.path}: a link to a file outside the results folder; not read")
                    continue
                found.append(entry.path)
    return sorted(found)


def result_files(paths: list[Path], skipped: list[str] | None = None) -> list[Path]:
    """The .json files named, or found (recursively) under the folders named."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(map(Path, walk_result_files(path, skipped)))
        elif path.exists():
            found.append(path)
        else:
            raise ResultError(f"no such file or folder: {path}")
    return found


def load_results(paths: list[Path]) -> tuple[list[dict], list[str]]:
    """Every readable result under `paths`, and one problem line per file that was skipped."""
    documents: list[dict] = []
    problems: list[str] = []
    seen: set[str] = set()
    for path in result_files(paths, problems):
        real = os.path.realpath(path)
        if real in seen:  # a link to a file already read (or a folder named twice): one run, once
            continue
        seen.add(real)
        try:
            documents.append(load_result(path))
        except ResultError as exc:
            problems.append(str(exc))
    return documents, problems
