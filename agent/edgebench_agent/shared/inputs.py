"""Input tensors for a run: user-supplied arrays win, the rest are generated from the model's signature.

Generated values are seeded, so two runs of one request feed identical data. Integer inputs get small
non-negative values (valid indices for most embedding tables and gather ops); a scalar such as a sample
rate is set by the user with a value override.
"""

from __future__ import annotations

import collections

import numpy as np

# onnxruntime's type strings -> numpy dtypes, for every tensor type onnxruntime runs that numpy holds.
ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.str_,  # run from given data only: text cannot be generated meaningfully
}

# Upper bound (exclusive) of generated integer values.
GENERATED_INT_HIGH = 10


class InputError(ValueError):
    """Inputs that do not fit the model (names, shapes, dtypes, unresolved dimensions)."""


def numpy_dtype(ort_type, input_name):
    try:
        return np.dtype(ORT_TO_NUMPY[ort_type])
    except KeyError:
        raise InputError("input %r has type %s, which edgebench cannot generate or load" % (input_name, ort_type))


def is_text(dtype):
    return np.dtype(dtype).kind in "USO"


def resolve_shape(name, shape, dims, batch=None):
    """Concrete shape for one input: fixed dims stay, free dims come from `dims`, a free axis 0 from `batch`.

    `dims` keys are a dim's symbolic name ("batch") or "input:axis" ("x:0"); the latter wins.
    """
    resolved = []
    for axis, dim in enumerate(shape):
        if not is_free(dim):
            if axis == 0 and batch is not None and dim != batch:
                raise InputError("input %r has a fixed batch of %d, so batch %d cannot be set: export it with "
                                 "a dynamic batch axis" % (name, dim, batch))
            resolved.append(dim)
            continue
        by_axis = "%s:%d" % (name, axis)
        if by_axis in dims:
            resolved.append(int(dims[by_axis]))
        elif isinstance(dim, str) and dim in dims:
            resolved.append(int(dims[dim]))
        elif axis == 0 and batch is not None:
            resolved.append(int(batch))
        else:
            label = ("'%s'" % dim) if isinstance(dim, str) else "(unnamed)"
            hint = ("--dim %s=N or " % dim) if isinstance(dim, str) else ""
            raise InputError(
                "input %r axis %d is a free dimension %s with no value: set it with %s--dim %s=N"
                % (name, axis, label, hint, by_axis)
            )
    return tuple(resolved)


# Arrays edgebench makes or loads are bounded: a 1 MB .npz can declare 1 TB, and a model can declare a
# 2^40-long axis. Above this, refuse before allocating; EDGEBENCH_MAX_ARRAY_MIB raises it.
DEFAULT_MAX_ARRAY_MIB = 512


def max_array_bytes():
    import os

    text = os.environ.get("EDGEBENCH_MAX_ARRAY_MIB", "")
    try:
        return int(float(text) * 2 ** 20) if text else DEFAULT_MAX_ARRAY_MIB * 2 ** 20
    except ValueError:
        return DEFAULT_MAX_ARRAY_MIB * 2 ** 20


def check_array_size(what, dtype, shape, already=0):
    """Refuse an array (plus `already` bytes held) larger than the limit, before it exists. Returns its bytes."""
    count = 1
    for dim in shape:
        count *= int(dim)
    size = count * np.dtype(dtype).itemsize
    limit = max_array_bytes()
    if size + already > limit:
        raise InputError("%s of shape %s (%s) would need %s, above edgebench's limit of %s: check the shape, or raise "
                         "the limit with EDGEBENCH_MAX_ARRAY_MIB=N" % (what, list(shape), np.dtype(dtype), _size_text(size + already),
                                                                      _size_text(limit)))
    return size


def _size_text(size):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return ("%d %s" % (size, unit)) if unit == "bytes" else ("%.1f %s" % (size, unit))
        size /= 1024.0


def is_free(dim):
    """A dimension without a fixed size: a name, None, or a negative placeholder. The one free-dimension test."""
    return not (isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0)


class Input(collections.namedtuple("Input", "name type shape")):
    """One input of a model: its name, its type (onnxruntime's "tensor(float)", or a numpy dtype's name where the
    model block recorded one) and its shape (an int per fixed dim; a name, None or a negative number per free one)."""

    __slots__ = ()

    @property
    def free_axes(self):
        return [axis for axis, dim in enumerate(self.shape) if is_free(dim)]

    @property
    def static(self):
        """Every dimension fixed (a scalar, of no dimensions, is static too)."""
        return not self.free_axes


class Signature(list):
    """A model's inputs, in order: the one form every reader of a signature takes, on the board and on the host,
    whether it was read from a session (session_signature), a result's model block (from_block) or an ONNX graph
    (from_graph). A list of Input triples, so (name, type, shape) unpacking reads it too."""

    @classmethod
    def of(cls, triples):
        return cls(Input(name, kind, list(shape or [])) for name, kind, shape in triples)

    @classmethod
    def from_block(cls, inputs):
        """From a model block's inputs ({"name", "dtype", "shape"} each, as inspect_model records them)."""
        return cls.of((entry["name"], entry["dtype"], entry["shape"]) for entry in inputs)

    @property
    def names(self):
        return [entry.name for entry in self]

    @property
    def types(self):
        return [entry.type for entry in self]

    @property
    def shapes(self):
        return [entry.shape for entry in self]

    @property
    def dtypes(self):
        """The numpy dtype of each input, for a signature read from a session (onnxruntime's type strings)."""
        return [numpy_dtype(entry.type, entry.name) for entry in self]

    def accepted_dim_keys(self):
        return accepted_dim_keys(self)

    def free_dim_keys(self, dims=None, batch=None, given=()):
        return free_dim_keys(self, dims, batch, given)


def dim_key(name, axis, dim):
    """The key --dim takes for one free axis: the dim's name when it has one, else "input:axis"."""
    return dim if isinstance(dim, str) and dim else "%s:%d" % (name, axis)


def accepted_dim_keys(signature):
    """Every key --dim accepts for a model: each free dim's name, and "input:axis" for every free axis."""
    keys = set()
    for name, _, shape in signature:
        for axis, dim in enumerate(shape or []):
            if is_free(dim):
                keys |= {dim_key(name, axis, dim), "%s:%d" % (name, axis)}
    return keys


def sizes_from_arrays(signature, shapes, first_axis=0):
    """{--dim key: size} for the free axes (from `first_axis` on) of inputs that arrays of these shapes feed."""
    sizes = {}  # type: dict
    for name, _, shape in signature:
        given = shapes.get(name)
        for axis, dim in enumerate(shape or []):
            if axis >= first_axis and is_free(dim) and given is not None and len(given) > axis:
                sizes.setdefault(dim_key(name, axis, dim), given[axis])
    return sizes


def free_dim_keys(signature, dims=None, batch=None, given=()):
    """Free dimensions nothing sizes yet, as the keys --dim takes (the dim's name, else "input:axis"), in order.

    signature: (name, type, shape) triples; `given` names inputs whose arrays fix their own shapes."""
    dims = dims or {}
    keys = []
    for name, _, shape in signature:
        if name in given:
            continue
        for axis, dim in enumerate(shape or []):
            if not is_free(dim):
                continue
            by_axis = "%s:%d" % (name, axis)
            key = dim_key(name, axis, dim)
            if by_axis in dims or key in dims or (axis == 0 and batch is not None) or key in keys:
                continue
            keys.append(key)
    return keys


def generate(dtype, shape, rng, int_range=None):
    """Seeded values of a dtype: normal floats, random booleans, integers in int_range ([low, high); default
    small non-negative ones, valid indices for most tables)."""
    if is_text(dtype):
        raise InputError("a string input cannot be generated: give it with --inputs FILE.npz or --test-data")
    check_array_size("a generated input", dtype, shape)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        low, high = int_range or (0, GENERATED_INT_HIGH)
        return rng.integers(low, high, size=shape).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)


def _npy_header(handle):
    """(shape, dtype) from an .npy stream's header, without reading the data."""
    from tokenize import TokenError

    from numpy.lib import format as npy

    try:
        version = npy.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(handle)
        else:
            shape, _, dtype = npy.read_array_header_2_0(handle)
    except (SyntaxError, TokenError, TypeError) as exc:  # numpy parses the header text (safely): a garbled one
        raise ValueError("a malformed .npy header (%s)" % " ".join(str(exc).split())[:100])
    return shape, dtype


def declared_arrays(path, name=None):
    """[(name, shape, dtype)] of an .npz or .npy (a path, or a file object with `name` for messages) as its
    headers declare them: nothing is inflated. A file that is not one (corrupt, truncated, a garbled header) is an
    InputError naming it."""
    import zipfile
    import zlib

    try:
        return _declared_arrays(path)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError("cannot read %s as .npz/.npy (corrupt or truncated?): %s"
                         % (name or path, " ".join(str(exc).split()) or type(exc).__name__))


def _declared_arrays(path):
    import zipfile

    if zipfile.is_zipfile(path):
        declared = []
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if not member.filename.endswith(".npy"):
                    continue
                with archive.open(member) as handle:
                    shape, dtype = _npy_header(handle)
                declared.append((member.filename[:-4], shape, dtype))
        return declared
    if hasattr(path, "read"):
        path.seek(0)
        return [("",) + tuple(_npy_header(path))]
    with open(path, "rb") as handle:
        shape, dtype = _npy_header(handle)
    return [("", shape, dtype)]


def load_npz(path, data=None):
    """Arrays from an .npz (or a single .npy) file, or from its bytes (`data`: a board's outputs read over the
    link; `path` then only names them). Pickled objects are refused, and so is an archive whose headers declare
    more than the array size limit (checked before anything is inflated)."""
    import io
    import os
    import stat
    import zipfile
    import zlib

    def source():
        return path if data is None else io.BytesIO(data)

    try:
        if data is None and not stat.S_ISREG(os.stat(path).st_mode):
            raise InputError("%s is not a regular file: give an .npz file" % path)
        total = 0
        for name, shape, dtype in declared_arrays(source(), path):
            if dtype.hasobject:
                raise InputError("%s holds pickled objects, which edgebench never loads: array %r is %s; save plain "
                                 "arrays" % (path, name, dtype))
            total += check_array_size("%s: array %r" % (path, name or "(.npy)"), dtype, shape, total)
        loaded = np.load(source(), allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"": loaded}
        try:
            return {key: loaded[key] for key in loaded.files}
        finally:
            loaded.close()
    except InputError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise InputError("%s holds pickled objects, which edgebench never loads: save plain arrays (%s)" % (path, exc))
        raise InputError("cannot read %s as .npz/.npy: %s" % (path, exc))
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, TypeError) as exc:
        raise InputError("cannot read %s as .npz/.npy (corrupt or truncated?): %s" % (path, " ".join(str(exc).split()) or type(exc).__name__))


def _check_user_array(name, array, dtype, shape):
    if is_text(dtype) and is_text(array.dtype):
        pass  # unicode from .npz, str objects from .pb: onnxruntime takes either
    elif array.dtype != dtype:
        raise InputError("input %r must be %s but the supplied array is %s" % (name, dtype, array.dtype))
    if array.ndim != len(shape):
        raise InputError(
            "input %r must have rank %d (shape %s) but the supplied array has shape %s"
            % (name, len(shape), _shape_text(shape), list(array.shape))
        )
    for axis, (want, got) in enumerate(zip(shape, array.shape)):
        if not is_free(want) and want != got:
            raise InputError(
                "input %r axis %d is fixed at %d in the model but the supplied array has %d (shape %s vs %s)"
                % (name, axis, want, got, list(array.shape), _shape_text(shape))
            )


def _shape_text(shape):
    return "[%s]" % ", ".join(str(d) if d is not None else "?" for d in shape)


def build_feeds(signature, user_arrays=None, values=None, dims=None, seed=0, batch=None, int_ranges=None):
    """Feeds for every model input, and a description of where each came from.

    signature: list of (name, ort_type, shape) from the session. int_ranges: name -> (low, high) for generated
    integers (the host reads them from the graph: the rows of the table an input indexes).
    Returns (feeds dict, list of {"name", "shape", "dtype", "source"}).
    """
    int_ranges = int_ranges or {}
    user_arrays = dict(user_arrays or {})
    values = values or {}
    dims = dims or {}
    names = [name for name, _, _ in signature]
    if "" in user_arrays:  # a bare .npy: only meaningful for a single-input model
        if len(names) != 1:
            raise InputError("a single .npy array can only feed a model with one input; this one has %d" % len(names))
        user_arrays[names[0]] = user_arrays.pop("")
    unknown = sorted((set(user_arrays) | set(values)) - set(names))
    if unknown:
        raise InputError(
            "no model input named %s; the model's inputs are: %s" % (", ".join(repr(u) for u in unknown), ", ".join(names))
        )
    both = sorted(set(user_arrays) & set(values))
    if both:
        raise InputError("input %r is given both in the inputs file and as a value: give it once" % both[0])
    feeds = {}
    described = []
    for position, (name, ort_type, shape) in enumerate(signature):
        dtype = numpy_dtype(ort_type, name)
        if name in user_arrays:
            array = np.asarray(user_arrays[name])
            _check_user_array(name, array, dtype, shape)
            source = "file"
        else:
            if name in values and isinstance(values[name], list):
                array = _list_value(name, values[name], dtype, shape)
                source = "value"
            elif name in values:
                concrete = resolve_shape(name, shape, dims, batch)
                check_array_size("input %r" % name, dtype, concrete)
                array = np.full(concrete, values[name], dtype=dtype)
                source = "value"
            else:
                if is_text(dtype):
                    raise InputError("input %r is a string tensor, which edgebench cannot generate: give it with "
                                     "--inputs FILE.npz or --test-data DIR" % name)
                concrete = resolve_shape(name, shape, dims, batch)
                # One stream per input position: an input's values do not depend on which others were given.
                array = generate(dtype, concrete, np.random.default_rng([seed, position]), int_ranges.get(name))
                source = "generated"
        # Not np.ascontiguousarray: it turns a rank-0 scalar into shape (1,).
        feeds[name] = array if array.flags.c_contiguous else array.copy(order="C")
        entry = {"name": name, "shape": list(array.shape), "dtype": str(array.dtype), "source": source}
        if source == "generated" and name in int_ranges and np.issubdtype(dtype, np.integer):
            entry["range"] = list(int_ranges[name])
        described.append(entry)
    return feeds, described


def _list_value(name, items, dtype, shape):
    """--value shape=1,3,4: a rank-1 input given element by element."""
    if len(shape) != 1:
        raise InputError("input %r has rank %d: a list value (%s) fits only a rank-1 input"
                         % (name, len(shape), ",".join(str(i) for i in items)))
    if not is_free(shape[0]) and shape[0] != len(items):
        raise InputError("input %r takes %d values but %d were given (%s)" % (name, shape[0], len(items),
                                                                             ",".join(str(i) for i in items)))
    return np.array(items, dtype=dtype)


def session_signature(session):
    """A loaded session's inputs as a Signature (name, onnxruntime type, shape): the one reader of a session's
    signature, on the board and on the host. Shapes hold ints for fixed dims, names or None for free ones."""
    return Signature.of((arg.name, arg.type, arg.shape) for arg in session.get_inputs())
