"""Provenance of a converted variant: a JSON file beside it (`model.int8-dynamic.onnx.edgebench.json`) naming its
parent (by sha256), the conversion, the tools and the parity check. Results carry it; compare groups variants
under their parent by it.

PROVENANCE_VERSION history:
  1 - first version.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..fileio import file_sha256, write_atomically

PROVENANCE_SUFFIX = ".edgebench.json"
PROVENANCE_VERSION = 1


def sidecar_of(variant: Path) -> Path:
    return Path(variant).with_name(Path(variant).name + PROVENANCE_SUFFIX)


def write_provenance(variant: Path, provenance: dict) -> Path:
    """Write the provenance beside its variant, atomically (a reader never sees half a file)."""
    path = sidecar_of(variant)
    write_atomically(path, json.dumps(provenance, indent=1, default=_plain))
    return path


def _plain(value):
    import numpy as np

    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def read_provenance(model_path: Path, sha256: str | None = None) -> dict | None:
    """The provenance stored beside a variant, or None for a model that is not one (or whose file changed since).
    sha256: the model's hash when the caller has it already (each file is hashed once)."""
    from ..errors import ResultError
    from ..results.files import read_json_file

    sidecar = sidecar_of(model_path)
    if not sidecar.exists():
        return None
    try:
        provenance = read_json_file(sidecar, limit=2**20, what="provenance")
    except ResultError:
        return None
    if not isinstance(provenance, dict) or provenance.get("sha256") != (sha256 or file_sha256(Path(model_path))):
        return None  # the variant was changed after conversion: the provenance no longer describes it
    return provenance


def variants_of(model_path: Path, folder: Path) -> list[Path]:
    """Variants in `folder` whose provenance names this model (by sha256) as their parent."""
    parent_sha = file_sha256(Path(model_path))
    found = []
    for sidecar in sorted(Path(folder).glob(f"*{PROVENANCE_SUFFIX}")):
        variant = sidecar.with_name(sidecar.name[: -len(PROVENANCE_SUFFIX)])
        provenance = read_provenance(variant)
        if provenance and (provenance.get("parent") or {}).get("sha256") == parent_sha:
            found.append(variant)
    return found
