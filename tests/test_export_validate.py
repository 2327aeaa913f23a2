"""bench export and bench validate on real torch exports (both exporters), and the tracing trap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgebench.errors import ModelError
from edgebench.models.modelinfo import check_external_data, inspect_model
from edgebench.models.parity import compare_output
from tests.conftest import assert_one_line_error

MODELS = str(Path(__file__).resolve().parent / "torch_models.py")
MLP = str(Path(__file__).resolve().parent / "torch_mlp.py") + ":batch_mlp"  # has example_inputs()


def spec(name: str) -> str:
    return MLP if name == "batch_mlp" else f"{MODELS}:{name}"


def exported_mlp(bench, folder: Path) -> Path:
    """The MLP (whose file defines example_inputs()) exported without validation."""
    out = folder / "mlp.onnx"
    assert bench("export", spec("batch_mlp"), "-o", out, "--no-validate").code == 0
    return out


def verdict(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("verdict")).split()[1]


# ---------------------------------------------------------------------------------- exports that pass
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_cnn_with_batchnorm_exports_and_matches(bench, tmp_path, exporter):
    out = tmp_path / "cnn.onnx"
    done = bench("export", spec("cnn"), "-o", out, "--input", "image=1x3x32x32", "--exporter", exporter)
    assert done.code == 0, done.stderr
    assert verdict(done.stdout) == "PASS"
    assert f"({exporter} exporter, trace mode)" in done.stdout
    assert not list(tmp_path.glob("*.data")), "one self-contained file expected"
    model = onnx.load(str(out))
    assert {p.key: p.value for p in model.metadata_props}["edgebench.exporter"] == exporter
    assert [i.name for i in model.graph.input] == ["image"]
    # Five parity inputs (example, negated, x10, two random), all compared.
    assert sum(1 for line in done.stdout.splitlines() if line.startswith("  ok ")) == 5


def test_setnet_field_note_model_and_test_data(bench, tmp_path):
    out = tmp_path / "setnet.onnx"
    done = bench("export", spec("setnet"), "-o", out, "--input", "grid=2x2x14x17", "--save-test-data", tmp_path / "data")
    assert done.code == 0, done.stderr
    assert inspect_model(out)["inputs"] == [{"name": "grid", "dtype": "float32", "shape": [2, 2, 14, 17]}]
    data = tmp_path / "data" / "test_data_set_0"
    assert sorted(p.name for p in data.iterdir()) == ["input_0.pb", "output_0.pb"]
    # The saved test data set is a reference by itself: validate without PyTorch.
    done = bench("validate", out, "--inputs", data)
    assert done.code == 0, done.stderr
    assert "parity    against the test data set's outputs" in done.stdout and verdict(done.stdout) == "PASS"
    # ... and it catches a model that computes something else.
    tampered = onnx.load(str(out))
    weight = next(i for i in tampered.graph.initializer if len(i.dims) == 4)
    array = onnx.numpy_helper.to_array(weight) * 1.5
    weight.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), weight.name))
    onnx.save(tampered, str(tmp_path / "tampered.onnx"))
    done = bench("validate", tmp_path / "tampered.onnx", "--inputs", data)
    assert done.code == 1 and verdict(done.stdout) == "FAIL"
    assert_one_line_error(done, "validation failed: example input: output:")


def test_the_static_size_note_names_dynamic(bench, tmp_path):
    done = bench("export", spec("setnet"), "-o", tmp_path / "s.onnx", "--input", "grid=2x2x14x17")
    assert done.code == 0, done.stderr
    assert "re-export with --dynamic grid:0" in done.stdout


def test_an_operator_the_exporter_lacks_is_one_line_with_the_reason(bench, tmp_path):
    """setnet's AdaptiveAvgPool2d((2, 2)) on 14 x 17 has no TorchScript-exporter ONNX form."""
    done = bench("export", spec("setnet"), "-o", tmp_path / "s.onnx", "--input", "grid=2x2x14x17", "--exporter", "torchscript")
    assert_one_line_error(done, "torchscript export failed", "adaptive_avg_pool2d", "try another --opset or the other --exporter")
    assert not list(tmp_path.iterdir())


def test_several_inputs_and_outputs_with_dynamic_batch(bench, tmp_path):
    out = tmp_path / "multi.onnx"
    done = bench("export", spec("multi_io"), "-o", out, "--input", "features=3x8", "--input", "mask=3x4",
                 "--dynamic", "features:0=batch", "--dynamic", "mask:0=batch", "--output-names", "hidden,total")
    assert done.code == 0, done.stderr
    info = inspect_model(out)
    assert [i["shape"] for i in info["inputs"]] == [["batch", 8], ["batch", 4]]
    assert [o["name"] for o in info["outputs"]] == ["hidden", "total"]
    assert "other sizes (features[0]=4, mask[0]=4)" in done.stdout and verdict(done.stdout) == "PASS"


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_dynamic_batch_with_example_inputs_function(bench, tmp_path, exporter):
    out = tmp_path / "mlp.onnx"
    done = bench("export", spec("batch_mlp"), "-o", out, "--dynamic", "x:0=batch", "--exporter", exporter)
    assert done.code == 0, done.stderr
    assert inspect_model(out)["inputs"][0]["shape"][0] == "batch"
    assert "other sizes (x[0]=5)" in done.stdout  # example_inputs() gives batch 4


def test_torchscript_archive_as_input(bench, tmp_path):
    from tests.torch_mlp import batch_mlp

    archive = tmp_path / "mlp.pt"
    torch.jit.script(batch_mlp()).save(str(archive))
    out = tmp_path / "mlp.onnx"
    done = bench("export", archive, "-o", out, "--input", "x=2x6")
    assert done.code == 0, done.stderr
    assert "(torchscript exporter, trace mode)" in done.stdout and verdict(done.stdout) == "PASS"
    # Validating the file later against the same archive as reference.
    done = bench("validate", out, "--reference", archive, "--inputs", _npz(tmp_path, x=np.ones((2, 6), np.float32)))
    assert done.code == 0 and verdict(done.stdout) == "PASS", done.stdout + done.stderr


def test_state_dict_with_factory(bench, tmp_path):
    from tests.torch_mlp import BatchMLP

    trained = BatchMLP()
    torch.manual_seed(123)
    for parameter in trained.parameters():
        torch.nn.init.normal_(parameter)
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    out = tmp_path / "mlp.onnx"
    done = bench("export", spec("batch_mlp"), "-o", out, "--weights", tmp_path / "weights.pt")
    assert done.code == 0, done.stderr
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    import onnxruntime as ort

    (got,) = ort.InferenceSession(str(out)).run(None, {"x": x})
    np.testing.assert_allclose(got, trained.eval()(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    # Without the weights, the export differs: the weights really were used.
    assert not np.allclose(got, BatchMLP().eval()(torch.from_numpy(x)).detach().numpy(), atol=1e-3)


@pytest.mark.bad_input
def test_weights_with_pickled_objects_are_refused(bench, tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"net.0.weight": Payload()}, handle)
    done = bench("export", spec("batch_mlp"), "-o", tmp_path / "x.onnx", "--weights", tmp_path / "evil.pt")
    assert_one_line_error(done, "weights_only=True")
    assert "pwned" not in done.stdout + done.stderr
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------------------------ the tracing trap
def test_traced_branch_is_flagged_and_script_passes(bench, tmp_path):
    traced = bench("export", spec("branchy"), "-o", tmp_path / "traced.onnx", "--input", "x=2x4",
                   "--exporter", "torchscript")
    assert traced.code == 1
    assert verdict(traced.stdout) == "FAIL"
    assert "diagnosis the export matches the reference on the example input but not on" in traced.stdout
    assert "depends on input values was probably baked in when the model was traced" in traced.stdout
    assert "--mode script" in traced.stderr and "torch.cond" in traced.stderr
    assert "tracing warned" in traced.stderr  # the exporter's own warning, surfaced
    scripted = bench("export", spec("branchy"), "-o", tmp_path / "scripted.onnx", "--input", "x=2x4", "--mode", "script")
    assert scripted.code == 0, scripted.stdout + scripted.stderr
    assert verdict(scripted.stdout) == "PASS"
    ops = {n.op_type for n in onnx.load(str(tmp_path / "scripted.onnx")).graph.node}
    assert "If" in ops


def test_dynamo_on_a_branch_fails_with_the_reason_and_a_hint(bench, tmp_path):
    done = bench("export", spec("branchy"), "-o", tmp_path / "b.onnx", "--input", "x=2x4")
    assert done.code == 2
    assert_one_line_error(done, "dynamo export failed", "GuardOnDataDependentSymNode", "--mode script", "torch.cond")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*"))  # nothing half-written


def test_loop_over_input_length_is_flagged_when_traced_and_passes_scripted(bench, tmp_path):
    traced = bench("export", spec("looped"), "-o", tmp_path / "t.onnx", "--input", "x=5x3", "--dynamic", "x:0=steps",
                   "--exporter", "torchscript")
    assert traced.code == 1 and "a loop over an input size (unrolled for the example's size)" in traced.stdout
    assert "FAIL other sizes (x[0]=6)" in traced.stdout
    scripted = bench("export", spec("looped"), "-o", tmp_path / "s.onnx", "--input", "x=5x3", "--dynamic", "x:0=steps",
                     "--mode", "script")
    assert scripted.code == 0, scripted.stdout
    assert "Loop" in {n.op_type for n in onnx.load(str(tmp_path / "s.onnx")).graph.node}


def test_static_input_fed_another_size_names_the_fixed_dims(bench, tmp_path):
    out = exported_mlp(bench, tmp_path)
    done = bench("validate", out, "--reference", spec("batch_mlp"),
                 "--inputs", _npz(tmp_path, x=np.ones((7, 6), np.float32)))
    assert done.code == 1
    assert "input 'x' is fixed in the ONNX model (axis 0 = 4) but got shape [7, 6]: re-export with --dynamic x:0" \
        in done.stdout


# ------------------------------------------------------------------------------------------ validate
def test_validate_summary_graph_and_json(bench, tmp_path):
    out = tmp_path / "cnn.onnx"
    assert bench("export", spec("cnn"), "-o", out, "--input", "image=1x3x32x32", "--no-validate").code == 0
    done = bench("validate", out, "--graph")
    assert done.code == 0, done.stderr
    assert "initializers (values omitted): features.0.weight float32[16, 3, 3, 3]" in done.stdout
    assert " = Conv <" in done.stdout and "-0.00144" not in done.stdout
    assert "no reference given" in done.stdout
    done = bench("validate", out, "--reference", spec("cnn"), "--json", "--samples", "3")
    report = json.loads(done.stdout)
    assert report["passed"] and len(report["samples"]) == 3
    summary = report["summary"]
    assert summary["ops"]["Conv"] == 2
    # Conv 3->16 (432+16) + Conv 16->32 (4608+32) + Linear 32->10 (320+10) after BatchNorm folding, or more.
    assert summary["parameters"] >= 432 + 16 + 4608 + 32 + 320 + 10
    assert summary["parameter_bytes"] >= 4 * summary["parameters"]
    assert [c["name"] for c in report["checks"]] == ["onnx.checker (full)", "shape inference (strict)", "onnxruntime load"]
    output = report["samples"][0]["outputs"][0]
    assert output["passed"] and output["cosine"] > 0.9999


def test_per_output_tolerance(bench, tmp_path):
    """A reference output off by 0.01 everywhere: fails at the default atol, passes with --atol output=0.011."""
    out = tmp_path / "mlp.onnx"
    assert bench("export", spec("batch_mlp"), "-o", out, "--no-validate", "--save-test-data", tmp_path).code == 0
    data = tmp_path / "test_data_set_0"
    proto = onnx.TensorProto()
    proto.ParseFromString((data / "output_0.pb").read_bytes())
    shifted = onnx.numpy_helper.to_array(proto) + np.float32(0.01)
    (data / "output_0.pb").write_bytes(onnx.numpy_helper.from_array(shifted, proto.name).SerializeToString())
    failing = bench("validate", out, "--inputs", data, "--rtol", "0")
    assert failing.code == 1 and "100.00% of elements beyond atol 0.0001" in failing.stdout
    assert "(would pass with atol 0.01)" in failing.stdout
    typo = bench("validate", out, "--inputs", data, "--rtol", "0", "--atol", "other=1")  # never silently ignored
    assert typo.code == 2 and "name output 'other', which mlp.onnx does not have" in typo.stderr
    passing = bench("validate", out, "--inputs", data, "--rtol", "0", "--atol", "output=0.011")
    assert passing.code == 0 and "within atol 0.011, rtol 0" in passing.stdout


def test_comparison_objects():
    expected = np.array([1.0, 2.0, 3.0, 4.0])
    result = compare_output("y", expected, expected + [0, 0, 0, 0.5], atol=1e-3, rtol=0.0)
    assert not result and result.out_of_tolerance_pct == 25.0
    assert result.max_abs == 0.5 and result.needed_atol == pytest.approx(0.5)
    assert "would pass with atol 0.5" in str(result)
    assert compare_output("y", expected, expected + [0, 0, 0, 0.5], atol=0.5, rtol=0.0)
    assert not compare_output("y", expected, expected.reshape(2, 2), 1, 1)  # shape
    assert not compare_output("y", expected, np.array([1.0, np.nan, 3.0, 4.0]), 1, 1)  # NaN where finite
    assert compare_output("y", np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), 0, 0)  # NaN both sides agrees


@pytest.mark.bad_input
# ---------------------------------------------------------------------------------- bad input
def test_corrupt_onnx(bench, tmp_path):
    (tmp_path / "c.onnx").write_bytes(b"\x08\x01\x12\xff\xff\xffbroken")
    assert_one_line_error(bench("validate", tmp_path / "c.onnx"), "is not a valid ONNX model")


def _traversal_model(folder: Path, location: str) -> Path:
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", location
    del weight.float_data[:]
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "evil.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.bad_input
@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_the_folder_is_refused(bench, tmp_path, location):
    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 16)
    path = _traversal_model(models, location)
    for command in (["validate", path], ["deploy", path, "--results", tmp_path / "r"]):
        done = bench(*command)
        assert done.code == 2
        assert_one_line_error(done, "outside its folder", "refused")
    assert not (tmp_path / "r").exists()


@pytest.mark.bad_input
def test_external_data_symlink_leaving_the_folder_is_refused(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 16)
    (models / "weights.bin").symlink_to(tmp_path / "secret.bin")
    path = _traversal_model(models, "weights.bin")
    with pytest.raises(ModelError, match="resolves outside the model folder"):
        check_external_data(onnx.load(str(path), load_external_data=False), path)


@pytest.mark.bad_input
@pytest.mark.parametrize("args, fragments", [
    (["export", "nowhere.py:make", "-o", "x.onnx"], ["model spec file not found: nowhere.py"]),
    (["export", "no_such_package_xyz.mod:make", "-o", "x.onnx"], ["model spec module 'no_such_package_xyz.mod' not found"]),
    (["export", MODELS + ":missing", "-o", "x.onnx"], ["has no 'missing'"]),
    (["export", MODELS, "-o", "x.onnx"], ["names no factory"]),
    (["export", MODELS + ":raising", "-o", "x.onnx"], ["raised RuntimeError: the factory needs a GPU"]),
    (["export", MODELS + ":not_a_module", "-o", "x.onnx"], ["returned int, not a torch.nn.Module"]),
    (["export", MODELS + ":needs_a_size", "-o", "x.onnx"], ["raised TypeError", "missing 1 required positional"]),
    (["export", MODELS + ":NOT_CALLABLE", "-o", "x.onnx"], ["raised TypeError", "not callable"]),
    (["export", MODELS + ":cnn", "-o", "x.onnx", "--input", "image=1by3"], ["--input 'image=1by3' must look like"]),
    (["export", MODELS + ":cnn", "-o", "x.onnx", "--input", "image=1x3x32x32:float7"], ["unknown dtype 'float7'"]),
    (["export", MODELS + ":cnn", "-o", "x.onnx", "--input", "image=1x3x32x32", "--dynamic", "image:9"], ["has rank 4, no axis 9"]),
    (["export", MODELS + ":cnn", "-o", "x.onnx", "--input", "image=1x3x7x7x7"], ["the model fails on the example input"]),
    (["export", MODELS + ":cnn", "-o", "x.onnx", "--mode", "script", "--exporter", "dynamo", "--input", "image=1x3x32x32"],
     ["--mode script exports with the TorchScript exporter"]),
    (["validate", "x.onnx", "--atol", "big"], ["--atol 'big' must be a number"]),
])
def test_bad_export_and_validate_input_is_one_line(bench, tmp_path, args, fragments):
    done = bench(*args)
    assert_one_line_error(done, *fragments)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.bad_input
def test_reference_with_another_output_count_is_one_line(bench, tmp_path):
    out = exported_mlp(bench, tmp_path)
    done = bench("validate", out, "--reference", spec("two_heads"),
                 "--inputs", _npz(tmp_path, x=np.ones((4, 6), np.float32)))
    assert done.code == 2
    assert_one_line_error(done, "the reference gives 2 outputs but the model has 1 (output)")


def _npz(folder: Path, **arrays) -> Path:
    path = folder / "inputs.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.bad_input
def test_the_requested_opset_is_honoured_or_refused(bench, tmp_path):
    """The dynamo exporter writes opset 18 at least: --opset 17 is converted down (and parity-checked), or refused
    with the working alternative; never written as 18 without a word."""
    converted = bench("export", spec("batch_mlp"), "-o", tmp_path / "mlp17.onnx", "--opset", "17")
    assert converted.code == 0, converted.stderr  # torch's own conversion manages this one
    assert {o.domain: o.version for o in onnx.load(str(tmp_path / "mlp17.onnx")).opset_import}[""] == 17
    refused = bench("export", spec("cnn"), "--input", "x=1x3x32x32", "-o", tmp_path / "cnn17.onnx", "--opset", "17")
    assert_one_line_error(refused, "wrote opset 18", "requested opset 17", "--exporter torchscript --opset 17")
    assert not (tmp_path / "cnn17.onnx").exists()
    scripted = bench("export", spec("cnn"), "--input", "x=1x3x32x32", "-o", tmp_path / "cnn17.onnx", "--opset", "17",
                     "--exporter", "torchscript", "--no-validate")
    assert scripted.code == 0, scripted.stderr
    assert {o.domain: o.version for o in onnx.load(str(tmp_path / "cnn17.onnx")).opset_import}[""] == 17


def test_two_identical_exports_are_the_same_bytes(bench, tmp_path):
    for name in ("a.onnx", "b.onnx"):
        assert bench("export", spec("batch_mlp"), "-o", tmp_path / name, "--no-validate").code == 0
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
