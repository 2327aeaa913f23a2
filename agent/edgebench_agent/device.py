"""Facts about the machine the agent runs on, for `info` and for the provenance of every result.

Best effort: a fact that cannot be read is left out, never fatal.
"""

from __future__ import annotations

import os
import platform
import sys


def _read_text(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


# Arm's CPU part numbers (MIDR) of the cores edge boards use.
ARM_CORES = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd41": "Cortex-A78", "0xd42": "Cortex-A78AE", "0xd4b": "Cortex-A78C",
}


def cpu_model(cpuinfo_text=None):
    """CPU name from /proc/cpuinfo: x86 'model name'; on Arm the core from its part number (and the SoC)."""
    text = cpuinfo_text if cpuinfo_text is not None else (_read_text("/proc/cpuinfo") or "")
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip().lower(), value.strip())
    part = fields.get("cpu part", "").lower()
    if part in ARM_CORES:
        return ARM_CORES[part] + (" (%s)" % fields["hardware"] if "hardware" in fields else "")
    for key in ("model name", "model", "hardware", "cpu model", "processor"):
        if key in fields and not fields[key].isdigit():
            return fields[key]
    return platform.processor() or None


def memory_bytes(meminfo_text=None):
    """Total and available memory from /proc/meminfo, in bytes."""
    text = meminfo_text if meminfo_text is not None else (_read_text("/proc/meminfo") or "")
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        parts = value.split()
        if sep and parts and parts[0].isdigit():
            found[key.strip()] = int(parts[0]) * 1024
    return found.get("MemTotal"), found.get("MemAvailable")


def board_model():
    """Board name from the device tree (Raspberry Pi, Jetson), absent on PCs."""
    return _read_text("/proc/device-tree/model")


def machine_info():
    total, available = memory_bytes()
    return {
        "hostname": platform.node(),
        "system": platform.system(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": total,
        "memory_available_bytes": available,
        "board_model": board_model(),
    }


def python_info():
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
    }


def peak_rss_bytes():
    """Peak resident set size of this process (Linux VmHWM; getrusage elsewhere)."""
    status = _read_text("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes():
    status = _read_text("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None
