"""A warm agent for plans: one process per board (and agent build, cache and Python) that has imported numpy,
onnxruntime and the agent once, and forks a fresh child for each run of a plan.

The child is what a detached job is (jobs.job): its own session and process group, stdin from /dev/null, its
output in the run's stderr.log, the board's lock taken, sessions created, the reply and exit_code written. Only the
interpreter start and the imports are shared, which on a Pi 4 cost about a second per run. A warm agent nobody
asks for IDLE_S exits; one that dies is replaced by the next launch (the run it had taken fails with the reason).
Linux only (an abstract UNIX socket: no file to leave behind, no path-length limit); elsewhere every run starts a
fresh process, as without it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

IDLE_S = 30.0  # between the runs of a plan it never idles this long; after the plan it goes away
CONNECT_TIMEOUT_S = 10.0


class ZygoteLost(Exception):
    """The warm agent took a request but ended before saying which process runs it."""


def available():
    return sys.platform.startswith("linux")


def address(cache):
    """The warm agent's socket name: one per agent build, cache folder and interpreter."""
    from .shared.files import sha256_bytes

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the .pyz, or the folder holding the package
    key = "%s\0%s\0%s" % (root, os.path.abspath(os.path.expanduser(cache)), sys.executable)
    return "\0edgebench-warm-agent-" + sha256_bytes(key.encode("utf-8"))[:32]


def same_user(connection):
    """Whether the process at the other end of a UNIX socket runs as this user. An abstract socket name has no
    permissions: another user of the board could take the name first, or connect to ours."""
    import struct

    try:
        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, IOError, AttributeError):
        return False
    return struct.unpack("3i", credentials)[1] == os.getuid()


def request_fork(cache, run, lock_timeout_s):
    """The pid of the job the warm agent forked for `run`, or None when no warm agent (of this user) answers."""
    if not available():
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(CONNECT_TIMEOUT_S)
    try:
        connection.connect(address(cache))
    except (OSError, IOError):
        connection.close()
        return None
    if not same_user(connection):  # someone else's listener under our name: run fresh instead
        connection.close()
        return None
    try:
        connection.sendall((json.dumps({"run": run, "lock_timeout": lock_timeout_s}) + "\n").encode("utf-8"))
        answer = _read_line(connection)
    except (OSError, IOError) as exc:
        raise ZygoteLost(str(exc) or type(exc).__name__)
    finally:
        connection.close()
    try:
        reply = json.loads(answer.decode("utf-8"))
        return int(reply["pid"])
    except (ValueError, KeyError, TypeError):
        raise ZygoteLost("it answered %r" % answer[:200])


def _read_line(connection, limit=65536):
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.strip()


def start(cache):
    """Start a warm agent for this cache, detached, for the runs after this one (a second one exits at once: the
    socket name is taken)."""
    if not available():
        return
    import subprocess

    from .jobs import _agent_command

    folder = os.path.abspath(os.path.expanduser(cache))
    with open(os.path.join(folder, "warm-agent.log"), "ab") as log:
        subprocess.Popen(_agent_command() + ["_warm", "--cache", cache], stdin=subprocess.DEVNULL, stdout=log,
                         stderr=log, start_new_session=True, close_fds=True)


def serve(cache):
    """The warm agent itself: import once, then fork a job per request until idle."""
    import numpy  # noqa: F401 - the point of a warm agent: imported once, shared by every forked run

    try:
        import onnxruntime  # noqa: F401
    except ImportError:  # a board for other runtimes only: they are imported in the child that uses them
        pass

    # Everything a run imports, imported here once: a forked child that imported it again would pay for it on every
    # run (under qemu, or on a Pi, ~0.1 s), and versions() pulls in importlib.metadata.
    import hashlib  # noqa: F401
    import secrets  # noqa: F401
    import tempfile  # noqa: F401

    import numpy.random  # noqa: F401 - generated inputs

    from . import energy, runner, runtimes, scenarios, service  # noqa: F401
    from .jobs import run_dir
    from .shared import energy as energy_maths  # noqa: F401

    if "onnxruntime" in runtimes.versions():
        runtimes.load("onnxruntime")

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(address(cache))
    except (OSError, IOError):  # another warm agent already serves this cache
        return 0
    listener.listen(16)
    listener.settimeout(IDLE_S)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the jobs: the launcher watches their pids
    while True:
        try:
            connection, _ = listener.accept()
        except socket.timeout:
            return 0
        if not same_user(connection):  # only this user's launches fork runs from this user's cache
            connection.close()
            continue
        try:
            connection.settimeout(CONNECT_TIMEOUT_S)
            request = json.loads(_read_line(connection).decode("utf-8"))
            run, lock_timeout_s = request["run"], float(request["lock_timeout"])
            folder = run_dir(cache, run)  # refuses an id that would leave the cache
        except Exception as exc:  # a bad request: answer it, keep serving
            _answer(connection, {"error": "%s: %s" % (type(exc).__name__, exc)})
            continue
        sys.stdout.flush()  # nothing buffered here may be written twice by the child
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the job: never returns
            listener.close()
            connection.close()
            _become_job(cache, run, folder, lock_timeout_s)
        _answer(connection, {"pid": pid})


def launch_warm(cache, run, lock_timeout_s, run_timeout_s=None):
    """`launch --warm`: the run forked by the board's warm agent and followed like a detached job; when none
    answers, a fresh process runs it (jobs.launch) and a warm agent is started for the runs after it."""
    from . import jobs
    from .protocol import EXIT_RUN_FAILED, failed_reply

    folder = jobs.check_launchable(cache, run)
    try:
        pid = request_fork(cache, run, lock_timeout_s)
    except ZygoteLost as exc:  # it may have died with the run half-started: never start it twice
        message = "the board's warm agent ended before starting this run (%s); the next run starts a new one" % exc
        jobs.finish(folder, failed_reply("killed", message), EXIT_RUN_FAILED)
        return jobs.follow(folder, lambda seconds: False, run_timeout_s)
    if pid is None:
        start(cache)
        return jobs.launch(cache, run, lock_timeout_s, run_timeout_s)
    from .shared.files import write_atomically

    write_atomically(os.path.join(folder, "pid"), str(pid))
    return jobs.attach(cache, run, run_timeout_s)  # not our child: followed by its pid (the kernel reaps it)


def serve_launches(cache, requests, answers):
    """`_launcher`: a plan's launches over one channel, so a cell costs no interpreter start on the board (under
    qemu, or on a Pi, the start alone is a few tenths of a second). Each JSON line on `requests` ({"run",
    "lock_timeout", "run_timeout"}, or {"hello": 1} first) is answered by one JSON line on `answers` once that run
    ended ({"code", "reply"}); the run's progress events go to stderr meanwhile, as `launch` sends them. The runs are
    forked by the warm agent, detached as ever: this process only starts and follows them. Ends at end of input."""
    from .protocol import EXIT_USAGE, RequestError, failed_reply

    def answer(document):
        answers.write(json.dumps(document) + "\n")
        answers.flush()

    for line in iter(requests.readline, ""):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if request.get("hello"):
                answer({"ready": True, "pid": os.getpid()})
                continue
            code, text = launch_warm(cache, str(request["run"]), float(request["lock_timeout"]),
                                     None if request.get("run_timeout") is None else float(request["run_timeout"]))
        except (ValueError, KeyError, TypeError, RequestError) as exc:
            code, text = EXIT_USAGE, json.dumps(failed_reply("usage", "bad launch request: %s" % exc))
        answer({"code": code, "reply": text})
    return 0


def _answer(connection, reply):
    try:
        connection.sendall((json.dumps(reply) + "\n").encode("utf-8"))
    except (OSError, IOError):
        pass
    finally:
        connection.close()


def _become_job(cache, run, folder, lock_timeout_s):
    """In the forked child: become exactly what a detached job is, run it, and exit with its code."""
    code = 1
    try:
        from .shared.files import write_atomically

        os.setsid()  # its own session and process group: `kill` ends the run and everything it started
        # Then, before anything else: a run that has a pid file is never launched again (jobs.check_launchable),
        # even if the launcher that asked for it dies before writing the pid itself.
        write_atomically(os.path.join(folder, "pid"), str(os.getpid()))
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the run's own subprocesses (tegrastats, a meter) are waited for
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        log = os.open(os.path.join(folder, "stderr.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        from .jobs import interrupt, job

        signal.signal(signal.SIGTERM, interrupt)  # a polite kill still ends in a reply saying so
        signal.signal(signal.SIGINT, interrupt)
        code = job(cache, run, lock_timeout_s)
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the server's loop
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
