"""The board agent: protocol, inputs for every dtype, calibration, and info/run round trips (real onnxruntime)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import itertools

from edgebench.boards.board import Board
from edgebench.errors import InputError
from edgebench.boards.targets import Target
from edgebench_agent import protocol, runner
from edgebench_agent.shared.inputs import InputError as AgentInputError
from edgebench_agent.shared.files import sha256_file
from edgebench_agent.shared.inputs import build_feeds, load_npz
from tests.conftest import FAST_REQUEST
from tests.models.make_models import DTYPES


class LocalClient:
    """The local board, with run ids made up per call (what deploy does for each model)."""

    _ids = itertools.count()

    def __init__(self):
        self.board = Board(Target("local"))

    def info(self):
        return self.board.info()

    def run(self, request, timeout):
        run_id = f"test-run-{next(self._ids)}-{id(self)}"
        reply = self.board.run(request, run_id, {}, timeout)
        self.board.mark_fetched(run_id)
        return reply


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # restored when the module's tests are done
        patch.setenv("EDGEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "edgebench-cache"))
        local = LocalClient()
        yield local
        local.board.close()


def request(model, **extra):
    return protocol.normalize_run_request({"model": str(model), **FAST_REQUEST, **extra})


@pytest.mark.bad_input
# ----------------------------------------------------------------------------------------- protocol
@pytest.mark.parametrize("raw, message", [
    ({"model": "m.onnx", "min_iterations": 0}, "min_iterations must be at least 1"),
    ({"model": "m.onnx", "min_iterations": -5}, "min_iterations must be at least 1"),
    ({"model": "m.onnx", "repeats": 0}, "repeats must be at least 1"),
    ({"model": "m.onnx", "intra_op_threads": 100000}, "intra_op_threads must be between 0"),
    ({"model": "m.onnx", "iterations": 5}, "unknown request field(s): iterations"),
    ({"model": "m.onnx", "protocol_version": 99}, "upgrade the agent"),
    ({"model": "m.onnx", "dims": {"batch": 0}}, "must be a positive integer"),
    ({"model": "m.onnx", "graph_optimization_level": "max"}, "graph_optimization_level must be one of"),
    ({}, "'model' must be the path"),
])
def test_bad_requests_are_refused_with_the_field_named(raw, message):
    with pytest.raises(protocol.RequestError, match=None) as caught:
        protocol.normalize_run_request(raw)
    assert message in str(caught.value)


def test_request_defaults_and_provider_alias():
    req = protocol.normalize_run_request({"model": "m.onnx", "provider": "cpu"})
    assert req["provider"] == "CPUExecutionProvider"
    assert req["min_iterations"] == protocol.RUN_DEFAULTS["min_iterations"]


# ------------------------------------------------------------------------------------------- inputs
def test_generated_inputs_for_every_dtype_are_seeded_and_typed():
    signature = [(f"in_{d}", f"tensor({'float' if d == 'float32' else 'double' if d == 'float64' else d})", [2, 3])
                 for d in DTYPES]
    feeds, described = build_feeds(signature, seed=7)
    again, _ = build_feeds(signature, seed=7)
    for name, ort_type, _ in signature:
        dtype = name[3:]
        assert feeds[name].dtype == np.dtype(dtype), name
        assert feeds[name].shape == (2, 3)
        np.testing.assert_array_equal(feeds[name], again[name])
    assert {d["source"] for d in described} == {"generated"}
    ints = feeds["in_int64"]
    assert ints.min() >= 0 and ints.max() < 10  # small non-negative: valid indices


def test_scalar_value_and_free_dims():
    signature = [("audio", "tensor(float)", [1, "samples"]), ("sample_rate", "tensor(int64)", [])]
    feeds, described = build_feeds(signature, values={"sample_rate": 16000}, dims={"samples": 480})
    assert feeds["sample_rate"].shape == () and int(feeds["sample_rate"]) == 16000
    assert feeds["audio"].shape == (1, 480)
    assert [d["source"] for d in described] == ["generated", "value"]


def test_unresolved_free_dim_is_named():
    with pytest.raises(AgentInputError, match=r"input 'x' axis 1 is a free dimension \(unnamed\).*--dim x:1=N"):
        build_feeds([("x", "tensor(float)", ["batch", None])], dims={"batch": 2})


def test_user_npz_wins_and_mismatches_are_named(tmp_path):
    signature = [("x", "tensor(float)", ["batch", 4]), ("y", "tensor(int64)", [2])]
    good = tmp_path / "good.npz"
    np.savez(good, x=np.ones((3, 4), np.float32))
    feeds, described = build_feeds(signature, user_arrays=load_npz(good))
    assert feeds["x"].shape == (3, 4) and described[0]["source"] == "file"
    assert described[1]["source"] == "generated"
    with pytest.raises(AgentInputError, match="input 'x' must be float32 but the supplied array is float64"):
        build_feeds(signature, user_arrays={"x": np.ones((3, 4))})
    with pytest.raises(AgentInputError, match="axis 1 is fixed at 4 in the model but the supplied array has 5"):
        build_feeds(signature, user_arrays={"x": np.ones((3, 5), np.float32)})
    with pytest.raises(AgentInputError, match="no model input named 'z'; the model's inputs are: x, y"):
        build_feeds(signature, user_arrays={"z": np.ones(1)})


@pytest.mark.bad_input
def test_pickled_npz_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(AgentInputError, match="pickled objects"):
        load_npz(path)


# -------------------------------------------------------------------------------------- calibration
class FakeClock:
    """perf_counter_ns stand-in: each run costs the next duration from a list."""

    def __init__(self, durations):
        self.now = 0
        self.durations = list(durations)
        self.pending = 0

    def __call__(self):
        self.now += self.pending
        self.pending = 0
        return self.now

    def run(self, *args):
        self.pending = self.durations.pop(0) if self.durations else 1000


def test_warmup_runs_until_the_median_settles():
    # Caches warming up: 5000 ns decaying towards 1000 ns. Warm-up must go on while the median still
    # moves by more than 2% between windows, and stop soon after it no longer does.
    clock = FakeClock([round(1000 + 4000 * 0.85**i) for i in range(1000)])
    samples, settled = runner.warm_up(clock.run, 5, 500, 10.0, 0.02, clock=clock)
    assert settled
    assert 35 <= len(samples) <= 60, len(samples)
    assert samples[-1] <= 1000 * 1.02


def test_warmup_is_bounded_when_it_never_settles():
    clock = FakeClock([1000 * (i % 7 + 1) ** 2 for i in range(1000)])
    samples, settled = runner.warm_up(clock.run, 5, 50, 10.0, 0.001, clock=clock)
    assert not settled and len(samples) == 50


def test_timed_loop_needs_both_minimums():
    # 1 ms per run: 5 iterations happen long before 0.1 s; the loop must go on to 100 iterations.
    clock = FakeClock([1_000_000] * 1000)
    samples = runner.timed_loop(clock.run, {}, 5, 0.1, 10_000, 10.0, clock=clock)
    assert len(samples) == 100
    # 100 ms per run: 0.1 s passes at once; the loop must still reach 5 iterations.
    clock = FakeClock([100_000_000] * 1000)
    assert len(runner.timed_loop(clock.run, {}, 5, 0.1, 10_000, 10.0, clock=clock)) == 5
    # The maximum time wins over the minimum count.
    clock = FakeClock([1_000_000_000] * 1000)
    assert len(runner.timed_loop(clock.run, {}, 50, 0.1, 10_000, 3.0, clock=clock)) == 3


# ---------------------------------------------------------------------------------- round trips
def test_info_round_trip(client):
    info = client.info()
    assert info["protocol_version"] == protocol.PROTOCOL_VERSION
    assert "CPUExecutionProvider" in info["providers"]
    assert info["machine"]["arch"] and info["machine"]["cpu_count"] >= 1
    assert info["numpy_version"] == np.__version__


def test_run_round_trip_reports_every_phase(client, tiny_models):
    reply = client.run(request(tiny_models["matmul"], repeats=2), timeout=60)
    assert reply["status"] == "ok", reply
    assert len(reply["repeats"]) == 2
    for repeat in reply["repeats"]:
        assert repeat["session_create_ns"] > 0 and repeat["first_inference_ns"] > 0
        assert len(repeat["samples_ns"]) >= 5 and all(isinstance(s, int) and s > 0 for s in repeat["samples_ns"])
        # min_seconds (0.02 s of wall time) dominates min_iterations (5) for a model of microseconds.
        assert len(repeat["samples_ns"]) > 100 and sum(repeat["samples_ns"]) > 0.01e9
    assert reply["outputs"] == [{"name": "y", "shape": [1, 64], "dtype": "float32"}]
    assert reply["memory"]["peak_rss_bytes"] > 10 * 2**20
    assert reply["model"]["sha256"] == sha256_file(str(tiny_models["matmul"]))


def test_every_dtype_runs_through_the_agent(client, tiny_models):
    reply = client.run(request(tiny_models["all_dtypes"]), timeout=60)
    assert reply["status"] == "ok", reply
    assert {o["name"][4:]: o["dtype"] for o in reply["outputs"]} == {d: ("bool" if d == "bool" else d) for d in DTYPES}


def test_scalar_and_free_dim_through_the_agent(client, tiny_models):
    reply = client.run(request(tiny_models["scalar_input"], values={"sample_rate": 16000}, dims={"samples": 160}),
                       timeout=60)
    assert reply["status"] == "ok", reply
    assert reply["inputs"] == [
        {"name": "audio", "shape": [1, 160], "dtype": "float32", "source": "generated"},
        {"name": "sample_rate", "shape": [], "dtype": "int64", "source": "value"},
    ]
    with pytest.raises(InputError, match="free dimension 'samples'"):
        client.run(request(tiny_models["scalar_input"]), timeout=60)


def test_npz_inputs_through_the_agent(client, tiny_models, tmp_path):
    path = tmp_path / "in.npz"
    np.savez(path, x=np.ones((5, 7, 4), np.float32))
    reply = client.run(request(tiny_models["free_dims"], inputs=str(path)), timeout=60)
    assert reply["status"] == "ok", reply
    assert reply["inputs"][0]["shape"] == [5, 7, 4] and reply["inputs"][0]["source"] == "file"
    assert reply["outputs"][0]["shape"] == [5, 7, 4]


@pytest.mark.bad_input
def test_unavailable_provider_is_an_error_not_a_cpu_fallback(client, tiny_models):
    with pytest.raises(InputError, match="execution provider TensorrtExecutionProvider is not available"):
        client.run(request(tiny_models["matmul"], provider="tensorrt"), timeout=60)


def test_agent_cli_keeps_stdout_for_one_json_document(tiny_models, tmp_path):
    """Standalone flags, --json and --out: stdout holds exactly the JSON document, --out the same one."""
    import subprocess
    import sys

    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "edgebench_agent", "run", str(tiny_models["matmul"]), "--json", "--out", str(out),
         "--min-iterations", "5", "--min-seconds", "0.01", "--warmup", "1"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["status"] == "ok"
    assert json.loads(out.read_text()) == document


def test_agent_usage_error_exit_code_and_json(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "edgebench_agent", "run", "--request", "-"],
                          input='{"model": "/nonexistent.onnx"}', capture_output=True, text=True, timeout=60)
    assert done.returncode == protocol.EXIT_USAGE
    assert json.loads(done.stdout)["error"]["message"] == "model file not found: /nonexistent.onnx"
