"""`bench doctor`: is a board ready to run the agent? Each finding says what to install when it is not."""

from __future__ import annotations

from dataclasses import dataclass

MIN_PYTHON = (3, 8)
MIN_FREE_BYTES = 500 * 2**20


@dataclass
class Finding:
    what: str
    ok: bool
    detail: str
    fix: str = ""


def diagnose(target, info: dict) -> list[Finding]:
    from ..agentlib import provider_name

    findings = []
    python = info["python"]["version"]
    version = tuple(int(p) for p in python.split(".")[:2])
    findings.append(Finding("python", version >= MIN_PYTHON, f"{python} ({info['python']['executable']})",
                            "install python3 >= 3.8 on the board"))
    pip = "python3 -m pip install"
    findings.append(Finding("numpy", bool(info.get("numpy_version")), info.get("numpy_version") or "missing",
                            f"{pip} numpy"))
    ort = info.get("onnxruntime_version")
    jetson = "jetson" in (info["machine"].get("board_model") or "").lower()
    findings.append(Finding("onnxruntime", bool(ort), ort or "missing",
                            "install onnxruntime-gpu for your JetPack from NVIDIA's Jetson Zoo" if jetson else f"{pip} onnxruntime"))
    providers = info.get("providers") or []
    wanted = [provider_name(p) for p in target.providers]
    lacking = [p for p in wanted if p not in providers]
    findings.append(Finding("providers", not lacking and bool(providers),
                            ", ".join(providers) + (f" (missing: {', '.join(lacking)})" if lacking else ""),
                            "install an onnxruntime build with " + ", ".join(lacking) if lacking else ""))
    runtimes = info.get("runtimes")
    if isinstance(runtimes, dict):  # informational: onnxruntime alone is a ready board; the others are --runtime
        others = [f"{name} {version}" for name, version in runtimes.items() if name != "onnxruntime"]
        findings.append(Finding("runtimes", True, ", ".join(others) if others else
                                "onnxruntime only (add others with pip install openvino / ncnn / ai-edge-litert)"))
    machine = info["machine"]
    findings.append(Finding("machine", True, f"{machine['arch']}, {machine.get('cpu_model') or 'unknown CPU'}, "
                            f"{machine.get('cpu_count')} cores, {(machine.get('memory_total_bytes') or 0) / 2**30:.1f} GiB"
                            + (f", {machine['board_model']}" if machine.get("board_model") else "")))
    energy = info.get("energy")
    if isinstance(energy, dict):  # informational: a board without a power sensor is still ready to benchmark
        findings.append(Finding("energy", True, f"{energy.get('source')} ({energy.get('scope')})" if energy.get("available")
                                else f"none found ({energy.get('reason')}); --power-command reads an external meter"))
    cache = info.get("cache") or {}
    free = cache.get("free_bytes")
    if free is not None:
        findings.append(Finding("disk", free >= MIN_FREE_BYTES, f"{free / 2**30:.1f} GiB free in {cache['path']}",
                                f"free space on the board or set work_dir; then bench clean --target {target.name}"))
    return findings


def raise_for_findings(target, findings: list[Finding]) -> None:
    from ..errors import BoardNotReady

    failed = [f for f in findings if not f.ok]
    if failed:
        raise BoardNotReady(f"{target.name} is not ready: " + "; ".join(f"{f.what}: {f.detail}" for f in failed),
                            " ".join(dict.fromkeys(f.fix for f in failed if f.fix)) or None)


# --------------------------------------------------------------------------------- `bench targets --check`
@dataclass
class Probe:
    ok: bool
    text: str  # "ok: aarch64, python 3.11.2, onnxruntime 1.20.1" or "FAIL: <why>"


def probe(target) -> Probe:
    """Connect and run the agent's info: the quick check of one target."""
    from ..boards.board import Board
    from ..errors import BenchError

    if target.kind == "labgrid":  # checked without taking a place from whoever may need it
        from ..boards.farm import matching_places

        try:
            places = matching_places(target)
        except BenchError as exc:
            return Probe(False, f"FAIL: {exc.message}")
        return Probe(True, f"ok: {len(places)} place(s): " + ", ".join(f"{p.name} {p.holder}" for p in places))
    try:
        with Board(target) as board:
            info = board.info()
    except BenchError as exc:
        return Probe(False, f"FAIL: {exc.message}")
    return Probe(True, f"ok: {info['machine']['arch']}, python {info['python']['version']}, "
                       f"onnxruntime {info.get('onnxruntime_version') or 'MISSING'}")


def probe_all(targets: list) -> dict[str, Probe]:
    """Every target at once (a dead board costs its connect timeout once, not once per board)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as pool:
        return dict(zip([t.name for t in targets], pool.map(probe, targets)))


def raise_for_unreachable(probes: dict[str, Probe]) -> None:
    from ..errors import TargetsUnreachable

    failed = sorted(name for name, result in probes.items() if not result.ok)
    if failed:
        raise TargetsUnreachable(f"{len(failed)} of {len(probes)} targets failed the check: {', '.join(failed)}",
                                 "see the check column; `bench doctor --target NAME` says more")
