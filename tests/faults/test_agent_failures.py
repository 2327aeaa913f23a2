"""The agent never calls its own bug "killed": every failure reaches the host as a reply with a true kind.

The agent runs as a real process. Where a fault cannot be produced on demand by a real component (a bug in our
own code, a C library writing to stdout mid-run), one function is replaced inside that real process to inject it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import EXAMPLES, FAST_REQUEST, FAST_RUN, REPO

pytestmark = pytest.mark.fault

CNN = EXAMPLES / "cnn.onnx"
AGENT_PATH = str(REPO / "agent")


def _agent(args, *, inject: str = "", stdin: str | None = None, timeout: float = 120, python_flags=()):
    """Run `python -m edgebench_agent ARGS` as a real process; `inject` is Python run first inside it."""
    code = (f"import sys; sys.path.insert(0, {AGENT_PATH!r})\n{inject}\n"
            "from edgebench_agent.__main__ import main\nsys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, *python_flags, "-c", code, *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def _request(tmp_path, **extra) -> str:
    return json.dumps({"model": str(CNN), **FAST_REQUEST, **extra})


def test_a_bug_in_the_agent_is_internal_with_its_traceback(tmp_path):
    inject = ("import edgebench_agent.runner as r\n"
              "def broken(*a, **k):\n    raise ZeroDivisionError('injected agent bug')\n"
              "r.timed_loop = broken")
    done = _agent(["run", "--request", "-"], inject=inject, stdin=_request(tmp_path))
    reply = json.loads(done.stdout)
    assert done.returncode == 1
    assert reply["status"] == "failed"
    assert reply["error"]["kind"] == "internal"
    assert "ZeroDivisionError: injected agent bug" in reply["error"]["message"]
    assert "injected agent bug" in reply["error"]["traceback"] and "broken" in reply["error"]["traceback"]


def test_an_onnxruntime_failure_mid_run_is_kind_onnxruntime(tmp_path):
    # Loads fine; fails at run time because the generated 'shape' values cannot reshape 6 elements.
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 3])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [2])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Reshape", ["data", "shape"], ["out"])], "g", [data, shape], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "reshape.onnx"))
    done = _agent(["run", "--request", "-"], stdin=json.dumps({"model": str(tmp_path / "reshape.onnx"), **FAST_REQUEST,
                                                                 "values": {"shape": 7}}))
    reply = json.loads(done.stdout)
    assert done.returncode == 1
    assert reply["error"]["kind"] == "onnxruntime", reply["error"]
    assert "Reshape" in reply["error"]["message"] or "reshape" in reply["error"]["message"].lower()


def test_a_corrupt_npz_on_the_board_is_an_input_error_with_a_json_reply(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    done = _agent(["run", "--request", "-"], stdin=_request(tmp_path, inputs=str(tmp_path / "bad.npz")))
    assert done.returncode == 2
    reply = json.loads(done.stdout)
    assert reply["error"]["kind"] == "input" and "bad.npz" in reply["error"]["message"]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("writer", ["python", "c"])
def test_a_stray_write_to_stdout_mid_run_never_corrupts_the_reply(tmp_path, writer):
    if writer == "python":
        noise = "print('stray print from a library')"
    else:  # libc's own stdout buffer, flushed by fflush: what printf in onnxruntime or a BLAS would do
        noise = ("import ctypes; libc = ctypes.CDLL(None); libc.printf(b'stray printf from C\\n'); libc.fflush(None); "
                 "import os; os.write(1, b'stray write to fd 1\\n')")
    inject = ("import edgebench_agent.runner as r\n_loop = r.timed_loop\n"
              f"def noisy(*a, **k):\n    {noise}\n    return _loop(*a, **k)\n"
              "r.timed_loop = noisy")
    done = _agent(["run", "--request", "-"], inject=inject, stdin=_request(tmp_path))
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)  # exactly one JSON document
    assert reply["status"] == "ok"
    assert "stray" in done.stderr  # the noise went somewhere a person can still see it


def test_sigterm_mid_run_is_recorded_as_interrupted(tmp_path):
    (tmp_path / "request.json").write_text(_request(tmp_path, min_seconds=30.0, max_seconds=60.0))
    process = subprocess.Popen([sys.executable, "-m", "edgebench_agent", "run", "--request", tmp_path / "request.json"],
                               cwd=AGENT_PATH, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    seen = ""
    while '"phase": "measure"' not in seen and time.monotonic() < deadline:  # wait until it is measuring
        seen += process.stderr.readline()
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=60)
    reply = json.loads(stdout)
    assert process.returncode == 1
    assert reply["error"]["kind"] == "interrupted"


def test_a_board_without_numpy_or_onnxruntime_is_told_what_to_install(bench, tmp_path):
    bundle = tmp_path / "agent.pyz"
    assert bench("agent", "bundle", "-o", bundle).code == 0
    # -S: no site-packages, so neither numpy nor onnxruntime can be imported, as on a bare board.
    done = subprocess.run([sys.executable, "-I", "-S", str(bundle), "run", str(CNN)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "numpy is not installed" in lines[0] and "pip install numpy onnxruntime" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    done = subprocess.run([sys.executable, "-I", "-S", str(bundle), "run", "--request", "-"], input=_request(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and json.loads(done.stdout)["error"]["kind"] == "usage"


def test_a_detached_job_whose_agent_has_a_bug_is_not_called_killed(bench, tmp_path):
    """Through deploy: the board's reply says internal, and the stored result keeps the traceback tail."""
    sitecustomize = tmp_path / "inject" / "sitecustomize.py"
    sitecustomize.parent.mkdir()
    # Python imports sitecustomize at start-up: it patches the runner whenever the agent (a .pyz) imports it.
    sitecustomize.write_text(
        "import importlib.abc, importlib.util, sys\n"
        "class Inject(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name != 'edgebench_agent.runner':\n"
        "            return None\n"
        "        sys.meta_path.remove(self)\n"
        "        spec = importlib.util.find_spec(name)\n"
        "        run_module = spec.loader.exec_module\n"
        "        def exec_module(module):\n"
        "            run_module(module)\n"
        "            def broken(*a, **k):\n"
        "                raise KeyError('injected')\n"
        "            module.warm_up = broken\n"
        "        spec.loader.exec_module = exec_module\n"
        "        return spec\n"
        "sys.meta_path.insert(0, Inject())\n")
    inventory = tmp_path / "targets.yaml"
    inventory.write_text(f"targets:\n  buggy:\n    kind: local\n    env:\n      PYTHONPATH: {sitecustomize.parent}\n")
    done = bench("deploy", CNN, "--target", "buggy", "--inventory", inventory, "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 1
    document = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    assert document["status"] == "failed"
    assert document["error"]["kind"] == "internal", document["error"]
    assert "KeyError" in document["error"]["traceback"]
    assert "killed" not in document["error"]["message"]


def test_standalone_run_summary_on_failure_is_one_readable_block(tmp_path):
    inject = ("import edgebench_agent.runner as r\n"
              "def broken(*a, **k):\n    raise RuntimeError('injected')\n"
              "r.warm_up = broken")
    done = _agent(["run", str(CNN), *FAST_RUN], inject=inject)
    assert done.returncode == 1
    assert "FAILED" in done.stdout and "internal" in done.stdout
    assert "Traceback" not in done.stderr
