"""Energy per inference: every documented sensor layout with a known, changing power, an external meter, the
method recorded, scope mixing in compare, and sensors that lie."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from edgebench.results import report, files as results
from edgebench.stages.energy import result_block
from tests.conftest import EXAMPLES, REPO, assert_one_line_error
from tests.energy_fixture import PERIOD_S, joules, write_atomically as _write

QUICK = ["--warmup", "2", "--min-seconds", "0.2", "--max-seconds", "10"]


class Fixture:
    """A sysroot with one sensor layout, its files rewritten from power(t) about every millisecond by a separate
    process (as a kernel would: never held up by the process that reads them)."""

    def __init__(self, root: Path, layout: str):
        self.root, self.layout = root, layout
        self.process = None

    def __enter__(self):
        import subprocess

        self.process = subprocess.Popen([sys.executable, "-m", "tests.energy_fixture", str(self.root), self.layout],
                                        cwd=REPO, stdout=subprocess.PIPE)
        assert self.process.stdout.readline().strip() == b"ready"
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def _executable(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)
    return folder


# awk computes power(t) from the wall clock: the same function as power() above.
AWK_POWER = "4 + sin(2 * 3.14159265358979 * t / 6)"


def fake_vcgencmd(folder: Path, old_firmware: bool = False) -> Path:
    """Raspberry Pi 5's `vcgencmd pmic_read_adc`: VDD_CORE carries power(t) - 1 W, 3V3_SYS 1 W, EXT5V no current."""
    if old_firmware:
        lines = ('printf "   VDD_CORE_A=%.8fA\\n   VDD_CORE_V=0.8000V\\n   3V3_SYS_A=%.8fA\\n   3V3_SYS_V=3.3000V\\n'
                 '   EXT5V_V=5.1000V\\n", (p - 1) / 0.8, 1 / 3.3')
    else:
        lines = ('printf "   VDD_CORE_A current(7)=%.8fA\\n   VDD_CORE_V volt(15)=0.80000000V\\n'
                 '   3V3_SYS_A current(1)=%.8fA\\n   3V3_SYS_V volt(9)=3.30000000V\\n   EXT5V_V volt(24)=5.10000000V\\n",'
                 ' (p - 1) / 0.8, 1 / 3.3')
    return _executable(folder, "vcgencmd", f"""#!/bin/sh
[ "$1" = pmic_read_adc ] || exit 1
awk -v t="$(date +%s.%N)" 'BEGIN {{ p = {AWK_POWER}; {lines} }}'
""")


def fake_tegrastats(folder: Path) -> Path:
    """tegrastats --interval MS: a line per interval with VDD_IN at power(t)."""
    return _executable(folder, "tegrastats", f"""#!/bin/sh
interval=100
[ "$1" = --interval ] && interval=$2
while true; do
  awk -v t="$(date +%s.%N)" 'BEGIN {{ p = {AWK_POWER}; printf "RAM 2048/7620MB CPU [3%%@1190] VDD_IN %dmW/%dmW VDD_CPU_GPU_CV 1000mW/1000mW\\n", p * 1000, p * 1000 }}'
  sleep $(awk -v ms=$interval 'BEGIN {{ print ms / 1000 }}')
done
""")


def _agent_energy(monkeypatch, root: Path, path_dir: Path | None = None, seconds: float = 1.5) -> dict:
    """The agent's energy pass, in this process, on the example CNN; returns the result's energy block."""
    from edgebench_agent.protocol import normalize_run_request
    from edgebench_agent.runner import run_benchmark

    monkeypatch.setenv("EDGEBENCH_SYSROOT", str(root))
    if path_dir is not None:
        monkeypatch.setenv("PATH", f"{path_dir}:{os.environ['PATH']}")
    request = normalize_run_request({"model": str(EXAMPLES / "cnn.onnx"), "min_seconds": 0.05, "warmup_min_iterations": 2,
                                     "intra_op_threads": 1,
                                     "energy": {"seconds": seconds, "idle_seconds": 1.0, "rate_hz": 20.0}})
    reply = run_benchmark(request)
    return result_block(json.loads(json.dumps(reply["energy"])))  # as it crosses the wire


def _assert_matches_known_power(block: dict) -> None:
    assert block["available"], block
    load = joules(*block["load"])
    measured = block["mj_per_inference"] * block["inferences"] / 1e3
    assert measured == pytest.approx(load, rel=0.01), (measured, load)
    idle = joules(*block["idle"]) / (block["idle"][1] - block["idle"][0])
    assert block["idle_power_w"] == pytest.approx(idle, rel=0.01)
    low, high = block["mj_per_inference_ci"]
    assert low < high and block["inferences_per_joule"] == pytest.approx(1e3 / block["mj_per_inference"])
    assert block["rate_hz"] > 5


@pytest.mark.parametrize("layout, source, scope", [
    ("hwmon", "hwmon-power", "sensor: ina226"),
    ("ina3221-hwmon", "ina3221-hwmon", "module input (VDD_IN)"),
    ("ina3221-rails", "ina3221-hwmon", "rails: VDD_CPU, VDD_SOC"),
    ("ina3221-iio", "ina3221-iio", "module input (POM_5V_IN)"),
    ("rapl", "rapl", "CPU package"),
])
def test_sysfs_sensors_give_the_known_energy(monkeypatch, tmp_path, layout, source, scope):
    with Fixture(tmp_path / "root", layout):
        block = _agent_energy(monkeypatch, tmp_path / "root")
    assert (block["source"], block["scope"]) == (source, scope)
    _assert_matches_known_power(block)
    if layout == "rapl":
        values = [r[1] for r in block["readings"]]
        assert any(b < a for a, b in zip(values, values[1:])), "the counter should have wrapped during the pass"
        assert block["rails"] == ["package-0"]


@pytest.mark.parametrize("tool", ["vcgencmd", "vcgencmd-old-firmware", "tegrastats"])
def test_sensor_commands_give_the_known_energy(monkeypatch, tmp_path, tool):
    (tmp_path / "root").mkdir()
    if tool == "tegrastats":
        bin_dir = fake_tegrastats(tmp_path / "bin")
    else:
        bin_dir = fake_vcgencmd(tmp_path / "bin", old_firmware=tool.endswith("old-firmware"))
    block = _agent_energy(monkeypatch, tmp_path / "root", bin_dir, seconds=2.0)
    _assert_matches_known_power(block)
    if tool == "tegrastats":
        assert block["scope"] == "module input (VDD_IN)"
    else:
        assert block["scope"] == "board rails (PMIC, not the wall)" and block["rails"] == ["3V3_SYS", "VDD_CORE"]


def test_bench_deploy_energy_end_to_end(bench, tmp_path):
    with Fixture(tmp_path / "root", "hwmon"):
        done = bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", *QUICK, "--energy",
                     "--energy-seconds", "1.5", "--energy-idle-seconds", "1",
                     env={"EDGEBENCH_SYSROOT": str(tmp_path / "root")})
    assert done.code == 0, done.stderr
    (path,) = (tmp_path / "r").glob("*.json")
    document = results.load_result(path)
    _assert_matches_known_power(document["energy"])
    assert document["settings"]["energy"]["seconds"] == 1.5 and document["settings"]["energy"]["idle_seconds"] == 1
    assert document["energy"]["idle"][1] - document["energy"]["idle"][0] == pytest.approx(1, abs=0.2)
    assert document["target"]["info"]["energy"]["source"] == "hwmon-power"
    assert "energy cnn: " in done.stdout and "mJ per inference [95% CI" in done.stdout and "scope sensor: ina226" in done.stdout
    row = report.run_row(document)
    assert row["mj_per_inference"] == pytest.approx(document["energy"]["mj_per_inference"])
    table = bench("compare", tmp_path / "r", "--columns", "model,mJ/inf,W,energy scope")
    assert table.code == 0 and "sensor: ina226" in table.stdout
    assert bench("compare", tmp_path / "r", "-f", "html", "-o", tmp_path / "r.html").code == 0
    assert "alt='Energy'" in (tmp_path / "r.html").read_text()
    doctor = bench("doctor", env={"EDGEBENCH_SYSROOT": str(tmp_path / "root")})
    assert "energy       hwmon-power (sensor: ina226)" in doctor.stdout, doctor.stdout


def test_no_sensor_is_unavailable_never_zero(bench, tmp_path):
    (tmp_path / "root").mkdir()
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", *QUICK, "--energy", "--energy-seconds",
                 "0.3", "--energy-idle-seconds", "0.2", env={"EDGEBENCH_SYSROOT": str(tmp_path / "root"), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert done.code == 0, done.stderr
    assert "energy cnn: unavailable (no sensor: looked for INA3221" in done.stdout
    (path,) = (tmp_path / "r").glob("*.json")
    document = results.load_result(path)
    assert document["energy"]["available"] is False and "mj_per_inference" not in document["energy"]
    row = report.run_row(document)
    assert row["energy_scope"] == "unavailable" and row.get("mj_per_inference") is None


def test_an_external_meter_on_the_host(bench, tmp_path):
    meter = tmp_path / "meter.py"
    meter.write_text("import math, sys, time\n"
                     "while True:\n"
                     f"    print('%.4f W' % (4.0 + math.sin(2 * math.pi * time.time() / {PERIOD_S})), flush=True)\n"
                     "    time.sleep(0.05)\n")
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", *QUICK, "--energy", "--energy-seconds", "2",
                 "--energy-idle-seconds", "1", "--power-command", f"{sys.executable} {meter}")
    assert done.code == 0, done.stderr
    (path,) = (tmp_path / "r").glob("*.json")
    document = results.load_result(path)
    block = document["energy"]
    assert block["source"] == "power-command" and block["scope"].startswith("external meter")
    _assert_matches_known_power(block)
    assert document["settings"]["energy"]["power_command"].endswith("meter.py")


@pytest.mark.bad_input
@pytest.mark.parametrize("script, reason", [
    ("print('abc'); print('-5'); print('nan'); print('1e9')", "cover"),
    ("import time; time.sleep(1000)", "cover"),
    ("import sys; sys.stdout.write('7' * 50_000_000); sys.stdout.flush()", "a line longer than 200 bytes"),
    ("import sys, time\nwhile True: print(0.0, flush=True); time.sleep(0.02)", "no energy used while the model ran"),
    ("import sys; sys.exit(3)", "exited with code 3"),
])
def test_a_power_command_that_lies_or_hangs_leaves_the_timing_untouched(bench, tmp_path, script, reason):
    meter = tmp_path / "meter.py"
    meter.write_text(script + "\n")
    started = time.time()
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", *QUICK, "--energy", "--energy-seconds",
                 "0.5", "--energy-idle-seconds", "0.2", "--power-command", f"{sys.executable} {meter}")
    assert done.code == 0, done.stderr
    assert time.time() - started < 60  # a hung meter is killed, never waited for
    (path,) = (tmp_path / "r").glob("*.json")
    document = results.load_result(path)
    assert document["status"] == "ok" and document["measurements"]["repeats"][0]["samples_ns"]
    assert document["energy"]["available"] is False and reason in document["energy"]["reason"], document["energy"]
    assert "energy cnn: unavailable" in done.stdout


@pytest.mark.bad_input
def test_a_garbage_sensor_is_recorded_not_fatal(monkeypatch, tmp_path):
    root = tmp_path / "root"
    _write(root / "sys/class/hwmon/hwmon1/name", "powerz\n")
    _write(root / "sys/class/hwmon/hwmon1/power1_input", "garbage\n")
    block = _agent_energy(monkeypatch, root, seconds=0.3)
    assert block["available"] is False and block["failed_readings"] > 0
    assert "holds 'garbage', not a reading" in block["reason"]


@pytest.mark.bad_input
@pytest.mark.parametrize("flags, message", [
    (["--energy", "--energy-seconds", "0"], "--energy-seconds must be positive, got 0"),
    (["--energy", "--energy-seconds", "-3"], "--energy-seconds must be positive, got -3"),
    (["--energy", "--energy-seconds", "nan"], "--energy-seconds must be a finite number, got nan"),
    (["--energy", "--energy-idle-seconds", "-1"], "--energy-idle-seconds must not be negative, got -1"),
    (["--energy", "--energy-idle-seconds", "0.05"], "an idle baseline of 0.05s holds fewer than two power readings"),
    (["--energy-seconds", "5"], "--energy-seconds goes with --energy"),
    (["--energy-idle-seconds", "0"], "--energy-idle-seconds goes with --energy"),
    (["--profile-iterations", "0"], "--profile-iterations goes with --profile"),
    (["--profile", "--profile-iterations", "0"], "--profile-iterations must be at least 1, got 0"),
    (["--cooldown", "--cooldown-timeout", "-1"], "--cooldown-timeout must not be negative, got -1"),
    (["--power-command", "meter"], "--power-command reads a meter during the energy pass: add --energy"),
    (["--energy", "--power-command", "/nonexistent/meter --port x"], "--power-command cannot start '/nonexistent/meter'"),
    (["--energy", "--power-command", "'unclosed"], "--power-command \"'unclosed\""),
])
def test_bad_energy_options_are_one_line(bench, tmp_path, flags, message):
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r", *QUICK, *flags)
    assert done.code == 2
    assert_one_line_error(done, message)
    assert not list((tmp_path / "r").glob("*.json")) if (tmp_path / "r").exists() else True


def _with_energy(document: dict, scope: str, mj: float) -> dict:
    document["energy"] = {"available": True, "source": "x", "scope": scope, "mj_per_inference": mj,
                          "average_power_w": 5.0, "idle_power_w": 3.0, "mj_per_inference_above_idle": mj / 2,
                          "inferences_per_joule": 1e3 / mj}
    return document


def test_compare_never_ranks_energy_across_scopes_unless_asked(bench, tmp_path):
    from tests.synthetic import result, write

    write(tmp_path / "r", [
        _with_energy(result([1_000_000] * 100, run_id="a", target="pi5"), "board rails (PMIC, not the wall)", 2.0),
        _with_energy(result([1_000_000] * 100, run_id="b", target="x86"), "CPU package", 1.0),
        _with_energy(result([1_000_000] * 100, run_id="c", target="pi5b"), "board rails (PMIC, not the wall)", 4.0),
    ])
    plain = bench("compare", tmp_path / "r", "--baseline", "target=pi5", "--format", "json")
    assert plain.code == 0, plain.stderr
    rows = {r["target"]: r for r in json.loads(plain.stdout)}
    assert rows["x86"].get("energy_ratio") is None and rows["pi5b"]["energy_ratio"] == pytest.approx(0.5)
    assert "is not ranked against the baseline's (board rails (PMIC, not the wall))" in plain.stderr
    mixed = bench("compare", tmp_path / "r", "--baseline", "target=pi5", "--format", "json", "--mix-energy-scopes")
    rows = {r["target"]: r for r in json.loads(mixed.stdout)}
    assert rows["x86"]["energy_ratio"] == pytest.approx(2.0) and "not ranked" not in mixed.stderr
    # one group pooling two scopes shows no energy figure, and says why
    pooled = bench("compare", tmp_path / "r", "--by", "model", "--format", "json")
    (row,) = json.loads(pooled.stdout)
    assert row["energy_scope"] == "MIXED" and row.get("mj_per_inference") is None
    assert "energy measured with different scopes" in pooled.stderr


@pytest.mark.bad_input
def test_forged_energy_blocks_never_crash_a_report(bench, tmp_path):
    from tests.synthetic import result, write

    good = _with_energy(result([1_000_000] * 50, run_id="good", model="m"), "CPU package", 1.0)
    text = _with_energy(result([1_000_000] * 50, run_id="text", model="m2"), "CPU package", 1.0)
    text["energy"]["mj_per_inference"] = "lots"
    shaped = result([1_000_000] * 50, run_id="shaped", model="m3")
    shaped["energy"] = ["not", "a", "block"]
    write(tmp_path / "r", [good, text, shaped])
    for flags in ([], ["-f", "html", "-o", tmp_path / "page.html"]):
        done = bench("compare", tmp_path / "r", *flags)
        assert done.code == 0, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.count("energy") >= 2, done.stderr


def test_energy_over_ssh_on_the_emulated_pi5(bench, tmp_path, arm64_board, inventory):
    """The same pass on the emulated aarch64 board, reading a fixture Pi 5 `vcgencmd` over SSH."""
    bin_dir = fake_vcgencmd(tmp_path / "bin")
    board = arm64_board.__class__(**{**arm64_board.__dict__, "env": {"PATH": f"{bin_dir}:/usr/bin:/bin"}})
    inv = inventory(board)
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", board.name, "--inventory", inv, "--results", tmp_path / "r",
                 "--warmup", "2", "--min-seconds", "0.2", "--min-iterations", "10", "--energy", "--energy-seconds", "3",
                 "--energy-idle-seconds", "1", timeout=600)
    assert done.code == 0, done.stderr
    (path,) = (tmp_path / "r").glob("*.json")
    block = results.load_result(path)["energy"]
    assert block["source"] == "vcgencmd-pmic" and block["available"], block
    measured = block["mj_per_inference"] * block["inferences"] / 1e3
    assert measured == pytest.approx(joules(*block["load"]), rel=0.02)  # slow process starts under emulation


def test_a_plan_asks_for_an_energy_pass(bench, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"name: p\nmodels:\n  - name: cnn\n    path: {EXAMPLES / 'cnn.onnx'}\ntargets: [local]\n"
                    "settings:\n  warmup: 2\n  min_seconds: 0.2\n  energy: true\n  energy_seconds: 1\n"
                    "  energy_idle_seconds: 0.5\n")
    with Fixture(tmp_path / "root", "hwmon"):
        done = bench("run", plan, "--results", tmp_path / "r", env={"EDGEBENCH_SYSROOT": str(tmp_path / "root")})
    assert done.code == 0, done.stderr
    (path,) = (tmp_path / "r").glob("*.json")
    block = results.load_result(path)["energy"]
    assert block["available"] and block["source"] == "hwmon-power" and block["load_seconds"] >= 1
    assert block["idle"][1] - block["idle"][0] == pytest.approx(0.5, abs=0.2)  # the plan's idle baseline


@pytest.mark.bad_input
def test_a_plan_with_a_bad_energy_length_is_refused(bench, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"name: p\nmodels:\n  - name: cnn\n    path: {EXAMPLES / 'cnn.onnx'}\ntargets: [local]\n"
                    "settings:\n  energy: true\n  energy_seconds: -2\n")
    done = bench("run", plan, "--dry-run")
    assert done.code == 2
    assert_one_line_error(done, "settings.energy_seconds: energy_seconds must be positive, got -2")
    plan.write_text(f"name: p\nmodels:\n  - name: cnn\n    path: {EXAMPLES / 'cnn.onnx'}\ntargets: [local]\n"
                    "settings:\n  energy: true\n  energy_idle_seconds: 0.05\n")
    done = bench("run", plan, "--dry-run")
    assert done.code == 2
    assert_one_line_error(done, "settings.energy: an idle baseline of 0.05s holds fewer than two power readings")


def test_the_standalone_agent_measures_energy_and_bench_imports_it(bench, tmp_path):
    import subprocess

    with Fixture(tmp_path / "root", "ina3221-hwmon"):
        done = subprocess.run([sys.executable, "-m", "edgebench_agent", "run", str(EXAMPLES / "cnn.onnx"), "--warmup", "2",
                               "--min-seconds", "0.2", "--energy", "--energy-seconds", "1", "--energy-idle-seconds", "1",
                               "--out", str(tmp_path / "e.json")],
                              cwd=REPO / "agent", capture_output=True, text=True,
                              env={**os.environ, "EDGEBENCH_SYSROOT": str(tmp_path / "root")})
    assert done.returncode == 0, done.stderr
    assert "energy    " in done.stdout and "scope module input (VDD_IN)" in done.stdout
    imported = bench("import", tmp_path / "e.json", "--target", "orin", "--results", tmp_path / "r")
    assert imported.code == 0, imported.stderr
    (path,) = (tmp_path / "r").glob("*.json")
    _assert_matches_known_power(results.load_result(path)["energy"])


@pytest.mark.bad_input
def test_a_sensor_that_reads_zero_or_dies_is_unavailable_not_a_number(monkeypatch, tmp_path):
    root = tmp_path / "root"
    _write(root / "sys/class/hwmon/hwmon1/name", "ina219\n")
    _write(root / "sys/class/hwmon/hwmon1/power1_input", "0\n")
    block = _agent_energy(monkeypatch, root, seconds=0.5)
    assert block["available"] is False and "no energy used while the model ran" in block["reason"]
    # a sensor that disappears mid-pass: its last value is not held for the rest of the window
    _write(root / "sys/class/hwmon/hwmon1/power1_input", "4000000\n")
    remover = threading.Timer(1.3, lambda: (root / "sys/class/hwmon/hwmon1/power1_input").unlink())
    remover.start()
    try:
        block = _agent_energy(monkeypatch, root, seconds=3.0)
    finally:
        remover.join()
    assert block["available"] is False and "uncovered" in block["reason"] and block["failed_readings"] > 5
