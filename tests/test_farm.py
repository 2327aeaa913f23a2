"""Board farms through labgrid: a real labgrid-coordinator and labgrid-exporter on loopback, exporting NetworkService
resources for the suite's real sshd boards (root, non-root, a network namespace, the emulated aarch64 Pi).

Checked: reserve by tag, a wait that ends when another client releases, release after failed and interrupted runs,
plans spread over every free place, two plans from two "hosts" sharing the coordinator never on one board at once
(from the boards' own lock logs), a coordinator that dies mid-plan, and the bad inputs of the farm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from edgebench.results import files as results
from tests.conftest import EXAMPLES, CliResult, assert_one_line_error
from tests.labgrid_farm import Farm, Service, lock_log

QUICK = ["--warmup", "1", "--min-iterations", "3", "--min-seconds", "0.05", "--max-seconds", "5"]
X86 = ("x86-root", "x86-user", "x86-ns")


@pytest.fixture(scope="session")
def farm(ssh_server, ssh_board_user, netns_board):
    """One coordinator, one exporter: three x86 places (tag board=x86) on three real sshd logins, the emulated Pi's
    place (board=pi4emu) and a place with no NetworkService at all (board=broken)."""
    services = [Service("x86-root", ssh_server.address, "root", ssh_server.port, {"board": "x86"}),
                Service("x86-user", ssh_server.address, ssh_board_user.user, ssh_server.port, {"board": "x86"}),
                Service("x86-ns", netns_board.server.address, "root", netns_board.server.port, {"board": "x86"}),
                Service("pi4emu", ssh_server.address, "root", ssh_server.port, {"board": "pi4emu"})]
    started = Farm(services, extra_places={"nosvc": {"board": "broken"}}).start()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def farm_caches():
    """The places' cache folders on the "boards" (one per place: {place} in work_dir), writable by both users."""
    folder = Path(tempfile.mkdtemp(prefix="edgebench-farm-caches-"))
    folder.chmod(0o1777)
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


@pytest.fixture
def farm_inventory(tmp_path, farm, farm_caches, ssh_board_user, netns_board, client_key):
    """configs/targets.yaml with a `labgrid:` block (every place's user key, python and cache) and two entries."""
    configs = tmp_path / "configs"
    configs.mkdir()
    site = ssh_board_user.env["PYTHONPATH"]

    def make(**targets) -> Path:
        document = {
            "labgrid": {"coordinator": farm.address, "identity_file": str(client_key), "python": "/usr/bin/python3",
                        "env": {"PYTHONPATH": site}, "work_dir": str(farm_caches / "{place}"), "lock_timeout": 60,
                        "connect_timeout": 5},
            "targets": {"x86quick": {"kind": "labgrid", "tags": {"board": "x86"}, "lock_timeout": 2}, **targets}}
        (configs / "targets.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        (configs / "known_hosts").write_text(ssh_board_user.server.known_hosts_line()
                                             + netns_board.server.known_hosts_line())
        return configs / "targets.yaml"

    return make


def _documents(folder: Path) -> list[dict]:
    return [results.load_result(p) for p in results.result_files([folder])] if folder.exists() else []


def _wait_until(ready, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


SPAWNED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_bench_left_behind():
    yield
    while SPAWNED:  # a failed test must not leave a `bench` holding places for the next one
        process = SPAWNED.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _spawn(args: list, log: Path, env: dict | None = None) -> subprocess.Popen:
    """`bench` in the background (stderr to a file the test can read while it runs), as its own process group."""
    process = subprocess.Popen([sys.executable, "-m", "edgebench", *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=open(log, "wb"), env={**os.environ, **(env or {})}, cwd=log.parent,
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    SPAWNED.append(process)
    return process


def _plan(folder: Path, name: str, target: str, threads: list[int], min_seconds: float = 0.3) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "models": [{"name": "cnn", "path": str(EXAMPLES / "cnn.onnx")}], "targets": [target],
        "settings": {"warmup": 1, "min_iterations": 3, "min_seconds": min_seconds, "max_seconds": 2 * min_seconds + 10,
                     "max_iterations": 10**9,  # the time decides, not the iteration cap
                     "threads": threads}}, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------- leasing
def test_a_deploy_by_tag_runs_on_a_free_place_and_gives_it_back(bench, tmp_path, farm, farm_inventory):
    inventory = farm_inventory()
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", "lg:board=x86", "--inventory", inventory,
                 "--results", tmp_path / "r", *QUICK)
    assert done.code == 0, done.stderr
    (document,) = _documents(tmp_path / "r")
    place = document["target"]["labgrid"]["place"]
    assert place in X86 and document["target"]["name"] == f"lg:{place}"
    assert document["target"]["labgrid"] == {"coordinator": farm.address, "place": place, "asked": "lg:board=x86"}
    assert "board=x86" in document["target"]["tags"]
    assert f"place {place} acquired" in done.stderr and f"place {place} released" in done.stderr
    assert farm.all_free()  # released, and the reservation cancelled


def test_the_emulated_pi_through_its_place(bench, tmp_path, farm, farm_inventory, arm64_python, farm_caches):
    inventory = farm_inventory(pi4farm={"kind": "labgrid", "place": "pi4emu", "python": str(arm64_python),
                                        "env": {}})
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", "pi4farm", "--inventory", inventory,
                 "--results", tmp_path / "r", *QUICK, timeout=600)
    assert done.code == 0, done.stderr
    (document,) = _documents(tmp_path / "r")
    assert document["target"]["name"] == "lg:pi4emu" and document["target"]["info"]["machine"]["arch"] == "aarch64"
    assert lock_log(farm_caches / "pi4emu")  # the agent ran in the place's own cache folder
    assert farm.all_free()


def test_a_reservation_waits_until_another_client_releases(tmp_path, farm, farm_inventory):
    inventory = farm_inventory()
    for place in X86:  # someone else has every x86 board
        farm.client("-p", place, "acquire", user="otherhost/alice")
    try:
        log = tmp_path / "bench.log"
        running = _spawn(["deploy", EXAMPLES / "cnn.onnx", "--target", "lg:board=x86", "--inventory", inventory,
                          "--results", tmp_path / "r", *QUICK], log)
        _wait_until(lambda: any(r["state"] == "waiting" for r in farm.reservations()), "bench's reservation to wait")
        assert "waiting for a place matching board=x86" in log.read_text()
        assert running.poll() is None and not (tmp_path / "r").exists()
        farm.client("-p", "x86-user", "release", user="otherhost/alice")  # the wait ends here
        assert running.wait(120) == 0, log.read_text()
    finally:
        for place in ("x86-root", "x86-ns"):
            farm.client("-p", place, "release", user="otherhost/alice")
    (document,) = _documents(tmp_path / "r")
    assert document["target"]["name"] == "lg:x86-user"
    assert farm.all_free()


@pytest.mark.fault
def test_a_reservation_that_never_comes_names_who_holds_the_places(bench, tmp_path, farm, farm_inventory):
    inventory = farm_inventory()
    for place in X86:
        farm.client("-p", place, "acquire", user="otherhost/alice")
    try:
        done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", "x86quick", "--inventory", inventory,
                     "--results", tmp_path / "r", *QUICK)
    finally:
        for place in X86:
            farm.client("-p", place, "release", user="otherhost/alice")
    assert done.code == 3
    waited, error = done.stderr.splitlines()  # the wait is said as it starts; then the one error line
    assert waited.startswith("x86quick: waiting for a place matching board=x86 (x86-ns held by otherhost/alice, ")
    assert_one_line_error(CliResult(done.code, "", error), "no place matching board=x86 came free within 2 s",
                          "x86-root held by otherhost/alice", "x86-ns held by otherhost/alice")
    assert not (tmp_path / "r").exists() or not _documents(tmp_path / "r")
    assert farm.all_free()  # the waiting reservation was cancelled


@pytest.mark.fault
def test_the_place_is_released_after_a_failed_run(bench, tmp_path, farm, farm_inventory):
    inventory = farm_inventory()
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", "lg:x86-root", "--inventory", inventory,
                 "--results", tmp_path / "r", "--min-seconds", "30", "--max-seconds", "60", "--timeout", "1")
    assert done.code == 1, done.stderr
    (document,) = _documents(tmp_path / "r")
    assert document["status"] == "failed" and document["error"]["kind"] == "timeout"  # recorded, with the reason
    assert farm.all_free()


@pytest.mark.fault
def test_an_interrupted_plan_over_three_places_stores_every_run_and_releases_them(tmp_path, farm, farm_inventory):
    """A cancelled CI job (SIGTERM) over a farm. bench turns SIGTERM into the KeyboardInterrupt of a Ctrl-C
    (test_faults.py::test_sigterm_ends_a_deploy_like_ctrl_c shows the two alike), so this is Ctrl-C's path too."""
    how = signal.SIGTERM
    inventory = farm_inventory()
    plan = _plan(tmp_path, "long", "lg:board=x86", [1, 2, 3], min_seconds=60)
    log = tmp_path / "bench.log"
    running = _spawn(["run", plan, "--inventory", inventory, "--results", tmp_path / "r"], log)
    _wait_until(lambda: sum(farm.holder(p) is not None for p in X86) == 3, "all three places to be taken")
    _wait_until(lambda: log.read_text().count(" acquired (") == 3, "three runs to start")
    time.sleep(2)  # the runs are measuring on the boards
    running.send_signal(how)
    assert running.wait(120) == 130, log.read_text()
    assert "interrupted" in log.read_text()
    documents = _documents(tmp_path / "r")
    assert len(documents) == 3 and {d["target"]["name"] for d in documents} == {f"lg:{p}" for p in X86}
    assert all(d["error"]["kind"] == "interrupted" for d in documents)  # each killed on its board, and stored
    assert farm.all_free()


# ---------------------------------------------------------------------------------------------- spreading
def test_two_plans_from_two_hosts_share_the_farm_and_never_share_a_board(tmp_path, farm, farm_inventory, farm_caches):
    inventory = farm_inventory()
    before = {place: len(lock_log(farm_caches / place)) for place in X86}
    runs = {}
    for host in ("host-a", "host-b"):
        folder = tmp_path / host
        folder.mkdir()
        plan = _plan(folder, f"plan-{host}", "lg:board=x86", [1, 2, 3, 4], min_seconds=0.5)
        runs[host] = (_spawn(["run", plan, "--inventory", inventory, "--results", folder / "r"], folder / "bench.log",
                             env={"LG_HOSTNAME": host}), folder)
    for host, (running, folder) in runs.items():
        assert running.wait(300) == 0, (folder / "bench.log").read_text()
    places_used = set()
    for host, (_, folder) in runs.items():
        documents = _documents(folder / "r")
        assert len(documents) == 4 and all(d["status"] == "ok" for d in documents)
        places_used |= {d["target"]["labgrid"]["place"] for d in documents}
    assert len(places_used) >= 2  # each plan spread its cells over the places free at the time
    from tests.test_plan import _warm_agents

    assert any(_warm_agents(str(farm_caches / place)) for place in places_used)  # a place's cells forked warm
    for place in X86:  # the boards' own record: never two holders at once
        holds = sorted(lock_log(farm_caches / place)[before[place]:], key=lambda h: h["from"])
        for earlier, later in zip(holds, holds[1:]):
            assert earlier["to"] <= later["from"], f"{place}: {earlier} overlaps {later}"
    assert sum(len(lock_log(farm_caches / p)) - before[p] for p in X86) >= 8  # every cell's run is in a log
    assert farm.all_free()


@pytest.mark.fault
def test_a_coordinator_that_dies_mid_plan(tmp_path, ssh_server, farm_inventory, client_key):
    """The place already held keeps running the plan over SSH; only giving it back fails, said in one line."""
    own = Farm([Service("solo", ssh_server.address, "root", ssh_server.port, {"board": "solo"})]).start()
    try:
        inventory = farm_inventory()
        plan = _plan(tmp_path, "orphan", "lg:board=solo", [1, 2, 3], min_seconds=1.0)
        log = tmp_path / "bench.log"
        running = _spawn(["run", plan, "--inventory", inventory, "--coordinator", own.address,
                          "--results", tmp_path / "r"], log)
        _wait_until(lambda: "place solo acquired" in log.read_text(), "the place to be acquired")
        own.kill_coordinator()
        code = running.wait(180)
    finally:
        own.stop()
    text = log.read_text()
    assert code == 1, text
    documents = _documents(tmp_path / "r")
    assert len(documents) == 3 and all(d["status"] == "ok" for d in documents)  # nothing lost
    error = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "release place solo" in error[0] and "unreachable" in error[0]
    assert f"labgrid-client -x {own.address} -p solo release" in error[0]
    assert "Traceback" not in text


# ---------------------------------------------------------------------------------------------- listing
def test_targets_lists_the_places_and_who_holds_them(bench, tmp_path, farm, farm_inventory):
    inventory = farm_inventory()
    farm.client("-p", "x86-ns", "acquire", user="otherhost/alice")
    try:
        shown = bench("targets", "--inventory", inventory)
        as_json = bench("targets", "--inventory", inventory, "--json")
        checked = bench("targets", "--inventory", inventory, "--check")
    finally:
        farm.client("-p", "x86-ns", "release", user="otherhost/alice")
    assert shown.code == 0, shown.stderr
    rows = {line.split()[0]: line for line in shown.stdout.splitlines() if line.startswith("lg:")}
    assert set(rows) == {"lg:x86-root", "lg:x86-user", "lg:x86-ns", "lg:pi4emu", "lg:nosvc"}
    assert "otherhost/alice" in rows["lg:x86-ns"] and "free" in rows["lg:x86-root"]
    assert "(no NetworkService)" in rows["lg:nosvc"]
    places = {p["name"]: p for p in __import__("json").loads(as_json.stdout) if p["kind"] == "labgrid place"}
    assert places["lg:x86-ns"]["held_by"] == "otherhost/alice" and places["lg:x86-root"]["tags"] == {"board": "x86"}
    assert checked.code == 0, checked.stderr
    assert "3 place(s)" in next(line for line in checked.stdout.splitlines() if line.startswith("x86quick"))


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.bad_input
@pytest.mark.parametrize("target, code, fragments", [
    ("lg:pi9", 3, ["no place named pi9 on labgrid coordinator", "its places: nosvc, pi4emu, x86-ns"]),
    ("lg:board=pi9", 3, ["no place on labgrid coordinator", "has the tags board=pi9", "board=x86"]),
    ("lg:board=broken", 3, ["place nosvc has no NetworkService resource", "add-match"]),
    ("lg:Board=x86", 2, ["not a labgrid tag: Board=x86"]),
    ("lg:", 2, ["names no place or tags"]),
    ("lg:a b", 2, ["not a labgrid place name"]),
])
def test_bad_labgrid_targets(bench, tmp_path, farm, farm_inventory, target, code, fragments):
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", target, "--inventory", farm_inventory(),
                 "--results", tmp_path / "r", *QUICK)
    assert done.code == code, done.stderr
    assert_one_line_error(done, *fragments)
    assert not _documents(tmp_path / "r")
    assert farm.all_free()


@pytest.mark.bad_input
def test_an_unreachable_coordinator(bench, tmp_path, farm_inventory):
    from tests.sshd import free_port

    address = f"127.0.0.1:{free_port()}"
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", "lg:board=x86", "--inventory", farm_inventory(),
                 "--coordinator", address, "--results", tmp_path / "r", *QUICK)
    assert done.code == 3
    assert_one_line_error(done, f"labgrid coordinator {address}: connect: unreachable", "start labgrid-coordinator")
    listed = bench("targets", "--coordinator", address)
    assert listed.code == 3 and "unreachable" in listed.stderr


@pytest.mark.bad_input
def test_no_coordinator_at_all(bench, tmp_path):
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", "lg:board=x86", "--results", tmp_path / "r",
                 env={"LG_COORDINATOR": ""})
    assert done.code == 2
    assert_one_line_error(done, "no labgrid coordinator for target lg:board=x86", "--coordinator")


@pytest.mark.bad_input
def test_without_labgrid_installed_an_lg_target_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['labgrid'] = None; sys.modules['labgrid.remote'] = None; "
            "sys.modules['labgrid.remote.client'] = None; "
            f"sys.argv = ['bench', 'deploy', {str(EXAMPLES / 'cnn.onnx')!r}, '--target', 'lg:board=x86', "
            f"'--coordinator', '127.0.0.1:1', '--results', {str(tmp_path / 'r')!r}]; "
            "from edgebench.entry import main; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: labgrid targets need labgrid, which is not installed here (hint: install the farm extra: "
        "pip install 'edgebench[farm]')"]
    assert not (tmp_path / "r").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("entry, fragment", [
    ({"kind": "labgrid", "place": "a", "tags": {"board": "x"}}, "names a place (place: NAME) or the tags"),
    ({"kind": "labgrid"}, "names a place (place: NAME) or the tags"),
    ({"kind": "labgrid", "place": "a", "host": "10.0.0.1"}, "address comes from its place's NetworkService"),
    ({"kind": "labgrid", "tags": {"Board": "x"}}, "not a labgrid tag: Board=x"),
    ({"host": "10.0.0.1", "place": "a"}, "only a labgrid target has this key"),
    ({"kind": "labgrid", "place": "a", "work_dir": "/c/{user}"}, "the only placeholder a work_dir may hold is {place}"),
])
def test_bad_labgrid_inventory_entries(bench, tmp_path, entry, fragment):
    (tmp_path / "targets.yaml").write_text(yaml.safe_dump({"targets": {"farm": entry}}))
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", "farm", "--inventory", tmp_path / "targets.yaml",
                 "--results", tmp_path / "r")
    assert done.code == 2
    assert_one_line_error(done, "targets.yaml", fragment)
    assert not (tmp_path / "r").exists()


@pytest.mark.bad_input
def test_what_the_coordinator_says_is_data_from_elsewhere(bench, tmp_path, farm_inventory):
    """labgrid takes any place name and any NetworkService address: a name that would leave the cache folder, an
    address that is no address, and escape sequences meant for the terminal are refused or shown inert."""
    own = Farm([Service("badaddr", "not an address!", "root", 22, {"board": "badaddr"})],
               extra_places={"../up": {"board": "hostile"}, "evil\x1b]0;pwned\x07": {"board": "shown"}}).start()
    try:
        inventory = farm_inventory()
        runs = {tags: bench("deploy", EXAMPLES / "cnn.onnx", "--target", f"lg:board={tags}", "--inventory", inventory,
                            "--coordinator", own.address, "--results", tmp_path / "r", *QUICK)
                for tags in ("hostile", "badaddr")}
        listed = bench("targets", "--inventory", inventory, "--coordinator", own.address)
        free = own.all_free() and own.holder("../up") is None
    finally:
        own.stop()
    assert_one_line_error(runs["hostile"], "labgrid place '../up' has a name edgebench cannot use as a folder name")
    assert_one_line_error(runs["badaddr"], "place badaddr: its NetworkService is not an SSH address",
                          "'not an address!'")
    assert not (tmp_path / "r").exists() or not _documents(tmp_path / "r")
    assert free  # both given back
    assert listed.code == 0, listed.stderr
    assert "\x1b" not in listed.stdout, repr(listed.stdout)
    assert "\x07" not in listed.stdout and "lg:evil " in listed.stdout  # the escape sequence removed whole


@pytest.mark.fault
def test_a_place_whose_board_is_down_leaves_its_cells_to_the_others(tmp_path, ssh_server, farm_inventory):
    from tests.sshd import free_port

    own = Farm([Service("down", "127.0.0.1", "root", free_port(), {"board": "mixed"}),  # nothing listens there
                Service("up", ssh_server.address, "root", ssh_server.port, {"board": "mixed"})]).start()
    try:
        plan = _plan(tmp_path, "mixed", "lg:board=mixed", [1, 2, 3, 4], min_seconds=0.3)
        log = tmp_path / "bench.log"
        code = _spawn(["run", plan, "--inventory", farm_inventory(), "--coordinator", own.address,
                       "--results", tmp_path / "r"], log).wait(300)
        free = own.all_free()
    finally:
        own.stop()
    assert code == 0, log.read_text()
    documents = _documents(tmp_path / "r")
    assert len(documents) == 4 and all(d["status"] == "ok" and d["target"]["name"] == "lg:up" for d in documents)
    assert free


def test_a_place_reached_through_a_proxy_jump_from_the_ssh_config(bench, tmp_path, netns_board, client_key,
                                                                   farm_inventory):
    """The place's board listens on its network namespace's own loopback: only through the jump host that
    ~/.ssh/config names for its address can the host reach it."""
    from tests.sshd import SshServer

    inner = SshServer.create(address="127.0.0.1", netns=netns_board.server.netns)
    inner.authorize("root", (client_key.parent / "id_ed25519.pub").read_text())
    inner.start()
    own = Farm([Service("hidden", "127.0.0.1", "root", inner.port, {"board": "hidden"})]).start()
    try:
        inventory = farm_inventory()
        known = inventory.parent / "known_hosts"
        known.write_text(known.read_text() + inner.known_hosts_line())
        config = tmp_path / "ssh_config"
        jump = netns_board.server
        config.write_text(f"Host 127.0.0.1\n  ProxyJump root@{jump.address}:{jump.port}\n"
                          f"Host {jump.address}\n  IdentityFile {client_key}\n")
        args = ["deploy", EXAMPLES / "cnn.onnx", "--target", "lg:hidden", "--inventory", inventory,
                "--coordinator", own.address, "--results", tmp_path / "r", *QUICK]
        direct = bench(*args)
        jumped = bench(*args, env={"EDGEBENCH_SSH_CONFIG": str(config)})
        free = own.all_free()
    finally:
        own.stop()
        inner.stop()
    assert direct.code == 3  # without the jump the host cannot reach it
    assert jumped.code == 0, jumped.stderr
    (document,) = _documents(tmp_path / "r")
    assert document["status"] == "ok" and document["target"]["name"] == "lg:hidden"
    assert free
