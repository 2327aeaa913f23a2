"""Energy per inference from power readings: parsers of what sensors print, and the one computation.

Both sides run this: the board for its own sensors (and the standalone agent's summary), the host for an
external meter (`--power-command`). A reading is (time in s, value, inferences done so far); `value` is watts for
a power source, or a cumulative energy counter in µJ (RAPL) that wraps at `wrap_uj`.

Energy over a window: power readings are integrated with the trapezoid rule (clipped to the window); a counter
is differenced across its readings, adding the range back at each wrap. The confidence interval comes from
batch means: the load window is cut into BATCHES equal parts, each part's energy per inference is one batch mean.
"""

from __future__ import annotations

import math
import re

BATCHES = 10
# Student's t, two-sided 95 %, for BATCHES - 1 = 9 degrees of freedom (and fewer, when readings are sparse).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
MAX_WATTS = 100000.0  # a reading beyond this is a broken sensor or a unit mistake, never a board


class EnergyError(ValueError):
    """Readings that cannot give an energy figure (too few, none in a window, nonsense values)."""


# ---------------------------------------------------------------------------------------------- parsers
_PMIC = re.compile(r"^\s*(\w+?)_([AV])\s+(?:current|volt)\(\d+\)=([-+0-9.eE]+)[AV]\s*$")
_PMIC_OLD = re.compile(r"^\s*(\w+?)_([AV])=([-+0-9.eE]+)[AV]\s*$")


def parse_pmic(text):
    """`vcgencmd pmic_read_adc` (Raspberry Pi 5) -> (watts, rails): Σ V·I over the rails that report both.
    `VDD_CORE_A current(7)=1.54489000A`, `VDD_CORE_V volt(15)=0.88725180V`; older firmware `VDD_CORE_V=0.8750V`."""
    amps, volts = {}, {}  # type: dict, dict
    for line in text.splitlines():
        match = _PMIC.match(line) or _PMIC_OLD.match(line)
        if match:
            rail, unit, value = match.group(1), match.group(2), float(match.group(3))
            (amps if unit == "A" else volts)[rail] = value
    rails = sorted(set(amps) & set(volts))
    if not rails:
        raise EnergyError("no rail with both a current and a voltage in the pmic_read_adc output")
    return sum(amps[r] * volts[r] for r in rails), rails


_TEGRA = re.compile(r"\b(VDD_IN|POM_5V_IN)\s+(\d+)(?:mW)?/(\d+)(?:mW)?")


def parse_tegrastats(line):
    """A tegrastats line -> watts of the module's input: `VDD_IN 4654mW/4654mW` (instant/average), or
    `POM_5V_IN 4654/4654` on Nano/TX2 (already the total: rails are never added)."""
    match = _TEGRA.search(line)
    if not match:
        raise EnergyError("no VDD_IN or POM_5V_IN in the tegrastats line")
    return int(match.group(2)) / 1000.0, match.group(1)


def parse_watts(line):
    """One line of an external meter's output: a number of watts (a trailing 'W' allowed)."""
    text = line.strip()
    if text.lower().endswith("w"):
        text = text[:-1].strip()
    try:
        value = float(text)
    except ValueError:
        raise EnergyError("not a number of watts: %r" % line.strip()[:60])
    return check_watts(value)


def check_watts(value):
    if not (math.isfinite(value) and 0.0 <= value <= MAX_WATTS):
        raise EnergyError("not a plausible power: %r W" % value)
    return value


# ------------------------------------------------------------------------------------------ computation
def _power_energy(readings, start, end):
    """∫ P dt over [start, end] from (t, watts) readings by the trapezoid rule, clipped to the window (the power
    at an edge is interpolated between the readings around it)."""
    inside = [(t, v) for t, v in readings if start <= t <= end]
    before = [(t, v) for t, v in readings if t < start][-1:]
    after = [(t, v) for t, v in readings if t > end][:1]
    points = before + inside + after
    if len(points) < 2:
        raise EnergyError("fewer than two power readings cover the window")

    def at(time_s):
        for (t0, v0), (t1, v1) in zip(points, points[1:]):
            if t0 <= time_s <= t1:
                return v0 if t1 == t0 else v0 + (v1 - v0) * (time_s - t0) / (t1 - t0)
        return points[0][1] if time_s < points[0][0] else points[-1][1]  # held flat past the last reading

    series = [(start, at(start))] + [(t, v) for t, v in inside if start < t < end] + [(end, at(end))]
    return sum((t1 - t0) * (v0 + v1) / 2.0 for (t0, v0), (t1, v1) in zip(series, series[1:]))


def _counter_energy(readings, start, end, wrap_uj):
    """Joules a wrapping µJ counter advanced between its readings nearest inside [start, end]."""
    inside = [(t, v) for t, v in readings if start <= t <= end]
    if len(inside) < 2:
        raise EnergyError("fewer than two counter readings in the window")
    total = 0.0
    for (_, v0), (_, v1) in zip(inside, inside[1:]):
        step = v1 - v0
        if step < 0:  # wrapped (RAPL counts up to max_energy_range_uj, then starts again)
            if not wrap_uj:
                raise EnergyError("the energy counter went backwards and has no known range")
            step += wrap_uj
        total += step
    span = inside[-1][0] - inside[0][0]
    if span <= 0:
        raise EnergyError("the counter readings span no time")
    return total / 1e6 * (end - start) / span  # scaled to the window from the readings' own span


def window_energy(kind, readings, start, end, wrap_uj=None):
    """Joules over [start, end] from (t, value) readings of a `power` or `counter` source."""
    if end <= start:
        raise EnergyError("an empty window")
    if kind == "counter":
        return _counter_energy(readings, start, end, wrap_uj)
    return _power_energy(readings, start, end)


def _count_at(readings, time_s):
    """Inferences done at time_s, interpolated between the readings' counts."""
    previous = None
    for t, _, count in readings:
        if t >= time_s:
            if previous is None or t == previous[0]:
                return float(count)
            t0, c0 = previous
            return c0 + (count - c0) * (time_s - t0) / (t - t0)
        previous = (t, count)
    return float(previous[1]) if previous else 0.0


def max_gap_s(rate_hz):
    """The longest stretch without a reading a window may have: five missed readings, and at least 2 s."""
    return max(2.0, 5.0 / rate_hz) if rate_hz else 5.0


def check_coverage(times, start, end, limit):
    """EnergyError when the readings leave a stretch of the window longer than `limit` uncovered (a sensor that
    died mid-pass: its last value would be held for the rest, a guess, not a measurement)."""
    inside = [t for t in times if start <= t <= end]
    edges = [start] + inside + [end]
    gap = max(b - a for a, b in zip(edges, edges[1:]))
    if gap > limit:
        raise EnergyError("the readings leave %.2f s of a %.2f s window uncovered (the sensor stopped answering?)"
                          % (gap, end - start))


def summarize(kind, readings, idle, load, inferences, wrap_uj=None, rate_hz=None):
    """The energy figures of a pass. readings: [(t, value, inferences so far)]; idle: (t0, t1); load: (t0, t1)
    with `inferences` done in it; rate_hz: the rate asked for (how long a gap in the readings may be). Raises
    EnergyError when the readings cannot give them: too few, a window not covered, or no energy at all."""
    pairs = [(r[0], r[1]) for r in readings]
    if inferences < 1:
        raise EnergyError("no inference ran in the energy window")
    idle_s = idle[1] - idle[0]
    load_s = load[1] - load[0]
    times = [t for t, _ in pairs]
    for window in ([idle] if idle_s > 0 else []) + [load]:
        check_coverage(times, window[0], window[1], max_gap_s(rate_hz))
    idle_w = window_energy(kind, pairs, idle[0], idle[1], wrap_uj) / idle_s if idle_s > 0 else None
    load_j = window_energy(kind, pairs, load[0], load[1], wrap_uj)
    if not load_j > 0:
        raise EnergyError("the sensor reported no energy used while the model ran (0 W throughout): it is not "
                          "measuring this board")
    load_w = load_j / load_s
    figures = {
        "inferences": inferences, "load_seconds": round(load_s, 4), "idle_seconds": round(idle_s, 4),
        "average_power_w": load_w, "idle_power_w": idle_w,
        "mj_per_inference": 1e3 * load_j / inferences,
        "mj_per_inference_above_idle": (1e3 * (load_w - idle_w) * load_s / inferences) if idle_w is not None else None,
        "inferences_per_joule": inferences / load_j if load_j > 0 else None,
    }
    # Batch means: each tenth of the load window gives its own energy per inference.
    means = []
    step = load_s / BATCHES
    load_readings = [r for r in readings if load[0] - step <= r[0] <= load[1] + step]
    counted = any(r[2] for r in load_readings)  # an external meter knows no counts: the loop's rate is steady
    for index in range(BATCHES):
        start, end = load[0] + index * step, load[0] + (index + 1) * step
        done = (_count_at(load_readings, end) - _count_at(load_readings, start)) if counted else inferences / BATCHES
        try:
            energy = window_energy(kind, pairs, start, end, wrap_uj)
        except EnergyError:
            continue  # too few readings in this batch (a slow sensor): fewer batches
        if done > 0:
            means.append(1e3 * energy / done)
    if len(means) >= 2:
        mean = sum(means) / len(means)
        sd = math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1))
        half = T95[min(len(means) - 1, 9)] * sd / math.sqrt(len(means))
        figures["mj_per_inference_ci"] = [mean - half, mean + half]
        figures["batches"] = len(means)
    return figures


def sample_rate(readings):
    """Readings per second actually achieved."""
    if len(readings) < 2 or readings[-1][0] <= readings[0][0]:
        return None
    return (len(readings) - 1) / (readings[-1][0] - readings[0][0])
