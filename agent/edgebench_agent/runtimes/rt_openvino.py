"""OpenVINO on the CPU: reads an .onnx directly, or an OpenVINO IR bundle (`bench convert --to openvino`).

Precision is pinned to f32 (INFERENCE_PRECISION_HINT): OpenVINO's CPU plugin otherwise runs bf16 on x86 CPUs that
have it and f16 on ARM, which would compare another precision with onnxruntime's f32. INT8/FP16 are variants.
"""

from __future__ import annotations

import os

from ..shared.inputs import is_free
from . import Arg, BundleError, NUMPY_TO_ORT, RuntimeFailure, bundle_folder

DEVICE = "CPU"
PRECISION = "f32"


def version():
    """The release (2026.4.1), not the build string OpenVINO reports (2026.4.1-22982-e213a1...-releases/2026/4)."""
    import openvino

    from . import _distribution_version

    return _distribution_version("openvino") or openvino.get_version()


def _ort_type(element_type):
    name = element_type.to_dtype().name if hasattr(element_type, "to_dtype") else str(element_type)
    return NUMPY_TO_ORT.get(name, "tensor(%s)" % name)


def _shape(partial_shape):
    return [d.get_length() if d.is_static else None for d in partial_shape]


class Session(object):
    def __init__(self, compiled, names):
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._inputs = [Arg(names.get(p.get_any_name(), p.get_any_name()), _ort_type(p.get_element_type()),
                            _shape(p.get_partial_shape())) for p in compiled.inputs]
        self._outputs = [Arg(names.get(p.get_any_name(), p.get_any_name()), _ort_type(p.get_element_type()),
                             _shape(p.get_partial_shape())) for p in compiled.outputs]
        infer = self._request.infer
        count = len(self._outputs)

        def run(output_names, feeds):
            # infer() copies the feeds in and returns the outputs in the compiled model's order
            values = infer(feeds).to_tuple()
            return list(values[:count])

        self.run = run
        self.timed_run = lambda output_names, feeds: infer(feeds)  # outputs stay in OpenVINO's tensors

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def get_providers(self):
        return ["openvino:%s" % DEVICE]


def create_session(request, path=None):
    import openvino

    path = path or request["model"]
    core = openvino.Core()
    manifest = None
    if path.endswith(".tar") or os.path.isdir(path):
        folder, manifest = bundle_folder(path, "openvino")
        model_path = os.path.join(folder, manifest["files"]["xml"])
    elif path.endswith(".onnx") or path.endswith(".xml"):
        model_path = path
    else:
        raise BundleError("%s is not a model OpenVINO reads here: give an .onnx, an OpenVINO IR .xml, or a bundle from "
                          "`bench convert --to openvino`" % path)
    config = {"INFERENCE_PRECISION_HINT": PRECISION}
    if request["intra_op_threads"]:
        config["INFERENCE_NUM_THREADS"] = request["intra_op_threads"]
    try:
        compiled = core.compile_model(core.read_model(model_path), DEVICE, config)
    except Exception as exc:  # OpenVINO raises RuntimeError for most failures
        raise RuntimeFailure("OpenVINO %s cannot load %s: %s" % (version(), path, " ".join(str(exc).split())[:400]))
    session = Session(compiled, {})
    if manifest is not None:
        _check_against_manifest(session, manifest, path)
    return session


def _check_against_manifest(session, manifest, path):
    """The bundle's manifest must describe the IR it holds: the same names, fixed sizes where the IR fixes them."""
    for side, args in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        stated = [(e["name"], e["shape"]) for e in manifest[side]]
        actual = [(a.name, a.shape) for a in args]
        agree = len(stated) == len(actual) and all(
            name == real_name and len(shape) == len(real_shape) and all(
                is_free(d) or is_free(r) or d == r for d, r in zip(shape, real_shape))
            for (name, shape), (real_name, real_shape) in zip(stated, actual))
        if not agree:
            raise BundleError("model bundle %s: its manifest's %s %s are not the IR's %s" % (path, side, stated, actual))


def settings_of(session, request):
    compiled = session._compiled
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")  # an element type: f32, bf16, f16
    facts = {"device": DEVICE, "precision": precision.get_type_name() if hasattr(precision, "get_type_name") else str(precision),
             "threads": int(compiled.get_property("INFERENCE_NUM_THREADS"))}
    try:
        facts["streams"] = int(compiled.get_property("NUM_STREAMS"))
    except Exception:
        pass
    return facts
