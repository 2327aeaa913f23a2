"""`bench import`: results made by the agent standing alone on a board become full results in results/.

Same schema as a deploy: model identity by sha256 (checked against the model file when one is named), target
facts from the agent's own `info`. Refused: a file that is not an agent result, one from a newer protocol, one
whose digest shows it was edited after the agent wrote it, one whose model hash does not match the model
named, and one already imported.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from typing import Any

from ..agentlib import PROTOCOL_VERSION, reply_digest

from .deploy import SETTING_FIELDS
from ..errors import ResultError
from ..models.modelinfo import inspect_model
from ..results.schema import AGENT_REPLY, ShapeError, check
from .energy import result_block
from ..results.files import build_result, load_results, new_run_id, read_json_file, write_result


# What an import's digest proves, said wherever an import is reported.
DIGEST_MEANING = ("the digest shows the file is unchanged since an edgebench agent wrote it (integrity); it cannot "
                  "show which board or person wrote it (authenticity): the result is marked as imported in every report")


def read_reply(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ResultError(f"no such file: {path}")
    reply = read_json_file(path, what="agent result")
    if not isinstance(reply, dict) or reply.get("command") != "run" or "protocol_version" not in reply:
        raise ResultError(f"{path} is not a result of `edgebench-agent run` (a deploy result is already in results/)")
    if not isinstance(reply["protocol_version"], int) or reply["protocol_version"] > PROTOCOL_VERSION:
        raise ResultError(f"{path} was written by an agent speaking protocol {reply['protocol_version']}, newer than "
                          f"this edgebench ({PROTOCOL_VERSION})", "upgrade edgebench on this host")
    if reply.get("digest") != reply_digest(reply):
        raise ResultError(f"{path} was modified after the agent wrote it (its digest does not match); refused",
                          "import the file exactly as the agent wrote it")
    try:
        check(reply, AGENT_REPLY)
        if reply.get("started_at"):
            try:
                datetime.datetime.fromisoformat(reply["started_at"])
            except ValueError:
                raise ShapeError(f"field 'started_at' must be an ISO 8601 time, got {reply['started_at'][:40]!r}") from None
    except ShapeError as exc:
        raise ResultError(f"{path} is not a valid agent result: {exc}") from exc
    return reply


def _model_block(reply: dict, model: Path | None) -> dict:
    ran = (reply.get("model") or {}).get("sha256")
    if model is not None:
        block = inspect_model(model)
        if ran and block["sha256"] != ran:
            raise ResultError(f"the result ran a model with sha256 {ran[:12]}..., but {model} is {block['sha256'][:12]}...; refused",
                              "name the exact model file the board ran, or import without --model")
        return block
    board_path = (reply.get("request") or {}).get("model") or "model.onnx"
    name = Path(board_path).name if board_path.endswith(".ort") else Path(board_path).stem
    return {"name": name, "path": board_path, "sha256": ran, "size_bytes": None, "format": "ort" if board_path.endswith(".ort") else "onnx",
            "ir_version": None, "opsets": {}, "producer": "", "external_data": [], "provenance": None,
            "inputs": [{k: i[k] for k in ("name", "dtype", "shape")} for i in reply.get("inputs") or []],
            "outputs": reply.get("outputs") or []}


def import_reply(path: Path, results_dir: Path, model: Path | None = None, target: str | None = None) -> Path:
    reply = read_reply(path)
    digest = reply["digest"]
    existing, _ = load_results([results_dir]) if Path(results_dir).is_dir() else ([], [])
    from ..results.view import Result

    for document in existing:
        if Result(document).origin.get("digest") == digest:
            raise ResultError(f"{path} is already in {results_dir} as {document['run_id']}.json; not stored twice")
    info = reply.get("info") or {}
    machine = info.get("machine") or {}
    target_name = target or machine.get("hostname") or "board"
    target_block: dict[str, Any] = {"name": target_name, "kind": "standalone", "address": machine.get("hostname") or "unknown",
                    "python": (info.get("python") or {}).get("executable"), "tags": [], "info": info}
    request = reply.get("request") or {}
    settings = {key: request.get(key) for key in SETTING_FIELDS if key != "accuracy"}
    settings["accuracy"] = ({"dataset": request["accuracy"].get("dataset"), "batch_size": request["accuracy"].get("batch_size")}
                            if isinstance(request.get("accuracy"), dict) else None)
    accuracy = None
    if reply.get("accuracy") and reply["accuracy"].get("labels"):
        answer = reply["accuracy"]
        accuracy = {"source": answer.get("source"), "reference": None, "samples": answer.get("samples"),
                    "batches": answer.get("batches"), "compared_on": "board", "outputs": [], "passed": None,
                    "labels": answer["labels"]}
    profile = reply.get("profile")
    if profile and profile.get("top_operators"):
        profile = {k: profile[k] for k in ("iterations", "file", "total_us", "top_operators", "top_nodes") if k in profile}
    model_block = _model_block(reply, model)
    created = reply.get("started_at") or datetime.datetime.now(datetime.timezone.utc).isoformat()
    when = datetime.datetime.fromisoformat(created)
    document = build_result(run_id=new_run_id(model_block["name"], target_name, when), created_at=when.isoformat(timespec="seconds"),
                            model=model_block, target=target_block, settings=settings, reply=reply,
                            accuracy=accuracy, profile=profile if profile and profile.get("top_operators") else None,
                            energy=result_block(reply.get("energy")))
    document["origin"] = {"kind": "import", "file": Path(path).name, "digest": digest, "board": target_name}
    try:  # what reports will read must hold before the file is stored
        check(document)
    except ShapeError as exc:
        raise ResultError(f"{path} cannot become a valid result: {exc}") from exc
    return write_result(results_dir, document)
