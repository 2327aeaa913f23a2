"""Harness overhead: the agent's timed loop against a bare `session.run` loop, same model, one process.

Rounds alternate (agent loop, bare loop, agent loop, ...) so drift in the machine's speed hits both alike.
Prints the ratio of medians and the per-iteration overhead in microseconds.
Target: ratio <= 1.01 and overhead <= 2 us on a model of about 60 us.

    python benchmarks/overhead.py [--rounds 20] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from edgebench_agent.runner import timed_loop


def mlp(width: int, depth: int) -> onnx.ModelProto:
    """A chain of MatMul+Relu on [1, width]: its cost scales with width^2 * depth."""
    rng = np.random.default_rng(0)
    nodes, inits, previous = [], [], "x"
    for layer in range(depth):
        weight = rng.standard_normal((width, width)).astype(np.float32) / np.sqrt(width)
        inits.append(helper.make_tensor(f"w{layer}", TensorProto.FLOAT, weight.shape, weight.ravel()))
        nodes += [helper.make_node("MatMul", [previous, f"w{layer}"], [f"m{layer}"]),
                  helper.make_node("Relu", [f"m{layer}"], [f"r{layer}"])]
        previous = f"r{layer}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def bare_loop(session, feeds, seconds: float) -> list[int]:
    samples, clock, run = [], time.perf_counter_ns, session.run
    end = clock() + int(seconds * 1e9)
    while True:
        t0 = clock()
        run(None, feeds)
        t1 = clock()
        samples.append(t1 - t0)
        if t1 >= end:
            return samples


def session_for(model: onnx.ModelProto, folder: Path):
    path = folder / "mlp.onnx"
    onnx.save(model, str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=0.5, help="seconds per loop per round")
    parser.add_argument("--target-us", type=float, default=60.0, help="model latency to calibrate to")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        feeds = {"x": np.random.default_rng(1).standard_normal((1, 256)).astype(np.float32)}
        depth = 1
        while True:  # grow the model until one inference takes about --target-us
            session = session_for(mlp(256, depth), Path(folder))
            median_us = statistics.median(bare_loop(session, feeds, 0.2)) / 1e3
            if median_us >= args.target_us or depth >= 64:
                break
            depth = max(depth + 1, int(depth * args.target_us / median_us))
        agent_medians, bare_medians = [], []
        for _ in range(args.rounds):
            agent = timed_loop(session.run, feeds, 1, args.seconds, 10**9, args.seconds * 2)
            bare = bare_loop(session, feeds, args.seconds)
            agent_medians.append(statistics.median(agent))
            bare_medians.append(statistics.median(bare))
    agent_us = statistics.median(agent_medians) / 1e3
    bare_us = statistics.median(bare_medians) / 1e3
    print(f"model: MLP 256 x {depth} layers, 1 thread, onnxruntime {ort.__version__}")
    print(f"rounds: {args.rounds} x {args.seconds:.2f} s per loop, interleaved")
    print(f"bare session.run p50:   {bare_us:8.2f} us")
    print(f"agent timed loop p50:   {agent_us:8.2f} us")
    print(f"ratio agent/bare:       {agent_us / bare_us:8.4f}   (target <= 1.01)")
    print(f"overhead per iteration: {agent_us - bare_us:8.2f} us (target <= 2 us)")


if __name__ == "__main__":
    main()
