"""Harness overhead: the agent's timed loop against each runtime's own bare loop, same model, one process.

Rounds alternate (agent loop, bare loop, agent loop, ...) so drift in the machine's speed hits both alike.
Prints the ratio of medians and the per-iteration overhead in microseconds, per runtime: onnxruntime
(`session.run`), OpenVINO (`InferRequest.infer`), ncnn (an extractor: input, extract) and LiteRT (set_tensor,
invoke, get_tensor); the agent's loop runs the same model through edgebench's runtime sessions. The model is
converted by `bench convert` (LiteRT from a PyTorch copy of the MLP; skipped when litert-torch is not set up).
Target: ratio <= 1.01 and overhead <= 2 us on a model of about 60 us.

    python benchmarks/overhead.py [--rounds 20] [--seconds 0.5] [--runtimes onnxruntime,openvino,ncnn,litert]
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


SPEC = """
import onnx, torch
from onnx import numpy_helper


def mlp():
    # the benchmark's MLP as a torch module, its weights read from the ONNX file beside this one
    weights = [numpy_helper.to_array(i) for i in sorted(onnx.load(__file__[:-3] + ".onnx").graph.initializer,
                                                         key=lambda i: int(i.name[1:]))]
    layers = []
    for w in weights:
        linear = torch.nn.Linear(w.shape[0], w.shape[1], bias=False)
        linear.weight.data = torch.from_numpy(w.T.copy())
        layers += [linear, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).eval()
"""


def bare_loops(runtime: str, session) -> object:
    """The runtime's own minimal inference call on a session of edgebench's (what a user would write by hand)."""
    if runtime == "onnxruntime":
        return session.run
    if runtime == "openvino":
        infer = session._request.infer
        return lambda _, feeds: infer(feeds)
    if runtime == "ncnn":
        import ncnn

        net, blob = session._net, ncnn.Mat

        def run(_, feeds):
            extractor = net.create_extractor()
            extractor.input("in0", blob(feeds["x"][0]))
            return extractor.extract("out0")

        return run
    interpreter = session._interpreter
    index_in = interpreter.get_input_details()[0]["index"]
    index_out = interpreter.get_output_details()[0]["index"]
    set_tensor, invoke, get_tensor = interpreter.set_tensor, interpreter.invoke, interpreter.get_tensor

    def run_litert(_, feeds):
        set_tensor(index_in, feeds["x"])
        invoke()
        return get_tensor(index_out)

    return run_litert


def runtime_sessions(names: list[str], model_path: Path) -> dict:
    """name -> edgebench's session of the MLP for that runtime (converted by `bench convert` where it must be)."""
    from edgebench.stages.convert import convert
    from edgebench.models.runtimes import runtime_session

    sessions = {}
    for name in names:
        path = model_path
        if name in ("ncnn", "litert"):
            spec = None
            if name == "litert":
                spec_path = model_path.with_suffix(".py")
                spec_path.write_text(SPEC)
                spec = f"{spec_path}:mlp"
            (variant,) = convert(model_path, [name], model_path.parent / "variants", spec=spec)
            if not variant.ok:
                print(f"{name}: skipped ({variant.error or 'outside its stated tolerance'})")
                continue
            path = variant.path
        sessions[name] = runtime_session(path, name, threads=1)
    return sessions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=0.5, help="seconds per loop per round")
    parser.add_argument("--target-us", type=float, default=60.0, help="model latency to calibrate to")
    parser.add_argument("--runtimes", default="onnxruntime,openvino,ncnn,litert")
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
        print(f"model: MLP 256 x {depth} layers, 1 thread; rounds: {args.rounds} x {args.seconds:.2f} s per loop, "
              "interleaved")
        sessions = runtime_sessions(args.runtimes.split(","), Path(folder) / "mlp.onnx")
        for name, runtime_session in sessions.items():
            bare_run = bare_loops(name, runtime_session)
            agent_medians, bare_medians = [], []
            for _ in range(args.rounds):
                timed_run = getattr(runtime_session, "timed_run", runtime_session.run)  # what the agent's loop calls
                agent = timed_loop(timed_run, feeds, 1, args.seconds, 10**9, args.seconds * 2)
                bare = bare_loop(_Bare(bare_run), feeds, args.seconds)
                agent_medians.append(statistics.median(agent))
                bare_medians.append(statistics.median(bare))
            agent_us = statistics.median(agent_medians) / 1e3
            bare_us = statistics.median(bare_medians) / 1e3
            print(f"{name:12s} bare p50 {bare_us:8.2f} us  agent p50 {agent_us:8.2f} us  ratio {agent_us / bare_us:7.4f} "
                  f"(target <= 1.01)  overhead {agent_us - bare_us:6.2f} us (target <= 2 us)")


class _Bare:
    def __init__(self, run):
        self.run = run


if __name__ == "__main__":
    main()
