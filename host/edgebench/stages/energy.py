"""Energy per inference on the host side: an external meter (`--power-command`), and the result's energy block.

The board's energy pass returns raw readings and its idle and load windows; the figures are computed here
(shared.energy.summarize), so a result keeps both. An external meter is a command run on this host that prints
watts, one reading per line (a smart plug, a USB meter's script). Its readings are stamped with this host's clock
as they arrive, and the windows with the moments the board's phase events arrive, so both share one clock.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Any

from ..errors import InputError

STOP_TIMEOUT_S = 2.0
MAX_READINGS = 100_000  # the latest readings kept: a meter that floods its output still covers the pass
MAX_LINE_BYTES = 200  # a reading is a number of watts; longer lines are garbage
MAX_ERRORS_KEPT = 3


class PowerCommand:
    """An external meter: `argv` runs for the whole run, each stdout line a number of watts."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.readings: collections.deque = collections.deque(maxlen=MAX_READINGS)  # the latest: a flood keeps the pass
        self.errors: list[str] = []
        self.failed = 0
        self.windows: dict[str, float] = {}  # phase -> host time its event arrived
        self.inferences: int | None = None
        self._process: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import subprocess

        try:  # an argv list: no shell parses the user's command (shlex split it)
            self._process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL)
        except OSError as exc:
            raise InputError(f"--power-command cannot start {self.argv[0]!r}: {exc.strerror or exc}",
                             "give a command that prints watts, one reading per line") from exc
        self._thread = threading.Thread(target=self._follow, name="edgebench-power-command", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        from ..agentlib import EnergyError, parse_watts

        assert self._process is not None and self._process.stdout is not None
        stream = self._process.stdout
        while True:
            raw = stream.readline(MAX_LINE_BYTES)  # bounded: a line without an end never fills memory
            if not raw:
                return
            now = time.time()
            if not raw.endswith(b"\n") and len(raw) == MAX_LINE_BYTES:
                self._fail(f"a line longer than {MAX_LINE_BYTES} bytes")
                while raw and not raw.endswith(b"\n"):
                    raw = stream.readline(MAX_LINE_BYTES)
                continue
            try:
                watts = parse_watts(raw.decode("utf-8", "replace"))
            except EnergyError as exc:
                self._fail(str(exc))
                continue
            self.readings.append([now, watts, 0])

    def _fail(self, reason: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(reason)

    def event(self, event: dict) -> None:
        """The board's energy phase events: their arrival marks the windows on this host's clock."""
        if event.get("event") == "energy":
            self.windows[event.get("phase", "?")] = time.time()
            if event.get("phase") == "end":
                self.inferences = event.get("inferences")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.kill()
        try:
            self._process.wait(STOP_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a process that will not die is left to the OS; its readings are in
            pass
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        if self._process.returncode not in (None, 0, -9) and not self.readings:
            self._fail(f"the command exited with code {self._process.returncode}")

    def board_block(self) -> dict:
        """The pass as if the board had read this meter (the same shape, on the host's clock)."""
        w = self.windows
        if not all(k in w for k in ("idle", "load", "end")) or self.inferences is None:
            return {"available": False, "reason": "the board's energy phases never reached this host"}
        return {"available": True, "source": "power-command", "scope": "external meter (the wall: the supply included)",
                "rails": [" ".join(self.argv)[:200]], "kind": "power", "wrap_uj": None, "idle": [w["idle"], w["load"]],
                "load": [w["load"], w["end"]], "inferences": self.inferences, "readings": list(self.readings),
                "failed_readings": self.failed, "errors": self.errors}


def power_argv(text: str | None) -> list[str] | None:
    """--power-command "python3 meter.py --port /dev/ttyUSB0" -> an argv (no shell)."""
    import shlex

    if text is None:
        return None
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise InputError(f"--power-command {text!r}: {exc}") from exc
    if not argv:
        raise InputError("--power-command is empty", "give the command that prints watts, one reading per line")
    return argv


def result_block(raw: dict | None) -> dict | None:
    """The result's energy block from a pass (the board's, or an external meter's): the method and the raw
    readings as recorded, the figures computed, or `available: false` with the reason. Never 0 for unknown."""
    from ..agentlib import EnergyError, sample_rate, summarize

    if not raw:
        return None
    block = {key: raw.get(key) for key in ("available", "reason", "source", "scope", "rails", "kind",
                                            "requested_rate_hz", "idle", "load", "inferences", "readings",
                                            "failed_readings", "errors", "wrap_uj") if key in raw}
    if not raw.get("available"):
        block["available"] = False
        return block
    readings = raw.get("readings") or []
    try:
        block["rate_hz"] = sample_rate(readings)
        figures = summarize(raw["kind"], readings, raw["idle"], raw["load"], raw["inferences"], raw.get("wrap_uj"),
                            raw.get("requested_rate_hz"))
        numbers = [v for v in figures.values() if isinstance(v, float)] + list(figures.get("mj_per_inference_ci") or [])
        if not all(math.isfinite(v) for v in numbers):
            raise EnergyError("the readings give no finite figure")
        block.update(figures)
    except (EnergyError, KeyError, TypeError, IndexError, ValueError, ZeroDivisionError) as exc:
        block["available"] = False
        problems = f"; {raw.get('failed_readings')} readings failed ({'; '.join(raw.get('errors') or [])})" \
            if raw.get("failed_readings") else ""
        block["reason"] = f"{raw.get('source')}: {exc}{problems}"
    return block


def summary_line(document: dict) -> str | None:
    """What `bench deploy` prints about a run's energy."""
    from ..results.schema import printable

    block = document.get("energy")
    if not block:
        return None
    name = printable(document["model"]["name"])
    if not block.get("available"):
        return f"energy {name}: unavailable ({printable(block.get('reason'))})"
    ci = block.get("mj_per_inference_ci")
    interval = f" [95% CI {ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
    above = block.get("mj_per_inference_above_idle")
    idle = block.get("idle_power_w")
    return (f"energy {name}: {block['mj_per_inference']:.4g} mJ per inference{interval}"
            + (f", {above:.4g} above idle" if above is not None else "")
            + f"; {block['average_power_w']:.3g} W" + (f" (idle {idle:.3g} W)" if idle is not None else "")
            + f"; {printable(block.get('source'))}, scope {printable(block.get('scope'))}, "
            + f"{block.get('rate_hz') or 0:.3g} Hz")
