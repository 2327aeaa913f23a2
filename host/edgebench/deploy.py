"""Deploy: put the agent and the model where the target runs them, run, and store one result per model.

Bad input (a missing or corrupt model, an inputs file that does not fit) stops everything before any
result is written. A run that fails on the board is recorded as a failed result and the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgebench_agent.protocol import RUN_DEFAULTS, RequestError, normalize_run_request

from .agent_client import AgentClient
from .errors import AgentError, InputError, ModelError
from .modelinfo import file_sha256, inspect_model
from .results import build_result, new_run_id, utc_now, write_result
from .targets import Target

# Request fields that describe how to measure (the rest say what to measure and where to write).
SETTING_FIELDS = tuple(k for k in RUN_DEFAULTS if k not in ("protocol_version", "model", "inputs", "out"))

ModelEvent = Callable[[str, dict], None]


@dataclass
class RunSettings:
    """How to measure: every run option of the agent, plus the host-side timeout."""

    options: dict = field(default_factory=dict)  # subset of SETTING_FIELDS overriding the agent's defaults
    inputs: Path | None = None  # user-supplied .npz
    timeout_s: float | None = None  # None: derived from the run's own maximums

    def request(self, model_path: str, inputs_path: str | None) -> dict:
        """The normalized agent request; raises InputError for an option the agent would refuse."""
        raw = {**self.options, "model": model_path, "inputs": inputs_path}
        try:
            return normalize_run_request(raw)
        except RequestError as exc:
            raise InputError(str(exc)) from None

    def recorded(self) -> dict:
        """What a result stores about its settings (every field, defaults included, so runs compare)."""
        request = self.request("-", None)
        recorded = {key: request[key] for key in SETTING_FIELDS}
        if self.inputs is not None:
            recorded["inputs_file"] = {"path": str(self.inputs), "sha256": file_sha256(self.inputs)}
        return recorded

    def timeout_for(self, request: dict) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        per_repeat = request["max_seconds"] + request["warmup_max_seconds"] + 120.0  # + load and first run
        return per_repeat * request["repeats"]


@dataclass
class DeployOutcome:
    model_path: Path
    document: dict
    path: Path


def check_inputs(models: list[Path], settings: RunSettings) -> list[dict]:
    """Everything that can be checked before touching the target. Returns the model blocks."""
    settings.request("-", None)  # option errors first: they are the cheapest to fix
    if settings.inputs is not None and not Path(settings.inputs).is_file():
        raise InputError(f"inputs file not found: {settings.inputs}")
    if not models:
        raise ModelError("no model given", "pass one or more .onnx files")
    return [inspect_model(Path(m)) for m in models]


def deploy(models: list[Path], target: Target, settings: RunSettings, results_dir: Path,
           on_event: ModelEvent | None = None) -> list[DeployOutcome]:
    model_blocks = check_inputs(models, settings)
    recorded_settings = settings.recorded()
    transport = target.open_transport()
    outcomes = []
    try:
        client = AgentClient(transport)
        info = client.info()
        target_block = {**target.describe(), "info": info}
        inputs_remote = transport.stage(Path(settings.inputs)) if settings.inputs else None
        for model_path, model in zip(models, model_blocks):
            created = utc_now()
            run_id = new_run_id(model["name"], target.name, created)
            request = settings.request(transport.stage(Path(model_path)), inputs_remote)

            def forward(event: dict, name=model["name"]) -> None:
                if on_event is not None:
                    on_event(name, event)

            reply, error = None, None
            try:
                reply = client.run(request, settings.timeout_for(request), forward)
            except AgentError as exc:  # the agent died or hung: record it, go on with the next model
                error = {"kind": "agent", "message": str(exc)}
            if reply and reply.get("status") == "ok" and reply["model"]["sha256"] != model["sha256"]:
                raise AgentError(f"{target.name} ran a model whose sha256 differs from {model_path}",
                                 "the file changed during the run, or the board's copy is corrupt; run again")
            document = build_result(run_id=run_id, created_at=created, model=model, target=target_block,
                                    settings=recorded_settings, reply=reply, error=error)
            outcomes.append(DeployOutcome(Path(model_path), document, write_result(results_dir, document)))
            forward({"event": "done", "status": document["status"]})
    finally:
        transport.close()
    return outcomes
