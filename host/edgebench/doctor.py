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
    from .agentlib import provider_name

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
    machine = info["machine"]
    findings.append(Finding("machine", True, f"{machine['arch']}, {machine.get('cpu_model') or 'unknown CPU'}, "
                            f"{machine.get('cpu_count')} cores, {(machine.get('memory_total_bytes') or 0) / 2**30:.1f} GiB"
                            + (f", {machine['board_model']}" if machine.get("board_model") else "")))
    cache = info.get("cache") or {}
    free = cache.get("free_bytes")
    if free is not None:
        findings.append(Finding("disk", free >= MIN_FREE_BYTES, f"{free / 2**30:.1f} GiB free in {cache['path']}",
                                f"free space on the board or set work_dir; then bench clean --target {target.name}"))
    return findings
