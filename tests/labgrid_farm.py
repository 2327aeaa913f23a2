"""A real labgrid farm for the tests: `labgrid-coordinator` and `labgrid-exporter` (pip `labgrid`) on loopback,
the exporter offering NetworkService resources for the suite's real sshd boards, places made and tagged with the
real `labgrid-client`, as a lab admin would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.sshd import free_port

BIN = Path(sys.executable).parent


@dataclass
class Service:
    """A NetworkService the exporter offers, and the place that uses it (group name = place name)."""

    place: str
    address: str
    username: str
    port: int
    tags: dict = field(default_factory=dict)


class Farm:
    def __init__(self, services: list[Service], extra_places: dict | None = None):
        self.folder = Path(tempfile.mkdtemp(prefix="edgebench-labgrid-"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.services = services
        self.extra_places = extra_places or {}  # place -> tags: places with no NetworkService
        self.coordinator: subprocess.Popen | None = None
        self.exporter: subprocess.Popen | None = None

    # ------------------------------------------------------------------------------------------ processes
    def start(self) -> "Farm":
        log = open(self.folder / "coordinator.log", "ab")
        self.coordinator = subprocess.Popen([str(BIN / "labgrid-coordinator"), "-l", self.address], cwd=self.folder,
                                            stdout=log, stderr=log, start_new_session=True)
        self._wait_for(lambda: self.client("places", check=False).returncode == 0, "the coordinator to answer")
        config = {s.place: {"NetworkService": {"address": s.address, "username": s.username, "port": s.port}}
                  for s in self.services}
        (self.folder / "exporter.yaml").write_text(yaml.safe_dump(config))
        log = open(self.folder / "exporter.log", "ab")
        self.exporter = subprocess.Popen(
            [str(BIN / "labgrid-exporter"), "-c", self.address, "-n", "lab1", "--hostname", "127.0.0.1",
             str(self.folder / "exporter.yaml")], cwd=self.folder, stdout=log, stderr=log, start_new_session=True)
        self._wait_for(lambda: len(self.client("resources").stdout.split()) >= len(self.services),
                       "the exporter's resources")
        for service in self.services:
            self.client("-p", service.place, "create")
            self.client("-p", service.place, "add-match", f"lab1/{service.place}/NetworkService")
            if service.tags:
                self.client("-p", service.place, "set-tags", *[f"{k}={v}" for k, v in service.tags.items()])
        for place, tags in self.extra_places.items():
            self.client("-p", place, "create")
            self.client("-p", place, "set-tags", *[f"{k}={v}" for k, v in tags.items()])
        return self

    def _wait_for(self, ready, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                logs = "".join((self.folder / n).read_text(errors="replace")[-1500:]
                               for n in ("coordinator.log", "exporter.log") if (self.folder / n).exists())
                raise RuntimeError(f"labgrid farm: timed out waiting for {what}: {logs}")
            time.sleep(0.1)

    def kill_coordinator(self) -> None:
        if self.coordinator and self.coordinator.poll() is None:
            os.killpg(self.coordinator.pid, signal.SIGKILL)
            self.coordinator.wait()

    def stop(self) -> None:
        for process in (self.exporter, self.coordinator):
            if process and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        subprocess.run(["rm", "-rf", str(self.folder)], check=False)

    # ------------------------------------------------------------------------------------------ labgrid-client
    def client(self, *args: str, user: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """labgrid-client against this coordinator; `user`: as another client, "host/user"."""
        env = dict(os.environ)
        if user:
            env["LG_HOSTNAME"], env["LG_USERNAME"] = user.split("/")
        done = subprocess.run([str(BIN / "labgrid-client"), "-x", self.address, *args], capture_output=True,
                              text=True, env=env, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(f"labgrid-client {' '.join(args)}: {done.stderr.strip()}")
        return done

    def holder(self, place: str) -> str | None:
        """Who holds a place (labgrid-client show), None when free."""
        shown = self.client("-p", place, "show").stdout
        found = re.search(r"^\s*acquired: (\S+)", shown, re.M)
        return None if not found or found.group(1) == "None" else found.group(1)

    def reservations(self) -> list[dict]:
        """Open reservations, as labgrid-client prints them (owner and state)."""
        shown = self.client("reservations").stdout
        found = []
        for block in shown.split("Reservation '")[1:]:
            owner = re.search(r"owner: (\S+)", block)
            state = re.search(r"state: (\S+)", block)
            found.append({"owner": owner.group(1) if owner else None, "state": state.group(1) if state else None})
        return found

    def acquired(self) -> set[str]:
        """The places someone holds (`labgrid-client places --acquired`: one client start, not one per place)."""
        return set(self.client("places", "--acquired").stdout.split())

    def all_free(self) -> bool:
        return not self.acquired() and not self.reservations()


def lock_log(cache: Path) -> list[dict]:
    """A board's own record of its benchmark lock (agent/edgebench_agent/lock.py): one line per hold."""
    path = cache / "lock.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
