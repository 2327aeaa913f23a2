"""A board as the host sees it: a Transport plus the agent protocol, the cache folder and detached runs.

- The agent bundle is uploaded by content hash into the board's cache folder, once.
- Files (models, their sidecars, inputs) are uploaded by sha256 into files/<sha256>/, verified by hash on the
  board, and renamed into place only then: a name that exists is complete. Present -> not uploaded again.
- A run is detached on the board (agent `launch`): a dropped link loses nothing. The host reconnects with
  backoff and re-attaches; `bench fetch` recovers runs that finished while nobody was listening.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

from ..agentlib import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, PROTOCOL_VERSION

from ..fileio import cache_dir
from .agent_bundle import ensure_bundle
from ..errors import AgentError, AgentTimeout, BoardBusy, ConfigError, FileWriteError, InputError, LinkLost, TransportError
from .transport import CommandResult, EventCallback, ProgressCallback
from .transport.factory import open_transport

INFO_TIMEOUT_S = 120.0  # an emulated board imports numpy slowly
SMALL_COMMAND_TIMEOUT_S = 120.0
RECONNECT_ATTEMPTS = 6
RECONNECT_BACKOFF_S = (0.5, 1, 2, 4, 8, 15)
HOST_MARGIN_S = 60.0  # beyond the run and lock timeouts, before the host gives up on a silent board


class Board:
    def __init__(self, target, transport=None):
        self.target = target
        self.transport = transport or open_transport(target)
        self._info = None
        self._cache = None
        self._agent = None
        self._run_timeout = None
        self.warm_agent = False  # runs forked by the board's warm agent (numpy and onnxruntime imported once)
        self._launcher = None  # with the warm agent: one launcher on the board for all runs (no start per run)
        self._launcher_refused = False
        self._recovered_into: set = set()

    def first_visit(self, results_dir) -> bool:
        """True the first time a deploy over this connection stores into this folder: runs the board holds from
        before are collected then, not again before every later run on the same connection."""
        key = os.path.realpath(results_dir)
        new = key not in self._recovered_into
        self._recovered_into.add(key)
        return new

    def expect_runs(self, count: int) -> "Board":
        """`count` runs will follow over this connection: with more than one, each is forked by the board's warm
        agent (imports paid once, the session made in the fresh child); EDGEBENCH_WARM_AGENT=0 starts every run as
        a fresh process instead."""
        self.warm_agent = count > 1 and os.environ.get("EDGEBENCH_WARM_AGENT", "1") != "0"
        return self

    def close(self) -> None:
        self._close_launcher()
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------------------- the basics
    @property
    def local(self) -> bool:
        return self.transport.kind == "local"

    @property
    def cache(self) -> str:
        """The agent's cache folder on the board (absolute): everything edgebench writes there lives in it."""
        if self._cache is None:
            if self.local:
                self._cache = str(cache_dir() / "board")
            else:
                work_dir = self.target.work_dir
                if work_dir == "~" or work_dir.startswith("~/"):
                    work_dir = self.transport.home().rstrip("/") + work_dir[1:]
                self._cache = work_dir.rstrip("/")
            self.transport.makedirs(self._cache)
        return self._cache

    def python_argv(self) -> list[str]:
        python = self.target.python or (sys.executable if self.local else "python3")
        env = [f"{k}={v}" for k, v in self.target.env]  # names are POSIX names (checked when the inventory loads)
        return (["env", "--", *env] if env else []) + [python]

    def ensure_agent(self) -> str:
        """Path of the agent bundle on the board; uploaded (by content hash) only when missing."""
        if self._agent is None:
            bundle = ensure_bundle()
            if self.local:
                self._agent = str(bundle)
            else:
                remote = f"{self.cache}/{bundle.name}"
                if not self.transport.exists(remote):
                    part = f"{remote}.part-{secrets.token_hex(4)}"
                    self.transport.upload(bundle, part)
                    # The bundle verifies its own upload: if it can hash itself right, it is whole.
                    digest = self._hash_with(part, [*self.python_argv(), part])
                    if digest != _sha256(bundle):
                        self.transport.remove(part)
                        raise TransportError(f"the agent upload to {self.target.name} arrived corrupted", "run again")
                    self.transport.rename(part, remote)
                self._agent = remote
        return self._agent

    def command(self, args: list[str], stdin: bytes = b"", timeout: float | None = SMALL_COMMAND_TIMEOUT_S,
                on_event: EventCallback | None = None):
        return self.transport.exec([*self.python_argv(), self.ensure_agent(), *args], stdin, timeout, on_event)

    def _json(self, result, what: str):
        try:
            return json.loads(result.stdout.decode("utf-8"))
        except ValueError as exc:
            tail = " | ".join(result.stderr_tail[-3:]) or "no output"
            if result.returncode in (126, 127):  # POSIX: the command was not found (127) or not executable (126)
                raise TransportError(f"{self.python_argv()[-1]} is not runnable on {self.target.name}: {tail}",
                                     "install python3 (>= 3.8) on the board or set the target's python") from exc
            if "SyntaxError" in tail:  # the interpreter's own words: an old Python cannot even parse the agent
                raise AgentError(f"the board's Python is too old for the agent ({tail})", "the agent needs Python >= 3.8") from exc
            raise AgentError(f"the agent's `{what}` on {self.target.name} gave no valid reply "
                             f"(exit {result.returncode}): {tail}") from exc

    def info(self, max_age_s: float = 0.0) -> dict:
        """The handshake: protocol, versions, providers, machine, cache free space.

        max_age_s > 0 accepts a remembered answer of this board (same address, python and agent) that young:
        deploy's pre-upload gate uses it to save a round trip; every result still records the `info` that
        comes back with its run, fresh.
        """
        if self._info is None and max_age_s > 0:
            self._info = self._remembered_info(max_age_s)
        if self._info is None:
            document = self._json(self.command(["info", "--cache", self.cache], timeout=INFO_TIMEOUT_S), "info")
            if document.get("protocol_version") != PROTOCOL_VERSION:
                raise AgentError(f"the agent on {self.target.name} speaks protocol {document.get('protocol_version')}, "
                                 f"this host speaks {PROTOCOL_VERSION}", "upgrade edgebench on the older side")
            self._info = document
            self._remember_info(document)
        return self._info

    def _info_memo(self) -> Path:
        from ..agentlib import sha256_bytes

        key = "|".join([self.target.kind, self.target.address, *self.python_argv(), ensure_bundle().name, self.target.work_dir])
        return cache_dir() / "info" / f"{sha256_bytes(key.encode())[:20]}.json"

    def _remembered_info(self, max_age_s: float) -> dict | None:
        path = self._info_memo()
        try:
            if time.time() - path.stat().st_mtime <= max_age_s:
                return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        return None

    def _remember_info(self, document: dict) -> None:
        from ..fileio import write_atomically

        try:
            write_atomically(self._info_memo(), json.dumps(document))
        except FileWriteError:
            pass  # only a shortcut: never fatal

    def _hash_with(self, path: str, argv: list[str]) -> str | None:
        result = self.transport.exec([*argv, "sha256", path], b"", SMALL_COMMAND_TIMEOUT_S)
        try:
            return json.loads(result.stdout.decode()).get(path)
        except ValueError:
            return None

    # ---------------------------------------------------------------------------------------- files
    def stage(self, local: Path, sha256: str, progress: ProgressCallback | None = None,
              companions: tuple[Path, ...] | list[Path] = ()) -> str:
        """Make a file (and companions such as an external-data sidecar, kept beside it under their own
        names) available on the board; returns its path there. Nothing is uploaded when already present."""
        local = Path(local)
        if self.local:
            return str(local.resolve())
        folder = f"{self.cache}/files/{sha256}"
        final = f"{folder}/{local.name}"

        def upload_all():
            if self.transport.exists(final):
                return
            self.transport.makedirs(folder)
            for name in self.transport.listdir(folder):
                if ".part-" in name:  # left by a dropped link: never complete, never used
                    self.transport.remove(f"{folder}/{name}")
            for path in [*companions, local]:  # the named file last: its presence means the set is complete
                self._upload_verified(Path(path), f"{folder}/{Path(path).name}",
                                      sha256 if path == local else None, progress if path == local else None)

        self._with_reconnect(upload_all)
        return final

    def _with_reconnect(self, action):
        """Run an idempotent step; when the link drops, reconnect with backoff and run it again."""
        for attempt in range(RECONNECT_ATTEMPTS + 1):
            try:
                return action()
            except LinkLost:
                if attempt == RECONNECT_ATTEMPTS:
                    raise
                time.sleep(RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)])
                self._close_launcher()  # its channel died with the link
                try:
                    self.transport.reconnect()
                except TransportError:
                    continue

    def stage_bytes(self, data: bytes, name: str) -> str:
        """stage() for data made on the host (accuracy inputs, reference outputs)."""
        import tempfile

        from ..agentlib import sha256_bytes

        digest = sha256_bytes(data)
        with tempfile.TemporaryDirectory(prefix="edgebench-stage-") as folder:
            path = Path(folder) / name
            path.write_bytes(data)
            if self.local:  # a local board reads files in place: keep this one in the cache
                kept = Path(self.cache) / "files" / digest / name
                if not kept.exists():
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    self.transport.write_bytes(str(kept), data)
                return str(kept)
            return self.stage(path, digest)

    def run_path(self, run_id: str, name: str) -> str:
        return f"{self.cache}/runs/{run_id}/{name}"

    def _upload_verified(self, local: Path, remote: str, sha256: str | None, progress) -> None:
        if self.transport.exists(remote):
            return
        part = f"{remote}.part-{secrets.token_hex(4)}"
        self.transport.upload(local, part, progress)
        expected = sha256 or _sha256(local)
        got = self._hash_with(part, [*self.python_argv(), self.ensure_agent()])
        if got != expected:
            self.transport.remove(part)
            raise TransportError(f"upload of {local.name} to {self.target.name} arrived corrupted "
                                 f"(sha256 {got} != {expected})", "run again")
        self.transport.rename(part, remote)

    # ----------------------------------------------------------------------------------------- runs
    def run(self, request: dict, run_id: str, host_context: dict, timeout: float,
            on_event: EventCallback | None = None) -> dict:
        """Run detached on the board and follow it to the end. Returns the agent's reply.

        Raises InputError for a request the agent refuses, BoardBusy when the lock is not free in time.
        A timeout kills the run's whole process group on the board and returns a failed reply.
        """
        folder = f"{self.cache}/runs/{run_id}"
        if request.get("cooldown") is not None:
            request = {**request, "cooldown": {**request["cooldown"], "idle_file": f"{self.cache}/thermal_idle.json"}}
        if request.get("profile") is not None:
            request = {**request, "profile": {**request["profile"], "dir": folder}}

        def prepare():
            self.transport.makedirs(folder)
            self.transport.write_bytes(f"{folder}/host.json", json.dumps(host_context).encode())
            self.transport.write_bytes(f"{folder}/request.json", json.dumps(request).encode())

        self._with_reconnect(prepare)
        lock_timeout = self.target.lock_timeout
        # The board kills a run that overruns `timeout` (from when it holds the lock); the host's own deadline is
        # a safety net on top, for a board that stopped answering altogether.
        host_timeout = timeout + lock_timeout + HOST_MARGIN_S
        deadline = time.monotonic() + host_timeout
        self._run_timeout = timeout
        try:
            try:
                launcher = self._launcher_stream() if self.warm_agent else None
                if launcher is not None:
                    result = self._launch_through(launcher, run_id, lock_timeout, timeout, host_timeout, on_event)
                else:
                    result = self._launch(run_id, lock_timeout, timeout, host_timeout, on_event)
            except LinkLost as lost:
                result = self._reattach(run_id, deadline, on_event, lost)
        except AgentTimeout:
            result = self.kill(run_id, f"timed out after {timeout:.0f} s: killed with its process group", "timeout")
        except KeyboardInterrupt:
            self.kill(run_id, "interrupted from the host (Ctrl-C)", "interrupted")
            raise
        reply = self._json(result, "run")
        error = reply.get("error") or {}
        if error.get("kind") == "busy" or result.returncode == EXIT_USAGE:
            self.mark_fetched(run_id)  # refused, not run: nothing for `bench fetch` to store later
            if error.get("kind") == "busy":
                raise BoardBusy(error["message"], "wait for the other benchmark, or raise the target's lock_timeout")
            raise InputError(error.get("message", "the agent refused the request"))
        if result.returncode not in (EXIT_OK, EXIT_RUN_FAILED):
            raise AgentError(f"the agent exited with code {result.returncode}", " | ".join(result.stderr_tail[-3:]) or None)
        if reply.get("status") == "failed":
            error.setdefault("stderr_tail", result.stderr_tail)
        return reply

    def _launcher_stream(self):
        """The board's launcher (agent `_launcher`), started on first use and kept for every later run over this
        connection: a run then costs no interpreter start on the board. None when it cannot start (each run is
        then launched by its own command, as without it)."""
        if self._launcher is None and not self._launcher_refused:
            stream = None
            try:
                stream = self.transport.open_stream([*self.python_argv(), self.ensure_agent(), "_launcher", "--cache",
                                                     self.cache])
                answer, _ = stream.ask(b'{"hello": 1}\n', SMALL_COMMAND_TIMEOUT_S, None)
                if not json.loads(answer.decode("utf-8")).get("ready"):
                    raise ValueError(answer[:200])
                self._launcher = stream
            except (TransportError, AgentError, ValueError, AttributeError):
                if stream is not None:
                    stream.close()
                self._launcher_refused = True
        return self._launcher

    def _launch_through(self, launcher, run_id: str, lock_timeout: float, timeout: float, host_timeout: float,
                        on_event) -> CommandResult:
        request = {"run": run_id, "lock_timeout": lock_timeout, "run_timeout": timeout}
        try:
            answer, tail = launcher.ask((json.dumps(request) + "\n").encode("utf-8"), host_timeout, on_event)
            document = json.loads(answer.decode("utf-8"))
            return CommandResult(int(document["code"]), str(document["reply"]).encode("utf-8"), tail)
        except (ValueError, KeyError, TypeError) as exc:
            self._close_launcher()
            raise AgentError(f"the launcher on {self.target.name} answered {answer[:200]!r}") from exc
        except LinkLost:
            self._close_launcher()
            # The launcher ended (killed on the board, say) or the link dropped. A run that started goes on there
            # and is followed like after any dropped link; one that never started is launched by its own command.
            # (A run's pid file is written before it does anything; reading it raises LinkLost if the link is gone.)
            if self.transport.exists(self.run_path(run_id, "pid")):
                raise
            result = self._launch(run_id, lock_timeout, timeout, host_timeout, on_event)
            if result.returncode == EXIT_USAGE and b"already launched" in result.stdout:  # it started meanwhile
                return self.command(["attach", "--cache", self.cache, "--run", run_id, "--run-timeout", str(timeout)],
                                    timeout=host_timeout, on_event=on_event)
            return result
        except BaseException:  # a timeout, Ctrl-C: the next run starts a new launcher
            self._close_launcher()
            raise

    def _launch(self, run_id: str, lock_timeout: float, timeout: float, host_timeout: float, on_event) -> CommandResult:
        """The run started (forked by the warm agent with warm_agent) and followed by a `launch` command of its own."""
        return self.command(["launch", "--cache", self.cache, "--run", run_id, "--lock-timeout", str(lock_timeout),
                             "--run-timeout", str(timeout), *(["--warm"] if self.warm_agent else [])],
                            timeout=host_timeout, on_event=on_event)

    def _close_launcher(self) -> None:
        launcher, self._launcher = self._launcher, None
        if launcher is not None:
            launcher.close()

    def _reattach(self, run_id: str, deadline: float, on_event, first_error: Exception):
        """The link dropped: reconnect with backoff and follow the run again (it went on on the board)."""
        last = first_error
        for attempt in range(RECONNECT_ATTEMPTS):
            if time.monotonic() > deadline:
                break
            time.sleep(RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)])
            self._close_launcher()
            try:
                self.transport.reconnect()
                if on_event:
                    on_event({"event": "reconnected", "attempt": attempt + 1})
                launched = self.transport.exists(f"{self.cache}/runs/{run_id}/pid")
                verb = ["attach", "--cache", self.cache, "--run", run_id] if launched else \
                    ["launch", "--cache", self.cache, "--run", run_id, "--lock-timeout", str(self.target.lock_timeout)]
                verb += ["--run-timeout", str(self._run_timeout)]
                return self.command(verb, timeout=max(deadline - time.monotonic(), 1.0), on_event=on_event)
            except (LinkLost, TransportError) as exc:
                last = exc
        raise LinkLost(f"lost {self.target.name} and could not reconnect ({last.message if hasattr(last, 'message') else last})",
                       f"the run goes on there; collect it later with: bench fetch --target {self.target.name} {run_id}")

    def kill(self, run_id: str, reason: str, kind: str = "killed"):
        return self.command(["kill", "--cache", self.cache, "--run", run_id, "--reason", reason, "--kind", kind])

    def runs(self) -> list[dict]:
        """Runs not yet collected by a host (runs/ on the board), with their state. One listing when none."""
        if not self.transport.listdir(f"{self.cache}/runs"):
            return []
        return self._json(self.command(["runs", "--cache", self.cache]), "runs")

    def context(self, run_id: str) -> dict | None:
        """What the host that started a run recorded beside it (host.json), or None."""
        context = (self.transport.read_bytes(f"{self.cache}/runs/{run_id}/host.json")
                   or self.transport.read_bytes(f"{self.cache}/done/{run_id}/host.json"))
        try:
            return json.loads(context) if context else None
        except ValueError:
            return None

    def fetch(self, run_id: str) -> tuple[dict, dict | None]:
        """(reply, host context) of a run, following it if it still runs, within a deadline: the board kills a run
        past its own timeout (`--run-timeout`), and the host stops waiting past that plus the lock's wait."""
        from ..agentlib import default_run_timeout, normalize_run_request

        run_timeout = None
        raw = self.transport.read_bytes(f"{self.cache}/runs/{run_id}/request.json")
        try:
            run_timeout = default_run_timeout(normalize_run_request(json.loads(raw))) if raw else None
        except (ValueError, ConfigError):
            pass  # a request this agent cannot read: the board reports it; wait with the default deadline
        run_timeout = run_timeout or default_run_timeout(normalize_run_request({"model": "-"}))
        verb = ["attach", "--cache", self.cache, "--run", run_id, "--run-timeout", str(run_timeout)]
        reply = self._json(self.command(verb, timeout=run_timeout + self.target.lock_timeout + HOST_MARGIN_S), "attach")
        return reply, self.context(run_id)

    def mark_fetched(self, run_id: str) -> None:
        """The result is stored on the host: move the run out of runs/ (so it is never collected twice).
        Idempotent, so a link that drops here (a board rebooting right after a run) is reconnected and retried."""
        def move():
            if not self.transport.exists(f"{self.cache}/runs/{run_id}"):
                return  # moved already (by an attempt whose answer the dropped link lost)
            self.transport.makedirs(f"{self.cache}/done")
            self.transport.rename(f"{self.cache}/runs/{run_id}", f"{self.cache}/done/{run_id}")

        self._with_reconnect(move)

    def clean(self, max_bytes: int) -> dict:
        """Trim the board's cache to max_bytes, least recently used first: {removed, freed_bytes, ...}."""
        keep = Path(self.ensure_agent()).name
        summary = self._json(self.command(["clean", "--cache", self.cache, "--max-bytes", str(max_bytes), "--keep", keep]),
                             "clean")
        if "error" in summary:  # the agent refuses while a benchmark holds the board
            raise BoardBusy(summary["error"])
        return summary


def _sha256(path: Path) -> str:
    from ..fileio import file_sha256

    return file_sha256(path)
