"""The demo models' code, loaded from the package's source file (`host/edgebench/stages/demo.py`) by path: a model spec
such as `examples/models.py:setnet` is also imported where edgebench is not installed (litert-torch's own venv for
`bench convert --to litert`), and that file needs only torch."""

import importlib.util
import sys
from pathlib import Path

_SOURCE = Path(__file__).resolve().parent.parent / "host" / "edgebench" / "stages" / "demo.py"


def load():
    if "edgebench_demo_source" not in sys.modules:
        spec = importlib.util.spec_from_file_location("edgebench_demo_source", _SOURCE)
        assert spec is not None and spec.loader is not None, _SOURCE
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["edgebench_demo_source"]
