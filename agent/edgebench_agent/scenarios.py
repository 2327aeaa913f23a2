"""Load scenarios after MLPerf LoadGen: how a deployment loads the model, not only back-to-back inferences.

- single-stream: one query of one sample at a time, the next issued when the last completes (runner.timed_loop).
- multi-stream: queries of `samples_per_query` samples, issued back to back; a query's latency is until its
  last sample completes.
- server: queries arrive as a Poisson process at `qps` (a seeded schedule), issued by a dedicated thread and
  served by `concurrency` workers; latency counts queueing (completion - scheduled arrival), and the issue delay
  (actual - scheduled issue) shows the harness's own lateness. `qps: "auto"` searches, by bisection, the highest
  QPS whose early-stopping p99 meets `latency_bound_s`, and keeps every probe.
- offline: every sample available at once, `concurrency` workers draining them: throughput.

Durations follow the run's min/max seconds and iterations (queries). Every latency goes back raw; the host
computes the statistics. onnxruntime releases the GIL in `run`, so worker threads overlap on the board's cores.
"""

from __future__ import annotations

import collections
import math
import os
import random
import sys
import threading
import time

from .protocol import MLPERF_MIN_QUERIES, MLPERF_MIN_SECONDS
from .shared.quantiles import early_stopping_or_max

NS_PER_S = 1000000000
# The issuer sleeps until this close to a query's scheduled time, then spins (yielding the CPU and the GIL): a
# sleep wakes late by tens of µs, and by far more when onnxruntime's threads keep the cores busy (measured on
# 2 cores at 1,000 QPS, p99 issue delay: 1.4 ms with 0.2 ms of spin, 33-92 µs with 0.5 ms, 25-33 µs with 2 ms).
SPIN_NS = 2000000
GIL_SWITCH_S = 0.00002
KEEPS_UP = 0.9  # a server run that achieves less than this share of its QPS did not keep up
MAX_PROBES = 10  # bisection probes; with the confirmations at most QPS_SEARCH_MAX_PROBES
MAX_CONFIRMATIONS = 8  # confirmation probes of the answer at most
CONFIRMED_BY = 2  # fresh schedules in a row the answer must meet


class ScenarioError(Exception):
    """A scenario that cannot run as asked: the caller's to fix."""


# Spinning must hand the GIL to the workers without sleeping: sched_yield releases it and returns at once, while
# sleep(0) may sleep for the kernel's timer slack (50 µs by default).
yield_gil = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))


def minimums(scenario, min_seconds, min_iterations):
    """(seconds, queries) a run must reach at least: the request's, raised to LoadGen's with mlperf."""
    if scenario.get("mlperf"):
        return max(min_seconds, MLPERF_MIN_SECONDS), max(min_iterations, MLPERF_MIN_QUERIES[scenario["name"]])
    return min_seconds, min_iterations


def multi_stream(run, feeds, per_query, min_queries, min_seconds, max_queries, max_seconds, clock=time.perf_counter_ns):
    """Queries of `per_query` samples back to back: one latency per query (ns)."""
    latencies = []
    start = clock()
    while True:
        t0 = clock()
        for _ in range(per_query):
            run(None, feeds)
        t1 = clock()
        latencies.append(t1 - t0)
        elapsed = t1 - start
        if ((len(latencies) >= min_queries and elapsed >= min_seconds * NS_PER_S) or len(latencies) >= max_queries
                or elapsed >= max_seconds * NS_PER_S):
            return latencies


def poisson_schedule(qps, count, seed):
    """Arrival offsets (ns from the start) of `count` queries at `qps` on average: exponential gaps, seeded."""
    rng = random.Random(seed)
    offsets, now = [], 0.0
    for _ in range(count):
        now += rng.expovariate(qps)
        offsets.append(int(now * NS_PER_S))
    return offsets


def server(run, feeds, qps, seconds, concurrency, seed, max_queries, clock=time.perf_counter_ns):
    """Poisson arrivals at `qps` for `seconds`: per query (latency incl. queueing, issue delay), in arrival order.
    Arrivals later than `seconds` are not issued (a tiny rate must not sleep past the run's maximum)."""
    expected = qps * seconds  # arrivals within `seconds` are Poisson(expected): draw enough, keep those in time
    count = max(1, min(max_queries, int(math.ceil(expected + 6 * math.sqrt(expected) + 10))))
    schedule = [offset for offset in poisson_schedule(qps, count, seed) if offset <= seconds * NS_PER_S]
    if not schedule:
        raise ScenarioError("at %g QPS no query arrives within %g s: raise --qps or --min-seconds" % (qps, seconds))
    issued = [0] * count
    done = [0] * count
    pending = collections.deque()  # query indices, FIFO; guarded by `ready`
    ready = threading.Condition()
    state = {"issuing": True, "error": None}

    def worker():
        while True:
            with ready:
                while not pending and state["issuing"]:
                    ready.wait()
                if not pending:
                    return
                index = pending.popleft()
            try:
                run(None, feeds)
            except BaseException as exc:  # the first failure stops the scenario; it is raised below
                state["error"] = state["error"] or exc
            done[index] = clock()

    workers = [threading.Thread(target=worker, name="edgebench-worker-%d" % i) for i in range(concurrency)]
    # A thread that wants the GIL waits up to the switch interval (5 ms by default) for the one holding it: the
    # issuer would be late by that much. Hand the GIL over every 20 µs while the scenario runs.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_S)
    try:
        for thread in workers:
            thread.daemon = True
            thread.start()
        start = clock()
        for index, offset in enumerate(schedule):
            due = start + offset
            wait = due - clock() - SPIN_NS
            if wait > 0:
                time.sleep(wait / NS_PER_S)
            while clock() < due:
                yield_gil()  # spin, but let the workers have the GIL
            issued[index] = clock()
            with ready:
                pending.append(index)
                ready.notify()
            if state["error"] is not None:
                break
        with ready:
            state["issuing"] = False
            ready.notify_all()
        for thread in workers:
            thread.join()
    finally:
        sys.setswitchinterval(switch_interval)
    if state["error"] is not None:
        raise state["error"]
    scheduled = [start + offset for offset in schedule]
    latencies = [d - s for d, s in zip(done, scheduled) if d]
    delays = [i - s for i, s in zip(issued, scheduled) if i]
    wall = (max(done) - start) / float(NS_PER_S) if any(done) else 0.0
    return {"latencies_ns": latencies, "issue_delays_ns": delays, "qps": qps, "queries": len(latencies),
            "achieved_qps": len(latencies) / wall if wall > 0 else 0.0}


def p99(latencies):
    """LoadGen's early-stopping p99 of a probe, or the plain maximum when the probe is too short to bound it."""
    return early_stopping_or_max(sorted(latencies), 0.99)


def search_qps(run, feeds, bound_ns, service_ns, seconds, concurrency, seed, max_queries, emit, clock=time.perf_counter_ns):
    """The highest QPS whose p99 (early stopping) meets bound_ns, by bisection from the board's capacity
    (concurrency / median service time). Returns (qps, probes); qps None when not even the slowest probe met it."""
    capacity = concurrency * NS_PER_S / float(max(service_ns, 1))
    low, high = 0.0, capacity * 1.2
    probes = []

    def probe(qps, confirm=False):
        outcome = server(run, feeds, qps, seconds, concurrency, seed + len(probes), max_queries, clock)
        measured = p99(outcome["latencies_ns"])
        # A rate the board (or the issuer) cannot sustain never counts, whatever its latencies looked like.
        met = measured <= bound_ns and outcome["achieved_qps"] >= KEEPS_UP * qps
        probes.append({"qps": qps, "p99_ns": measured, "met": met, "queries": outcome["queries"],
                       "achieved_qps": outcome["achieved_qps"], "confirm": confirm})
        emit({"event": "probe", "qps": round(qps, 3), "p99_ms": round(measured / 1e6, 3), "met": met})
        return met

    while probe(high) and len(probes) < MAX_PROBES:  # the board keeps up even beyond its estimated capacity
        low, high = high, high * 2.0
    while len(probes) < MAX_PROBES and high - low > 0.05 * high:
        middle = (low + high) / 2.0 if low > 0 else high / 4.0
        if middle * seconds < 2:  # so low a rate that a probe sees barely a query: nothing left to search
            break
        if probe(middle):
            low = middle
        else:
            high = middle
    # Near saturation one schedule may meet the bound and the next miss it: the answer must hold for other
    # arrivals too. It must meet the bound on CONFIRMED_BY fresh schedules in a row; a miss steps it 10 % down.
    met_in_a_row = 0
    for _ in range(MAX_CONFIRMATIONS):
        if low <= 0 or met_in_a_row >= CONFIRMED_BY:
            break
        if probe(low, confirm=True):
            met_in_a_row += 1
        else:
            met_in_a_row, low = 0, low * 0.9
    return (low if low > 0 and met_in_a_row >= CONFIRMED_BY else None), probes


def offline(run, feeds, samples, concurrency, clock=time.perf_counter_ns):
    """`samples` inferences drained by `concurrency` workers at once: per-inference times and the wall time."""
    remaining = [samples]
    lock = threading.Lock()
    times = []
    errors = []

    def worker():
        mine = []
        while True:
            with lock:
                if remaining[0] <= 0 or errors:
                    break
                remaining[0] -= 1
            t0 = clock()
            try:
                run(None, feeds)
            except BaseException as exc:
                errors.append(exc)
                break
            mine.append(clock() - t0)
        with lock:
            times.extend(mine)

    workers = [threading.Thread(target=worker, name="edgebench-offline-%d" % i) for i in range(concurrency)]
    start = clock()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    wall_ns = clock() - start
    if errors:
        raise errors[0]
    return {"latencies_ns": times, "wall_ns": wall_ns, "samples": len(times),
            "throughput_per_s": len(times) * NS_PER_S / float(max(wall_ns, 1))}
