"""Was the board in a state to measure? The rule both sides apply to a run's telemetry.

The board only records its state (telemetry.py); this verdict is computed from that record, by the host when
it stores a result and by the standalone agent when it prints one, so the two can never disagree.
"""

from .quantiles import percentile


# vcgencmd get_throttled bits (Raspberry Pi documentation): 0-3 now, 16-19 the same since boot.
THROTTLE_BITS = {
    0: "under-voltage detected",
    1: "ARM frequency capped",
    2: "currently throttled",
    3: "soft temperature limit active",
    16: "under-voltage has occurred",
    17: "ARM frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
CLOCK_DROP_FRACTION = 0.9  # a clock below 90 % of its value before the run, under the performance governor


# A server query issued this late (p99) means the harness's issuer thread did not get a core in time.
ISSUE_DELAY_WARN_NS = 100000


def server_warnings(repeats):
    """Warnings about a server run's outcome: a rate the board did not keep up with, a p99 above the bound it was
    run for (the queueing latency is still measured honestly; the load was not what was asked).

    The p99 is the one the results table shows beside it: nearest-rank over the pooled samples of every repeat
    run at that rate and bound, so a run whose table p99 meets the bound is never called a miss."""
    warnings = []  # type: list
    pooled = {}  # type: dict
    for repeat in repeats or []:
        scenario = repeat.get("scenario") or {}
        if scenario.get("name") != "server" or not isinstance(scenario.get("qps"), (int, float)):
            continue
        achieved = scenario.get("achieved_qps")
        if isinstance(achieved, (int, float)) and achieved < 0.9 * scenario["qps"]:
            warnings.append("the board did not keep up with %.4g QPS: it served %.4g (the latencies are of a queue "
                            "that kept growing)" % (scenario["qps"], achieved))
        bound = scenario.get("latency_bound_s")
        if isinstance(bound, (int, float)):
            pooled.setdefault((scenario["qps"], bound), []).extend(repeat.get("samples_ns") or [])
    for (qps, bound), latencies in pooled.items():
        p99 = percentile(sorted(latencies), 0.99)
        if p99 is not None and p99 > bound * 1e9:
            warnings.append("the server run at %.4g QPS missed its p99 bound: p99 %.3f ms > %g ms"
                            % (qps, p99 / 1e6, bound * 1e3))
    return warnings


def issue_delay_warning(repeats):
    """A warning when a server scenario issued its queries late (its latencies still count from the scheduled
    arrival, but the arrivals were no longer the Poisson process asked for); None otherwise."""
    worst = 0
    for repeat in repeats or []:
        scenario = repeat.get("scenario") or {}
        delays = sorted(scenario.get("issue_delays_ns") or [])
        if scenario.get("name") == "server" and delays:
            worst = max(worst, percentile(delays, 0.99))
    if worst <= ISSUE_DELAY_WARN_NS:
        return None
    return ("the server scenario issued queries late (issue delay p99 %.0f us): onnxruntime's threads may hold "
            "every core; leave one to the harness (--threads with one fewer than the cores, or --no-spin-wait)"
            % (worst / 1e3))


def assess(telemetry, repeats=None):
    """Was the board in a state to measure? {valid, reasons (INVALID), warnings}.

    INVALID: throttling or under-voltage now at any snapshot, a "since boot" bit newly set over the run, or a
    clock below 90 % of its value before the run while the governor was `performance`.
    Warnings: a governor other than performance; a Jetson not in MAXN or without jetson_clocks; samples that
    failed to be taken; server queries issued late (`repeats`, when given).
    """
    reasons = []  # type: list
    warnings = []  # type: list
    late = issue_delay_warning(repeats)
    if late:
        warnings.append(late)
    warnings.extend(server_warnings(repeats))
    if not telemetry:
        return {"valid": True, "reasons": reasons, "warnings": warnings + ["no telemetry was recorded"]}
    if telemetry.get("sampler_errors"):
        warnings.append("telemetry sampling failed during the run (%s): throttling or clock drops then would go "
                        "unseen" % telemetry["sampler_errors"][0])
    before = telemetry.get("before") or {}
    after = telemetry.get("after") or {}
    snapshots = [s for s in [before] + list(telemetry.get("during") or []) + [after] if s]
    for snap in snapshots:
        throttled = (snap.get("rpi") or {}).get("throttled")
        if throttled and throttled["now"]:
            for what in throttled["now"]:
                reason = "Raspberry Pi: %s (get_throttled %s)" % (what, throttled["raw"])
                if reason not in reasons:
                    reasons.append(reason)
    first = ((before.get("rpi") or {}).get("throttled") or {}).get("value")
    last = ((after.get("rpi") or {}).get("throttled") or {}).get("value")
    if first is not None and last is not None:
        for bit in (16, 17, 18, 19):
            if last & (1 << bit) and not first & (1 << bit):
                reasons.append("Raspberry Pi: %s during the run (get_throttled 0x%x -> 0x%x)" % (THROTTLE_BITS[bit], first, last))
    start = before.get("cpu") or {}
    for name, state in sorted(start.items()):
        if state.get("governor") != "performance" or not state.get("cur_khz"):
            continue
        lowest = min([(s.get("cpu") or {}).get(name, {}).get("cur_khz") or state["cur_khz"] for s in snapshots[1:]] or [state["cur_khz"]])
        if lowest < CLOCK_DROP_FRACTION * state["cur_khz"]:
            reasons.append("%s clock dropped from %d to %d MHz during the run" % (name, state["cur_khz"] // 1000, lowest // 1000))
    governors = sorted(set(s.get("governor") for s in start.values() if s.get("governor")))
    if governors and governors != ["performance"]:
        warnings.append("cpufreq governor is %s, not performance: clocks vary with load "
                        "(echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)" % ", ".join(governors))
    jetson = before.get("jetson") or {}
    mode = (jetson.get("nvpmodel") or {}).get("name")
    if mode and mode.upper() != "MAXN":
        warnings.append("Jetson power mode is %s, not MAXN (sudo nvpmodel -m 0)" % mode)
    if (jetson.get("jetson_clocks") or {}).get("state") == "off":
        warnings.append("jetson_clocks is off: clocks scale with load (sudo jetson_clocks)")
    return {"valid": not reasons, "reasons": reasons, "warnings": warnings}
