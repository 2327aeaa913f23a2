"""Convert a PyTorch module to a .tflite with litert-torch; run by `bench convert --to litert` in a Python that has
litert-torch (often its own venv: it pins its own torch and jax). Standalone: it imports nothing of edgebench.

stdin: {"onnx", "spec": "file.py:factory", "out", "shapes", "dtypes"}; stdout: one JSON line, {"inputs": [tflite
input tensor names in the ONNX inputs' order], "outputs": [...], "litert_torch": version} or {"error": "..."}.
The spec's file runs: the user named it. The ONNX model's initializers become the module's weights by name.
"""

import importlib.util
import json
import sys


def load_factory(spec):
    location, _, attribute = spec.rpartition(":")
    loader = importlib.util.spec_from_file_location("_edgebench_litert_spec", location)
    if loader is None or loader.loader is None:
        raise ValueError("cannot import %s" % location)
    module = importlib.util.module_from_spec(loader)
    sys.modules[loader.name] = module
    loader.loader.exec_module(module)
    return getattr(module, attribute)


def main():
    job = json.loads(sys.stdin.read())
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    module = load_factory(job["spec"])()
    if not isinstance(module, torch.nn.Module):
        raise ValueError("%s did not return a torch.nn.Module" % job["spec"])
    weights = dict((i.name, numpy_helper.to_array(i)) for i in onnx.load(job["onnx"]).graph.initializer)
    state = module.state_dict()
    missing = [k for k, v in state.items() if k not in weights or tuple(weights[k].shape) != tuple(v.shape)]
    if missing:  # an exporter folded them (BatchNorm into Conv): the spec's own weights; parity decides
        source = "the spec's own (the ONNX model has none named %s)" % ", ".join(missing[:3])
    else:
        module.load_state_dict(dict((k, torch.from_numpy(np.array(weights[k]))) for k in state))
        source = "the ONNX model's, by name"
    module.eval()
    types = {"tensor(float)": torch.float32, "tensor(int64)": torch.int64, "tensor(int32)": torch.int32}
    examples = tuple(torch.zeros(shape, dtype=types.get(dtype, torch.float32))
                     for shape, dtype in zip(job["shapes"], job["dtypes"]))
    import litert_torch

    litert_torch.convert(module, examples).export(job["out"])
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=job["out"])
    runner = interpreter.get_signature_runner()  # arguments args_0, args_1, ... in the module's order

    def ordered(details):
        keys = sorted(details, key=lambda k: (len(k), k))  # args_2 before args_10
        return [details[k]["name"] for k in keys]

    names_in = ordered(runner.get_input_details())
    names_out = ordered(runner.get_output_details())
    try:
        from importlib.metadata import version

        converter = version("litert-torch")
    except Exception:
        converter = "unknown"
    return {"inputs": names_in, "outputs": names_out, "litert_torch": converter, "weights": source}


if __name__ == "__main__":
    try:
        answer = main()
    except Exception as exc:  # one line for the host: the traceback would be noise in a conversion report
        answer = {"error": "%s: %s" % (type(exc).__name__, " ".join(str(exc).split())[:400])}
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    sys.exit(0 if "error" not in answer else 1)
