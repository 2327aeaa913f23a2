"""`Result`: the one read view over a result document, for every report, index, history and search reader.

A document reaching a reader has been migrated to the current SCHEMA_VERSION and checked against
`schema.RESULT` (files.load_result), so each field has the right type where present; but most blocks are
optional (null or absent: no accuracy pass, no plan, a file from an older version or from elsewhere). This view is
where "absent" is decided once: a block reads as {} or [] and a figure as None, never as a KeyError or a
`.get() or {}` chain repeated in twelve modules. It copies nothing and never writes: `.document` is the dict.
"""

from __future__ import annotations

from typing import Any


def _block(value) -> dict:
    return value if isinstance(value, dict) else {}


def _items(value) -> list:
    return value if isinstance(value, list) else []


class Result:
    __slots__ = ("document",)

    def __init__(self, document: dict):
        self.document = document

    # --- identity -----------------------------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.document["run_id"]

    @property
    def created_at(self) -> str | None:
        return self.document.get("created_at")

    @property
    def path(self) -> str | None:
        """Where the file was read from (set by the reader, not stored in the file)."""
        return self.document.get("_path")

    @property
    def status(self) -> str:
        return self.document["status"]

    @property
    def ok(self) -> bool:
        """A run that measured: status ok with at least one repeat (what every latency figure needs)."""
        return self.status == "ok" and bool(self.repeats)

    @property
    def error_message(self) -> str | None:
        return _block(self.document.get("error")).get("message")

    @property
    def error_kind(self) -> str | None:
        return _block(self.document.get("error")).get("kind")

    # --- the model, and the variant it may be -------------------------------------------------------------------
    @property
    def model(self) -> dict:
        return self.document["model"]

    @property
    def model_name(self) -> str:
        return self.model["name"]

    @property
    def provenance(self) -> dict:
        return _block(self.model.get("provenance"))

    @property
    def parent(self) -> dict:
        """The model a variant was converted from ({} for an original)."""
        return _block(self.provenance.get("parent"))

    @property
    def family(self) -> str:
        """The name a variant is listed under: its parent's, or its own for an original."""
        return self.parent.get("name") or self.model_name

    @property
    def kept_in_float(self) -> list | None:
        """The nodes an INT8 variant keeps in float (`bench diverge --budget`), or None."""
        kept = _block(self.provenance.get("settings")).get("nodes_to_exclude")
        return kept if isinstance(kept, list) else None

    # --- where it ran and how it got here -----------------------------------------------------------------------
    @property
    def target_name(self) -> str:
        return self.document["target"]["name"]

    @property
    def origin(self) -> dict:
        return _block(self.document.get("origin"))

    @property
    def imported(self) -> bool:
        """Brought in by `bench import`: its digest proves integrity, not who measured it."""
        return self.origin.get("kind") == "import"

    @property
    def plan_name(self) -> str | None:
        return _block(self.document.get("plan")).get("name")

    @property
    def plan_cell(self) -> str | None:
        return _block(self.document.get("plan")).get("cell")

    # --- what was asked ---------------------------------------------------------------------------------------------
    @property
    def settings(self) -> dict:
        return _block(self.document.get("settings"))

    @property
    def scenario(self) -> dict:
        """The load scenario asked for ({} for single-stream back to back)."""
        return _block(self.settings.get("scenario"))

    @property
    def batch(self) -> int:
        return self.settings.get("batch") or 1

    # --- what was measured ------------------------------------------------------------------------------------------
    @property
    def measurements(self) -> dict:
        return _block(self.document.get("measurements"))

    @property
    def repeats(self) -> list[dict]:
        return _items(self.measurements.get("repeats"))

    @property
    def peak_rss_bytes(self) -> float | None:
        return _block(self.measurements.get("memory")).get("peak_rss_bytes")

    @property
    def runtime_version(self) -> str | None:
        return _block(self.measurements.get("runtime")).get("version")

    @property
    def validity(self) -> dict:
        return _block(self.document.get("validity"))

    @property
    def warnings(self) -> list[str]:
        return _items(self.validity.get("warnings"))

    @property
    def accuracy(self) -> dict:
        """The accuracy block ({} when no accuracy pass ran)."""
        return _block(self.document.get("accuracy"))

    @property
    def outputs(self) -> list[dict]:
        return _items(self.accuracy.get("outputs"))

    @property
    def top1_pct(self) -> float | None:
        return _block(_block(self.accuracy.get("labels")).get("board")).get("top1_pct")

    @property
    def profile(self) -> dict:
        return _block(self.document.get("profile"))

    @property
    def top_operators(self) -> list[dict]:
        return _items(self.profile.get("top_operators"))

    @property
    def pipeline_results(self) -> dict:
        """A pipeline run's board results against the host's ({} otherwise)."""
        return _block(_block(self.document.get("pipeline")).get("results"))

    @property
    def energy(self) -> dict | None:
        """The energy block, or None when no energy pass was asked for (`available: false` says it could not)."""
        block = self.document.get("energy")
        return block if isinstance(block, dict) else None

    @property
    def mj_per_inference(self) -> float | None:
        return _block(self.energy).get("mj_per_inference")

    def get(self, key: str, default: Any = None) -> Any:
        """A top-level field as stored (for the few readers that pass a block on whole)."""
        return self.document.get(key, default)
