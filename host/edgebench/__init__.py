"""edgebench: how fast and how accurately a PyTorch model runs on a real edge board.

From Python:

    import edgebench.api as eb
    eb.deploy(["model.onnx"], target="local")
    frame = edgebench.load_results("results/")

Keep this module import-free: `bench --help` and `import edgebench` must not pull in torch, onnx or pandas.
The names below load edgebench.api on first use (PEP 562).
"""

__version__ = "0.1.0"

# Package-level shortcuts to the API whose names no submodule takes (edgebench.stages.deploy is the deploy stage).
_API_SHORTCUTS = ("load_results", "samples")


def __getattr__(name: str):
    if name in _API_SHORTCUTS:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgebench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API_SHORTCUTS, "api"])
