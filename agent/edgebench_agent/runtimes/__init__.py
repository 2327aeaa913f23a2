"""The runtimes a board can measure a model with, behind one small interface.

Each runtime module (imported only when a run asks for it) offers `version()` and `create_session(request, path)`;
a session looks like an onnxruntime InferenceSession to the runner: `run(None, feeds)` -> list of arrays,
`get_inputs()` / `get_outputs()` -> args with `name`, `type` (onnxruntime's type string) and `shape`,
`get_providers()`; optionally `timed_run`, the same inference without converting its outputs to numpy (what the
timed loops call). `settings_of` says what the runtime was told and did: threads, precision. So the warm-up,
the timed loop, the scenarios, pipelines, accuracy and energy passes are the same code for every runtime.

A model for a runtime other than onnxruntime may be a bundle: an uncompressed tar (`bench convert` writes
`model.ncnn.tar`, `model.openvino.tar`, `model.litert.tar`) holding the runtime's files and `edgebench-model.json`,
which names the runtime, its files, and the model's inputs and outputs by the names of the ONNX model it came from.
"""

from __future__ import annotations

import importlib
import json
import os

from ..protocol import RUNTIMES  # noqa: E402 - the contract names them
# What `pip install` adds each runtime to a board, and the module that proves it is there.
PIP_NAMES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn", "litert": "ai-edge-litert"}
IMPORT_NAMES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn", "litert": "ai_edge_litert"}
# Model files each runtime reads (a bundle `.tar` names its runtime in its manifest).
SUFFIXES = {"onnxruntime": (".onnx", ".ort"), "openvino": (".onnx", ".tar"), "ncnn": (".tar",),
            "litert": (".tflite", ".tar")}

MANIFEST = "edgebench-model.json"
BUNDLE_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 20

# numpy dtype names -> onnxruntime's type strings (the signature's currency on both sides)
NUMPY_TO_ORT = {"float32": "tensor(float)", "float16": "tensor(float16)", "float64": "tensor(double)",
                "int8": "tensor(int8)", "int16": "tensor(int16)", "int32": "tensor(int32)", "int64": "tensor(int64)",
                "uint8": "tensor(uint8)", "uint16": "tensor(uint16)", "uint32": "tensor(uint32)",
                "uint64": "tensor(uint64)", "bool": "tensor(bool)"}


class RuntimeFailure(Exception):
    """A runtime's own failure that its library reports as a return code rather than an exception (ncnn)."""


class SessionError(Exception):
    """A session that cannot be made; `kind` is the failed run's kind (protocol.FAILURE_KINDS)."""

    def __init__(self, kind, message):
        Exception.__init__(self, message)
        self.kind = kind


class BundleError(ValueError):
    """A model bundle that cannot be used: the message names the file and what is wrong."""


class Arg(object):
    """One input or output as the runner reads it (onnxruntime's NodeArg has the same three fields)."""

    __slots__ = ("name", "type", "shape")

    def __init__(self, name, type, shape):
        self.name, self.type, self.shape = name, type, list(shape)


def load(name):
    """The module of a runtime (imports the runtime's library only when its session is made)."""
    if name not in RUNTIMES:
        raise ValueError("unknown runtime %r; known: %s" % (name, ", ".join(RUNTIMES)))
    return importlib.import_module("%s.rt_%s" % (__name__, name))


def pip_line(name):
    return "pip install %s" % PIP_NAMES[name]


def versions():
    """{runtime: version} of every runtime this Python can import, found without importing the heavy ones (the
    handshake runs before every deploy; importing OpenVINO takes a second on a Pi)."""
    import importlib.util

    found = {}
    for name in RUNTIMES:
        module = IMPORT_NAMES[name]
        try:
            if importlib.util.find_spec(module) is None:
                continue
        except (ImportError, ValueError):
            continue
        found[name] = _distribution_version(PIP_NAMES[name]) or "unknown"
    return found


def _distribution_version(distribution):
    try:
        from importlib.metadata import version  # Python 3.8+
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(distribution)
    except Exception:  # PackageNotFoundError, or metadata a vendor left out
        return None


def is_runtime_error(exc):
    """True for an exception raised by a runtime's own library (the failed result's kind names the runtime)."""
    module = type(exc).__module__ or ""
    return isinstance(exc, RuntimeFailure) or module.startswith(
        ("onnxruntime", "openvino", "ncnn", "ai_edge_litert", "tflite_runtime"))


def read_manifest(folder, runtime, what):
    """A bundle's manifest, checked: it must name `runtime`, and every file it names must be a plain file of the
    bundle. BundleError otherwise."""
    path = os.path.join(folder, MANIFEST)
    try:
        if os.path.getsize(path) > MAX_MANIFEST_BYTES:
            raise BundleError("%s: %s is larger than 1 MiB" % (what, MANIFEST))
        with open(path) as handle:
            manifest = json.load(handle)
    except (OSError, IOError) as exc:
        raise BundleError("%s is not an edgebench model bundle (no readable %s: %s); make one with `bench convert "
                          "--to %s`" % (what, MANIFEST, getattr(exc, "strerror", None) or exc, runtime))
    except ValueError as exc:
        raise BundleError("%s: %s is not valid JSON (%s)" % (what, MANIFEST, exc))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleError("%s: %s has no files table" % (what, MANIFEST))
    if manifest.get("bundle_version", 0) > BUNDLE_VERSION:
        raise BundleError("%s is a bundle of version %s; this agent reads up to %d: upgrade the agent"
                          % (what, manifest.get("bundle_version"), BUNDLE_VERSION))
    if manifest.get("runtime") != runtime:
        raise BundleError("%s is a model for %s, not %s: run it with --runtime %s"
                          % (what, manifest.get("runtime"), runtime, manifest.get("runtime")))
    for role, name in manifest["files"].items():
        if not isinstance(name, str) or name != os.path.basename(name) or not os.path.isfile(os.path.join(folder, name)):
            raise BundleError("%s: the %s file %r named by its manifest is missing" % (what, role, name))
    for side in ("inputs", "outputs"):
        entries = manifest.get(side)
        if not isinstance(entries, list) or not entries or not all(
                isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("shape"), list)
                and e.get("dtype") in NUMPY_TO_ORT for e in entries):
            raise BundleError("%s: %s lists no usable %s (each needs a name, a dtype and a shape)" % (what, MANIFEST, side))
    return manifest


def bundle_folder(path, runtime):
    """(folder, manifest) of a bundle `.tar` (unpacked beside it once, plain files only) or an unpacked folder."""
    from ..shared.files import unpacked_folder
    from ..shared.inputs import InputError

    what = "model bundle %s" % path
    try:
        folder = unpacked_folder(path, "model bundle")
    except InputError as exc:
        raise BundleError(str(exc))
    return folder, read_manifest(folder, runtime, what)


def manifest_args(entries):
    return [Arg(e["name"], NUMPY_TO_ORT[e["dtype"]], e["shape"]) for e in entries]


def threads_setting(request):
    """The thread count a runtime is given: the request's intra-op threads, 0 meaning the runtime's default."""
    return request["intra_op_threads"]


def create_session(request):
    """A session of the request's model with the request's runtime; SessionError (with the failed run's kind) when
    the runtime is missing on this board, or the model is not one it can load."""
    name = request["runtime"]
    module = load(name)
    try:
        return module.create_session(request)
    except ImportError as exc:
        raise SessionError("missing", "%s is not installed for %s on this board (%s): %s"
                           % (name, _python(), _one_line(exc), pip_line(name)))
    except BundleError as exc:
        raise SessionError("model", str(exc))


def settings_of(session, request):
    """What the runtime was told and did, for the result: its name, version, threads, precision."""
    module = load(request["runtime"])
    facts = {"name": request["runtime"], "version": module.version()}
    facts.update(module.settings_of(session, request))
    return facts


def _python():
    import sys

    return sys.executable or "python3"


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."
