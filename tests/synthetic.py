"""Synthetic result documents with known latency distributions, for report tests and benchmarks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).parent / "golden" / "result_v5.json"
_TEMPLATE = json.loads(GOLDEN.read_text())


def result(samples_ns, *, run_id: str, model: str = "net", target: str = "board-a", threads: int = 0,
           status: str = "ok", valid: bool = True, reasons=(), top1: float | None = None) -> dict:
    document = copy.deepcopy(_TEMPLATE)
    document["run_id"] = run_id
    document["model"]["name"] = model
    document["target"]["name"] = target
    document["settings"]["intra_op_threads"] = threads
    document["status"] = status
    if status != "ok":
        document["error"] = {"kind": "killed", "message": "the agent process ended without a result"}
        document["measurements"] = None
    else:
        samples = [int(s) for s in samples_ns]
        document["measurements"]["repeats"] = [{"session_create_ns": 5_000_000, "first_inference_ns": 900_000,
                                                "warmup_ns": [], "warmup_settled": True, "samples_ns": samples}]
    document["validity"] = {"valid": valid, "reasons": list(reasons)}
    if top1 is not None:
        document["accuracy"] = {"passed": True, "outputs": [{"name": "scores", "max_abs": 0.0, "passed": True}],
                                "labels": {"board": {"top1_pct": top1, "count": 100, "top1_correct": int(top1)},
                                           "reference": {"top1_pct": top1, "count": 100, "top1_correct": int(top1)}}}
    return document


def lognormal_ns(rng, median_ms: float, n: int, sigma: float = 0.08) -> np.ndarray:
    return (rng.lognormal(np.log(median_ms * 1e6), sigma, n)).astype(np.int64)


def write(folder: Path, documents) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for document in documents:
        path = folder / f"{document['run_id']}.json"
        path.write_text(json.dumps(document))
        paths.append(path)
    return paths
