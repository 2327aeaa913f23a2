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


# The files each runtime's bundle must name (role -> what it is), and what else its manifest must say.
ROLES = {"openvino": ("xml", "bin"), "ncnn": ("param", "bin"), "litert": ("tflite",)}
MAX_ENTRIES = 64  # inputs or outputs of a bundle
MAX_RANK = 16
MAX_NAME = 256


def _shown(value, limit=60):
    """A value from a file as one safe, short piece of text for a message (no control characters)."""
    text = "".join(c if c.isprintable() else "?" for c in repr(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _plain_name(value):
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME and value.isprintable()


def check_manifest(manifest, what, runtime=None):
    """A bundle's manifest, checked for what every reader relies on; BundleError naming the first problem. `runtime`:
    the runtime that will read it (None: any of the bundle runtimes)."""
    if not isinstance(manifest, dict):
        raise BundleError("%s: %s is not a JSON object" % (what, MANIFEST))
    version = manifest.get("bundle_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError("%s: %s has no bundle_version (a whole number from 1), got %s" % (what, MANIFEST, _shown(version)))
    if version > BUNDLE_VERSION:
        raise BundleError("%s is a bundle of version %s; this edgebench reads up to %d: upgrade it"
                          % (what, _shown(version, 12), BUNDLE_VERSION))
    name = manifest.get("runtime")
    if name not in ROLES:
        raise BundleError("%s: %s names runtime %s; a bundle is for one of %s" % (what, MANIFEST, _shown(name), ", ".join(ROLES)))
    if runtime is not None and name != runtime:
        raise BundleError("%s is a model for %s, not %s: run it with --runtime %s" % (what, name, runtime, name))
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(_plain_name(f) and f == os.path.basename(f) and not f.startswith(".")
                                              for f in files.values()):
        raise BundleError("%s: %s needs a files table of plain file names" % (what, MANIFEST))
    missing = [role for role in ROLES[name] if role not in files]
    if missing:
        raise BundleError("%s: %s names no %s file, which a %s bundle needs" % (what, MANIFEST, missing[0], name))
    for side in ("inputs", "outputs"):
        entries = manifest.get(side)
        if not isinstance(entries, list) or not 0 < len(entries) <= MAX_ENTRIES:
            raise BundleError("%s: %s lists no %s (1 to %d of them)" % (what, MANIFEST, side, MAX_ENTRIES))
        for entry in entries:
            _check_entry(entry, side, name, what)
    return manifest


def _check_entry(entry, side, runtime, what):
    where = "%s: %s %s" % (what, MANIFEST, side)
    if not isinstance(entry, dict) or not _plain_name(entry.get("name")):
        raise BundleError("%s: each needs a printable name" % where)
    label = "%s %s" % (where, _shown(entry["name"]))
    if not isinstance(entry.get("dtype"), str) or entry["dtype"] not in NUMPY_TO_ORT:
        raise BundleError("%s: dtype %s is not one edgebench knows" % (label, _shown(entry.get("dtype"))))
    shape = entry.get("shape")
    fixed = runtime == "ncnn"  # ncnn's graph is static: every size is known
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(
            (isinstance(d, int) and not isinstance(d, bool) and d > 0) or
            (not fixed and (d is None or (isinstance(d, str) and _plain_name(d)))) for d in shape):
        raise BundleError("%s: shape %s must list %s" % (label, _shown(shape), "positive sizes" if fixed else
                                                          "positive sizes, or names / null for free ones"))
    if runtime in ("ncnn", "litert") and not _plain_name(entry.get("blob")):
        raise BundleError("%s: a %s bundle names each tensor's blob" % (label, runtime))
    if runtime == "ncnn":
        if entry["dtype"] != "float32":
            raise BundleError("%s: ncnn takes and gives float32 only, not %s" % (label, entry["dtype"]))
        if side == "inputs" and (not shape or shape[0] != 1):
            raise BundleError("%s: ncnn runs one sample at a time; the shape must start with 1" % label)


def parse_manifest(data, what):
    """The manifest's bytes as JSON (NaN and Infinity refused, nesting bounded); BundleError otherwise."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError("%s: %s is larger than 1 MiB" % (what, MANIFEST))

    def no_constants(token):
        raise ValueError("%s is not a JSON number" % token)

    try:
        return json.loads(data.decode("utf-8"), parse_constant=no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError("%s: %s is not valid JSON (%s)" % (what, MANIFEST, _shown(str(exc), 120)))


def read_manifest(folder, runtime, what):
    """A bundle's manifest, checked for `runtime`, with every file it names a plain file of the bundle."""
    path = os.path.join(folder, MANIFEST)
    try:
        if os.path.getsize(path) > MAX_MANIFEST_BYTES:
            raise BundleError("%s: %s is larger than 1 MiB" % (what, MANIFEST))
        with open(path, "rb") as handle:
            data = handle.read()
    except (OSError, IOError) as exc:
        raise BundleError("%s is not an edgebench model bundle (no readable %s: %s); make one with `bench convert "
                          "--to %s`" % (what, MANIFEST, getattr(exc, "strerror", None) or exc, runtime))
    manifest = check_manifest(parse_manifest(data, what), what, runtime)
    for role, name in manifest["files"].items():
        if not os.path.isfile(os.path.join(folder, name)):
            raise BundleError("%s: the %s file %s named by its manifest is missing" % (what, role, _shown(name)))
    return manifest


def runtime_of_file(path):
    """The runtime a model file is for, by what it is: a .tflite is LiteRT's, a bundle names its runtime; None for
    anything else (an .onnx runs on onnxruntime unless asked otherwise)."""
    if path.endswith(".tflite"):
        return "litert"
    if not path.endswith(".tar"):
        return None
    import tarfile

    try:
        with tarfile.open(path, mode="r:") as archive:
            for count, member in enumerate(archive):
                if count >= MAX_BUNDLE_MEMBERS:
                    return None
                if member.name == MANIFEST and member.isfile() and member.size <= MAX_MANIFEST_BYTES:
                    handle = archive.extractfile(member)
                    manifest = parse_manifest(handle.read(), path) if handle else None
                    runtime = manifest.get("runtime") if isinstance(manifest, dict) else None
                    return runtime if runtime in ROLES else None
    except (tarfile.TarError, OSError, IOError, BundleError):
        return None
    return None


def bundle_cache():
    """Where bundles are unpacked: by content, under the user's cache, never beside the file given."""
    root = os.environ.get("EDGEBENCH_BUNDLE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgebench", "bundles")
    return root


def bundle_folder(path, runtime):
    """(folder, manifest) of a bundle `.tar`, unpacked once into a folder named by its sha256 (a changed file can
    never be served by an old unpacking), plain files only, at most the members a bundle needs."""
    from ..shared.files import sha256_file, unpacked_folder
    from ..shared.inputs import InputError

    what = "model bundle %s" % path
    if os.path.isdir(path):
        return path, read_manifest(path, runtime, what)
    try:
        sha = sha256_file(path)
        parent = os.path.dirname(os.path.abspath(path))
        # Uploaded by `bench deploy` (the board's cache keeps each upload in a folder named by its sha256): unpacked
        # inside that entry, so `bench clean` trims it with the upload. Anything else: the user's cache, by content.
        folder = os.path.join(parent, "unpacked") if os.path.basename(parent) == sha else os.path.join(bundle_cache(), sha)
        unpacked_folder(path, "model bundle", folder=folder, max_members=MAX_BUNDLE_MEMBERS)
    except InputError as exc:
        raise BundleError(str(exc))
    except (OSError, IOError) as exc:
        raise BundleError("cannot unpack %s: %s" % (what, getattr(exc, "strerror", None) or exc))
    return folder, read_manifest(folder, runtime, what)


MAX_BUNDLE_MEMBERS = 16


def manifest_args(entries):
    return [Arg(e["name"], NUMPY_TO_ORT[e["dtype"]], e["shape"]) for e in entries]



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
