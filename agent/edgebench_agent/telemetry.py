"""Board telemetry, best effort and never fatal: clocks, governors, temperatures, load, memory; Raspberry Pi
throttling (vcgencmd / firmware sysfs); Jetson power mode, clocks and tegrastats.

Snapshots are taken before and after a run and sampled during it. Samples during a run read sysfs only (a few
small files): starting a process (vcgencmd, tegrastats) while measuring would disturb the measurement, and the
Pi's "since boot" throttle bits, read after the run, record anything that happened in between.

All paths are read under a root ($EDGEBENCH_SYSROOT, default /), so the parsers are tested on fixture trees
written in the documented formats.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import time

from .shared.validity import THROTTLE_BITS

COMMAND_TIMEOUT_S = 3.0



def sysroot():
    return os.environ.get("EDGEBENCH_SYSROOT", "/")


def _path(*parts):
    return os.path.join(sysroot(), *[p.lstrip("/") for p in parts])


def _read(*parts):
    """A small text file under the sysroot (parts relative to it)."""
    return _read_file(_path(*parts))


def _read_file(path):
    try:
        with open(path) as handle:
            return handle.read().replace("\x00", "").strip()
    except (IOError, OSError, UnicodeDecodeError):
        return None


def _int(text):
    try:
        return int(text.strip())
    except (AttributeError, ValueError):
        return None


def _command(argv):
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode("utf-8", "replace") if done.returncode == 0 else None


# ---------------------------------------------------------------------------------------- parsers
def parse_throttled(text):
    """'throttled=0x50005' (vcgencmd) or '50005' (firmware sysfs) -> {raw, now, since_boot}."""
    if text is None:
        return None
    match = re.search(r"(?:0x)?([0-9a-fA-F]+)\s*$", text.strip())
    if not match:
        return None
    value = int(match.group(1), 16)
    return {"raw": "0x%x" % value, "value": value,
            "now": [THROTTLE_BITS[b] for b in (0, 1, 2, 3) if value & (1 << b)],
            "since_boot": [THROTTLE_BITS[b] for b in (16, 17, 18, 19) if value & (1 << b)]}


def parse_vcgencmd_temp(text):
    """"temp=48.3'C" -> 48.3"""
    match = re.search(r"temp=([\d.]+)", text or "")
    return float(match.group(1)) if match else None


def parse_vcgencmd_clock(text):
    """'frequency(48)=1500398464' -> 1500398464 (Hz)"""
    match = re.search(r"=\s*(\d+)", text or "")
    return int(match.group(1)) if match else None


def parse_nvpmodel(text):
    """`nvpmodel -q`: 'NV Power Mode: MAXN\\n0' -> {'name': 'MAXN', 'id': 0}"""
    if not text:
        return None
    name = re.search(r"NV Power Mode:\s*(\S+)", text)
    ident = re.search(r"^\s*(\d+)\s*$", text, re.MULTILINE)
    return {"name": name.group(1) if name else None, "id": int(ident.group(1)) if ident else None}


def parse_jetson_clocks(text):
    """`jetson_clocks --show`: 'cpu0: Online=1 Governor=... MinFreq=X MaxFreq=Y CurrentFreq=Z' lines.
    jetson_clocks pins every online CPU's MinFreq to its MaxFreq: that is 'on'."""
    cpus = re.findall(r"cpu(\d+): Online=(\d) Governor=(\S+) MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", text or "")
    if not cpus:
        return None
    online = [c for c in cpus if c[1] == "1"]
    pinned = all(c[3] == c[4] for c in online) if online else False
    return {"state": "on" if pinned else "off", "cpus": len(online)}


def parse_tegrastats(line):
    """One tegrastats line: RAM, per-CPU load@MHz, temperatures (name@XXC)."""
    if not line:
        return None
    result = {"line": line.strip()[:400]}
    ram = re.search(r"RAM (\d+)/(\d+)MB", line)
    if ram:
        result["ram_used_mb"], result["ram_total_mb"] = int(ram.group(1)), int(ram.group(2))
    cpu = re.search(r"CPU \[([^\]]*)\]", line)
    if cpu:
        cores = []
        for part in cpu.group(1).split(","):
            found = re.match(r"\s*(\d+)%@(\d+)", part)
            cores.append({"load_pct": int(found.group(1)), "mhz": int(found.group(2))} if found else None)
        result["cpu"] = cores
    result["temps_c"] = dict((name.lower(), float(value)) for name, value in re.findall(r"(\w+)@(-?[\d.]+)C", line))
    return result


def parse_nv_tegra_release(text):
    """'# R35 (release), REVISION: 4.1, ...' -> 'R35.4.1'"""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return "R%s.%s" % (match.group(1), match.group(2)) if match else None


# ------------------------------------------------------------------------------------------ snapshots
def cpu_state():
    cpus = {}
    for folder in sorted(glob.glob(_path("sys/devices/system/cpu/cpu[0-9]*/cpufreq"))):
        name = folder.split(os.sep)[-2]
        cpus[name] = {
            "governor": _read_file(os.path.join(folder, "scaling_governor")),
            "cur_khz": _int(_read_file(os.path.join(folder, "scaling_cur_freq"))),
            "min_khz": _int(_read_file(os.path.join(folder, "scaling_min_freq"))),
            "max_khz": _int(_read_file(os.path.join(folder, "scaling_max_freq"))),
        }
    return cpus


def thermal_zones():
    zones = []
    for folder in sorted(glob.glob(_path("sys/class/thermal/thermal_zone[0-9]*"))):
        milli = _int(_read_file(os.path.join(folder, "temp")))
        if milli is not None:
            zones.append({"zone": os.path.basename(folder), "type": _read_file(os.path.join(folder, "type")),
                          "temp_c": milli / 1000.0})
    return zones


def max_temperature(snapshot):
    temps = [z["temp_c"] for z in snapshot.get("thermal", [])]
    rpi = snapshot.get("rpi") or {}
    if rpi.get("temp_c") is not None:
        temps.append(rpi["temp_c"])
    return max(temps) if temps else None


def snapshot(light=False):
    """The board's state now. light=True (during a run): sysfs only, no processes started."""
    state = {"time": time.time(), "cpu": cpu_state(), "thermal": thermal_zones()}
    load = (_read("proc/loadavg") or "").split()
    if len(load) >= 3:
        state["loadavg"] = [float(v) for v in load[:3]]
    model = _read("proc/device-tree/model") or ""
    firmware_throttled = _read("sys/devices/platform/soc/soc:firmware/get_throttled")
    if "raspberry" in model.lower() or firmware_throttled is not None or (not light and shutil.which("vcgencmd")):
        rpi = {"throttled": parse_throttled(firmware_throttled)}
        if not light:
            rpi["throttled"] = parse_throttled(_command(["vcgencmd", "get_throttled"])) or rpi["throttled"]
            rpi["temp_c"] = parse_vcgencmd_temp(_command(["vcgencmd", "measure_temp"]))
            rpi["arm_hz"] = parse_vcgencmd_clock(_command(["vcgencmd", "measure_clock", "arm"]))
        state["rpi"] = rpi
    if "jetson" in model.lower() or _read("etc/nv_tegra_release") is not None:
        jetson = {"model": model or None, "l4t": parse_nv_tegra_release(_read("etc/nv_tegra_release"))}
        if not light:
            jetson["nvpmodel"] = parse_nvpmodel(_command(["nvpmodel", "-q"]))
            jetson["jetson_clocks"] = parse_jetson_clocks(_command(["jetson_clocks", "--show"]))
            jetson["tegrastats"] = parse_tegrastats(_first_line(["tegrastats", "--interval", "100"]))
        state["jetson"] = jetson
    return state


def _first_line(argv):
    """tegrastats prints forever: read its first line, then stop it. A tool that prints nothing is killed after
    COMMAND_TIMEOUT_S (its pipe then ends), so a hung tool never hangs a snapshot."""
    import threading

    if shutil.which(argv[0]) is None:
        return None
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    deadline = threading.Timer(COMMAND_TIMEOUT_S, process.kill)
    deadline.start()
    try:
        line = process.stdout.readline().decode("utf-8", "replace")
    finally:
        deadline.cancel()
        process.kill()
        process.wait()
    return line or None


def static_facts():
    """Facts that do not change during a run (for `info`)."""
    facts = {}
    release = parse_nv_tegra_release(_read("etc/nv_tegra_release"))
    if release:
        facts["l4t"] = release
    governors = sorted(set(c["governor"] for c in cpu_state().values() if c["governor"]))
    if governors:
        facts["governors"] = governors
    return facts
