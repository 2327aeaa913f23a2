"""Runtimes beside onnxruntime, on the host: bundles (made and read) and sessions of them for parity checks and
accuracy references (the conversions that make the bundles are in runtime_convert.py).

A bundle is an uncompressed tar of a runtime's files plus `edgebench-model.json` (the runtime, its files, and the
model's inputs and outputs by the ONNX names), so every artefact is one file: hashed, uploaded by hash, given
provenance like any other variant. The sessions come from the agent's runtime modules: the host checks a conversion
with exactly the code the board measures it with.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tarfile
from pathlib import Path

from ..errors import ModelError, is_our_bug, one_line

MANIFEST_LIMIT = 1 << 20
# The model files each runtime takes as they are (anything else for it is refused before upload).
ACCEPTS = {"onnxruntime": ("onnx", "ort"), "openvino": ("onnx", "openvino"), "ncnn": ("ncnn",),
           "litert": ("litert", "tflite")}


def bundle_name(model_path: Path, runtime: str) -> str:
    return f"{Path(model_path).stem}.{runtime}.tar"


def write_bundle(out: Path, runtime: str, files: dict, inputs: list[dict], outputs: list[dict], scratch: Path) -> None:
    """Pack the runtime's files (role -> path) and a manifest into the bundle `out` (deterministic bytes)."""
    from ..agentlib import BUNDLE_VERSION, MANIFEST, pack_files

    manifest = {"bundle_version": BUNDLE_VERSION, "runtime": runtime,
                "files": {role: Path(path).name for role, path in files.items()}, "inputs": inputs, "outputs": outputs}
    manifest_path = scratch / MANIFEST
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    with open(out, "wb") as handle:
        pack_files([str(p) for p in files.values()] + [str(manifest_path)], handle)


def read_bundle(path: Path) -> dict:
    """A bundle's manifest, read from the tar without unpacking anything and checked as the board checks it
    (edgebench_agent.runtimes.check_manifest); ModelError when it is not a usable bundle."""
    import itertools

    from ..agentlib import MANIFEST, MAX_BUNDLE_MEMBERS, BundleError, check_manifest, parse_manifest

    hint = "make one with `bench convert MODEL.onnx --to ncnn` (or openvino, litert)"
    try:
        with tarfile.open(path, mode="r:") as archive:
            listed = list(itertools.islice(archive, MAX_BUNDLE_MEMBERS + 1))
            if len(listed) > MAX_BUNDLE_MEMBERS:
                raise ModelError(f"{path} holds more than {MAX_BUNDLE_MEMBERS} files: not an edgebench model bundle", hint)
            members = [m for m in listed if m.name == MANIFEST]
            if len(members) != 1 or not members[0].isfile() or members[0].issparse() or members[0].size > MANIFEST_LIMIT:
                raise ModelError(f"{path} is not an edgebench model bundle (it needs exactly one {MANIFEST} of at most "
                                 "1 MiB)", hint)
            handle = archive.extractfile(members[0])
            data = handle.read() if handle else b""
    except (tarfile.TarError, OSError) as exc:
        raise ModelError(f"{path} is not a readable model bundle: {one_line(exc, 200)}", hint) from exc
    try:
        return check_manifest(parse_manifest(data, f"model bundle {path}"), f"model bundle {path}")
    except BundleError as exc:
        raise ModelError(str(exc), hint) from exc


def _entries(args) -> list[dict]:
    from ..agentlib import ORT_TO_NUMPY

    return [{"name": a.name, "dtype": ORT_TO_NUMPY[a.type].__name__ if a.type in ORT_TO_NUMPY else a.type,
             "shape": [d if isinstance(d, (int, str)) and d != "" else None for d in a.shape]} for a in args]


def inspect_artefact(path: Path) -> dict:
    """The model block of a bundle or a .tflite: format (the runtime's), signature, runtime."""
    if path.suffix == ".tar":
        manifest = read_bundle(path)
        return {"format": manifest["runtime"], "runtime": manifest["runtime"], "ir_version": 0, "opsets": {},
                "producer": f"edgebench {manifest['runtime']} bundle",
                "inputs": [{k: e[k] for k in ("name", "dtype", "shape")} for e in manifest["inputs"]],
                "outputs": [{k: e[k] for k in ("name", "dtype", "shape")} for e in manifest["outputs"]],
                "external_data": []}
    session = runtime_session(path, "litert")
    return {"format": "tflite", "runtime": "litert", "ir_version": 0, "opsets": {}, "producer": "LiteRT flatbuffer",
            "inputs": _entries(session.get_inputs()), "outputs": _entries(session.get_outputs()), "external_data": []}


def runtime_of(model: dict) -> str | None:
    """The one runtime a model block is for, when its format fixes it (bundles, .tflite); None for ONNX."""
    return {"ncnn": "ncnn", "openvino": "openvino", "litert": "litert", "tflite": "litert", "ort": "onnxruntime"}.get(
        model.get("format", "onnx"))


def runtime_available_here(runtime: str) -> bool:
    from ..agentlib import versions

    return runtime in versions()


def runtime_session(path: Path, runtime: str, threads: int = 0):
    """A session of `path` with a runtime on this host (the agent's own runtime module); ModelError when the runtime
    is missing here or cannot load the model."""
    from ..agentlib import SessionError, create_session, normalize_run_request, pip_line

    request = normalize_run_request({"model": str(path), "runtime": runtime, "intra_op_threads": threads})
    try:
        with _quiet_native_stderr():  # LiteRT's C++ prints "INFO: Created ... delegate" on fd 2 for every interpreter
            return create_session(request)
    except SessionError as exc:  # (a bundle is unpacked by its sha256 in the user's cache, never beside the file)
        if exc.kind == "missing":
            raise ModelError(f"{runtime} is not installed on this host: {pip_line(runtime)} (or pip install "
                             "'edgebench[runtimes]')") from exc
        raise ModelError(str(exc)) from exc
    except Exception as exc:  # the runtime's own failure types (a bug of ours stays a traceback)
        if is_our_bug(exc):
            raise
        raise ModelError(f"{runtime} cannot load {path} on this host: {one_line(exc, 300)}") from exc


@contextlib.contextmanager
def _quiet_native_stderr():
    """fd 2 pointed at /dev/null while a runtime's native code starts (its own log lines would break the one-line
    error contract); what goes wrong still arrives as the exception's message."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
