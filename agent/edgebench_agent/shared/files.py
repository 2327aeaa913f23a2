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


# An archive (samples, a runtime's model bundle) is unpacked once into a folder beside it with this suffix.
UNPACKED_SUFFIX = ".d"


def pack_files(paths, out):
    """Files as one uncompressed tar (plain names, no owners or times), written to the binary file `out`: the same
    files always make the same bytes, so an archive is uploaded by hash once."""
    import tarfile

    # PAX: names of any length (USTAR stops at 100 characters); still no times or owners from this machine.
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in paths:
            info = tarfile.TarInfo(os.path.basename(path))
            info.size = os.path.getsize(path)
            info.mode = 0o644
            info.mtime = 0
            with open(path, "rb") as handle:
                archive.addfile(info, handle)


def unpacked_folder(path, what):
    """The folder of a packed archive's files: `path` itself when it is a folder, else the archive unpacked beside
    it once. Only plain files with plain names are taken (an archive never writes outside its folder: no links,
    no folders, no `..`); anything else is an InputError naming `what`."""
    import tarfile

    from .inputs import InputError

    if os.path.isdir(path):
        return path
    folder = path + UNPACKED_SUFFIX
    if os.path.isdir(folder):
        return folder
    part = "%s.part-%d" % (folder, os.getpid())
    os.makedirs(part)
    try:
        with tarfile.open(path, mode="r:") as archive:
            for member in archive:
                name = member.name
                if not member.isfile() or name != os.path.basename(name) or name.startswith(".") or not name:
                    raise InputError("the %s %s holds %r, which is not a plain file" % (what, path, name))
                source = archive.extractfile(member)
                if source is None:
                    raise InputError("the %s %s cannot give %r back" % (what, path, name))
                with open(os.path.join(part, name), "wb") as handle:
                    while True:
                        block = source.read(_BLOCK)
                        if not block:
                            break
                        handle.write(block)
        try:
            os.rename(part, folder)
        except OSError:  # another run unpacked it first: theirs is complete
            pass
    except (tarfile.TarError, OSError) as exc:
        raise InputError("cannot unpack the %s %s: %s" % (what, path, exc))
    finally:
        if os.path.isdir(part):
            import shutil

            shutil.rmtree(part, ignore_errors=True)
    return folder
