"""The agent on its own: one .pyz on a board with only python3 + numpy + onnxruntime, results brought home."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edgebench.results import files as results
from tests.conftest import EXAMPLES, OLD_STACK, assert_one_line_error

DIGITS = EXAMPLES / "digits.onnx"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    import os
    import sys

    out = tmp_path_factory.mktemp("bundle") / "edgebench-agent.pyz"
    done = subprocess.run([sys.executable, "-m", "edgebench", "agent", "bundle", "-o", str(out)], capture_output=True,
                          text=True, env={**os.environ, "EDGEBENCH_CACHE": str(tmp_path_factory.mktemp("cache"))})
    assert done.returncode == 0, done.stderr
    return out


def test_the_bundle_is_the_deploy_agent(bundle):
    from edgebench.boards.agent_bundle import ensure_bundle

    assert bundle.read_bytes() == ensure_bundle().read_bytes()


def test_help_documents_every_command_and_option(bundle, old_python):
    top = subprocess.run([str(old_python), str(bundle), "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0
    for command in ("info", "run", "launch", "attach", "kill", "runs", "sha256", "clean"):
        assert command in top.stdout
    run = subprocess.run([str(old_python), str(bundle), "run", "--help"], capture_output=True, text=True, timeout=60).stdout
    for option in ("--inputs", "--value", "--dim", "--batch", "--warmup", "--min-iterations", "--min-seconds",
                   "--max-iterations", "--max-seconds", "--repeats", "--threads", "--inter-op-threads",
                   "--provider", "--provider-option", "--graph-optimization", "--cpus", "--spin-wait",
                   "--cooldown", "--profile", "--dataset", "--batch-size", "--json", "--out"):
        assert option in run, option


def test_the_bundle_unpacks_itself_only_into_a_cache_it_is_given(bundle, tmp_path):
    """From a zip, Python compiles every module at every start; given --cache, a bundle named by its content (as
    the host uploads it) runs from an unpacked copy there (bytecode kept). Never beside a person's .pyz, and never a
    copy of a file whose name does not say its content."""
    import os
    import sys

    from edgebench.boards.agent_bundle import ensure_bundle

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as on a board
    cache = tmp_path / "cache"
    cache.mkdir()
    mine = tmp_path / "mine" / "edgebench-agent.pyz"
    mine.parent.mkdir()
    mine.write_bytes(bundle.read_bytes())
    for argv in (["--help"], ["runs", "--cache", str(cache)]):
        assert subprocess.run([sys.executable, str(mine), *argv], capture_output=True, timeout=60, env=env).returncode == 0
    assert sorted(p.name for p in mine.parent.iterdir()) == ["edgebench-agent.pyz"]  # nothing written beside it
    assert not list(cache.iterdir())  # and no copy of a name that does not say its content
    uploaded = cache / ensure_bundle().name  # agent-<sha12>.pyz, as on a board
    uploaded.write_bytes(bundle.read_bytes())
    for _ in range(2):  # the first makes the copy, the second uses it
        listed = subprocess.run([sys.executable, str(uploaded), "runs", "--cache", str(cache)], capture_output=True,
                                text=True, timeout=60, env=env)
        assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed.stderr
    copy = cache / (uploaded.name + ".d")
    assert (copy / "edgebench_agent" / "__init__.py").is_file()
    assert list(copy.glob("edgebench_agent/__pycache__/jobs.*.pyc"))
    assert not list(cache.glob(".unpack-*"))


def _standalone_run(python: Path, bundle: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-I", str(bundle), "run", str(DIGITS), "--batch", "1", "--min-seconds", "0.3",
                           "--warmup", "2", "--out", str(out), *extra], capture_output=True, text=True, timeout=300)


def test_standalone_on_an_old_stack_board_then_imported_next_to_a_deploy(bench, tmp_path, bundle, old_python):
    """Python 3.8, onnxruntime 1.19.2, numpy 1.24.4, no edgebench installed (-I: no site, no PYTHONPATH)."""
    out = tmp_path / "board" / "result.json"
    out.parent.mkdir()
    done = _standalone_run(old_python, bundle, out, "--dataset", str(EXAMPLES / "digits_test.npz"), "--profile")
    assert done.returncode == 0, done.stderr
    assert "accuracy  top-1 99.44% (358/360)" in done.stdout and "profile   Conv" in done.stdout
    assert "p50" in done.stdout and "bench import" in done.stdout
    reply = json.loads(out.read_text())
    assert reply["info"]["onnxruntime_version"] == OLD_STACK["onnxruntime"]
    assert reply["info"]["python"]["version"].startswith("3.8.")
    assert list(out.parent.glob("profile*.json"))  # the trace stays beside the result
    # The same model deployed from the host, then both compared.
    assert bench("deploy", DIGITS, "--dim", "batch=1", "--results", tmp_path / "r", "--min-seconds", "0.3").code == 0
    imported = bench("import", out, "--target", "old-board", "--model", DIGITS, "--results", tmp_path / "r")
    assert imported.code == 0, imported.stderr
    documents = {d["target"]["name"]: d for d in (results.load_result(p) for p in (tmp_path / "r").glob("*.json"))}
    assert set(documents) == {"local", "old-board"}
    old = documents["old-board"]
    assert old["origin"]["kind"] == "import" and old["target"]["kind"] == "standalone"
    assert old["model"]["sha256"] == documents["local"]["model"]["sha256"]
    assert old["accuracy"]["labels"]["board"]["top1_correct"] == 358
    assert old["profile"]["top_operators"][0]["op_type"]
    compare = json.loads(bench("compare", tmp_path / "r", "--by", "model,target", "--baseline", "target=local",
                               "--format", "json").stdout)
    rows = {r["target"]: r for r in compare}  # an imported run never passes as a deployed one
    assert rows["local"]["verdict"] == "baseline" and rows["old-board (imported)"]["verdict"] in (
        "faster", "slower", "no significant difference")
    assert rows["old-board (imported)"]["top1_pct"] == pytest.approx(99.444, abs=0.01)
    # The same file again: not stored twice.
    again = bench("import", out, "--results", tmp_path / "r")
    assert_one_line_error(again, "is already in", "not stored twice")


@pytest.fixture
def standalone_result(tmp_path, bundle):
    import sys

    out = tmp_path / "result.json"
    assert _standalone_run(Path(sys.executable), bundle, out).returncode == 0
    return out


@pytest.mark.bad_input
def test_a_tampered_result_is_refused(bench, tmp_path, standalone_result):
    reply = json.loads(standalone_result.read_text())
    reply["repeats"][0]["samples_ns"] = [s // 2 for s in reply["repeats"][0]["samples_ns"]]  # "twice as fast"
    standalone_result.write_text(json.dumps(reply))
    done = bench("import", standalone_result, "--results", tmp_path / "r")
    assert_one_line_error(done, "was modified after the agent wrote it")
    assert not (tmp_path / "r").exists()


@pytest.mark.bad_input
def test_a_future_protocol_is_refused(bench, tmp_path, standalone_result):
    reply = json.loads(standalone_result.read_text())
    reply["protocol_version"] = 99
    standalone_result.write_text(json.dumps(reply))
    assert_one_line_error(bench("import", standalone_result, "--results", tmp_path / "r"), "protocol 99", "upgrade edgebench")


@pytest.mark.bad_input
def test_a_model_that_does_not_match_is_refused(bench, tmp_path, standalone_result):
    done = bench("import", standalone_result, "--model", EXAMPLES / "cnn.onnx", "--results", tmp_path / "r")
    assert_one_line_error(done, "ran a model with sha256", "cnn.onnx is", "refused")


@pytest.mark.bad_input
def test_not_an_agent_result_is_refused(bench, tmp_path):
    (tmp_path / "x.json").write_text('{"schema_version": 1}')
    assert_one_line_error(bench("import", tmp_path / "x.json", "--results", tmp_path / "r"),
                          "is not a result of `edgebench-agent run`")
