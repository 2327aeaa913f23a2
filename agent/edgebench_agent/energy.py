"""The energy pass: the board's power sensors, read while the model runs in a loop (separate from the timed pass).

Sources, found under $EDGEBENCH_SYSROOT (default /) and on PATH, first match wins:
- Jetson INA3221 through hwmon (current L4T: inN_label, inN_input mV, currN_input mA -> V·I) or iio (older L4T:
  rail_name_N, in_powerN_input mW). The module input rail (VDD_IN, POM_5V_IN) is the total when present: rails
  are never added to it.
- any hwmon power sensor (powerN_input, µW): an INA219/INA226 on I2C, a POWER-Z USB-C meter (powerz).
- RAPL powercap (x86): the package zones' energy_uj counters, which wrap at max_energy_range_uj.
- tegrastats (Jetson without the sysfs files): its VDD_IN / POM_5V_IN, streamed.
- `vcgencmd pmic_read_adc` (Raspberry Pi 5: no sysfs route): one process per reading, so only in this pass.
Every source is recorded with its name, rails, scope and the sample rate achieved; with none, the pass says so.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import subprocess
import threading
import time

from .shared.energy import EnergyError, check_watts, parse_pmic, parse_tegrastats
from .telemetry import sysroot

COMMAND_TIMEOUT_S = 2.0
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")  # a Jetson module's input: already the sum of the others


def _root(pattern):
    return sorted(glob.glob(os.path.join(sysroot(), pattern.lstrip("/"))))


def _text(path):
    with open(path) as handle:
        return handle.read().strip()


def _number(path):
    text = _text(path)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise EnergyError("%s holds %r, not a reading" % (os.path.basename(path), text[:40]))
    return value


class Source(object):
    """One way of reading power. kind: `power` (read() -> watts) or `counter` (read() -> µJ, wrapping)."""

    kind = "power"
    wrap_uj = None

    def __init__(self, name, scope, rails):
        self.name, self.scope, self.rails = name, scope, rails

    def describe(self):
        return {"source": self.name, "scope": self.scope, "rails": self.rails, "kind": self.kind}

    def start(self):
        pass

    def stop(self):
        pass

    def read_stamped(self):
        """(time, value): a reading that takes time (a process to start) is stamped at its middle."""
        before = time.time()
        value = self.read()
        return (before + time.time()) / 2.0, value


class Ina3221(Source):
    """A Jetson's INA3221 channels, each (rail name, *files): the module input rail alone when present (it is the
    total already), else every rail summed."""

    def __init__(self, name, channels):
        total = [c for c in channels if c[0] in TOTAL_RAILS]
        self.channels = total[:1] or channels
        rails = [c[0] for c in self.channels]
        Source.__init__(self, name, "module input (%s)" % rails[0] if total else "rails: " + ", ".join(rails), rails)


class Ina3221Hwmon(Ina3221):
    def __init__(self, channels):  # [(label, in path (mV), curr path (mA))]
        Ina3221.__init__(self, "ina3221-hwmon", channels)

    def read(self):
        return check_watts(sum(_number(v) * _number(c) / 1e6 for _, v, c in self.channels))  # mV * mA


class Ina3221Iio(Ina3221):
    def __init__(self, channels):  # [(rail, power path (mW))]
        Ina3221.__init__(self, "ina3221-iio", channels)

    def read(self):
        return check_watts(sum(_number(p) for _, p in self.channels) / 1e3)  # mW


class HwmonPower(Source):
    def __init__(self, sensors):
        self.sensors = sensors  # [(driver name, power path)]
        names = ["%s/%s" % (d, os.path.basename(p)) for d, p in sensors]
        Source.__init__(self, "hwmon-power", "sensor: " + ", ".join(sorted({d for d, _ in sensors})), names)

    def read(self):
        return check_watts(sum(_number(p) for _, p in self.sensors) / 1e6)  # µW


class Rapl(Source):
    kind = "counter"

    def __init__(self, zones):
        self.zones = zones  # [(name, energy path, range µJ)]
        Source.__init__(self, "rapl", "CPU package", [z[0] for z in zones])
        # Several packages wrap independently: read and difference them as one sum only with a common range.
        self.wrap_uj = zones[0][2] if len({z[2] for z in zones}) == 1 else None

    def read(self):
        return sum(_number(path) for _, path, _ in self.zones)


class Vcgencmd(Source):
    def __init__(self, rails):
        Source.__init__(self, "vcgencmd-pmic", "board rails (PMIC, not the wall)", rails)

    def read(self):
        done = subprocess.run(["vcgencmd", "pmic_read_adc"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=COMMAND_TIMEOUT_S)
        watts, _ = parse_pmic(done.stdout.decode("utf-8", "replace"))
        return check_watts(watts)


class Tegrastats(Source):
    """tegrastats streams a line every interval: a reader thread keeps the latest, read() takes it."""

    def __init__(self, rail, interval_ms):
        Source.__init__(self, "tegrastats", "module input (%s)" % rail, [rail])
        self.interval_ms = interval_ms
        self.latest = None
        self.process = None

    def start(self):
        self.process = subprocess.Popen(["tegrastats", "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)
        thread = threading.Thread(target=self._follow, name="edgebench-tegrastats")
        thread.daemon = True
        thread.start()
        waited = time.time() + max(1.0, 3 * self.interval_ms / 1000.0)
        while self.latest is None and time.time() < waited and self.process.poll() is None:
            time.sleep(0.01)  # its first line

    def _follow(self):
        for raw in self.process.stdout:
            try:
                self.latest = (time.time(), parse_tegrastats(raw.decode("utf-8", "replace"))[0])
            except EnergyError:
                pass

    def read(self):
        return self.read_stamped()[1]

    def read_stamped(self):
        """The latest line, stamped when it arrived (not when it is read: it may be an interval old by then)."""
        if self.latest is None:
            raise EnergyError("tegrastats has printed no power line yet")
        return self.latest[0], check_watts(self.latest[1])

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def detect(rate_hz=10.0):
    """The first power source this board has, or (None, what was looked for)."""
    channels = []
    for folder in _root("/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"):
        for label_path in sorted(glob.glob(os.path.join(folder, "in*_label"))):
            index = os.path.basename(label_path)[2:-6]
            volts, amps = os.path.join(folder, "in%s_input" % index), os.path.join(folder, "curr%s_input" % index)
            if os.path.exists(volts) and os.path.exists(amps):
                channels.append((_text(label_path), volts, amps))
    if channels:
        return Ina3221Hwmon(channels), None
    rails = []
    for folder in _root("/sys/bus/i2c/drivers/ina3221x/*/iio:device*"):
        for name_path in sorted(glob.glob(os.path.join(folder, "rail_name_*"))):
            power = os.path.join(folder, "in_power%s_input" % name_path.rsplit("_", 1)[1])
            if os.path.exists(power):
                rails.append((_text(name_path), power))
    if rails:
        return Ina3221Iio(rails), None
    sensors = []
    for folder in _root("/sys/class/hwmon/hwmon*"):
        for power in sorted(glob.glob(os.path.join(folder, "power*_input"))):
            name = os.path.join(folder, "name")
            sensors.append((_text(name) if os.path.exists(name) else os.path.basename(folder), power))
    if sensors:
        return HwmonPower(sensors), None
    zones = []
    for zone in _root("/sys/class/powercap/intel-rapl:*"):
        if zone.count(":") != 1:  # intel-rapl:0 is a package; intel-rapl:0:0 (core, dram) is inside it
            continue
        energy, limit = os.path.join(zone, "energy_uj"), os.path.join(zone, "max_energy_range_uj")
        if os.access(energy, os.R_OK) and os.path.exists(limit):
            try:
                zones.append((_text(os.path.join(zone, "name")), energy, int(_number(limit))))
                _number(energy)  # readable by this user (root-only on recent kernels)
            except (OSError, EnergyError):
                zones.pop()
    if zones:
        return Rapl(zones), None
    if shutil.which("tegrastats"):
        return Tegrastats("VDD_IN", max(10, int(1000 / rate_hz))), None
    if shutil.which("vcgencmd"):
        try:
            done = subprocess.run(["vcgencmd", "pmic_read_adc"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  timeout=COMMAND_TIMEOUT_S)
            _, pmic_rails = parse_pmic(done.stdout.decode("utf-8", "replace"))
            return Vcgencmd(pmic_rails), None
        except (OSError, subprocess.TimeoutExpired, EnergyError):
            pass
    return None, ("no sensor: looked for INA3221 (hwmon, iio), hwmon power*_input, RAPL powercap, tegrastats and "
                  "vcgencmd pmic_read_adc")


def sources_info():
    """What `info` says about energy: the source found (and its scope), or why there is none."""
    try:
        source, reason = detect()
    except Exception as exc:  # info must answer whatever a sensor does
        return {"available": False, "reason": "the power sensor could not be read: %s" % exc}
    if source is None:
        return {"available": False, "reason": reason}
    return dict(source.describe(), available=True)


class Reader(object):
    """Reads a source every 1/rate_hz seconds in a thread: (t, value, inferences so far) per reading; failed
    readings are counted with their first reasons (a garbage sensor never stops the run)."""

    def __init__(self, source, rate_hz, counter):
        self.source, self.interval, self.counter = source, 1.0 / rate_hz, counter
        self.readings, self.errors, self.failed = [], [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgebench-energy")
        self._thread.daemon = True

    def read_now(self):
        try:
            stamp, value = self.source.read_stamped()
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self.failed += 1
            if len(self.errors) < 3:
                self.errors.append("%s: %s" % (type(exc).__name__, exc))
            return
        if self.readings and self.readings[-1][0] == stamp:
            return  # the same reading again (a streaming source that has printed nothing new)
        self.readings.append([stamp, value, self.counter[0]])

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.read_now()

    def start(self):
        self.source.start()
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.source.stop()


def energy_pass(run, feeds, spec, emit, clock=time.time):
    """Idle baseline, then the model in a loop while power is read. Returns the raw pass: method, readings,
    windows and the inference count (the host computes the figures; shared.energy.summarize)."""
    rate = float(spec["rate_hz"])
    source, reason = (None, "an external meter on the host (--power-command)") if spec.get("external") else detect(rate)
    counter = [0]
    reader = Reader(source, rate, counter) if source is not None else None
    if reader is not None:
        reader.start()
    try:
        emit({"event": "energy", "phase": "idle", "t": clock()})
        idle_start = clock()
        if reader is not None:
            reader.read_now()
        time.sleep(float(spec["idle_seconds"]))
        if reader is not None:
            reader.read_now()
        idle_end = clock()
        emit({"event": "energy", "phase": "load", "t": clock()})
        load_start = clock()
        deadline = load_start + float(spec["seconds"])
        while True:
            run(None, feeds)
            counter[0] += 1
            if clock() >= deadline:
                break
        if reader is not None:
            reader.read_now()
        load_end = clock()
        emit({"event": "energy", "phase": "end", "t": clock(), "inferences": counter[0]})
    finally:
        if reader is not None:
            reader.stop()
    block = {"requested_rate_hz": rate, "idle": [idle_start, idle_end], "load": [load_start, load_end],
             "inferences": counter[0]}
    if source is None:
        block.update(available=False, reason=reason)
        return block
    block.update(source.describe(), available=True, wrap_uj=source.wrap_uj, readings=sorted(reader.readings),
                 failed_readings=reader.failed, errors=reader.errors)
    return block
