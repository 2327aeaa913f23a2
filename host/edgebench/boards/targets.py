"""Targets: where a benchmark runs. The built-in `local`, the inventory (configs/targets.yaml), a Host alias
from ~/.ssh/config, `user@host[:port]`, or a labgrid place (`lg:PLACE`, `lg:board=pi4`, or `kind: labgrid`), which
farm.py leases into an SSH target for as long as its runs take. A Target is frozen: what was configured, validated."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, is_our_bug
from ..yamlconf import YamlDoc, check_type, load_yaml

LOCAL = "local"
DEFAULT_INVENTORY = Path("configs/targets.yaml")
HOST_KEY_POLICIES = ("strict", "accept-new")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

LABGRID_PREFIX = "lg:"
# labgrid's own rule for tag keys (a place's tags and a reservation's filter); values: no space, no '=' or ','
TAG_KEY = re.compile(r"[a-z][a-z0-9_]+\Z")
TAG_VALUE = re.compile(r"[A-Za-z0-9_.-]+\Z")

# Inventory fields of a target: name -> (type, default).
FIELDS: dict[str, tuple[str, Any]] = {
    "kind": ("string", None),  # "ssh" (default when host is set), "local" or "labgrid"
    "host": ("string", None),
    "port": ("integer", None),
    "user": ("string", None),
    "identity_file": ("string or list", None),
    "python": ("string", None),
    "work_dir": ("string", "~/.cache/edgebench"),
    "tags": ("list of strings", []),
    "providers": ("list of strings", []),
    "env": ("mapping of strings", {}),
    "host_key_policy": ("string", "strict"),
    "lock_timeout": ("number", 600.0),
    "connect_timeout": ("number", 10.0),
    "proxy_jump": ("string", None),
    "place": ("string", None),  # labgrid: a place by name ...
    "coordinator": ("string", None),  # ... and the coordinator that holds it (HOST:PORT)
}
# The inventory's `labgrid:` block: defaults for every labgrid target (`lg:` names and `kind: labgrid` entries).
LABGRID_DEFAULTS = ("coordinator", "user", "identity_file", "python", "work_dir", "env", "host_key_policy",
                    "lock_timeout", "connect_timeout", "proxy_jump")


@dataclass(frozen=True)
class Target:
    name: str
    kind: str = "local"  # "local", "ssh", or "labgrid" (farm.lease makes it an "ssh" one, on the place it got)
    host: str | None = None
    port: int = 22
    user: str | None = None
    identity_files: tuple = ()
    python: str | None = None  # interpreter that runs the agent; None: this host's for local, python3 over SSH
    work_dir: str = "~/.cache/edgebench"
    tags: tuple = ()
    providers: tuple = ()
    env: tuple = ()  # ((name, value), ...): environment of the agent on the board
    host_key_policy: str = "strict"
    lock_timeout: float = 600.0
    connect_timeout: float = 10.0
    proxy_jump: str | None = None
    known_hosts: str | None = None  # the project's known_hosts file (beside the inventory)
    source: str = "built-in"
    jump: "Target | None" = None  # proxy_jump's first hop, resolved like any target (inventory, known_hosts)
    place: str | None = None  # labgrid: a place by name, or ...
    match: tuple = ()  # ... ((tag, value), ...): any free place with these tags
    coordinator: str | None = None  # labgrid coordinator, HOST:PORT
    leased: tuple = ()  # an SSH target leased from labgrid: (("coordinator", ...), ("place", ...), ("asked", name))

    @property
    def address(self) -> str:
        if self.kind == "local":
            return "this machine"
        if self.kind == "labgrid":
            return f"labgrid {self.wants()} at {self.coordinator or '(no coordinator)'}"
        port = f":{self.port}" if self.port != 22 else ""
        return f"{self.user + '@' if self.user else ''}{self.host}{port}"

    def describe(self) -> dict:
        """The target block of a result: enough to tell boards apart, nothing secret."""
        block: dict[str, Any] = {"name": self.name, "kind": self.kind, "address": self.address,
                                 "python": self.python or (sys.executable if self.kind == "local" else "python3"),
                                 "tags": list(self.tags)}
        if self.leased:
            block["labgrid"] = dict(self.leased)
        return block

    def wants(self) -> str:
        """What a labgrid target asks the coordinator for, as a person reads it: `place pi4-03`, `board=pi4`."""
        return f"place {self.place}" if self.place else ",".join(f"{k}={v}" for k, v in self.match)

    def reservation_filter(self) -> dict:
        """The tags a labgrid reservation asks for (the coordinator gives every place the tag name=<place>)."""
        return {**dict(self.match), **({"name": self.place} if self.place else {})}


@dataclass
class Inventory:
    path: Path | None
    targets: dict = field(default_factory=dict)
    labgrid: Target | None = None  # the `labgrid:` block: defaults of every labgrid target, as a target
    coordinator: str | None = None  # --coordinator: wins over LG_COORDINATOR and the inventory

    def with_coordinator(self, address: str | None) -> "Inventory":
        return replace(self, coordinator=address) if address else self

    def names(self) -> list[str]:
        return sorted({LOCAL, *self.targets})


def inventory_path(explicit: Path | None = None) -> Path | None:
    """--inventory, else $EDGEBENCH_INVENTORY, else configs/targets.yaml when it exists."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get("EDGEBENCH_INVENTORY"):
        return Path(os.environ["EDGEBENCH_INVENTORY"])
    return DEFAULT_INVENTORY if DEFAULT_INVENTORY.is_file() else None


def load_inventory(path: Path | None) -> Inventory:
    if path is None:
        return Inventory(None)
    doc = load_yaml(path)
    if doc.data is None:
        return Inventory(path)
    check_type(doc, (), doc.data, "mapping")
    unknown = sorted(set(doc.data) - {"targets", "labgrid"})
    if unknown:
        raise doc.error((unknown[0],), "unknown key", "the inventory's top-level keys are targets and labgrid")
    defaults = doc.data.get("labgrid") or {}
    check_type(doc, ("labgrid",), defaults, "mapping")
    unknown = sorted(set(defaults) - set(LABGRID_DEFAULTS))
    if unknown:
        raise doc.error(("labgrid", unknown[0]), "unknown key", f"known keys: {', '.join(LABGRID_DEFAULTS)}")
    entries = doc.data.get("targets") or {}
    check_type(doc, ("targets",), entries, "mapping")
    known_hosts = str(Path(path).resolve().parent / "known_hosts")
    # checked like an entry: a labgrid target that names no place yet (`lg:` names fill it in)
    template = _target_from_entry(doc, LABGRID_PREFIX, {**defaults, "kind": "labgrid"}, known_hosts, ("labgrid",))
    targets = {}
    for name, entry in entries.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise doc.error(("targets", name), "a target name is letters, digits, '.', '_' or '-'")
        check_type(doc, ("targets", name), entry or {}, "mapping")
        if (entry or {}).get("kind") == "labgrid":
            # the block's defaults, but its coordinator only after LG_COORDINATOR (an entry's own wins over both)
            entry = {**{k: v for k, v in defaults.items() if k != "coordinator"}, **entry}
        targets[name] = _target_from_entry(doc, name, entry or {}, known_hosts)
    return Inventory(Path(path), targets, template)


def _target_from_entry(doc: YamlDoc, name: str, entry, known_hosts: str, keys: tuple | None = None) -> Target:
    keys = keys or ("targets", name)
    check_type(doc, keys, entry, "mapping")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise doc.error(keys + (unknown[0],), "unknown key", f"known keys: {', '.join(FIELDS)}")
    match: tuple = ()
    if entry.get("kind") == "labgrid" and isinstance(entry.get("tags"), dict):
        # a labgrid target's tags are the place tags it reserves by; fleets select it by `tag:board=pi4`
        match = _labgrid_tags(doc, keys + ("tags",), entry["tags"])
        entry = {**entry, "tags": [f"{k}={v}" for k, v in match]}
    values: dict[str, Any] = {}  # checked against FIELDS' kinds before use
    for key, (kind, default) in FIELDS.items():
        if key not in entry or entry[key] is None:
            values[key] = default
            continue
        value = entry[key]
        if kind == "string or list":
            value = [value] if isinstance(value, str) else value
            check_type(doc, keys + (key,), value, "list of strings")
        else:
            check_type(doc, keys + (key,), value, kind)
        values[key] = value
    target_kind = values["kind"] or ("local" if name == LOCAL and not values["host"] else "ssh")
    if target_kind not in ("ssh", "local", "labgrid"):
        raise doc.error(keys + ("kind",), f"must be ssh, local or labgrid, got {target_kind!r}")
    if target_kind == "ssh" and not values["host"]:
        raise doc.error(keys, "an ssh target needs a host")
    if target_kind == "labgrid":
        if values["host"] or values["port"]:
            raise doc.error(keys + ("host" if values["host"] else "port",), "a labgrid target's address comes from its "
                            "place's NetworkService", "remove host/port; name the place (place:) or its tags (tags:)")
        if bool(values["place"]) == bool(match) and keys != ("labgrid",):
            raise doc.error(keys, "a labgrid target names a place (place: NAME) or the tags of the places it may use "
                            "(tags: {board: pi4}), one of the two")
        if values["place"] and not TAG_VALUE.match(values["place"]):
            raise doc.error(keys + ("place",), f"not a labgrid place name: {values['place']!r}")
    elif values["place"] or values["coordinator"]:
        raise doc.error(keys + ("place" if values["place"] else "coordinator",), "only a labgrid target has this key",
                        "set kind: labgrid")
    if "{" in values["work_dir"] and values["work_dir"].replace("{place}", "").count("{"):
        raise doc.error(keys + ("work_dir",), "the only placeholder a work_dir may hold is {place}")
    if values["host_key_policy"] not in HOST_KEY_POLICIES:
        raise doc.error(keys + ("host_key_policy",), f"must be strict or accept-new, got {values['host_key_policy']!r}")
    for variable in values["env"]:
        # Keys reach `env NAME=VALUE` on the board: only a POSIX name can never be read as an option or command.
        if not isinstance(variable, str) or not ENV_NAME.fullmatch(variable):
            raise doc.error(keys + ("env", variable), "an environment variable name is letters, digits and '_', "
                            "not starting with a digit", "e.g. OMP_NUM_THREADS: 4")
    for key in ("lock_timeout", "connect_timeout"):
        if values[key] <= 0:
            raise doc.error(keys + (key,), f"must be positive, got {values[key]}")
    if values["port"] is not None and not 0 < values["port"] < 65536:
        raise doc.error(keys + ("port",), f"must be a TCP port (1-65535), got {values['port']}")
    target = Target(
        name=name, kind=target_kind, host=values["host"], port=values["port"] or 22, user=values["user"],
        identity_files=tuple(values["identity_file"] or ()), python=values["python"], work_dir=values["work_dir"],
        tags=tuple(values["tags"]), providers=tuple(values["providers"]),
        env=tuple(sorted((k, str(v)) for k, v in values["env"].items())), host_key_policy=values["host_key_policy"],
        lock_timeout=float(values["lock_timeout"]), connect_timeout=float(values["connect_timeout"]),
        proxy_jump=values["proxy_jump"], known_hosts=known_hosts, source=doc.where(*keys),
        place=values["place"], match=match, coordinator=values["coordinator"],
    )
    if target.kind == "ssh":
        target = apply_ssh_config(target, explicit_port=values["port"] is not None)
    return target


def _labgrid_tags(doc: YamlDoc | None, keys: tuple, tags) -> tuple:
    """((key, value), ...) of a labgrid tag filter, checked: keys as labgrid takes them, values without spaces."""
    if doc is not None:
        check_type(doc, keys, tags, "mapping of strings")
    pairs = []
    for key, value in tags.items():
        value = str(value)
        if not TAG_KEY.match(key) or not TAG_VALUE.match(value):
            message = (f"not a labgrid tag: {key}={value}", "a tag key is lowercase letters, digits and '_' (2+ "
                       "characters, a letter first); a value is letters, digits, '.', '_' or '-'")
            if doc is not None:
                raise doc.error(keys + (key,), *message)
            raise ConfigError(*message)
        pairs.append((key, value))
    return tuple(sorted(pairs))


def labgrid_target(spec: str, inventory: Inventory) -> Target:
    """`lg:PLACE` or `lg:tag=value[,tag=value]`: a labgrid target from the command line, with the inventory's
    `labgrid:` defaults (user, key, python, work_dir, ...)."""
    body = spec[len(LABGRID_PREFIX):]
    if not body:
        raise ConfigError(f"{spec!r} names no place or tags", "write lg:PLACE or lg:board=pi4")
    place: str | None = None
    match: tuple[tuple[str, str], ...] = ()
    if "=" in body:
        pairs = [part.partition("=") for part in body.split(",")]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigError(f"{spec!r} mixes a place name and tags", "write lg:PLACE or lg:board=pi4,arch=arm64")
        match = _labgrid_tags(None, (), {k: v for k, _, v in pairs})
    elif TAG_VALUE.match(body):
        place = body
    else:
        raise ConfigError(f"not a labgrid place name: {body!r}", "write lg:PLACE or lg:board=pi4")
    template = inventory.labgrid or Target(name=LABGRID_PREFIX, kind="labgrid", known_hosts=_known_hosts(inventory))
    return replace(template, name=spec, place=place, match=match, tags=tuple(f"{k}={v}" for k, v in match),
                   coordinator=None, source="command line")  # (the block's coordinator: see _resolve_one)


def ssh_config_path() -> Path:
    return Path(os.environ.get("EDGEBENCH_SSH_CONFIG") or os.path.expanduser("~/.ssh/config"))


def _ssh_config():
    import paramiko

    path = ssh_config_path()
    if not path.is_file():
        return None
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except Exception as exc:  # paramiko raises several types for a malformed file
        if is_our_bug(exc):  # a bug of ours stays a traceback
            raise
        raise ConfigError(f"cannot parse {path}: {exc}") from exc


def apply_ssh_config(target: Target, explicit_port: bool = False) -> Target:
    """Honour ~/.ssh/config for the target's host: HostName, User, Port, IdentityFile, ProxyJump.
    Values set in the inventory win."""
    config = _ssh_config()
    if config is None:
        return target
    found = config.lookup(target.host)
    changes = {}
    if found.get("hostname") and found["hostname"] != target.host:
        changes["host"] = found["hostname"]
    if not target.user and found.get("user"):
        changes["user"] = found["user"]
    if not explicit_port and found.get("port"):
        changes["port"] = int(found["port"])
    if not target.identity_files and found.get("identityfile"):
        changes["identity_files"] = tuple(os.path.expanduser(p) for p in found["identityfile"])
    if not target.proxy_jump and found.get("proxyjump") and found["proxyjump"].lower() != "none":
        changes["proxy_jump"] = found["proxyjump"]
    return replace(target, **changes) if changes else target


def _ssh_config_aliases() -> set[str]:
    config = _ssh_config()
    return {h for h in config.get_hostnames() if not any(c in h for c in "*?!")} if config else set()


_ADDRESS = re.compile(r"^(?:(?P<user>[A-Za-z0-9_.-]+)@)?(?P<host>[A-Za-z0-9_.-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d{1,5}))?\Z")


MAX_JUMPS = 5


def resolve_target(name: str, inventory: Inventory | None = None, _hops: tuple = ()) -> Target:
    """An inventory name, `local`, a ~/.ssh/config Host alias, or user@host[:port]; its ProxyJump hops resolved
    the same way, with the same inventory (so a jump host keeps its user, key and the project's known_hosts)."""
    inventory = inventory or Inventory(None)
    return with_jump(_resolve_one(name, inventory), inventory, _hops)


def with_jump(target: Target, inventory: Inventory, _hops: tuple = ()) -> Target:
    """The target with its ProxyJump's first hop resolved: an inventory name, a host name or ~/.ssh/config alias,
    or user@host[:port]. A hop trusts the host keys its target trusts."""
    if not target.proxy_jump or target.jump is not None:
        return target
    name = target.name
    if len(_hops) >= MAX_JUMPS or name in _hops:
        raise ConfigError(f"ProxyJump chain of {_hops[0] if _hops else name!r} loops or is longer than {MAX_JUMPS} hops: "
                          + " -> ".join([*_hops, name]), "check the proxy_jump of these targets")
    hop = target.proxy_jump.split(",")[0].strip()
    if _HOST.fullmatch(hop) and not _known(hop, inventory):
        # OpenSSH takes a bare host name as a jump: reach it as a plain SSH host
        jump = apply_ssh_config(Target(name=hop, kind="ssh", host=hop, source=f"proxy_jump of {name}"))
    else:
        jump = resolve_target(hop, inventory, (*_hops, name))
    return replace(target, jump=replace(jump, known_hosts=jump.known_hosts or target.known_hosts))


def _known(name: str, inventory: Inventory) -> bool:
    try:
        _resolve_one(name, inventory)
    except ConfigError:
        return False
    return True


_HOST = re.compile(r"[A-Za-z0-9_.-]+")


def _known_hosts(inventory: Inventory) -> str | None:
    return str(inventory.path.resolve().parent / "known_hosts") if inventory.path else None


def _resolve_one(name: str, inventory: Inventory) -> Target:
    if name in inventory.targets or name.startswith(LABGRID_PREFIX):
        target = inventory.targets[name] if name in inventory.targets else labgrid_target(name, inventory)
        if target.kind != "labgrid":
            return target
        # --coordinator, then the entry's own coordinator:, then LG_COORDINATOR (labgrid's variable), then the
        # inventory's labgrid: block
        address = (inventory.coordinator or target.coordinator or os.environ.get("LG_COORDINATOR")
                   or (inventory.labgrid.coordinator if inventory.labgrid else None))
        return replace(target, coordinator=address) if address != target.coordinator else target
    if name == LOCAL:
        return Target(name=LOCAL)
    known_hosts = _known_hosts(inventory)
    if name in _ssh_config_aliases():
        return apply_ssh_config(Target(name=name, kind="ssh", host=name, known_hosts=known_hosts, source="ssh config"))
    match = _ADDRESS.match(name)
    if match and ("@" in name or ":" in name):
        target = Target(name=name, kind="ssh", host=match["host"].strip("[]"), user=match["user"],
                        port=int(match["port"] or 22), known_hosts=known_hosts, source="command line")
        return apply_ssh_config(target, explicit_port=match["port"] is not None)
    where = f" in {inventory.path}" if inventory.path else " (no inventory: configs/targets.yaml not found)"
    raise ConfigError(f"unknown target {name!r}{where}",
                      f"known targets: {', '.join(inventory.names())}; or use a ~/.ssh/config Host alias or user@host[:port]")


def find_target(name: str, inventory_file: Path | None = None, coordinator: str | None = None) -> Target:
    """A target by name, from the inventory file given (None: $EDGEBENCH_INVENTORY or configs/targets.yaml);
    `coordinator`: --coordinator, for labgrid targets."""
    return resolve_target(name, load_inventory(inventory_path(inventory_file)).with_coordinator(coordinator))


def select_targets(spec: str, inventory: Inventory) -> list[Target]:
    """--target a,b or --target tag:arm: several targets for fleets."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if "=" in part and not part.startswith(("tag:", LABGRID_PREFIX)) and names and names[-1].startswith(
                LABGRID_PREFIX):
            names[-1] += "," + part  # lg:board=pi4,arch=arm64 is one target: a reservation by both tags
            continue
        if part.startswith("tag:"):
            tagged = [n for n, t in sorted(inventory.targets.items()) if part[4:] in t.tags]
            if not tagged:
                raise ConfigError(f"no target has tag {part[4:]!r}", "tags are set per target in the inventory")
            names += tagged
        else:
            names.append(part)
    return [resolve_target(n, inventory) for n in dict.fromkeys(names)]
