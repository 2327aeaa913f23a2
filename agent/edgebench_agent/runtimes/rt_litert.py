"""LiteRT (TensorFlow Lite's runtime, `ai-edge-litert`): a .tflite as is, or a bundle from `bench convert --to
litert` whose manifest maps the interpreter's tensor names to the ONNX model's input and output names."""

from __future__ import annotations

import os

from . import Arg, BundleError, NUMPY_TO_ORT, bundle_folder


def version():
    from ai_edge_litert import interpreter

    return getattr(interpreter, "__version__", None) or _package_version()


def _package_version():
    from . import _distribution_version

    return _distribution_version("ai-edge-litert") or "unknown"


class Session(object):
    def __init__(self, interpreter, manifest, threads):
        self._interpreter = interpreter
        self.threads = threads
        details_in = interpreter.get_input_details()
        details_out = interpreter.get_output_details()
        if manifest is not None:  # the ONNX names, tensors found by the names the conversion read on the host
            by_name = dict((d["name"], d) for d in details_in + details_out)
            try:
                pairs_in = [(e["name"], by_name[e["blob"]]) for e in manifest["inputs"]]
                pairs_out = [(e["name"], by_name[e["blob"]]) for e in manifest["outputs"]]
            except KeyError as exc:
                raise BundleError("the LiteRT bundle's manifest names tensor %s, which its .tflite lacks" % exc)
            for entry, (_, detail) in zip(manifest["inputs"] + manifest["outputs"], pairs_in + pairs_out):
                real = [int(x) for x in detail["shape"]]
                if entry["shape"] != real or NUMPY_TO_ORT.get(detail["dtype"].__name__) != NUMPY_TO_ORT[entry["dtype"]]:
                    raise BundleError("the LiteRT bundle's manifest says %s is %s %s; its .tflite has %s %s"
                                      % (entry["name"], entry["dtype"], entry["shape"], detail["dtype"].__name__, real))
        else:
            pairs_in = [(d["name"], d) for d in details_in]
            pairs_out = [(d["name"], d) for d in details_out]
        self._inputs = [Arg(name, NUMPY_TO_ORT.get(d["dtype"].__name__, str(d["dtype"])), [int(x) for x in d["shape"]])
                        for name, d in pairs_in]
        self._outputs = [Arg(name, NUMPY_TO_ORT.get(d["dtype"].__name__, str(d["dtype"])), [int(x) for x in d["shape"]])
                         for name, d in pairs_out]
        set_tensor, invoke, get_tensor = interpreter.set_tensor, interpreter.invoke, interpreter.get_tensor
        slots_in = [(name, d["index"]) for name, d in pairs_in]
        slots_out = [d["index"] for _, d in pairs_out]

        def run(output_names, feeds):
            for name, index in slots_in:
                set_tensor(index, feeds[name])
            invoke()
            return [get_tensor(index) for index in slots_out]  # get_tensor copies: the next invoke cannot change it

        if len(slots_in) == 1 and len(slots_out) == 1:  # the common case without loops: the timed loop's overhead
            (name_in, index_in), (index_out,) = slots_in[0], slots_out

            def run(output_names, feeds):  # noqa: F811 - the same call, specialised
                set_tensor(index_in, feeds[name_in])
                invoke()
                return [get_tensor(index_out)]

        self.run = run

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def get_providers(self):
        return ["litert:cpu"]


def create_session(request, path=None):
    from ai_edge_litert.interpreter import Interpreter

    path = path or request["model"]
    manifest = None
    if path.endswith(".tar") or os.path.isdir(path):
        folder, manifest = bundle_folder(path, "litert")
        model = os.path.join(folder, manifest["files"]["tflite"])
    elif path.endswith(".tflite"):
        model = path
    else:
        raise BundleError("%s is not a LiteRT model: give a .tflite or a bundle from `bench convert --to litert`" % path)
    threads = request["intra_op_threads"] or None
    try:
        interpreter = Interpreter(model_path=model, num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        from . import RuntimeFailure

        raise RuntimeFailure("LiteRT cannot load %s: %s" % (path, " ".join(str(exc).split())[:400]))
    return Session(interpreter, manifest, threads)


def settings_of(session, request):
    return {"device": "cpu", "precision": "as stored in the model", "threads": session.threads or "default"}
