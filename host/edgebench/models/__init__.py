"""What a model file is: its signature and identity (modelinfo), the PyTorch side (torchmodel), parity of two
models' outputs (parity), ONNX test data sets (testdata), a variant's provenance (provenance), other runtimes'
bundles and their sessions on this host (runtimes) and the conversions that make them (runtime_convert,
litert_worker).

models/ may import the shared modules at the top and results/ (reading a provenance file as a result is read);
never boards/, stages/, the CLI or the API -- tests/test_architecture.py checks.
"""
