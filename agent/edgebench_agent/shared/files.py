"""File helpers both sides use: one sha256, one atomic write.

The host names uploads by the same hash the board checks them with, so there is exactly one implementation.
"""

import contextlib
import os

_BLOCK = 1 << 20


def sha256_bytes(data):
    """Hex sha256 of bytes."""
    import hashlib  # here, not at the top: a board's every agent start would pay for it (~30 ms on a Pi)

    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (a model can be larger than memory allows twice)."""
    import hashlib

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
    import tempfile

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


def unpacked_folder(path, what, folder=None, max_members=None):
    """The folder of a packed archive's files: `path` itself when it is a folder, else the archive unpacked once into
    `folder` (default: beside it). Only plain files with plain, printable names are taken, each once (an archive
    never writes outside its folder: no links, no folders, no `..`, no sparse members that inflate past the archive's
    own size); anything else, or more than `max_members`, is an InputError naming `what`. An unpacking that died
    (its `.part-PID` folder, whose process is gone) is swept away first."""
    import tarfile

    from .inputs import InputError

    if os.path.isdir(path):
        return path
    folder = folder or path + UNPACKED_SUFFIX
    if os.path.isdir(folder):
        return folder
    parent = os.path.dirname(os.path.abspath(folder))
    if not os.path.isdir(parent):
        os.makedirs(parent)
    _sweep_dead_parts(folder)
    part = "%s.part-%d" % (folder, os.getpid())
    os.makedirs(part)
    try:
        seen = set()
        size = os.path.getsize(path)
        with tarfile.open(path, mode="r:") as archive:
            for member in archive:
                name = member.name
                if (not member.isfile() or member.issparse() or name != os.path.basename(name) or name.startswith(".")
                        or not name or not name.isprintable()):
                    raise InputError("the %s %s holds %r, which is not a plain file" % (what, path, name))
                if member.offset_data + member.size > size:  # an uncompressed archive holds every byte it unpacks
                    raise InputError("the %s %s says %r has %d bytes, more than the archive holds"
                                     % (what, path, name, member.size))
                if name in seen:
                    raise InputError("the %s %s holds %r twice" % (what, path, name))
                seen.add(name)
                if max_members is not None and len(seen) > max_members:
                    raise InputError("the %s %s holds more than %d files" % (what, path, max_members))
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


def _sweep_dead_parts(folder):
    """Remove `folder.part-PID` folders whose process has died (killed while unpacking)."""
    import glob
    import shutil

    for part in glob.glob(glob.escape(folder) + ".part-*"):
        try:
            pid = int(part.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except (ValueError, PermissionError):  # not ours to judge: another user's process is alive
            continue
        except OSError:  # no such process: nothing will finish this one
            shutil.rmtree(part, ignore_errors=True)
