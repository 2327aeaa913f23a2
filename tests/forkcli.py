"""A fork server for the `bench` fixture: each CLI run is still a process of its own, without the import bill.

A `bench` command spends about a second importing numpy, onnx, onnxruntime, pandas and its own commands (and one
more for torch) before it does anything, and the suite runs the CLI several hundred times. This server imports them once (per pytest
worker) and forks a fresh process for every run: real argv, cwd, environment, exit code, stdout and stderr (the
caller's files, passed over a UNIX socket), and everything the command starts (the agent, ssh) is as real as
before. Only what a fork shares differs from `python -m edgebench`: modules already imported, and the hash seed.

The server itself never runs a command, and imports nothing that starts work or reads the environment at import
time, so every fork starts clean. torch is preloaded too (a second per export, validate or convert command, a third
of export's tests' time): its import starts no thread numpy and onnxruntime have not already, and its pools start
at the first parallel operation, in the command. matplotlib and DuckDB are left to the commands that need them.
Each request gets a reaper process of its own (forked from the server) that forks the command and reports its
exit status, so runs from several test threads at once are served without a thread in the server.

`EDGEBENCH_TEST_FRESH_PROCESS=1` runs every `bench` as a fresh `python -m edgebench` instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

# What a `bench` command imports before it starts work: the rest is imported on use, as in a fresh process.
PRELOAD = ("numpy", "onnx", "onnx.helper", "onnx.numpy_helper", "onnxruntime", "pandas", "yaml", "paramiko", "rich",
           "typer", "edgebench.entry", "edgebench.cli", "edgebench.stages.deploy", "edgebench.stages.validate",
           "edgebench.stages.compare", "edgebench.results.report", "edgebench.results.files",
           "edgebench.boards.board", "edgebench.boards.transport.ssh", "torch", "torch.onnx")
MAIN = str(Path(__file__).resolve().parent.parent / "host" / "edgebench" / "__main__.py")
MAX_MESSAGE = 8 << 20


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _run_command(request: dict, fds: list[int]) -> None:
    """In the forked command process: become `python -m edgebench ARGS` in the caller's cwd, env and files."""
    import signal

    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.argv = [MAIN, *request["args"]]
        sys.path[0] = request["cwd"]  # `python -m` puts the working folder first
        from edgebench.entry import main

        main()
        code = 0
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            code = done.code or 0
        else:
            print(done.code, file=sys.stderr)
    except KeyboardInterrupt:
        import traceback

        traceback.print_exc()
        code = 130
    except BaseException:  # what the interpreter does with an uncaught exception
        import traceback

        traceback.print_exc()
    finally:
        import atexit
        import threading

        try:
            threading._shutdown()  # type: ignore[attr-defined]  # the interpreter's own end: join non-daemon threads
            atexit._run_exitfuncs()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)


def _serve_one(conn: socket.socket) -> None:
    """In the reaper: fork the command, tell its pid, wait for it, tell its exit status."""
    message, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 3)
    request = json.loads(message)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _run_command(request, fds)
    for fd in fds:
        os.close(fd)
    _send(conn, {"pid": pid})
    _, status = os.waitpid(pid, 0)
    _send(conn, {"code": os.waitstatus_to_exitcode(status)})


def serve(path: str) -> None:
    import importlib
    import warnings

    warnings.simplefilter("ignore")  # as main() sets it; the imports' own warnings are no command's output
    for name in PRELOAD:
        importlib.import_module(name)
    warnings.resetwarnings()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        reaper = os.fork()
        if reaper == 0:
            server.close()
            try:
                _serve_one(conn)
            finally:
                os._exit(0)
        conn.close()
        while True:  # reap the reapers that are done
            try:
                done, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not done:
                break


class ForkServer:
    """The client: `run(args, cwd, env, timeout)` -> (exit code, stdout, stderr), like subprocess.run."""

    def __init__(self):
        import tempfile

        self.folder = tempfile.mkdtemp(prefix="eb-fork-")  # a UNIX socket's path has at most 107 bytes
        self.path = os.path.join(self.folder, "bench.sock")
        self.process = subprocess.Popen([sys.executable, "-m", "tests.forkcli", self.path], stdout=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the bench fork server did not start")

    def run(self, args: list[str], cwd: Path, env: dict, timeout: float) -> tuple[int, str, str]:
        import io
        import tempfile

        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, open(os.devnull, "rb") as stdin, \
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(self.path)
            request = json.dumps({"args": args, "cwd": str(cwd), "env": env}).encode()
            socket.send_fds(conn, [request], [stdin.fileno(), out.fileno(), err.fileno()])
            conn.settimeout(timeout)
            replies = conn.makefile("rb")
            pid = json.loads(replies.readline())["pid"]
            try:
                line = replies.readline()
            except TimeoutError:
                os.kill(pid, 9)
                raise subprocess.TimeoutExpired(["bench", *args], timeout) from None
            code = json.loads(line)["code"]
            texts = []
            for file in (out, err):  # decoded as subprocess.run(text=True) does: universal newlines
                file.seek(0)
                texts.append(io.TextIOWrapper(io.BytesIO(file.read()), newline=None).read())
            return code, texts[0], texts[1]

    def close(self) -> None:
        import shutil

        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1])
