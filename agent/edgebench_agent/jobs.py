"""Detached runs on the board: a run survives a dropped SSH link, and the host can re-attach to it.

Layout under the board's cache folder (everything the agent writes lives there):
    runs/<run>/request.json   the run request (written by the host)
    runs/<run>/host.json      the host's context for the result (opaque to the agent)
    runs/<run>/pid            pid of the detached job (its own session: pgid == pid)
    runs/<run>/stderr.log     the job's progress events and logs
    runs/<run>/reply.json     the reply, written atomically when the run ends
    runs/<run>/started        written when the job holds the lock: the run timeout counts from here
    runs/<run>/exit_code      written last: its presence means the run is over
    done/<run>/               where the host moves a run once its result is stored: runs/ holds only runs
                              a host may still need to collect, so "anything to recover?" is one listing
    lock                      flock: one benchmark at a time on this board
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

from .lock import acquire_lock
from .shared.files import write_atomically
from .protocol import EXIT_RUN_FAILED, EXIT_USAGE, RequestError, failed_reply

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")  # \Z: "$" would accept a trailing newline
POLL_S = 0.1


def run_dir(cache, run):
    """The folder of a run, refusing any id that could leave the cache folder."""
    if not RUN_ID.match(run or "") or ".." in run:
        raise RequestError("invalid run id %r" % run)
    return os.path.join(os.path.abspath(os.path.expanduser(cache)), "runs", run)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def interrupt(signum, frame):
    """Signal handler of a run's process (SIGTERM, and SIGINT in a forked one): a polite kill still ends in a reply
    saying so, through KeyboardInterrupt."""
    raise KeyboardInterrupt()


def finish(folder, reply, code):
    """Record the end of a run: reply first, then exit_code (whose presence means 'over')."""
    write_atomically(os.path.join(folder, "reply.json"), json.dumps(reply))
    write_atomically(os.path.join(folder, "exit_code"), str(code))


def job(cache, run, lock_timeout_s):
    """The detached process: take the lock, run the request, record the reply."""
    from .protocol import normalize_run_request
    from .service import run as run_request

    folder = run_dir(cache, run)
    try:
        with open(os.path.join(folder, "request.json")) as handle:
            request = normalize_run_request(json.load(handle))
    except (RequestError, ValueError, IOError, OSError) as exc:
        finish(folder, failed_reply("usage", "bad request: %s" % exc), EXIT_USAGE)
        return EXIT_USAGE
    lock = acquire_lock(os.path.abspath(os.path.expanduser(cache)), run, lock_timeout_s)
    if lock is None:
        holder = (_read(os.path.join(os.path.abspath(os.path.expanduser(cache)), "lock")) or "").strip()
        message = "the board is busy: another benchmark holds its lock (%s); waited %.0f s" % (holder or "unknown", lock_timeout_s)
        finish(folder, failed_reply("busy", message), EXIT_RUN_FAILED)
        return EXIT_RUN_FAILED
    write_atomically(os.path.join(folder, "started"), "%.3f" % time.time())
    try:
        code, reply = run_request(request, machine_readable=True)  # never raises: failures come back as replies
    finally:
        lock.close()
    finish(folder, reply, code)
    return code


def _agent_command():
    """argv that starts this same agent again (from a .pyz or from the package folder)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the .pyz, or the folder holding the package
    return [sys.executable, "-c", "import sys; sys.path.insert(0, %r); from edgebench_agent.__main__ import run_as_program; run_as_program()" % root]


def launch(cache, run, lock_timeout_s, run_timeout_s=None):
    """Start the job detached (own session, output to files), then follow it like `attach`. (A plan's runs are
    forked by the board's warm agent instead: forkserver.launch_warm.)"""
    folder = check_launchable(cache, run)
    with open(os.path.join(folder, "stderr.log"), "ab") as log:
        process = subprocess.Popen(
            _agent_command() + ["_job", "--cache", cache, "--run", run, "--lock-timeout", str(lock_timeout_s)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
        )
    write_atomically(os.path.join(folder, "pid"), str(process.pid))

    def wait(seconds):  # our own child: wake the moment it exits, and reap it
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            pass
        return process.poll() is None

    return follow(folder, wait, run_timeout_s)


def check_launchable(cache, run):
    """The run's folder, when it holds a request that was never launched; RequestError otherwise."""
    folder = run_dir(cache, run)
    if not os.path.isfile(os.path.join(folder, "request.json")):
        raise RequestError("no request for run %s in %s" % (run, folder))
    if os.path.exists(os.path.join(folder, "pid")):
        raise RequestError("run %s was already launched: attach to it instead" % run)
    return folder


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def attach(cache, run, run_timeout_s=None):
    folder = run_dir(cache, run)
    if not os.path.isdir(folder) and os.path.isdir(done_dir(cache, run)):
        folder = done_dir(cache, run)  # already collected once: answer again, never run again
    pid_text = _read(os.path.join(folder, "pid"))
    if pid_text is None:
        raise RequestError("no run %s on this board" % run)

    def wait(seconds):
        time.sleep(seconds)
        return _pid_alive(int(pid_text))

    return follow(folder, wait, run_timeout_s)


def done_dir(cache, run):
    run_dir(cache, run)  # validates the id
    return os.path.join(os.path.abspath(os.path.expanduser(cache)), "done", run)


def follow(folder, wait, run_timeout_s=None):
    """Forward the job's stderr to ours until it ends; then print its reply. Returns the run's exit code.

    wait(seconds) sleeps (or waits for the job) at most that long and says whether the job still runs.
    A job running longer than run_timeout_s since it took the lock is killed with its process group here, on
    the board: a hung run stops even when the host is gone.
    """
    position = 0
    log_path = os.path.join(folder, "stderr.log")
    running = True
    while True:
        done = os.path.exists(os.path.join(folder, "exit_code"))
        position = _forward(log_path, position)
        started = _read(os.path.join(folder, "started"))
        if not done and run_timeout_s and started and time.time() - float(started) > run_timeout_s:
            run = os.path.basename(folder)
            kill(os.path.dirname(os.path.dirname(folder)), run,
                 "timed out after %.0f s: killed with its process group on the board" % run_timeout_s, "timeout")
            done = True
        if done or not running:
            if not done and not os.path.exists(os.path.join(folder, "exit_code")):
                message = ("the agent process ended without a result (killed: out of memory, SIGKILL, or a crash in "
                           "native code such as a runtime library); "
                           "its last output is in %s" % log_path)
                finish(folder, failed_reply("killed", message), EXIT_RUN_FAILED)
            _forward(log_path, position)
            break
        running = wait(POLL_S)
    reply = _read(os.path.join(folder, "reply.json")) or "{}"
    code = int((_read(os.path.join(folder, "exit_code")) or str(EXIT_RUN_FAILED)).strip())
    return code, reply


def _forward(path, position):
    try:
        with open(path, "rb") as handle:
            handle.seek(position)
            data = handle.read()
    except (IOError, OSError):
        return position
    complete = data.rfind(b"\n") + 1  # forward whole lines only
    if complete and not _READER_GONE:
        try:
            sys.stderr.write(data[:complete].decode("utf-8", "replace"))
            sys.stderr.flush()
        except (IOError, OSError, ValueError):
            _reader_gone()
    return position + complete


_READER_GONE = False


def _reader_gone():
    """The host that followed this run is gone (a broken pipe): stop forwarding, but go on following, so the run's
    timeout is still enforced here on the board."""
    global _READER_GONE
    _READER_GONE = True
    try:
        sys.stderr = open(os.devnull, "w")
    except (IOError, OSError):
        pass


def kill(cache, run, reason, kind="killed"):
    """Kill the job's whole process group and record why (kind: killed, timeout or interrupted).
    Returns (code, reply)."""
    folder = run_dir(cache, run)
    reason = {"kind": kind, "message": reason}
    pid_text = _read(os.path.join(folder, "pid"))
    if pid_text is None:
        raise RequestError("no run %s on this board" % run)
    if not os.path.exists(os.path.join(folder, "exit_code")):
        try:
            os.killpg(int(pid_text), signal.SIGKILL)
        except OSError:
            pass  # already gone
        deadline = time.time() + 5
        while _pid_alive(int(pid_text)) and time.time() < deadline:
            time.sleep(POLL_S)
        if not os.path.exists(os.path.join(folder, "exit_code")):
            finish(folder, failed_reply(reason["kind"], reason["message"]), EXIT_RUN_FAILED)
    return int((_read(os.path.join(folder, "exit_code")) or "1").strip()), _read(os.path.join(folder, "reply.json")) or "{}"


def list_runs(cache):
    """Every run not yet collected by a host, with its state: running, finished, dead (or new)."""
    root = os.path.join(os.path.abspath(os.path.expanduser(cache)), "runs")
    runs = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        folder = os.path.join(root, name)
        if not RUN_ID.match(name):
            continue
        if os.path.exists(os.path.join(folder, "exit_code")):
            state = "finished"
        else:
            pid_text = _read(os.path.join(folder, "pid"))
            state = "running" if pid_text and _pid_alive(int(pid_text)) else ("dead" if pid_text else "new")
        runs.append({"run": name, "state": state, "mtime": os.path.getmtime(folder)})
    return runs
