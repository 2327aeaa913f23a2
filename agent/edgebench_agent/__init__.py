"""edgebench board agent: measures an ONNX model with onnxruntime on the machine it runs on.

Depends on the standard library, numpy and onnxruntime only, and keeps to Python 3.8 syntax:
it must run on the oldest Python a board ships (JetPack 5 has 3.8).
"""

__version__ = "0.1.0"
