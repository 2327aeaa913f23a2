"""ncnn on the CPU, from a bundle `bench convert --to ncnn` makes (pnnx's .param/.bin and the model's signature:
ncnn's graph has no batch axis and names its blobs in0/out0, so the manifest maps them to the ONNX names).

fp16/bf16 storage and arithmetic are off: ncnn turns them on by default where the CPU has them (ARMv8.2), which
would compare another precision with onnxruntime's f32. Each inference is one extractor, as ncnn is meant to be used.
"""

from __future__ import annotations

import numpy as np

from . import RuntimeFailure, bundle_folder, manifest_args

_LOWER_PRECISION = ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage",
                    "use_bf16_packed")


def version():
    import ncnn

    return ncnn.__version__


class Session(object):
    def __init__(self, net, manifest):
        self._net = net
        self._inputs = manifest_args(manifest["inputs"])
        self._outputs = manifest_args(manifest["outputs"])
        blobs_in = [(e["name"], e.get("blob", e["name"])) for e in manifest["inputs"]]
        blobs_out = [(e.get("blob", e["name"]), tuple(e["shape"])) for e in manifest["outputs"]]
        import ncnn

        Mat = ncnn.Mat
        create_extractor = net.create_extractor

        def checked(feeds):
            """The feeds as ncnn takes them: batch 1, contiguous (a pipeline's preprocess may give anything)."""
            ready = {}
            for name, _ in blobs_in:
                value = feeds[name]
                if value.shape[0] != 1:
                    raise RuntimeFailure("ncnn runs one sample at a time: input %r has batch %d, the bundle takes 1"
                                         % (name, value.shape[0]))
                ready[name] = np.ascontiguousarray(value)
            return ready

        def extract(feeds):
            extractor = create_extractor()
            for name, blob in blobs_in:
                extractor.input(blob, Mat(feeds[name][0]))  # ncnn's Mat has no batch axis
            mats = []
            for blob, _ in blobs_out:
                code, mat = extractor.extract(blob)  # the inference happens here, layer by layer as needed
                if code != 0:
                    raise RuntimeFailure("ncnn could not compute output %s (error %d)" % (blob, code))
                mats.append(mat)
            return mats

        def run(output_names, feeds):
            return [np.array(mat).reshape(shape) for mat, (_, shape) in zip(extract(checked(feeds)), blobs_out)]

        self.run = run
        self.extract = lambda feeds: extract(checked(feeds))  # the outputs as ncnn's own Mats
        # The timed loops feed arrays the harness built for this signature (batch 1, contiguous: checked once by
        # the first inference through `run`), so their call is the extraction alone.
        if len(blobs_in) == 1 and len(blobs_out) == 1:
            (name_in, blob_in), (blob_out, _) = blobs_in[0], blobs_out[0]

            def timed_run(output_names, feeds):
                extractor = create_extractor()
                extractor.input(blob_in, Mat(feeds[name_in][0]))
                code, mat = extractor.extract(blob_out)
                if code != 0:
                    raise RuntimeFailure("ncnn could not compute output %s (error %d)" % (blob_out, code))
                return mat

            self.timed_run = timed_run
        else:
            self.timed_run = lambda output_names, feeds: extract(feeds)

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def get_providers(self):
        return ["ncnn:cpu"]


def create_session(request, path=None):
    import ncnn
    import os

    path = path or request["model"]
    if not (path.endswith(".tar") or os.path.isdir(path)):
        from . import BundleError

        raise BundleError("%s is not an ncnn bundle: ncnn runs the .tar `bench convert MODEL.onnx --to ncnn` makes"
                          % path)
    folder, manifest = bundle_folder(path, "ncnn")
    net = ncnn.Net()
    for flag in _LOWER_PRECISION:
        if hasattr(net.opt, flag):
            setattr(net.opt, flag, False)
    if request["intra_op_threads"]:
        net.opt.num_threads = request["intra_op_threads"]
    param = os.path.join(folder, manifest["files"]["param"])
    weights = os.path.join(folder, manifest["files"]["bin"])
    if net.load_param(param) != 0:
        raise RuntimeFailure("ncnn %s cannot load %s: a layer it does not know (see its message on stderr), or a "
                             "damaged .param" % (version(), path))
    if net.load_model(weights) != 0:
        raise RuntimeFailure("ncnn %s cannot load the weights of %s (a truncated .bin?)" % (version(), path))
    session = Session(net, manifest)
    _check_against_manifest(session, manifest, path)
    return session


def _check_against_manifest(session, manifest, path):
    """ncnn's .param does not state its blobs' shapes: one inference on zeros of the manifest's input shapes must
    give outputs of the manifest's sizes, or the manifest does not describe this graph (it would be measured
    with inputs it was not made for)."""
    from . import BundleError

    feeds = dict((e["name"], np.zeros(e["shape"], dtype=np.float32)) for e in manifest["inputs"])
    try:
        mats = session.extract(feeds)
    except RuntimeFailure as exc:
        raise BundleError("model bundle %s: ncnn cannot run it at the shapes its manifest states (%s)" % (path, exc))
    for entry, mat in zip(manifest["outputs"], mats):
        size, expected = np.array(mat).size, int(np.prod(entry["shape"]))
        if size != expected:
            raise BundleError("model bundle %s: output %s has %d values at the manifest's input shapes, but the manifest "
                              "says %s (%d)" % (path, entry["name"], size, entry["shape"], expected))


def settings_of(session, request):
    return {"device": "cpu", "precision": "f32", "threads": int(session._net.opt.num_threads)}
