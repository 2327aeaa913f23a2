"""Bad inputs not covered beside their feature's tests: each is one line, a non-zero exit, nothing written.
And the security checks of the whole source tree."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import EXAMPLES, FAST_RUN, REPO, assert_one_line_error

pytestmark = pytest.mark.bad_input


def test_pickled_npz_inputs_are_refused(bench, tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, image=np.array([{"payload": 1}], dtype=object))
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--inputs", path, "--results", tmp_path / "r", *FAST_RUN)
    assert_one_line_error(done, "holds pickled objects, which edgebench never loads")
    assert not list(tmp_path.rglob("*.json"))


def test_an_op_the_boards_onnxruntime_lacks(bench, tmp_path):
    graph = helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "custom.onnx"))
    done = bench("deploy", tmp_path / "custom.onnx", "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 2
    assert_one_line_error(done, "onnxruntime cannot load", "Frobnicate")
    assert not list((tmp_path / "r").glob("*.json")) if (tmp_path / "r").exists() else True


@pytest.mark.parametrize("name", ["x;touch PWNED", "$(touch PWNED)", "a b", "`id`"])
def test_target_names_with_shell_metacharacters(bench, tmp_path, name):
    done = bench("deploy", EXAMPLES / "cnn.onnx", "--target", name, "--results", tmp_path / "r", cwd=tmp_path)
    assert done.code == 2
    assert_one_line_error(done, "unknown target")
    assert not list(tmp_path.rglob("PWNED"))


SOURCES = [p for p in (REPO / "host").rglob("*.py")] + [p for p in (REPO / "agent").rglob("*.py")]


@pytest.mark.parametrize("pattern, why", [
    (r"AutoAddPolicy|WarningPolicy", "host keys are always verified"),
    (r"shell\s*=\s*True", "no shell strings: argv lists, quoted"),
    (r"pickle\.loads?\(|allow_pickle\s*=\s*True", "no pickle across the wire or on disk"),
    (r"^(?!.*weights_only=True).*torch\.load\(", "torch.load only with weights_only=True"),
    (r"(?<![.\w])(?<!def )(eval|exec)\(", "no eval/exec builtins"),
])
def test_security_rules_hold_in_every_source_file(pattern, why):
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in SOURCES for n, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(pattern, line) and not line.strip().startswith("#")]
    assert not offenders, f"{why}: {offenders}"
