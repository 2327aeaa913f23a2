"""Measuring like the best: board telemetry parsers (Raspberry Pi and Jetson formats), INVALID runs, cooldown,
affinity, the profile pass, sweeps and fleets."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from edgebench.results import files as results
from edgebench_agent import telemetry
from edgebench_agent.shared import validity
from tests.conftest import EXAMPLES, FAST_RUN, assert_one_line_error

TEGRASTATS = ("RAM 2448/30536MB (lfb 6783x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@729,0%@729,3%@1420,off] "
              "EMC_FREQ 0% GR3D_FREQ 0% cpu@45.125C soc2@41.5C tj@46.75C VDD_GPU_SOC 1595mW/1595mW")
JETSON_CLOCKS_ON = ("SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit\nOnline CPUs: 0-1\n"
                    "cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0 c7=0\n"
                    "cpu1: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0 c7=0\n")


def make_pi(root: Path, governor: str = "performance", throttled: str = "0", temp_milli: int = 48300) -> Path:
    """A Raspberry Pi 4's sysfs/procfs as documented: cpufreq (kHz), thermal (m°C), firmware get_throttled."""
    for cpu in range(4):
        folder = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in (("scaling_governor", governor), ("scaling_cur_freq", "1500000"),
                            ("scaling_min_freq", "600000"), ("scaling_max_freq", "1500000")):
            (folder / name).write_text(value + "\n")
    zone = root / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text(f"{temp_milli}\n")
    (root / "proc/device-tree").mkdir(parents=True, exist_ok=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    (root / "proc/loadavg").write_text("0.52 0.58 0.59 1/467 12345\n")
    firmware = root / "sys/devices/platform/soc/soc:firmware"
    firmware.mkdir(parents=True, exist_ok=True)
    (firmware / "get_throttled").write_text(throttled + "\n")
    return root


def test_raspberry_pi_parsers(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEBENCH_SYSROOT", str(make_pi(tmp_path, governor="ondemand")))
    monkeypatch.setenv("PATH", "/nonexistent")  # no vcgencmd: sysfs only
    snap = telemetry.snapshot()
    assert snap["cpu"]["cpu2"] == {"governor": "ondemand", "cur_khz": 1500000, "min_khz": 600000, "max_khz": 1500000}
    assert snap["thermal"] == [{"zone": "thermal_zone0", "type": "cpu-thermal", "temp_c": 48.3}]
    assert snap["loadavg"] == [0.52, 0.58, 0.59]
    assert snap["rpi"]["throttled"]["value"] == 0
    assert telemetry.parse_throttled("throttled=0x50005") == {
        "raw": "0x50005", "value": 0x50005, "now": ["under-voltage detected", "currently throttled"],
        "since_boot": ["under-voltage has occurred", "throttling has occurred"]}
    assert telemetry.parse_vcgencmd_temp("temp=61.8'C") == 61.8
    assert telemetry.parse_vcgencmd_clock("frequency(48)=1800457792") == 1800457792


def test_jetson_parsers(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, "
                                                   "EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n")
    monkeypatch.setenv("EDGEBENCH_SYSROOT", str(tmp_path))
    assert telemetry.static_facts()["l4t"] == "R35.4.1"
    assert telemetry.parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert telemetry.parse_nvpmodel("NV Power Mode: 15W\n1\n") == {"name": "15W", "id": 1}
    assert telemetry.parse_jetson_clocks(JETSON_CLOCKS_ON) == {"state": "on", "cpus": 2}
    assert telemetry.parse_jetson_clocks(JETSON_CLOCKS_ON.replace("MinFreq=2201600", "MinFreq=115200", 1))["state"] == "off"
    stats = telemetry.parse_tegrastats(TEGRASTATS)
    assert stats["ram_used_mb"] == 2448 and stats["ram_total_mb"] == 30536
    assert stats["cpu"][:3] == [{"load_pct": 1, "mhz": 729}, {"load_pct": 0, "mhz": 729}, {"load_pct": 3, "mhz": 1420}]
    assert stats["cpu"][3] is None  # an offline core
    assert stats["temps_c"] == {"cpu": 45.125, "soc2": 41.5, "tj": 46.75}


def test_assess_marks_throttling_clock_drops_and_warns_about_governors():
    def snap(throttled=0, cur=1500000, governor="performance"):
        return {"cpu": {"cpu0": {"governor": governor, "cur_khz": cur}},
                "rpi": {"throttled": telemetry.parse_throttled(hex(throttled))}}

    assert validity.assess({"before": snap(), "during": [snap()], "after": snap()}) == \
        {"valid": True, "reasons": [], "warnings": []}
    mid = validity.assess({"before": snap(), "during": [snap(0x4)], "after": snap(0x40000)})
    assert not mid["valid"]
    assert "Raspberry Pi: currently throttled (get_throttled 0x4)" in mid["reasons"]
    assert any("throttling has occurred during the run" in r for r in mid["reasons"])
    old = validity.assess({"before": snap(0x50000), "during": [], "after": snap(0x50000)})
    assert old["valid"]  # throttled before this run started, and not now: not this run's problem
    drop = validity.assess({"before": snap(), "during": [snap(cur=1000000)], "after": snap()})
    assert drop["reasons"] == ["cpu0 clock dropped from 1500 to 1000 MHz during the run"]
    ondemand = validity.assess({"before": snap(governor="ondemand"), "during": [snap(cur=600000, governor="ondemand")],
                                 "after": snap(governor="ondemand")})
    assert ondemand["valid"] and "governor is ondemand" in ondemand["warnings"][0]
    jetson = validity.assess({"before": {"jetson": {"nvpmodel": {"name": "15W"}, "jetson_clocks": {"state": "off"}}}})
    assert len(jetson["warnings"]) == 2 and "not MAXN" in jetson["warnings"][0]


@pytest.mark.fault
def test_a_board_that_throttles_mid_run_gives_an_invalid_result(bench, tmp_path):
    """A real run on a fixture Pi: the firmware's throttle flags flip while the model is being measured."""
    root = make_pi(tmp_path / "pi")
    vcgencmd = tmp_path / "bin" / "vcgencmd"
    vcgencmd.parent.mkdir()
    # vcgencmd as documented, backed by the same firmware state the sysfs file shows.
    vcgencmd.write_text(f"""#!/bin/sh
case "$1" in
  get_throttled) echo "throttled=0x$(cat {root}/sys/devices/platform/soc/soc:firmware/get_throttled)";;
  measure_temp) echo "temp=48.3'C";;
  measure_clock) echo "frequency(48)=1500398464";;
esac
""")
    vcgencmd.chmod(0o755)
    flag = root / "sys/devices/platform/soc/soc:firmware/get_throttled"
    runs = Path(os.environ["EDGEBENCH_CACHE"]) / "board" / "runs"

    def throttle_once_measuring():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any((r / "pid").exists() and not (r / "exit_code").exists() for r in runs.glob("*")):
                time.sleep(1.2)
                flag.write_text("50005\n")  # under-voltage + throttled, now and since boot
                return
            time.sleep(0.05)

    flipper = threading.Thread(target=throttle_once_measuring)
    flipper.start()
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", "--min-seconds", "3", "--warmup", "2",
                 env={"EDGEBENCH_SYSROOT": str(root), "PATH": f"{vcgencmd.parent}:{os.environ['PATH']}"})
    flipper.join()
    assert done.code == 1
    assert_one_line_error(done, "is INVALID", "currently throttled")
    (path,) = (tmp_path / "r").glob("*.json")
    document = results.load_result(path)
    assert document["status"] == "ok" and not document["validity"]["valid"]
    reasons = document["validity"]["reasons"]
    assert "Raspberry Pi: under-voltage detected (get_throttled 0x50005)" in reasons
    assert any("during the run (get_throttled 0x0 -> 0x50005)" in r for r in reasons)  # from vcgencmd, after
    telemetry_block = document["measurements"]["telemetry"]
    assert telemetry_block["before"]["rpi"]["temp_c"] == 48.3 and telemetry_block["before"]["rpi"]["arm_hz"] == 1500398464
    assert len(telemetry_block["during"]) >= 1  # sampled while measuring
    assert "INVALID" in done.stdout
    compare = bench("compare", tmp_path / "r")
    assert "INVALID run" in compare.stderr and "left out" in compare.stderr


def test_cooldown_waits_for_the_idle_temperature(tmp_path, monkeypatch):
    from edgebench_agent.runner import cool_down

    root = make_pi(tmp_path, temp_milli=70000)
    monkeypatch.setenv("EDGEBENCH_SYSROOT", str(root))
    idle = tmp_path / "idle.json"
    idle.write_text(json.dumps({"idle_c": 45.0}))
    timed_out = cool_down({"margin_c": 3, "timeout_s": 1.5, "idle_file": str(idle)}, lambda e: None)
    assert not timed_out["reached"] and timed_out["waited_s"] >= 1.0

    def cool():
        time.sleep(1.2)
        (root / "sys/class/thermal/thermal_zone0/temp").write_text("47000\n")

    threading.Thread(target=cool).start()
    reached = cool_down({"margin_c": 3, "timeout_s": 20, "idle_file": str(idle)}, lambda e: None)
    assert reached["reached"] and reached["end_c"] == 47.0 and 1.0 <= reached["waited_s"] < 10


def test_affinity_spin_wait_and_the_profile_pass(bench, tmp_path):
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", *FAST_RUN, "--cpus", "0",
                 "--no-spin-wait", "--threads", "1", "--profile")
    assert done.code == 0, done.stderr
    (path,) = (tmp_path / "r").glob("*.json")
    document = results.load_result(path)
    assert document["measurements"]["placement"] == {"cpus": [0], "spin_wait": False, "intra_op_threads": 1,
                                                      "inter_op_threads": 0}
    profile = document["profile"]
    assert profile["iterations"] == 20 and profile["total_us"] > 0
    top = {op["op_type"]: op for op in profile["top_operators"]}
    assert "Conv" in top and top["Conv"]["calls"] == 2 * 20 and top["Conv"]["nodes"] == 2
    assert abs(sum(op["pct"] for op in profile["top_operators"]) - 100) < 1e-6
    assert "profile cnn: 20 inferences, top operators: " in done.stdout
    bad = bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r2", "--cpus", "99")
    assert_one_line_error(bad, "cpus [99] are not available on this board")


def _matrix(folder: Path) -> set:
    documents = [results.load_result(p) for p in folder.glob("*.json")]
    assert all(d["status"] == "ok" for d in documents)
    # --batch N is recorded as the size of the free dims it set (so --batch 4 and --dim batch=4 group together)
    return {(d["target"]["name"], d["settings"]["intra_op_threads"], d["settings"]["dims"]["batch"],
             d["measurements"]["inputs"][0]["shape"][0]) for d in documents}


def test_a_sweep_yields_exactly_its_matrix_locally(bench, tmp_path):
    done = bench("deploy", EXAMPLES / "digits.onnx", "--threads", "1,2", "--batch", "1,4", "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    assert _matrix(tmp_path / "r") == {("local", t, b, b) for t in (1, 2) for b in (1, 4)}


def test_a_sweep_over_ssh(bench, tmp_path, ssh_board, inventory):
    done = bench("deploy", EXAMPLES / "digits.onnx", "--target", "sshroot", "--inventory", inventory(ssh_board),
                 "--threads", "1,2", "--batch", "2", "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    assert _matrix(tmp_path / "r") == {("sshroot", 1, 2, 2), ("sshroot", 2, 2, 2)}


def test_a_fleet_runs_boards_in_parallel(bench, tmp_path, ssh_board, netns_board, inventory):
    inv = inventory(ssh_board, netns_board, sshroot={"tags": ["arm"]}, nsboard={"tags": ["arm"]})
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", "tag:arm", "--inventory", inv,
                 "--results", tmp_path / "r", "--min-seconds", "2", "--warmup", "2")
    assert done.code == 0, done.stderr
    documents = {d["target"]["name"]: d for d in (results.load_result(p) for p in (tmp_path / "r").glob("*.json"))}
    assert set(documents) == {"sshroot", "nsboard"}
    spans = [(datetime.fromisoformat(d["measurements"]["started_at"]), datetime.fromisoformat(d["measurements"]["finished_at"]))
             for d in documents.values()]
    (a_start, a_end), (b_start, b_end) = spans
    assert a_start < b_end and b_start < a_end, "the two boards did not run at the same time"


@pytest.mark.fault
def test_a_fleet_with_one_unreachable_board_still_measures_the_other(bench, tmp_path, ssh_board, inventory):
    from tests.sshd import free_port

    inv = inventory(ssh_board)
    text = inv.read_text() + f"  dead:\n    host: 127.0.0.1\n    port: {free_port()}\n    connect_timeout: 2\n"
    inv.write_text(text)
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", "sshroot,dead", "--inventory", inv,
                 "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "dead: cannot connect to" in errors[0] and "Traceback" not in done.stderr
    assert [results.load_result(p)["target"]["name"] for p in (tmp_path / "r").glob("*.json")] == ["sshroot"]
