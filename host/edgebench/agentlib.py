"""The host's one door into the agent package.

The host uses two parts of edgebench_agent: `protocol` (the contract between host and board: request, reply
and event shapes) and `shared` (numpy-only code both sides run: inputs, metrics, datasets, file helpers, the
validity verdict). Host modules import them from here and from nowhere else (tests/test_architecture.py
checks), so the agent's errors become the host's errors in exactly one place, with their cause kept:
an agent InputError becomes errors.InputError, a RequestError a ConfigError.

Names are imported on first use (`bench --help` pays for none of them).
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any, Callable

from .errors import BenchError, ConfigError, InputError

# (module, class) of an agent error -> the host error it becomes.
_HOST_ERRORS = (
    ("edgebench_agent.shared.inputs", "InputError", InputError),
    ("edgebench_agent.protocol", "RequestError", ConfigError),
)


def host_error(exc: BaseException) -> BenchError | None:
    """The host error an agent error stands for; None for anything else (a bug keeps its traceback)."""
    for module, name, host_class in _HOST_ERRORS:
        agent_class = getattr(sys.modules.get(module), name, None)
        if agent_class is not None and isinstance(exc, agent_class):
            return host_class(str(exc))
    return None


def _converting(function: Callable) -> Callable:
    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            converted = host_error(exc)
            if converted is None:
                raise
            raise converted from exc

    return call


# What the host uses of the agent, by module: the whole surface, in one table.
_SURFACE = {
    "edgebench_agent.protocol": (
        "EVENT_PREFIX", "EXIT_OK", "EXIT_RUN_FAILED", "EXIT_USAGE", "MAX_SAMPLES", "PASS_DEFAULTS", "PROTOCOL_VERSION", "RUN_DEFAULTS",
        "OPTION_METAVARS", "PASS_OPTION", "PASS_OPTIONS", "PASS_SWITCHES", "RUN_OPTION", "RUN_OPTIONS", "pass_blocks", "scenario_from_flags", "SCENARIO_NAMES", "check_option", "parse_integer", "parse_option", "default_run_timeout", "normalize_energy", "normalize_run_request", "normalize_scenario", "parse_assignments",
        "parse_duration_s", "parse_qps", "parse_scalar", "provider_name", "reply_digest"),
    "edgebench_agent.shared.inputs": (
        "ORT_TO_NUMPY", "Input", "Signature", "accepted_dim_keys", "build_feeds", "dim_key", "is_free", "check_array_size", "declared_arrays", "free_dim_keys",
        "generate", "is_text", "load_npz", "numpy_dtype", "session_signature", "sizes_from_arrays"),
    "edgebench_agent.shared.metrics": (
        "batch_key", "check_labels", "compare_arrays", "evaluate", "is_classifier_output", "join_batches",
        "output_passes", "storable", "top_operators", "topk_agreement"),
    "edgebench_agent.shared.dataset": ("batches_of", "load_dataset"),
    "edgebench_agent.shared.files": ("atomic_file", "pack_files", "sha256_bytes", "sha256_file", "write_atomically"),
    "edgebench_agent.runtimes": ("BUNDLE_VERSION", "MANIFEST", "MAX_BUNDLE_MEMBERS", "NUMPY_TO_ORT", "PIP_NAMES", "RUNTIMES", "BundleError",
                                 "SessionError", "check_manifest", "create_session", "is_runtime_error",
                                 "parse_manifest", "pip_line", "versions"),
    "edgebench_agent.shared.validity": ("assess",),
    "edgebench_agent.shared.quantiles": ("early_stopping_or_max", "early_stopping_percentile", "percentile"),
    "edgebench_agent.shared.energy": ("EnergyError", "parse_watts", "sample_rate", "summarize"),
    "edgebench_agent.shared.pipeline": (
        "PipelineError", "STAGES", "compare_results", "list_samples", "load_pipeline", "pack_samples", "read_results",
        "result_arrays", "run_sample", "stage_summary"),
}
_MODULE_OF = {name: module for module, names in _SURFACE.items() for name in names}


def __getattr__(name: str) -> Any:
    """`from .agentlib import build_feeds`: imported on first use, its errors converted (PEP 562)."""
    if name not in _MODULE_OF:
        raise AttributeError(f"edgebench.agentlib has no {name!r}: add it to _SURFACE if the host needs it")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    if callable(value) and not isinstance(value, type):
        value = _converting(value)
    globals()[name] = value  # later lookups are plain module attributes
    return value
