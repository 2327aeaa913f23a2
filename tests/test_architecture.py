"""The import graph stays acyclic: a cycle means a shared piece wants its own module."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import REPO


# Each file's imports, read by a fresh interpreter: CPython 3.11.7's AST builder can fail with "SystemError: AST
# constructor recursion depth mismatch" in a long-lived pytest-xdist worker after the fault suite's asyncio relays
# ran (on a thread of its own too), so no syntax tree is built in this process.
_READER = """
import ast, json, sys
found = {}
for path in sys.argv[1:]:
    found[path] = [["import", None, 0, [a.name for a in node.names]] if isinstance(node, ast.Import)
                   else ["from", node.module, node.level, [a.name for a in node.names]]
                   for node in ast.walk(ast.parse(open(path).read(), path))
                   if isinstance(node, (ast.Import, ast.ImportFrom))]
print(json.dumps(found))
"""
_IMPORTS: dict[str, list] = {}


def _import_nodes(path: Path) -> list:
    """[kind ("import" or "from"), module, level, names] of every import statement in the file."""
    import subprocess
    import sys

    if str(path) not in _IMPORTS:
        files = [str(p) for folder in PACKAGES.values() for p in sorted(folder.rglob("*.py"))]
        done = subprocess.run([sys.executable, "-c", _READER, *files], capture_output=True, text=True, check=True)
        _IMPORTS.update(json.loads(done.stdout))
    return _IMPORTS[str(path)]


PACKAGES = {"edgebench": REPO / "host" / "edgebench", "edgebench_agent": REPO / "agent" / "edgebench_agent"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """Internal modules `name` imports anywhere in its file (function-level imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for kind, module, level, names in _import_nodes(path):
        if kind == "import":
            candidates = list(names)
        else:
            base = module or ""
            if level:
                anchor = package.split(".")[: len(package.split(".")) - (level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [f"{base}.{alias}" for alias in names] + [base]
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name and candidate not in PACKAGES:
                targets.add(candidate)
    return targets


def _cycles(graph: dict) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if state.get(other) == "open":
                cycles.append(stack[stack.index(other):] + [other])
            elif other not in state:
                visit(other)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert len(modules) > 30 and graph["edgebench.stages.deploy"], "the walker must see the real modules"
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_host_reaches_the_agent_only_through_agentlib():
    """One door: host modules import edgebench_agent nowhere but agentlib, and agentlib only the protocol, the
    shared package and the runtimes (the host checks a conversion with the same runtime code the board runs)."""
    graph = _graph()
    crossing = {name: sorted(t for t in targets if t.startswith("edgebench_agent"))
                for name, targets in graph.items() if name.startswith("edgebench.") and name != "edgebench.agentlib"}
    assert {name: t for name, t in crossing.items() if t} == {}
    import edgebench.agentlib as agentlib

    doors = set(agentlib._SURFACE)
    assert "edgebench_agent.protocol" in doors and len(doors) > 3
    assert all(d in ("edgebench_agent.protocol", "edgebench_agent.runtimes") or d.startswith("edgebench_agent.shared.")
               for d in doors), doors
    for module, names in agentlib._SURFACE.items():  # every name on the surface exists where it says
        imported = __import__(module, fromlist=["_"])
        assert [n for n in names if not hasattr(imported, n)] == [], module


def test_the_shared_package_stands_alone():
    """What both sides run imports only itself, the standard library and numpy: nothing board-only."""
    graph = _graph()
    shared = {name: targets for name, targets in graph.items() if name.startswith("edgebench_agent.shared")}
    assert len(shared) >= 5
    leaks = {name: sorted(t for t in targets if not t.startswith("edgebench_agent.shared")) for name, targets in shared.items()}
    assert {n: t for n, t in leaks.items() if t} == {}
    third_party = set()
    for name, path in _modules().items():
        if name.startswith("edgebench_agent.shared"):
            for kind, module, level, names in _import_nodes(path):
                if kind == "import":
                    third_party |= {alias.split(".")[0] for alias in names}
                elif not level:
                    third_party.add((module or "").split(".")[0])
    import sys

    assert third_party - set(sys.stdlib_module_names) == {"numpy"}


def test_agent_errors_become_host_errors_once_with_their_cause(tmp_path):
    from edgebench import agentlib
    from edgebench.errors import ConfigError, InputError
    from edgebench_agent.protocol import RequestError
    from edgebench_agent.shared.inputs import InputError as AgentInputError

    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    try:
        agentlib.load_npz(str(tmp_path / "bad.npz"))
    except InputError as exc:
        assert isinstance(exc.__cause__, AgentInputError) and "bad.npz" in exc.message
    else:
        raise AssertionError("a corrupt npz must raise the host's InputError")
    try:
        agentlib.parse_assignments(["novalue"], "--dim", int)
    except ConfigError as exc:
        assert isinstance(exc.__cause__, RequestError) and "--dim 'novalue'" in exc.message
    else:
        raise AssertionError("a bad --dim must raise the host's ConfigError")
    try:
        agentlib.no_such_name
    except AttributeError as exc:
        assert "_SURFACE" in str(exc)


_BODIES = """
import ast, json, sys
tree = ast.parse(open(sys.argv[1]).read())
bodies = {}
for node in tree.body:
    if isinstance(node, ast.FunctionDef) and any(isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command"
                                                 for d in node.decorator_list):
        docstring = isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
        first = node.body[1] if docstring and len(node.body) > 1 else node.body[0]
        bodies[node.name] = node.end_lineno - first.lineno + 1
print(json.dumps(bodies))
"""


def test_every_command_in_the_cli_is_thin():
    """A command parses, calls its stage and prints: its body (after the docstring) is at most 40 lines."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _BODIES, str(PACKAGES["edgebench"] / "cli.py")], capture_output=True,
                          text=True, check=True)
    bodies = json.loads(done.stdout)
    assert len(bodies) >= 18 and "deploy" in bodies and "tune" in bodies
    assert {name: lines for name, lines in bodies.items() if lines > 40} == {}


# What each part of the host package may import (besides itself and the shared modules at the top: errors, fileio,
# agentlib, yamlconf, progress). The CLI and the API (cli, cli_help, options, api, entry) may import anything.
ALLOWED = {
    "results": set(),  # a results folder is read without boards, stages or model files
    "models": {"results"},  # a provenance file is read as results are
    "boards": {"models", "results"},  # what a model needs of a board; text made printable
    "stages": {"models", "boards", "results"},
}
SHARED = {"errors", "fileio", "agentlib", "yamlconf", "progress", "__init__", "__version__"}


def test_the_parts_of_the_host_import_each_other_in_one_direction():
    package = PACKAGES["edgebench"]
    wrong = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        part = parts[0] if len(parts) > 1 else None
        here = list(parts[:-1])
        for kind, module, level, names in _import_nodes(path):
            if kind != "from" or not level:
                continue
            base = here[: len(here) - (level - 1)] if level > 1 else here
            targets = [base + module.split(".")] if module else [base + [name] for name in names]
            for target in targets:
                first = target[0] if target else "__init__"
                if part is None:  # a shared module at the top imports only shared modules (and results' text)
                    if parts[0] in SHARED - {"__init__"} and first not in SHARED and first != "results":
                        wrong.append(f"{path.name} -> {'.'.join(target)}")
                elif first != part and first not in SHARED and first not in ALLOWED[part]:
                    wrong.append(f"{part}/{path.name} -> {'.'.join(target)}")
    assert wrong == []


def test_each_part_says_what_it_owns_and_may_import():
    for part in ALLOWED:
        text = (PACKAGES["edgebench"] / part / "__init__.py").read_text()
        assert text.startswith('"""') and "may import" in text and "test_architecture" in text, part


# ------------------------------------------------------------------------------------------ one owner
# What only its owner may do, by the source text that does it (docs/architecture.md, "One owner per concept").
OWNERS = {
    "sha256": (r"\bhashlib\.sha256\(", {"agent/edgebench_agent/shared/files.py",
                                         "host/edgebench/boards/transport/ssh.py"}),  # OpenSSH's key fingerprint
    "a latency percentile": (r"\b(np|numpy)\.(percentile|quantile)\(", {"host/edgebench/results/stats.py"}),
    "loading an npz": (r"\b(np|numpy)\.load\(", {"agent/edgebench_agent/shared/inputs.py"}),
    # Moving a finished file into place: the atomic writer, the local transport's own rename, a lock log's
    # rotation, the .pyz bootstrap (it imports nothing of ours), export's files out of its scratch folder and
    # pipeline's packed samples into the cache (both made whole in a temp folder first).
    "renaming into place": (r"\bos\.(replace|rename)\(", {
        "agent/edgebench_agent/shared/files.py", "host/edgebench/boards/transport/local.py",
        "agent/edgebench_agent/lock.py", "agent/edgebench_agent/_pyz_main.py", "host/edgebench/stages/export.py",
        "host/edgebench/stages/pipeline.py"}),
    "the one-line error text": (r"""["']error: """, {"host/edgebench/cli.py"}),
    # whether a dimension is free (a name, None or negative): inputs.is_free; the bundle manifest's own type check
    "the free-dimension test": (r"isinstance\((dim|d|want|r|shape\[0\]), int\)", {
        "agent/edgebench_agent/shared/inputs.py", "agent/edgebench_agent/runtimes/__init__.py"}),
    # (the host's: the agent keeps its own few, converted once by agentlib)
    "a host error class": (r"^class \w+\((BenchError|ModelError|InputError|ConfigError|ResultError|TransportError)\)",
                           {"host/edgebench/errors.py"} | {str(p.relative_to(REPO)) for p in
                                                           (REPO / "agent").rglob("*.py")}),
}


def _doers(pattern: str, files) -> set[str]:
    import re

    found = set()
    for path in files:
        text = "\n".join(line.split("#", 1)[0] if not line.lstrip().startswith(('"', "'")) else line
                         for line in path.read_text().splitlines())
        if re.search(pattern, text, re.M):
            found.add(str(path.relative_to(REPO)))
    return found


# The modules that read stored result documents: they read them through results.view.Result, where "absent" is
# decided once, never through their own `.get("block") or {}` chains.
RESULT_READERS = ["host/edgebench/results/report.py", "host/edgebench/results/html.py", "host/edgebench/results/index.py",
                  "host/edgebench/results/tables.py", "host/edgebench/stages/compare.py", "host/edgebench/stages/history.py",
                  "host/edgebench/api.py", "host/edgebench/cli.py"]
RAW_BLOCK_READ = (r"""\.get\(["'](measurements|accuracy|validity|profile|origin|plan|energy|provenance|labels|repeats|"""
                  r"""error|settings|pipeline|memory|runtime|info)["']\)\s*or\s*(\{\}|\[\])""")


def test_result_documents_are_read_through_one_view(tmp_path):
    strays = _doers(RAW_BLOCK_READ, [REPO / p for p in RESULT_READERS])
    assert not strays, f"{sorted(strays)} read a result's blocks by hand: use results.view.Result"
    stray = tmp_path / "stray.py"
    stray.write_text('peak = (document.get("measurements") or {}).get("memory")\n')
    assert _doers(RAW_BLOCK_READ, [stray.rename(REPO / "tests" / f".stray-{tmp_path.name}.py")])
    (REPO / "tests" / f".stray-{tmp_path.name}.py").unlink()


def test_each_concept_has_one_owner(tmp_path):
    files = [p for folder in PACKAGES.values() for p in folder.rglob("*.py")]
    for concept, (pattern, owners) in OWNERS.items():
        strays = _doers(pattern, files) - owners
        assert not strays, f"{concept} belongs to {sorted(owners)}, but {sorted(strays)} do it too"
    # The check finds a stray: a module that hashes, loads an npz or prints an error line of its own.
    stray = tmp_path / "stray.py"
    stray.write_text('import hashlib\nx = hashlib.sha256(b"")\ny = np.load(p)\nprint("error: no")\n')
    stray = stray.rename(REPO / "tests" / f".stray-{tmp_path.name}.py")
    try:
        for concept in ("sha256", "loading an npz", "the one-line error text"):
            assert _doers(OWNERS[concept][0], [stray]), concept
    finally:
        stray.unlink()


def test_a_bug_of_ours_inside_a_wide_catch_stays_a_traceback(tmp_path, monkeypatch):
    """convert's catch around the converters reports a converter's failure as a failed variant, but a programming
    error of ours (here: a helper of the int8 converter made uncallable) propagates; a third-party TypeError is
    not ours."""
    import numpy as np
    import pytest

    from edgebench.errors import is_our_bug
    from edgebench.stages import convert

    try:
        np.zeros("not a shape")
    except TypeError as exc:
        assert not is_our_bug(exc)
    monkeypatch.setattr(convert, "_kept", None)
    with pytest.raises(TypeError, match="not callable"):
        convert.convert(REPO / "examples" / "cnn.onnx", ["int8-dynamic"], tmp_path / "v")
    monkeypatch.undo()
    (variant,) = convert.convert(REPO / "examples" / "cnn.onnx", ["int8-dynamic"], tmp_path / "v")
    assert variant.ok, variant.error


# What may open a wide catch's handler: the bug check, or a narrower test of whose error it is.
_NARROWING = ("is_our_bug(", "from_onnxruntime(", "is_runtime_error(")


def test_every_wide_catch_on_the_host_lets_our_bugs_through():
    """Each `except Exception as exc` on the host first lets a bug of ours through (errors.is_our_bug, or a test that
    the error is the runtime's); a deliberate best-effort catch says why on its line (noqa: BLE001) or names no
    exception at all. agentlib's converter re-raises what it does not convert."""
    import re

    strays = []
    for path in PACKAGES["edgebench"].rglob("*.py"):
        if path.name in ("agentlib.py", "litert_worker.py"):  # (the worker runs in the litert venv: none of ours)
            continue
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if re.match(r"\s*except Exception as \w+:", line) and "noqa: BLE001" not in line:
                if not any(mark in lines[number + 1] for mark in _NARROWING):
                    strays.append(f"{path.relative_to(REPO)}:{number + 1}")
    assert not strays, f"wide catches that would turn a bug of ours into a user's error: {strays}"


def test_a_bug_in_our_export_helper_is_a_traceback_not_an_export_failure(monkeypatch):
    """The export stage maps the version converter's failures to one line (ExportFailed); a programming error in
    our own code under the same catch (a helper of convert_opset made uncallable) propagates as itself."""
    import onnx
    import pytest

    from edgebench.errors import ExportFailed
    from edgebench.stages import convert, export

    proto = onnx.load(str(REPO / "examples" / "cnn.onnx"))
    with pytest.raises(ExportFailed, match="converting it to the requested opset 1 failed"):
        export._at_opset(proto, 1, "dynamo", [])  # ONNX's converter cannot go that low
    monkeypatch.setattr(convert, "_ir_for_opset", None)
    with pytest.raises(TypeError, match="not callable"):
        export._at_opset(proto, convert.default_opset(proto) - 1, "dynamo", [])
