"""File helpers both sides use: one sha256, one atomic write.

The host names uploads by the same hash the board checks them with, so there is exactly one implementation.
"""

import contextlib
import hashlib
import os
import tempfile

_BLOCK = 1 << 20


def sha256_bytes(data):
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (a model can be larger than memory allows twice)."""
    digest = hashlib.sha256()
    with open(str(path), "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _default_mode():
    """What open() would have made: 0666 less the umask (mkstemp makes 0600 files)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_file(path, binary=True, mode=None, replace=True):
    """Open a temp file beside `path` for writing; on a clean exit it replaces `path` in one step, so a reader
    sees the old file or the new one, never half of one (rename is atomic within a file system). With
    replace=False an existing `path` is never touched: FileExistsError (link(2) refuses existing names, so two
    writers cannot clobber each other). On any failure the temp file is removed and the error propagates."""
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=folder)
    try:
        os.fchmod(handle, _default_mode() if mode is None else mode)
        with os.fdopen(handle, "wb" if binary else "w") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)
            os.unlink(temp)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def write_atomically(path, data, mode=None):
    """Replace `path` with `data` (str or bytes) atomically (see atomic_file)."""
    with atomic_file(path, binary=isinstance(data, bytes), mode=mode) as out:
        out.write(data)
