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


# (pattern, why, the one place allowed to match or None). A line matching the pattern anywhere else fails the build.
SECURITY_RULES = [
    (r"AutoAddPolicy|WarningPolicy", "host keys are always verified", None),
    (r"shell\s*=\s*True", "no shell strings: argv lists, quoted", None),
    (r"pickle\.loads?\(|allow_pickle\s*=\s*True|import (c?pickle|dill|joblib)\b|shelve\.",
     "no pickle across the wire or on disk", None),
    (r"^(?!.*weights_only=True).*torch\.load\(", "torch.load only with weights_only=True", None),
    (r"torch\.export\.load\(", "a .pt2 is loaded only through the checked, weights-only path",
     "host/edgebench/models/torchmodel.py:load_exported_program"),
    (r"yaml\.(unsafe_)?load(_all)?\(|yaml\.(Full|Unsafe)?Loader\b|yaml\.full_load", "YAML only with a safe loader",
     None),
    (r"(?<![.\w])(?<!def )(eval|exec)\(", "no eval/exec builtins", None),
    (r"\[\s*[\"']env[\"']\s*,(?!\s*[\"']--[\"'])", "`env` argv ends its options with -- before user data", None),
    (r"os\.system\(|os\.popen\(|subprocess\.\w+\(\s*f?[\"']", "commands are argv lists, never one string", None),
]


def _where(path: Path, number: int, lines: list[str]) -> str:
    """file:function of a line (the nearest enclosing def above it)."""
    for line in reversed(lines[:number]):
        match = re.match(r"\s*def (\w+)", line)
        if match:
            return f"{path.relative_to(REPO)}:{match[1]}"
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("pattern, why, allowed", SECURITY_RULES, ids=[r[1] for r in SECURITY_RULES])
def test_security_rules_hold_in_every_source_file(pattern, why, allowed):
    offenders = []
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if re.search(pattern, line) and not line.strip().startswith("#"):
                if allowed is None or _where(path, number, lines) != allowed:
                    offenders.append(f"{path.relative_to(REPO)}:{number}")
    assert not offenders, f"{why}: {offenders}"


@pytest.mark.parametrize("line, rule", [
    ('    state = torch.load(path)', "torch.load only with weights_only=True"),
    ('    program = torch.export.load(str(path))', "a .pt2 is loaded only through the checked, weights-only path"),
    ('    data = yaml.load(text, Loader=yaml.Loader)', "YAML only with a safe loader"),
    ('    argv = ["env", *pairs, python]', "`env` argv ends its options with -- before user data"),
    ('    import pickle', "no pickle across the wire or on disk"),
    ('    subprocess.run(f"ssh {host}")', "commands are argv lists, never one string"),
])
def test_each_security_rule_catches_what_it_forbids(line, rule):
    pattern = next(p for p, why, _ in SECURITY_RULES if why == rule)
    assert re.search(pattern, line)
    assert not re.search(pattern, '    argv = ["env", "--", *pairs, python]') or rule != "`env` argv ends its options with -- before user data"
