"""The board's benchmark lock: one benchmark (or cache clean-up) at a time, so two never measure each other.
Used by detached jobs and by the cache cleaner.

Every hold is also logged, once released, as a JSON line in <cache>/lock.log (run, pid, held from/to in epoch
seconds): the board's own record of who had it when, e.g. to show that two hosts sharing a board farm never
measured on it at once. The log keeps one older generation (lock.log.1) once it passes LOG_MAX_BYTES."""

from __future__ import annotations

import errno
import json
import os
import sys
import time

from .protocol import EVENT_PREFIX

LOG_MAX_BYTES = 1 << 20


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
        return Held(handle, cache, run)


class Held(object):
    """The lock, held: close() releases it and logs the hold."""

    def __init__(self, handle, cache, run):
        self.handle, self.cache, self.run, self.since = handle, cache, run, time.time()

    def close(self):
        line = json.dumps({"run": self.run, "pid": os.getpid(), "from": self.since, "to": time.time()}) + "\n"
        path = os.path.join(self.cache, "lock.log")
        try:  # logged while still held: lines never interleave, and rotation never races another writer
            if os.path.exists(path) and os.path.getsize(path) > LOG_MAX_BYTES:
                os.replace(path, path + ".1")
            with open(path, "a") as log:
                log.write(line)
        except (IOError, OSError):
            pass  # a full disk must not fail the run that was measured; only the log line is lost
        self.handle.close()
