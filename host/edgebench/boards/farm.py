"""Device farms through labgrid: a target that is a place, or any free place with some tags, on a labgrid
coordinator (`lg:pi4-03`, `lg:board=pi4`, or an inventory entry `kind: labgrid`).

labgrid is the scheduler; edgebench keeps no queue beyond one command's work. `Lease` reserves (a labgrid
reservation, which waits its turn with every other client's), acquires the place, reads its NetworkService
(address, port, username) and gives back an ordinary SSH target, so the SSH path is the one every board takes (host
keys, uploads by hash, detached runs, fetch). The place is released and the reservation cancelled on success,
failure, Ctrl-C and SIGTERM alike (and at exit, for anything a crash left held). `spread` runs a list of work over
every matching place, as many at once as are free, each place held only while work is left for it.

labgrid's client is asyncio: one event loop thread per coordinator serves every thread of this process.
"""

from __future__ import annotations

import atexit
import contextlib
import re
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from ..errors import BenchError, ConfigError, FarmError, is_our_bug, one_line
from .targets import TAG_VALUE, Inventory, Target, apply_ssh_config, with_jump
from .threads import run_all

FARM_EXTRA = "pip install 'edgebench[farm]'"
DEFAULT_PORT = 20408  # labgrid's
POLL_S = 0.5  # how often a waiting reservation is polled (the coordinator drops one not polled for 60 s)
CALL_TIMEOUT_S = 15.0
MAX_PLACES_AT_ONCE = 16
UNREACHABLE_HINT = "start labgrid-coordinator there, or point --coordinator or LG_COORDINATOR at the running one"

Say = Callable[[str, str], None]  # (target name, message): what the farm is doing, for the person waiting


@dataclass(frozen=True)
class Place:
    name: str
    tags: dict
    acquired: str | None  # "host/user" of the client holding it
    reserved: bool  # allocated to a reservation (someone's turn)
    comment: str
    service: dict | None  # its NetworkService: address, port, username (None: it has none)
    online: bool  # the exporter of that NetworkService is connected

    def matches(self, wanted: dict) -> bool:
        tags = {**self.tags, "name": self.name}  # the coordinator matches a place's name like a tag
        return all(tags.get(key) == value for key, value in wanted.items())

    @property
    def holder(self) -> str:
        return f"held by {self.acquired}" if self.acquired else "reserved" if self.reserved else "free"


def _one_line(exc: BaseException) -> str:
    """labgrid's or gRPC's error as one line (gRPC keeps its text in details())."""
    details = getattr(exc, "details", None)
    return one_line(RuntimeError(details()) if callable(details) else exc).removeprefix("Error: ")


class Coordinator:
    """One gRPC session with a labgrid coordinator, shared by every thread of this process."""

    def __init__(self, address: str):
        try:
            import logging

            from labgrid.remote.client import ClientSession
        except ImportError:
            raise ConfigError("labgrid targets need labgrid, which is not installed here",
                              f"install the farm extra: {FARM_EXTRA}") from None
        import asyncio

        if not logging.getLogger().handlers:  # labgrid logs its connection errors on the root logger: we say them once
            logging.getLogger().addHandler(logging.NullHandler())
        self.address = address if ":" in address else f"{address}:{DEFAULT_PORT}"
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name=f"labgrid {address}", daemon=True).start()
        self.held: dict[str, str] = {}  # place -> reservation token: what this process must give back
        self.lock = threading.Lock()

        async def start():
            session = ClientSession(self.address, self.loop)
            await session.start()
            return session

        self.session = self._call(start, "connect")

    def _call(self, make: Callable, what: str, timeout: float = CALL_TIMEOUT_S):
        """Run a coroutine on the session's loop; labgrid's and gRPC's errors become one FarmError line."""
        import asyncio

        future = asyncio.run_coroutine_threadsafe(make(), self.loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise FarmError(f"labgrid coordinator {self.address} did not answer ({what}) within {timeout:.0f} s",
                            UNREACHABLE_HINT) from None
        except BenchError:
            raise
        except Exception as exc:  # grpc.aio.AioRpcError, labgrid's ServerError/UserError
            if is_our_bug(exc):  # a bug of ours stays a traceback
                raise
            message = _one_line(exc)
            hint = None
            if any(s in message for s in ("Could not connect", "unavailable", "UNAVAILABLE", "failed to connect",
                                          "Connection refused", "Socket closed")):
                hint, message = UNREACHABLE_HINT, "unreachable"
            raise FarmError(f"labgrid coordinator {self.address}: {what}: {message}", hint) from None

    def places(self) -> list[Place]:
        async def read():
            await self.session.sync_with_coordinator()
            return self._places()

        return self._call(read, "list places")

    def _places(self) -> list[Place]:
        services = []  # ((exporter, group, cls, name), entry) of every NetworkService the exporters offer
        for exporter, groups in self.session.resources.items():
            for group_name, group in groups.items():
                for resource_name, entry in group.items():
                    if entry.cls == "NetworkService":
                        services.append(((exporter, group_name, entry.cls, resource_name), entry))
        found = []
        for place in self.session.places.values():
            service = next(((path, e) for path, e in services if place.hasmatch(path)), None)
            found.append(Place(name=place.name, tags=dict(place.tags), acquired=place.acquired,
                               reserved=bool(place.reservation), comment=place.comment or "",
                               service=dict(service[1].args) if service else None,
                               online=bool(service and service[1].avail)))
        return sorted(found, key=lambda p: p.name)

    def reserve(self, wanted: dict) -> str:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        async def create():
            reply = await self.session.stub.CreateReservation(
                pb.CreateReservationRequest(filters={"main": pb.Reservation.Filter(filter=wanted)}, prio=0.0))
            return reply.reservation.token

        return self._call(create, "reserve")

    def poll(self, token: str) -> str | None:
        """The place a reservation was given, or None while it waits."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        async def poll():
            reply = await self.session.stub.PollReservation(pb.PollReservationRequest(token=token))
            allocated = list(reply.reservation.allocations.values())  # filter group -> place name
            return allocated[0] if allocated else None

        return self._call(poll, "poll the reservation")

    def acquire(self, place: str, token: str) -> Place:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        async def acquire():
            await self.session.stub.AcquirePlace(pb.AcquirePlaceRequest(placename=place))
            await self.session.sync_with_coordinator()
            return next(p for p in self._places() if p.name == place)

        with self.lock:
            self.held[place] = token
        return self._call(acquire, f"acquire place {place}")

    def release(self, place: str | None, token: str) -> None:
        """Release the place (when acquired) and cancel its reservation: both, even when the first fails."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        async def release():
            problems = []
            # fromuser: released only while we hold it (never someone who acquired it after an admin's --kick)
            me = f"{self.session.gethostname()}/{self.session.getuser()}"
            stub = self.session.stub
            calls = [(stub.ReleasePlace, pb.ReleasePlaceRequest(placename=place, fromuser=me))] if place else []
            for call, request in [*calls, (stub.CancelReservation, pb.CancelReservationRequest(token=token))]:
                try:
                    await call(request)
                except Exception as exc:  # a reservation the coordinator already dropped is not a problem
                    if is_our_bug(exc):  # a bug of ours stays a traceback
                        raise
                    if "does not exist" not in _one_line(exc) and "is not acquired" not in _one_line(exc):
                        problems.append(exc)
            if problems:
                raise problems[0]

        self._call(release, f"release place {place}" if place else "cancel the reservation")
        with self.lock:  # kept when the release failed: a later try (at exit) gives it back, or says it could not
            if place:
                self.held.pop(place, None)

    def forget(self, place: str | None) -> None:
        with self.lock:
            self.held.pop(place or "", None)

    def release_all(self) -> list[str]:
        """Give back everything this process still holds (after an interrupt, or at exit): the problems, one line each."""
        with self.lock:
            held = dict(self.held)
        problems = []
        for place, token in held.items():
            try:
                self.release(place, token)
            except FarmError as exc:
                problems.append(f"{exc.message}: {self.release_hint(place)}")
        return problems

    def release_hint(self, place: str) -> str:
        return f"release it with `labgrid-client -x {self.address} -p {place} release`"


_coordinators: dict[str, Coordinator] = {}
_connecting = threading.Lock()


def coordinator_for(target: Target) -> Coordinator:
    """The process's session with the target's coordinator (connected once, shared by every thread)."""
    if not target.coordinator:
        raise ConfigError(f"no labgrid coordinator for target {target.name}",
                          "give --coordinator HOST:PORT, set LG_COORDINATOR, or coordinator: in the inventory")
    with _connecting:
        if target.coordinator not in _coordinators:
            _coordinators[target.coordinator] = Coordinator(target.coordinator)
        return _coordinators[target.coordinator]


@atexit.register
def _release_at_exit() -> None:
    """Whatever this process still holds (a release cut short, a failure nothing caught) is given back, or said."""
    import sys

    from ..results.schema import printable

    for problem in release_everything():
        print(printable(f"warning: {problem}"), file=sys.stderr)


def release_everything() -> list[str]:
    """After Ctrl-C or SIGTERM: every place this process holds, given back (the problems, one line each)."""
    return [problem for c in list(_coordinators.values()) for problem in c.release_all()]


def matching_places(target: Target) -> list[Place]:
    """The places a labgrid target may use; none is a one-line error naming what the coordinator has."""
    coordinator = coordinator_for(target)
    places = coordinator.places()
    wanted = target.reservation_filter()
    found = [p for p in places if p.matches(wanted)]
    if found:
        return found
    if target.place:
        raise FarmError(f"no place named {target.place} on labgrid coordinator {coordinator.address}",
                        f"its places: {', '.join(p.name for p in places) or 'none'} (`bench targets` lists them)")
    tags = sorted({f"{k}={v}" for p in places for k, v in p.tags.items()})
    raise FarmError(f"no place on labgrid coordinator {coordinator.address} has the tags {target.wants()}",
                    f"the tags its places have: {', '.join(tags) or 'none'}")


_ADDRESS = re.compile(r"[A-Za-z0-9_.:%-]+\Z")  # a host name, IPv4 or IPv6 address
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def _check_place(place: Place) -> None:
    """What the coordinator and its exporters say is data from elsewhere: the place's name becomes a folder name
    ({place} in work_dir, the result's target), its NetworkService an SSH address. Anything else is refused."""
    if not TAG_VALUE.match(place.name) or place.name in (".", ".."):
        raise FarmError(f"labgrid place {place.name!r} has a name edgebench cannot use as a folder name",
                        "name places with letters, digits, '.', '_' and '-'")
    service = place.service
    if service is None:
        return
    port = service.get("port", 22)
    if (not isinstance(service.get("address"), str) or not _ADDRESS.match(service["address"])
            or not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536
            or (service.get("username") is not None and not (isinstance(service["username"], str)
                                                             and _USER.match(service["username"])))):
        raise FarmError(f"place {place.name}: its NetworkService is not an SSH address edgebench can use "
                        f"(address, port, username: {service.get('address')!r}, {port!r}, {service.get('username')!r})",
                        "fix the exporter's configuration")


def _holders(places: list[Place]) -> str:
    return ", ".join(f"{p.name} {p.holder}" for p in places)


class Lease:
    """One place for one stretch of work: `take()` waits for the coordinator to give a place (or for the work to
    run out), `give_back()` releases it. Use in try/finally; `leased()` is the context manager for one command."""

    def __init__(self, target: Target, say: Say | None = None, still_wanted: Callable[[], bool] | None = None):
        self.target = target
        self.say = say or (lambda name, message: None)
        self.still_wanted = still_wanted or (lambda: True)
        self.coordinator = coordinator_for(target)
        self.token: str | None = None
        self.place: str | None = None
        self.in_use = False  # the place was handed out (and said so): its release is said too

    def take(self) -> Target | None:
        """An SSH target on the place the coordinator gave; None when the work ran out while waiting; FarmError at
        the deadline (target.lock_timeout), naming who holds the places."""
        candidates = matching_places(self.target)
        self.token = self.coordinator.reserve(self.target.reservation_filter())
        deadline = time.monotonic() + self.target.lock_timeout
        said = False
        while True:
            place = self.coordinator.poll(self.token)
            if place is not None:
                break
            if not self.still_wanted():
                return None
            if time.monotonic() >= deadline:
                holders = _holders(matching_places(self.target))
                raise FarmError(f"no place matching {self.target.wants()} came free within "
                                f"{self.target.lock_timeout:.0f} s: {holders}",
                                "wait, ask the holders to release, or raise lock_timeout")
            if not said:
                self.say(self.target.name, f"waiting for a place matching {self.target.wants()} ({_holders(candidates)})")
                said = True
            time.sleep(POLL_S)
        self.place = place
        got = self.coordinator.acquire(place, self.token)
        _check_place(got)
        if got.service is None:
            raise FarmError(f"place {place} has no NetworkService resource: edgebench reaches boards over SSH",
                            f"export one (address, username, port) and add it: labgrid-client -p {place} add-match "
                            "EXPORTER/GROUP/NetworkService")
        if not got.online:
            raise FarmError(f"place {place}: the exporter of its NetworkService is offline",
                            "start labgrid-exporter on the lab host")
        self.say(self.target.name, f"place {place} acquired ({got.service.get('username')}@"
                                   f"{got.service['address']}:{got.service.get('port', 22)})")
        self.in_use = True
        return self._ssh_target(got)

    def _ssh_target(self, place: Place) -> Target:
        service = place.service or {}
        leased = replace(
            self.target, name=f"lg:{place.name}", kind="ssh", host=str(service["address"]),
            port=int(service.get("port") or 22), user=self.target.user or service.get("username") or None,
            work_dir=self.target.work_dir.replace("{place}", place.name), place=None, match=(), coordinator=None,
            tags=tuple(sorted(f"{k}={v}" for k, v in place.tags.items())),
            leased=(("coordinator", self.coordinator.address), ("place", place.name), ("asked", self.target.name)))
        # a ProxyJump that ~/.ssh/config gives the place's address is resolved like any target's
        return with_jump(apply_ssh_config(leased, explicit_port=True), Inventory(None))

    def give_back(self) -> None:
        """Release the place and cancel the reservation (FarmError, with the labgrid-client line, if it cannot)."""
        if self.token is None:
            return
        token, place, self.token = self.token, self.place, None
        try:
            self.coordinator.release(place, token)
        except FarmError as exc:
            self.coordinator.forget(place)  # said here, with what to do: not again at exit
            raise FarmError(exc.message, f"{self.coordinator.release_hint(place)} once the coordinator is back"
                            if place else exc.hint) from None
        if self.in_use:
            self.say(self.target.name, f"place {place} released")


@contextlib.contextmanager
def leased(target: Target, say: Say | None = None) -> Iterator[Target]:
    """A labgrid target as an SSH target for one command (any other target as it is)."""
    if target.kind != "labgrid":
        yield target
        return
    lease = Lease(target, say)
    try:
        got = lease.take()
        assert got is not None  # still_wanted is always true here
        yield got
    except BaseException:
        with contextlib.suppress(FarmError):
            lease.give_back()
        raise
    lease.give_back()


def spread(target: Target, units: list, work: Callable[[Target, Callable[[], object]], None],
           fail: Callable[[object, BenchError], None], say: Say | None = None) -> list[str]:
    """Run `units` over every place matching a labgrid target, as many places at once as are free.

    `work(ssh_target, take)` runs on one place, calling `take()` for its next unit until it returns None (or
    `take.put_back(unit)` and raising the TransportError when the place's board cannot run it); a place is released
    as soon as no work is left for it. Units no place ran are passed to `fail(unit, why)`. Returns farm
    problems that are not a unit's (a place that could not be released), one line each."""
    queue = list(units)
    queue_lock = threading.Lock()
    problems: list[str] = []
    reasons: list[BenchError] = []  # why a place could not be had (reported only when work was left undone)
    cancelled = threading.Event()
    waiting_said = threading.Event()

    def say_once(name: str, message: str) -> None:  # every place's worker waits alike: say it once
        if message.startswith("waiting"):
            if waiting_said.is_set():
                return
            waiting_said.set()
        if say is not None:
            say(name, message)

    class Take:
        """The next unit for a place (None: nothing left); put_back(unit) when the place could not run it (its board
        unreachable or busy): another place will, and this one stops taking work."""

        def __call__(self):
            with queue_lock:
                return queue.pop(0) if queue and not cancelled.is_set() else None

        def put_back(self, unit) -> None:
            with queue_lock:
                queue.insert(0, unit)

    take = Take()

    def still_wanted() -> bool:
        with queue_lock:
            return bool(queue) and not cancelled.is_set()

    def one_place() -> None:
        lease = None
        try:
            lease = Lease(target, say_once, still_wanted)
            got = lease.take()
            if got is not None:
                work(got, take)
        except BenchError as exc:  # no place, or the place's board unreachable: another place may do the work
            reasons.append(exc)
        finally:
            if lease is not None:
                try:
                    lease.give_back()
                except FarmError as exc:
                    problems.append(str(exc))

    try:
        places = len(matching_places(target))
    except BenchError as exc:
        for unit in units:
            fail(unit, exc)
        return []
    workers = max(1, min(places, len(units), MAX_PLACES_AT_ONCE))
    try:
        run_all([one_place] * workers, name="place")
    except KeyboardInterrupt:
        cancelled.set()
        for problem in release_everything():  # each thread released its own; this catches one the interrupt cut short
            (say or (lambda name, message: None))(target.name, problem)
        raise
    for unit in queue:
        fail(unit, reasons[0] if reasons else FarmError(f"no place matching {target.wants()} ran it"))
    return problems
