"""The board's cache folder: free space, and trimming it to a size budget."""

from __future__ import annotations

import os
import shutil

from .lock import acquire_lock


def disk_free_bytes(path):
    """Free bytes on the file system holding `path` (its nearest existing parent)."""
    path = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(path):
        path = os.path.dirname(path)
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _size(path):
    if os.path.isdir(path) and not os.path.islink(path):
        total = 0
        for folder, _, files in os.walk(path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except OSError:
                    pass
        return total
    return os.lstat(path).st_size


def _older_than(path, seconds):
    import time

    try:
        return time.time() - os.lstat(path).st_mtime > seconds
    except OSError:
        return False


def clean(cache, max_bytes, keep=()):
    """Delete the least recently used entries (uploaded files, agent bundles, collected runs) until the cache fits.

    Runs not yet collected and the files named in `keep` (the current agent) stay. Returns a summary dict.
    """
    cache = os.path.abspath(os.path.expanduser(cache))
    lock = acquire_lock(cache, "clean", 30.0)  # never delete a model under a running benchmark
    if lock is None:
        return {"error": "the board is busy with a benchmark; try again later"}
    try:
        entries = []
        for sub in ("files", "done"):  # runs/ holds runs a host may still collect: never trimmed
            folder = os.path.join(cache, sub)
            for name in os.listdir(folder) if os.path.isdir(folder) else []:
                path = os.path.join(folder, name)
                entries.append(path)
        for name in os.listdir(cache):
            # an older agent, and its unpacked copy (agent-*.pyz.d, made by the bundle's __main__ to cache bytecode)
            bundle = name[:-2] if name.endswith(".pyz.d") else name
            if name.startswith("agent-") and bundle.endswith(".pyz") and bundle not in keep:
                entries.append(os.path.join(cache, name))
            elif name.startswith(".unpack-") and _older_than(os.path.join(cache, name), 3600):
                entries.append(os.path.join(cache, name))  # a copy cut short (its maker was killed), not one in progress
        sized = []
        for path in entries:
            try:
                sized.append((os.lstat(path).st_mtime, _size(path), path))
            except OSError:  # gone meanwhile (an unpacked copy renamed into place)
                pass
        total = sum(size for _, size, _ in sized)
        removed, freed = 0, 0
        for _, size, path in sorted(sized):
            if total <= max_bytes:
                break
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
            total -= size
            freed += size
            removed += 1
        return {"removed": removed, "freed_bytes": freed, "remaining_bytes": total, "max_bytes": max_bytes}
    finally:
        lock.close()
