"""The board's benchmark lock: one benchmark (or cache clean-up) at a time, so two never measure each other.
Used by detached jobs and by the cache cleaner."""

from __future__ import annotations

import errno
import json
import os
import sys
import time

from .protocol import EVENT_PREFIX


def _event(kind, **fields):
    fields["event"] = kind
    sys.stderr.write(EVENT_PREFIX + json.dumps(fields) + "\n")
    sys.stderr.flush()


def acquire_lock(cache, run, timeout_s):
    """Hold the board's benchmark lock (returned file object), waiting up to timeout_s. None on timeout."""
    import fcntl

    handle = open(os.path.join(cache, "lock"), "a+")
    deadline = time.time() + timeout_s
    announced = False
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.time() >= deadline:
                handle.close()
                return None
            if not announced:
                handle.seek(0)
                _event("lock_wait", holder=handle.read().strip() or None, timeout_s=timeout_s)
                announced = True
            time.sleep(0.2)
            continue
        handle.seek(0)
        handle.truncate()
        handle.write("run %s, pid %d, since %s" % (run, os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%S")))
        handle.flush()
        return handle
