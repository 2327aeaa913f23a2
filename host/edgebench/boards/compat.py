"""Can the board's onnxruntime load this model? Decided before anything is uploaded.

From onnxruntime's compatibility matrix (docs/reference/compatibility): each release implements up to one
ai.onnx opset and one IR version. A model stamped with a newer opset or IR version may fail to load.
"""

from __future__ import annotations

# onnxruntime (major, minor) -> (max ai.onnx opset, max IR version)
ORT_SUPPORT = {
    (1, 6): (13, 7), (1, 7): (13, 7), (1, 8): (14, 7), (1, 9): (15, 8), (1, 10): (15, 8), (1, 11): (16, 8),
    (1, 12): (17, 8), (1, 13): (17, 8), (1, 14): (18, 8), (1, 15): (19, 9), (1, 16): (19, 9), (1, 17): (20, 9),
    (1, 18): (21, 10), (1, 19): (21, 10), (1, 20): (21, 10), (1, 21): (22, 10), (1, 22): (23, 11), (1, 23): (23, 11),
}


def _version(text: str) -> tuple[int, int]:
    parts = (text.split("+")[0].split(".") + ["0"])[:2]
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def support_of(ort_version: str) -> tuple[int, int]:
    """(max opset, max IR version) of an onnxruntime release.

    A release newer than the table is assumed to load at least what this host's onnx package writes.
    """
    version = _version(ort_version)
    if version in ORT_SUPPORT:
        return ORT_SUPPORT[version]
    newest = max(ORT_SUPPORT)
    if version > newest:
        import onnx

        table_opset, table_ir = ORT_SUPPORT[newest]
        return max(table_opset, onnx.defs.onnx_opset_version()), max(table_ir, onnx.IR_VERSION)
    return ORT_SUPPORT[min(ORT_SUPPORT)]  # older than the table: the oldest row is the best guess


def minimum_ort_for(opset: int, ir_version: int) -> str | None:
    for version in sorted(ORT_SUPPORT):
        max_opset, max_ir = ORT_SUPPORT[version]
        if opset <= max_opset and ir_version <= max_ir:
            return f"{version[0]}.{version[1]}"
    return None


def incompatibility(model: dict, ort_version: str | None) -> tuple[str, str] | None:
    """(problem, fix) when the board's onnxruntime cannot load the model; None when it can."""
    if not ort_version:
        return ("the board has no onnxruntime", "install it on the board: python3 -m pip install onnxruntime")
    opset = model["opsets"].get("ai.onnx", 0)
    ir_version = model["ir_version"]
    max_opset, max_ir = support_of(ort_version)
    if opset <= max_opset and ir_version <= max_ir:
        return None
    stamped = f"opset {opset}, IR version {ir_version}"
    problem = (f"{model['name']} needs a newer onnxruntime than the board's {ort_version} "
               f"(the model is {stamped}; {ort_version} loads up to opset {max_opset}, IR version {max_ir})")
    needed = minimum_ort_for(opset, ir_version)
    fixes = [f"convert it: bench convert {model['path']} --to opset:{max_opset}"]
    if needed:
        fixes.append(f"or upgrade the board to onnxruntime >= {needed}")
    return problem, " ".join(fixes)
