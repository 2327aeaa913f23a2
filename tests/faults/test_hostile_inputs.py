"""Files from elsewhere are hostile: no model, npz, YAML or result file runs code, exhausts memory, hangs a
command or writes outside where it should. Each case is one clear line, a non-zero exit and nothing written.

Marker files that would prove code execution live only in the test's own tmp_path.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import EXAMPLES, FAST_RUN, assert_one_line_error
from tests.faults.hostile_pt2 import KINDS, evil_pt2

pytestmark = pytest.mark.bad_input

CNN = EXAMPLES / "cnn.onnx"
DIGITS = EXAMPLES / "digits.onnx"
DIGITS_DATA = EXAMPLES / "digits_test.npz"


def _save(model, path: Path) -> Path:
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _graph_model(nodes, inputs, outputs, opset=17, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _tiny_pt2(folder: Path) -> Path:
    import torch

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.layer(x)

    path = folder / "ok.pt2"
    torch.export.save(torch.export.export(Linear(), (torch.randn(1, 3),)), str(path))
    return path


class _TouchOnUnpickle:
    """Unpickling this opens (creates) the marker file: proof that a loader ran code from the archive."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_pt2(folder: Path, marker: Path) -> Path:
    """A valid ExportedProgram archive whose sample inputs are a pickle that runs code: torch.export.load falls
    back to torch.load(weights_only=False) for it."""
    import torch

    payload = io.BytesIO()
    torch.save((_TouchOnUnpickle(marker),), payload)
    return _rewritten(_tiny_pt2(folder), folder / "evil.pt2",
                      lambda name, data: payload.getvalue() if name.endswith("sample_inputs/model.pt") else data)


def _rewritten(source: Path, destination: Path, change) -> Path:
    """A copy of a zip archive with each member's bytes passed through change(name, data)."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(destination, "w") as out:
        for item in original.infolist():
            out.writestr(item, change(item.filename, original.read(item.filename)))
    return destination


# ------------------------------------------------------------------------------------------ code execution
@pytest.mark.parametrize("kind", KINDS)
def test_crafted_pt2_archives_never_run_code(bench, tmp_path, kind):
    """Each archive takes another of torch.export.load's unpickling paths (tests/faults/hostile_pt2.py)."""
    marker = tmp_path / "PWNED"
    evil = evil_pt2(kind, tmp_path, marker)
    for args in (("export", evil, "--input", "x=1x3", "-o", tmp_path / "out.onnx"), ("validate", CNN, "--reference", evil)):
        done = bench(*args)
        assert_one_line_error(done, "evil-")
        assert not marker.exists(), f"{kind}: the archive ran code through {args[0]}"
    assert not (tmp_path / "out.onnx").exists()


def test_a_pt2_carrying_a_pickle_never_runs_it(bench, tmp_path):
    marker = tmp_path / "PWNED"
    evil = _evil_pt2(tmp_path, marker)
    done = bench("export", evil, "--input", "x=1x3", "-o", tmp_path / "out.onnx")
    assert_one_line_error(done, "pickled objects", "never loads")
    assert not marker.exists()
    done = bench("validate", CNN, "--reference", evil)
    assert_one_line_error(done, "pickled objects")
    assert not marker.exists()
    assert not (tmp_path / "out.onnx").exists()


def test_a_pt2_marked_use_pickle_is_refused_before_torch_reads_it(bench, tmp_path):
    def mark_pickled(name: str, data: bytes) -> bytes:
        if not name.endswith("_weights_config.json"):
            return data
        config = json.loads(data)
        for entry in config["config"].values():
            entry["use_pickle"] = True
        return json.dumps(config).encode()

    forged = _rewritten(_tiny_pt2(tmp_path), tmp_path / "forged.pt2", mark_pickled)
    done = bench("export", forged, "--input", "x=1x3", "-o", tmp_path / "out.onnx")
    assert_one_line_error(done, "as a pickled Python object")


def test_a_plain_pt2_still_exports(bench, tmp_path):
    done = bench("export", _tiny_pt2(tmp_path), "--input", "x=1x3", "-o", tmp_path / "ok.onnx", "--no-validate")
    assert done.code == 0, done.stderr
    assert (tmp_path / "ok.onnx").is_file()


@pytest.mark.parametrize("content", [b"not a zip at all", b"PK\x03\x04truncated"])
def test_a_corrupt_pt2_is_one_line(bench, tmp_path, content):
    (tmp_path / "bad.pt2").write_bytes(content)
    done = bench("export", tmp_path / "bad.pt2", "--input", "x=1x3", "-o", tmp_path / "out.onnx")
    assert_one_line_error(done, "bad.pt2")


def test_an_inventory_env_key_cannot_inject_arguments(bench, tmp_path):
    marker = tmp_path / "PWNED"
    inventory = tmp_path / "targets.yaml"
    inventory.write_text("targets:\n  t:\n    kind: local\n    env:\n"
                         f"      \"--split-string\": \"sh -c 'touch {marker}' #\"\n")
    done = bench("deploy", CNN, "--target", "t", "--inventory", inventory, "--results", tmp_path / "r", *FAST_RUN)
    assert_one_line_error(done, f"{inventory}:5", "env.--split-string", "environment variable name")
    assert not marker.exists()
    assert not (tmp_path / "r").exists()


def test_an_env_value_that_looks_like_an_option_is_only_a_value(bench, tmp_path):
    inventory = tmp_path / "targets.yaml"
    inventory.write_text("targets:\n  t:\n    kind: local\n    env:\n      EDGEBENCH_TEST_FLAG: \"--split-string=x\"\n")
    done = bench("deploy", CNN, "--target", "t", "--inventory", inventory, "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 0, done.stderr
    document = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    assert document["status"] == "ok"


# ---------------------------------------------------------------------------------- hangs: only regular files
def test_a_folder_or_a_fifo_as_the_model(bench, tmp_path):
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    for path in (folder, fifo):
        done = bench("deploy", path, "--results", tmp_path / "r", *FAST_RUN, timeout=60)
        assert_one_line_error(done, "not a regular file")
    assert not (tmp_path / "r").exists()


def test_a_fifo_among_the_results_is_skipped(bench, tmp_path):
    from tests.synthetic import lognormal_ns, result, write

    folder = tmp_path / "results"
    write(folder, [result(lognormal_ns(np.random.default_rng(0), 2.0, 200), run_id="good")])
    os.mkfifo(folder / "x.json")
    done = bench("compare", folder, "-f", "csv", timeout=60)
    assert done.code == 0, done.stderr
    assert "not a regular file" in done.stderr and "x.json" in done.stderr
    assert "net" in done.stdout


# ------------------------------------------------------------------------------------------ memory
def test_a_yaml_alias_bomb_is_refused(bench, tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    bomb = "\n".join(levels) + "\ntargets: *a9\n"
    (tmp_path / "inventory.yaml").write_text(bomb)
    done = bench("targets", "--inventory", tmp_path / "inventory.yaml", timeout=60)
    assert_one_line_error(done, "expands to more than")
    (tmp_path / "plan.yaml").write_text(bomb.replace("targets: *a9", "name: p\nmodels: *a9\ntargets: [local]"))
    done = bench("run", tmp_path / "plan.yaml", "--dry-run", timeout=60)
    assert_one_line_error(done, "expands to more than")


def _inventory_refused(bench, tmp_path, text: str, *fragments: str) -> None:
    """`bench targets` on an inventory with this text: one error line with every fragment ({path} filled in)."""
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    assert_one_line_error(bench("targets", "--inventory", path, timeout=60), *(f.format(path=path) for f in fragments))


def test_one_long_string_aliased_many_times_is_refused(bench, tmp_path):
    # Few values, but each alias of the 100 KB string would be copied into memory by whatever walks it.
    text = "big: &big " + "x" * 100_000 + "\ntargets:\n  local:\n    tags: [" + ", ".join(["*big"] * 2000) + "]\n"
    _inventory_refused(bench, tmp_path, text, "expands to more than")


def test_duplicate_yaml_keys_name_both_lines(bench, tmp_path):
    _inventory_refused(bench, tmp_path, "targets:\n  a:\n    kind: local\n  a:\n    kind: local\n",
                       "{path}:4", "duplicate key 'a'", "first at line 2")


def _npz_declaring(path: Path, shape: tuple, data: bytes = b"") -> Path:
    """An .npz whose one member's header declares `shape` (float32) followed by `data`."""
    from numpy.lib import format as npy

    header = io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("image.npy", header.getvalue() + data)  # the header writer adds the magic itself
    return path


def test_an_npz_declaring_a_trillion_elements_is_refused_before_loading(bench, tmp_path):
    bomb = _npz_declaring(tmp_path / "bomb.npz", (10**12,))
    done = bench("deploy", CNN, "--inputs", bomb, "--results", tmp_path / "r", *FAST_RUN)
    assert_one_line_error(done, "bomb.npz", "above edgebench's limit", "EDGEBENCH_MAX_ARRAY_MIB")
    assert not (tmp_path / "r").exists()


def test_a_zip_bomb_npz_is_refused_before_it_inflates(bench, tmp_path):
    # 64 MiB of zeros deflate to about 64 KiB; with the limit at 16 MiB that is a 1000:1 bomb over the limit.
    shape = (16 * 2**20,)
    bomb = _npz_declaring(tmp_path / "bomb.npz", shape, bytes(64 * 2**20))
    assert bomb.stat().st_size < 2**20
    done = bench("validate", CNN, "--inputs", bomb, env={"EDGEBENCH_MAX_ARRAY_MIB": "16"})
    assert_one_line_error(done, "64.0 MiB", "16.0 MiB")


def test_a_model_with_a_huge_dimension_is_refused_before_allocating(bench, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2**40])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2**40])
    path = _save(_graph_model([helper.make_node("Relu", ["x"], ["y"])], [x], [y]), tmp_path / "huge.onnx")
    done = bench("validate", path)
    assert_one_line_error(done, "above edgebench's limit")
    done = bench("deploy", path, "--results", tmp_path / "r", *FAST_RUN)
    assert_one_line_error(done, "above edgebench's limit")
    assert not list((tmp_path / "r").glob("*.json")) if (tmp_path / "r").exists() else True


def test_export_of_an_enormous_example_input_is_refused(bench, tmp_path):
    done = bench("export", f"{Path(__file__).parent.parent / 'torch_models.py'}:cnn", "--input", "x=100000x3x3200x3200",
                 "-o", tmp_path / "m.onnx")
    assert_one_line_error(done, "--input x", "above edgebench's limit")


# ----------------------------------------------------------------------------------- tracebacks -> one line
def test_validate_and_convert_of_a_string_input_model_are_one_line(bench, tmp_path):
    x = helper.make_tensor_value_info("text", TensorProto.STRING, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, [1, 2])
    path = _save(_graph_model([helper.make_node("Identity", ["text"], ["y"])], [x], [y]), tmp_path / "s.onnx")
    assert_one_line_error(bench("validate", path), "'text'", "string tensor", "--inputs")
    assert_one_line_error(bench("convert", path, "--to", "fp16", "-o", tmp_path / "v"), "'text'", "--calibration")


def _damaged_npz(path: Path, damage: str, arrays: dict) -> Path:
    if damage == "not a zip":
        path.write_bytes(b"PK\x03\x04 this is not really a zip archive")
        return path
    np.savez(path, **arrays)
    data = bytearray(path.read_bytes())
    if damage == "bad crc":
        data[-400] ^= 0xFF  # inside the last stored array's data: its CRC no longer matches (found only when read whole)
    else:  # a garbled .npy header: numpy's header parser (tokenize) fails on it
        start = data.index(b"{'descr'")
        data[start:start + 8] = b"{'descr("
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("damage", ["not a zip", "bad crc", "bad header"])
def test_a_corrupt_npz_is_one_line(bench, tmp_path, damage):
    path = _damaged_npz(tmp_path / "bad.npz", damage, {"image": np.ones((1, 3, 32, 32), np.float32)})
    done = bench("validate", CNN, "--inputs", path)
    assert_one_line_error(done, "bad.npz")
    done = bench("convert", CNN, "--to", "int8-static", "--calibration", path, "-o", tmp_path / "v")
    assert_one_line_error(done, "bad.npz")
    assert not list((tmp_path / "v").glob("*.onnx")) if (tmp_path / "v").exists() else True
    done = bench("deploy", CNN, "--inputs", path, "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 2
    assert_one_line_error(done, "bad.npz")
    with np.load(DIGITS_DATA) as data:
        arrays = {k: data[k][:200] for k in data.files}
    dataset = _damaged_npz(tmp_path / "bad-dataset.npz", damage, arrays)
    done = bench("deploy", DIGITS, "--dim", "batch=1", "--dataset", dataset, "--results", tmp_path / "r", *FAST_RUN)
    assert done.code == 2
    assert_one_line_error(done, "bad-dataset.npz")
    assert not (tmp_path / "r").exists()


def _test_data(folder: Path, inputs: list, outputs: list) -> Path:
    folder.mkdir(parents=True)
    for kind, protos in (("input", inputs), ("output", outputs)):
        for index, proto in enumerate(protos):
            (folder / f"{kind}_{index}.pb").write_bytes(proto.SerializeToString())
    return folder


def test_a_test_data_set_of_sequences_says_what_edgebench_carries(bench, tmp_path):
    """A model whose output is a sequence (onnxruntime runs it): its test data set's output_0.pb is a SequenceProto,
    not a tensor, and a board run returns tensors only; said as such, not as a corrupt file."""
    from onnx import numpy_helper

    graph = helper.make_graph([helper.make_node("SplitToSequence", ["x"], ["parts"], axis=0)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)])
    model = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "split.onnx")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    parts = numpy_helper.from_list([x[:1], x[1:]], "parts")
    data = _test_data(tmp_path / "test_data_set_0", [numpy_helper.from_array(x, "x")], [parts])
    done = bench("deploy", model, "--test-data", data, "--results", tmp_path / "r", *FAST_RUN)
    assert_one_line_error(done, "'parts' of the model is seq(tensor(float))", "tensors only", "without --test-data")
    assert not (tmp_path / "r").exists()
    assert bench("deploy", model, "--results", tmp_path / "r", *FAST_RUN).code == 0  # timed, without the data set


def test_test_data_of_a_type_numpy_lacks_is_one_line(bench, tmp_path):
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT8E5M2, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), tmp_path / "f8.onnx")
    x = helper.make_tensor("x", TensorProto.FLOAT8E5M2, [4], [1.0, 2.0, 3.0, 4.0])
    data = _test_data(tmp_path / "test_data_set_0", [x], [])
    done = bench("deploy", model, "--test-data", data, "--results", tmp_path / "r", *FAST_RUN)
    assert_one_line_error(done, "input_0.pb holds FLOAT8E5M2 data", "numpy has no such type")


def test_a_verdict_says_when_this_hosts_onnxruntime_could_not_run_the_reference(tmp_path):
    """A test data set brings its expected outputs; onnxruntime on this host still runs the model, so a PASS against
    stored outputs that no local reference reproduced says so. The failure is real: a locale this host's
    onnxruntime cannot construct (a board with another onnxruntime or locale may run it)."""
    from edgebench.stages.accuracy import AccuracyPlan, compute_reference, verdict_text

    def normalizer(locale: str) -> Path:
        graph = helper.make_graph([helper.make_node("StringNormalizer", ["text"], ["y"], case_change_action="LOWER",
                                                    locale=locale)], "g",
                                  [helper.make_tensor_value_info("text", TensorProto.STRING, [2])],
                                  [helper.make_tensor_value_info("y", TensorProto.STRING, [2])])
        return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / f"{locale}.onnx")

    words = np.array(["A", "B"], dtype=object)
    said = {}
    for locale in ("C", "xx_XX.UTF-8"):
        accuracy = AccuracyPlan("test data set", ["text"], ["y"], [{"text": words}], 1)
        accuracy.expected, accuracy.reference = [[np.array(["a", "b"], dtype=object)]], "test data set t"
        compute_reference(accuracy, normalizer(locale), None)
        said[locale] = accuracy.reference
    assert said["C"] == "test data set t; onnxruntime on this host ran it too"
    assert said["xx_XX.UTF-8"].startswith("test data set t; onnxruntime on this host could not run it (onnxruntime cannot load")
    block = {"passed": True, "outputs": [], "reference": said["xx_XX.UTF-8"]}
    assert verdict_text(block).startswith("PASS reference: test data set t; onnxruntime on this host could not run it")


def test_a_dataset_with_no_samples(bench, tmp_path):
    np.savez(tmp_path / "empty.npz", image=np.zeros((0, 1, 8, 8), np.float32), labels=np.zeros(0, np.int64))
    done = bench("deploy", DIGITS, "--dim", "batch=1", "--dataset", tmp_path / "empty.npz", "--results", tmp_path / "r",
                 *FAST_RUN)
    assert_one_line_error(done, "holds no samples")


def test_labels_outside_the_models_classes_are_refused(bench, tmp_path):
    with np.load(DIGITS_DATA) as data:
        arrays = {k: data[k][:20] for k in data.files}
    arrays["labels"] = np.full(20, 999, dtype=arrays["labels"].dtype)
    np.savez(tmp_path / "wrong.npz", **arrays)
    done = bench("deploy", DIGITS, "--dim", "batch=1", "--dataset", tmp_path / "wrong.npz", "--results", tmp_path / "r",
                 *FAST_RUN)
    assert_one_line_error(done, "20 of 20 labels lie outside the model's 10 classes")
    assert not (tmp_path / "r").exists()


def test_output_paths_of_the_wrong_kind(bench, tmp_path):
    (tmp_path / "afile").write_text("x")
    done = bench("convert", CNN, "--to", "fp16", "-o", tmp_path / "afile")
    assert_one_line_error(done, "is a file, not a folder")
    (tmp_path / "afolder").mkdir()
    done = bench("export", f"{Path(__file__).parent.parent / 'torch_models.py'}:cnn", "--input", "x=1x3x8x8",
                 "-o", tmp_path / "afolder")
    assert_one_line_error(done, "is a folder")
    assert list((tmp_path / "afolder").iterdir()) == []


def test_convert_refuses_external_data_outside_the_model_folder(bench, tmp_path):
    from onnx.external_data_helper import set_external_data

    model = onnx.load(str(CNN))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    set_external_data(tensor, location="../outside.bin")
    tensor.ClearField("raw_data")
    (tmp_path / "models").mkdir()
    onnx.save(model, str(tmp_path / "models" / "escape.onnx"))
    done = bench("convert", tmp_path / "models" / "escape.onnx", "--to", "fp16", "-o", tmp_path / "v")
    assert_one_line_error(done, "outside its folder")
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("field, value", [("started_at", 12), ("started_at", "yesterday"), ("request", "x"),
                                          ("info", ["x"]), ("telemetry", "hot"), ("repeats", "x")])
def test_import_of_a_result_with_wrong_types(bench, tmp_path, standalone_reply, field, value):
    from edgebench_agent.protocol import reply_digest

    reply = json.loads(standalone_reply.read_text())
    reply[field] = value
    reply["digest"] = reply_digest(reply)  # a consistent digest: the file is well-formed, only its types are wrong
    (tmp_path / "forged.json").write_text(json.dumps(reply))
    done = bench("import", tmp_path / "forged.json", "--results", tmp_path / "r")
    assert_one_line_error(done, "forged.json", field)
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.json"))


@pytest.fixture(scope="module")
def standalone_reply(tmp_path_factory) -> Path:
    import subprocess
    import sys

    from tests.conftest import REPO

    folder = tmp_path_factory.mktemp("standalone")
    out = folder / "reply.json"
    done = subprocess.run([sys.executable, "-m", "edgebench_agent", "run", str(CNN), "--json", "--out", str(out),
                           "--warmup", "2", "--min-iterations", "5", "--min-seconds", "0.02", "--max-seconds", "2"],
                          capture_output=True, text=True, cwd=REPO / "agent", timeout=120)
    assert done.returncode == 0, done.stderr
    return out


# ------------------------------------------------------------------------------------------ values
@pytest.mark.parametrize("option, value, fragment", [
    ("--min-seconds", "nan", "min_seconds must be a finite number"),
    ("--min-seconds", "inf", "min_seconds must be a finite number"),
    ("--max-seconds", "nan", "max_seconds must be a finite number"),
    ("--seed", "-1", "seed must not be negative"),
    ("--timeout", "-1", "--timeout must be a positive number"),
    ("--timeout", "nan", "--timeout must be a positive number"),
    ("--cooldown-margin", "nan", "--cooldown-margin must be a finite number"),
    ("--cooldown-timeout", "-5", "--cooldown-timeout must not be negative"),
])
def test_non_finite_and_negative_values_are_refused_up_front(bench, tmp_path, option, value, fragment):
    extra = ["--cooldown"] if option.startswith("--cooldown") else []
    done = bench("deploy", CNN, *FAST_RUN, option, value, *extra, "--results", tmp_path / "r")  # the last one counts
    assert_one_line_error(done, fragment)
    assert not (tmp_path / "r").exists()


def test_a_tolerance_for_an_output_the_model_lacks(bench, tmp_path):
    done = bench("deploy", CNN, "--accuracy", "--atol", "nosuch=1", "--results", tmp_path / "r", *FAST_RUN)
    assert_one_line_error(done, "'nosuch'", "its outputs:")
    done = bench("validate", CNN, "--atol", "nosuch=1")
    assert_one_line_error(done, "'nosuch'")


def test_a_nan_connect_timeout_in_the_inventory(bench, tmp_path):
    _inventory_refused(bench, tmp_path, "targets:\n  pi:\n    host: 127.0.0.1\n    connect_timeout: .nan\n",
                       "{path}:4", "connect_timeout", "must be a number")


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", "cnn\n"])
def test_plan_model_names_cannot_leave_the_build_folder(bench, tmp_path, name):
    (tmp_path / "plans").mkdir()
    plan = tmp_path / "plans" / "plan.yaml"
    plan.write_text(f"name: p\nmodels:\n  - {{name: {json.dumps(name)}, path: {CNN}}}\nvariants: [fp16]\n"
                    "targets: [local]\n")
    before = set(tmp_path.rglob("*"))
    done = bench("run", plan, "--dry-run")
    assert_one_line_error(done, f"{plan}:3", "models.0.name", "build folder")
    assert set(tmp_path.rglob("*")) == before


# ------------------------------------------------------------------------------ reports are not attack surfaces
def _good_and_bad_results(folder: Path) -> list[str]:
    from tests.synthetic import lognormal_ns, result, write

    good = result(lognormal_ns(np.random.default_rng(0), 2.0, 200), run_id="good")
    write(folder, [good])
    bad = {}
    bad["deep"] = "[" * 200_000 + "]" * 200_000
    for name, samples in (("strings", ["a", "b"]), ("nan", [float("nan"), 1.0]), ("huge", [1e300, 2.0]),
                          ("empty", []), ("numeric-strings", ["1000", "2000"]), ("booleans", [True, False])):
        document = json.loads(json.dumps(good))
        document["run_id"] = name
        document["measurements"]["repeats"][0]["samples_ns"] = samples
        bad[name] = json.dumps(document)
    for name, field, value in (("model-string", "model", "x"), ("settings-list", "settings", [1]),
                               ("threads-string", "settings", {"intra_op_threads": "many"}),
                               ("validity-string", "validity", "yes")):
        document = json.loads(json.dumps(good))
        document["run_id"] = name
        document[field] = value
        bad[name] = json.dumps(document)
    for name, text in bad.items():
        (folder / f"{name}.json").write_text(text)
    return sorted(bad)


@pytest.mark.parametrize("fmt", ["table", "csv", "md", "json", "html"])
def test_malformed_result_files_are_skipped_with_a_warning_each(bench, tmp_path, fmt):
    folder = tmp_path / "results"
    names = _good_and_bad_results(folder)
    done = bench("compare", folder, "-f", fmt, "--per-run" if fmt == "csv" else "--metric=p50", timeout=120)
    assert done.code == 0, done.stderr
    assert "Traceback" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == len(names), done.stderr
    for name in names:
        assert any(f"{name}.json" in line for line in warnings), (name, warnings)
    assert "net" in done.stdout


def test_spreadsheet_formulas_and_terminal_escapes_from_a_result_are_neutralised(bench, tmp_path):
    from tests.synthetic import lognormal_ns, result, write

    rng = np.random.default_rng(1)
    formula = result(lognormal_ns(rng, 2.0, 100), run_id="formula", model='=HYPERLINK("http://x","y")')
    escape = result(lognormal_ns(rng, 2.0, 100), run_id="escape", model="net\x1b]0;owned\x07\x1b[31mred\x1b[0m\nsplit")
    write(tmp_path / "r", [formula, escape])
    csv = bench("compare", tmp_path / "r", "-f", "csv")
    assert csv.code == 0, csv.stderr
    assert "'=HYPERLINK" in csv.stdout and "\n=HYPERLINK" not in csv.stdout and ",=HYPERLINK" not in csv.stdout
    per_run = bench("compare", tmp_path / "r", "-f", "csv", "--per-run")
    assert "'=HYPERLINK" in per_run.stdout and ",=HYPERLINK" not in per_run.stdout
    md = bench("compare", tmp_path / "r", "-f", "md")
    assert "| '=HYPERLINK" in md.stdout
    rows = [line for line in md.stdout.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 2  # header, rule, one row per model: a newline in a name never splits a row
    for fmt in ("table", "csv", "md", "json"):
        done = bench("compare", tmp_path / "r", "-f", fmt)
        assert "\x1b" not in done.stdout + done.stderr and "\x07" not in done.stdout + done.stderr, fmt
        assert "net]0;owned" not in done.stdout and "[31m" not in done.stdout, fmt
    table = bench("compare", tmp_path / "r")
    assert "netred split" in table.stdout


def test_imported_results_are_marked_in_every_report(bench, tmp_path):
    from tests.synthetic import lognormal_ns, result, write

    rng = np.random.default_rng(2)
    deployed = result(lognormal_ns(rng, 2.0, 100), run_id="deployed", target="pi4")
    imported = result(lognormal_ns(rng, 2.0, 100), run_id="imported", target="pi4")
    imported["origin"] = {"kind": "import", "file": "r.json", "digest": "0" * 64, "board": "pi4"}
    write(tmp_path / "r", [deployed, imported])
    table = bench("compare", tmp_path / "r")
    assert "pi4 (imported)" in table.stdout and "\npi4 " not in table.stdout.replace("pi4 (imported)", "")
    for fmt in ("csv", "md", "json", "html"):
        done = bench("compare", tmp_path / "r", "-f", fmt)
        assert "pi4 (imported)" in done.stdout, fmt
    per_run = bench("compare", tmp_path / "r", "-f", "csv", "--per-run")
    assert "import from pi4" in per_run.stdout and "deploy" in per_run.stdout
