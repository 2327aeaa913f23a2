"""edgebench: how fast and how accurately a PyTorch model runs on a real edge board.

Keep this module import-free: `bench --help` must not pull in torch, onnx or pandas.
"""

__version__ = "0.1.0"
