"""The inventory: validation with file and line, ssh config, target names, the shipped example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebench.errors import ConfigError
from edgebench.boards.targets import load_inventory, resolve_target, select_targets
from tests.conftest import assert_one_line_error

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(text)
    return path


def test_the_shipped_example_inventory_loads():
    inventory = load_inventory(REPO / "configs" / "targets.yaml")
    assert set(inventory.targets) == {"local", "pi4", "jetson"}
    pi4 = inventory.targets["pi4"]
    assert (pi4.kind, pi4.host, pi4.user, pi4.tags, pi4.env) == ("ssh", "raspberrypi.local", "pi", ("arm", "pi"),
                                                                (("OMP_NUM_THREADS", "4"),))
    assert inventory.targets["local"].kind == "local"
    assert [t.name for t in select_targets("tag:arm", inventory)] == ["jetson", "pi4"]


@pytest.mark.bad_input
@pytest.mark.parametrize("text, message", [
    ("targets:\n  pi4:\n    host: a\n    prot: 22\n", "targets.yaml:4: targets.pi4.prot: unknown key"),
    ("targets:\n  pi4:\n    host: a\n    port: twenty\n", "targets.yaml:4: targets.pi4.port: must be an integer, got 'twenty'"),
    ("targets:\n  pi4:\n    host: a\n    tags: arm\n", "targets.yaml:4: targets.pi4.tags: must be a list of strings"),
    ("targets:\n  pi4:\n    user: pi\n", "targets.yaml:2: targets.pi4: an ssh target needs a host"),
    ("targets:\n  pi4:\n    host: a\n    host_key_policy: yolo\n", "must be strict or accept-new"),
    ("targets:\n  pi4:\n    host: a\n    port: 70000\n", "must be a TCP port"),
    ("boards:\n  pi4: {}\n", "targets.yaml:1: boards: unknown key"),
    ("targets: [1, 2]\n", "targets: must be a mapping"),
    ("targets:\n  pi4:\n    host: [a\n", "not valid YAML"),
])
def test_bad_inventories_name_the_file_line_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        load_inventory(write(tmp_path, text))
    assert message in str(caught.value)


@pytest.mark.bad_input
def test_bad_inventory_through_the_cli_is_one_line(bench, tmp_path):
    path = write(tmp_path, "targets:\n  pi4:\n    host: a\n    prot: 22\n")
    done = bench("targets", "--inventory", path)
    assert done.code == 2
    assert_one_line_error(done, "targets.yaml:4: targets.pi4.prot: unknown key")


def test_ssh_config_values_apply_and_inventory_values_win(tmp_path, monkeypatch):
    config = tmp_path / "ssh_config"
    config.write_text("Host board1\n  HostName 10.9.8.7\n  User alice\n  Port 2222\n  IdentityFile ~/.ssh/board_key\n"
                      "  ProxyJump bastion\n")
    monkeypatch.setenv("EDGEBENCH_SSH_CONFIG", str(config))
    inventory = load_inventory(write(tmp_path, "targets:\n  b:\n    host: board1\n    user: bob\n"))
    target = inventory.targets["b"]
    assert (target.host, target.user, target.port, target.proxy_jump) == ("10.9.8.7", "bob", 2222, "bastion")
    assert target.identity_files[0].endswith("/.ssh/board_key")
    alias = resolve_target("board1", inventory)
    assert (alias.host, alias.user, alias.port) == ("10.9.8.7", "alice", 2222)
    direct = resolve_target("carol@10.1.2.3:2200", inventory)
    assert (direct.host, direct.user, direct.port) == ("10.1.2.3", "carol", 2200)


@pytest.mark.bad_input
def test_unknown_target_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEBENCH_SSH_CONFIG", str(tmp_path / "none"))
    inventory = load_inventory(write(tmp_path, "targets:\n  pi4:\n    host: a\n"))
    with pytest.raises(ConfigError, match="unknown target 'pi5'") as caught:
        resolve_target("pi5", inventory)
    assert "known targets: local, pi4" in str(caught.value)
    with pytest.raises(ConfigError, match="unknown target 'a;b'"):
        resolve_target("a;b", inventory)


@pytest.mark.bad_input
def test_targets_check_names_the_targets_that_did_not_answer(bench, tmp_path):
    inventory = tmp_path / "targets.yaml"
    inventory.write_text("targets:\n  dead:\n    host: 127.0.0.1\n    port: 1\n    connect_timeout: 2\n")
    done = bench("targets", "--inventory", inventory, "--check")
    assert done.code == 3
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line.strip()}
    assert "ok:" in rows["local"]
    assert "FAIL" in rows["dead"]
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        "error: 1 of 2 targets failed the check: dead (hint: see the check column; `bench doctor --target NAME` says more)"]
    listed = json.loads(bench("targets", "--inventory", inventory, "--check", "--json").stdout)
    assert {t["name"]: t["check"].split(":")[0] for t in listed} == {"local": "ok", "dead": "FAIL"}


def test_a_proxy_jump_hop_is_resolved_with_the_inventory(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEBENCH_SSH_CONFIG", str(tmp_path / "none"))
    inventory = load_inventory(write(tmp_path, "targets:\n  gw:\n    host: 10.0.0.9\n    user: gate\n    port: 2200\n"
                                               "  pi:\n    host: 10.1.0.2\n    proxy_jump: gw\n"
                                               "  far:\n    host: 10.2.0.3\n    proxy_jump: bastion.lab\n"))
    pi = resolve_target("pi", inventory)
    assert (pi.jump.name, pi.jump.user, pi.jump.port) == ("gw", "gate", 2200)
    assert pi.jump.known_hosts == pi.known_hosts and pi.known_hosts.endswith("known_hosts")  # the project's keys
    far = resolve_target("far", inventory)  # a bare host name, as OpenSSH takes it
    assert (far.jump.host, far.jump.known_hosts) == ("bastion.lab", pi.known_hosts)
