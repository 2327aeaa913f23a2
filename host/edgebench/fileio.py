"""Host file helpers: each file hashed once, every write atomic, every OS failure a typed error.

Both helpers stand on the shared ones (edgebench_agent.shared.files, through agentlib), so host and board hash
and write the same way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import FileWriteError

# A deploy asks for the same file's hash many times (identity, provenance, upload name, every target of a
# fleet); a model can be gigabytes. Keyed on the file's identity and stat (device, inode, size, mtime and ctime
# in ns), so a file changed in place is hashed again.
_HASHES: dict[tuple, str] = {}


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, computed once per file version and process."""
    from .agentlib import sha256_file

    stat = os.stat(path)
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(str(path))
    return _HASHES[key]


def write_atomically(path: Path | str, data: str | bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` in one step (a reader sees the old file or the new one); makes the folder
    (`-o reports/today.html` makes reports/). A failure is a FileWriteError naming the file and the reason."""
    from .agentlib import write_atomically as shared_write

    path = Path(path)
    _refuse_special(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shared_write(str(path), data, mode)
    except OSError as exc:
        raise FileWriteError(f"cannot write {path}: {exc.strerror or exc}", "check free space and permissions") from exc


def _refuse_special(path: Path) -> None:
    """A write replaces its file: `-o /dev/full` (or a link to a device, a FIFO) would replace the device node itself
    when run as root. Only a regular file, a link to one, or nothing, may be there."""
    import stat

    try:
        info = os.stat(path)
    except OSError:
        return  # nothing there (or a dangling link, which is replaced, not followed)
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a device, FIFO or socket"
        raise FileWriteError(f"cannot write {path}: it is {kind}, not a file", "give the path of a file to write")


def copy_atomically(source: Path | str, destination: Path | str) -> None:
    """Copy a file so that `destination` is never seen half-written."""
    from .agentlib import atomic_file

    destination = Path(destination)
    _refuse_special(destination)
    try:
        with open(source, "rb") as reading, atomic_file(str(destination)) as writing:
            shutil.copyfileobj(reading, writing, 1 << 20)
    except OSError as exc:
        raise FileWriteError(f"cannot write {destination}: {exc.strerror or exc}",
                             "check free space and permissions") from exc


def cache_dir() -> Path:
    """Host-side cache: $EDGEBENCH_CACHE, else $XDG_CACHE_HOME/edgebench, else ~/.cache/edgebench."""
    if os.environ.get("EDGEBENCH_CACHE"):
        return Path(os.environ["EDGEBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgebench"


def check_output_file(path: Path | str, option: str) -> None:
    """Before any work: `path` can be written as a file (no folder, device or FIFO there; its folder exists or can
    be made, and is writable). A FileWriteError naming the option otherwise."""
    path = Path(path)
    _refuse_special(path)
    check_writable_folder(path.parent, option, what=f"cannot write {option} {path}")


def check_writable_folder(folder: Path | str, option: str, what: str | None = None) -> None:
    """Before any work: `folder` is a writable folder, or the nearest existing folder above it is (it is made when
    the first file is written)."""
    folder = Path(folder)
    existing = next((p for p in [folder, *folder.absolute().parents] if os.path.lexists(p)), None)
    problem = None
    if existing is None or not existing.is_dir():
        problem = f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    if problem:
        raise FileWriteError(f"{what or f'cannot use {option} {folder}'}: {problem}", f"give {option} a writable folder")
