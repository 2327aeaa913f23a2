"""Pipeline stage timer overhead: the agent's per-stage timed loop against a bare loop of the same stages.

The digits example end to end (load a PGM frame from disk, downscale, run the model, take the top class), one
process. Rounds alternate (harness, bare, harness, ...) so drift in the machine's speed hits both alike; each
round runs the same samples the same number of times. Prints the ratio of median wall times and the overhead per
stage in microseconds. Target: <= 2 us per stage.

    python benchmarks/pipeline_timer.py [--rounds 15] [--iterations 3000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import onnxruntime as ort

from edgebench_agent.shared.inputs import session_signature
from edgebench_agent.shared.pipeline import STAGES, Cycle, list_samples, load_pipeline, timed_pipeline

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def bare(pipeline, run, paths, iterations: int) -> int:
    """The same stages with no clock between them: the wall time of `iterations` samples."""
    load, preprocess, postprocess = pipeline.load, pipeline.preprocess, pipeline.postprocess
    count = len(paths)
    start = time.perf_counter_ns()
    for index in range(iterations):
        postprocess(run(None, preprocess(load(paths[index % count]))))
    return time.perf_counter_ns() - start


def harness(pipeline, run, signature, paths, iterations: int) -> int:
    cycle = Cycle(pipeline, run, signature, paths)
    for _ in paths:  # each sample's feeds are checked once, the first time it is seen: not part of the loop timed
        cycle()
    start = time.perf_counter_ns()
    timed_pipeline(cycle, iterations, 0.0, iterations, 3600.0)
    return time.perf_counter_ns() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--iterations", type=int, default=3000)
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(EXAMPLES / "digits.onnx"), options, providers=["CPUExecutionProvider"])
    pipeline = load_pipeline(str(EXAMPLES / "digits_pipeline.py"))
    paths = list_samples(str(EXAMPLES / "digits_frames"))
    signature = session_signature(session)
    harness(pipeline, session.run, signature, paths, args.iterations)  # warm caches and the page cache
    timed, plain = [], []
    for _ in range(args.rounds):
        timed.append(harness(pipeline, session.run, signature, paths, args.iterations))
        plain.append(bare(pipeline, session.run, paths, args.iterations))
    with_timer, without = statistics.median(timed), statistics.median(plain)
    per_sample_us = (with_timer - without) / args.iterations / 1e3
    print(f"digits pipeline, {len(paths)} samples, {args.iterations} per round, {args.rounds} rounds")
    print(f"bare loop       {without / args.iterations / 1e3:8.2f} us per sample")
    print(f"stage-timed     {with_timer / args.iterations / 1e3:8.2f} us per sample")
    print(f"ratio           {with_timer / without:8.4f}")
    print(f"overhead        {per_sample_us / len(STAGES):8.3f} us per stage ({per_sample_us:.3f} us per sample, "
          f"{len(STAGES)} stages; target <= 2 us per stage)")


if __name__ == "__main__":
    main()
