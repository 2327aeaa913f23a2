"""Power sensor fixtures for tests/test_energy.py: a sysroot whose files follow a known power, rewritten about every
millisecond by this module run as its own process (`python -m tests.energy_fixture ROOT LAYOUT`)."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

PERIOD_S = 6.0


def power(t: float) -> float:
    """The known power (W) every fixture reports at wall time t."""
    return 4.0 + math.sin(2 * math.pi * t / PERIOD_S)


def joules(a: float, b: float) -> float:
    """∫ power dt from a to b, exactly."""
    return 4.0 * (b - a) - PERIOD_S / (2 * math.pi) * (math.cos(2 * math.pi * b / PERIOD_S) - math.cos(2 * math.pi * a / PERIOD_S))


def write_atomically(path: Path, text: str) -> None:
    """Atomically, as the kernel's sysfs would show it: a reader sees the old value or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    os.replace(temp, path)


class SensorFiles:
    """A sysroot with one sensor layout whose files show power(t) (or its integral, for RAPL) when updated."""

    def __init__(self, root: Path, layout: str):
        self.root, self.layout = root, layout
        self.start = time.time()
        self.update()

    def update(self) -> None:
        now = time.time()
        watts = power(now)
        r = self.root
        if self.layout == "hwmon":
            write_atomically(r / "sys/class/hwmon/hwmon2/name", "ina226\n")
            write_atomically(r / "sys/class/hwmon/hwmon2/power1_input", f"{int(watts * 1e6)}\n")
        elif self.layout == "ina3221-hwmon":
            folder = r / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
            for index, (label, volts_mv, amps_ma) in enumerate([("VDD_IN", 5000, watts / 5 * 1000),
                                                                ("VDD_CPU_GPU_CV", 5000, 300)], start=1):
                write_atomically(folder / f"in{index}_label", label + "\n")
                write_atomically(folder / f"in{index}_input", f"{volts_mv}\n")
                write_atomically(folder / f"curr{index}_input", f"{int(round(amps_ma))}\n")
        elif self.layout == "ina3221-rails":  # no input rail: the rails are summed
            folder = r / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
            for index, (label, share) in enumerate([("VDD_CPU", 0.75), ("VDD_SOC", 0.25)], start=1):
                write_atomically(folder / f"in{index}_label", label + "\n")
                write_atomically(folder / f"in{index}_input", "1000\n")
                write_atomically(folder / f"curr{index}_input", f"{int(round(watts * share * 1000))}\n")
        elif self.layout == "ina3221-iio":
            folder = r / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
            write_atomically(folder / "rail_name_0", "POM_5V_IN\n")
            write_atomically(folder / "in_power0_input", f"{int(round(watts * 1000))}\n")
            write_atomically(folder / "rail_name_1", "POM_5V_GPU\n")
            write_atomically(folder / "in_power1_input", "1500\n")
        elif self.layout == "rapl":
            zone = r / "sys/class/powercap/intel-rapl:0"
            write_atomically(zone / "name", "package-0\n")
            write_atomically(zone / "max_energy_range_uj", "2000000\n")  # 2 J: wraps every half second at 4 W
            write_atomically(zone / "energy_uj", f"{int(joules(self.start, now) * 1e6) % 2000000}\n")
            write_atomically(r / "sys/class/powercap/intel-rapl:0/intel-rapl:0:0/name", "core\n")  # inside the package: not added
            write_atomically(r / "sys/class/powercap/intel-rapl:0/intel-rapl:0:0/energy_uj", "5\n")


def main() -> None:
    fixture = SensorFiles(Path(sys.argv[1]), sys.argv[2])
    print("ready", flush=True)
    while True:
        time.sleep(0.0005)
        fixture.update()


if __name__ == "__main__":
    main()
