"""End-to-end pipelines on the host: check the user's stages, run them here as the reference, compare the board's.

The pipeline file is code the user chose to run (`--pipeline stages.py`): it is imported here and on the board,
never found implicitly. Before anything is uploaded, the host runs every sample through it with the model on its
own CPU: a missing stage, a stage that raises, or feeds that do not fit the model are one line naming the stage
and the sample. Those results are the reference the board's final results are compared with (the accuracy of
the whole pipeline, not only the model's outputs).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InputError

# Final results are compared with the same rule as model outputs (atol + rtol * |host|), equality for integers.
RESULTS_ATOL = 1e-4
RESULTS_RTOL = 1e-3


@dataclass
class PipelineOptions:
    """--pipeline FILE --samples DIR."""

    file: Path
    samples: Path

    def recorded(self) -> dict:
        """What a result's settings record: the pipeline file and samples by content, so runs of different code or
        data never pool."""
        from ..agentlib import list_samples, sha256_bytes
        from ..fileio import file_sha256

        # The samples by content: names and bytes, so other data never pools with these.
        listing = "".join(f"{Path(path).name}\0{file_sha256(Path(path))}\n" for path in list_samples(str(self.samples)))
        return {"file": self.file.name, "sha256": file_sha256(self.file), "samples": str(self.samples),
                "samples_sha256": sha256_bytes(listing.encode("utf-8", "surrogateescape"))}


@dataclass
class PipelinePlan:
    options: PipelineOptions
    sample_names: list[str]
    samples_archive: Path  # the sample files packed (by content) for upload
    samples_sha256: str
    host_results: list[dict]  # per sample: {name: array}, from the host's run
    custom_load: bool


def check_options(pipeline_file: Path | None, samples: Path | None) -> PipelineOptions | None:
    """The two options go together; both must exist."""
    if pipeline_file is None and samples is None:
        return None
    if pipeline_file is None or samples is None:
        raise InputError("--pipeline and --samples go together", "give the pipeline file and the folder of samples it reads")
    if not Path(pipeline_file).is_file():
        raise InputError(f"pipeline file not found: {pipeline_file}")
    if not Path(samples).is_dir():
        raise InputError(f"samples folder not found: {samples}", "--samples names a folder of sample files")
    return PipelineOptions(Path(pipeline_file), Path(samples))


# The host's reference run gives each sample this long through every stage (a stage that never returns is a bug
# the host reports, not a hang).
HOST_SAMPLE_TIMEOUT_S = 60.0


def plan(options: PipelineOptions, model_path: Path) -> PipelinePlan:
    """Run the pipeline on every sample on the host (the reference), and pack the samples for upload. The user's
    code runs here with its prints sent to stderr (stdout is the command's output), each sample under a time
    limit, and must leave no thread running."""
    import contextlib
    import sys
    import threading

    from ..agentlib import list_samples, load_pipeline, result_arrays, run_sample
    from ..models.modelinfo import session_io

    threads_before = set(threading.enumerate())
    with contextlib.redirect_stdout(sys.stderr):
        pipeline = load_pipeline(str(options.file))
        paths = list_samples(str(options.samples))
        session, signature, _ = session_io(Path(model_path))  # another runtime's bundle: that runtime, here
        results = []
        for path in paths:
            try:
                with _time_limit(HOST_SAMPLE_TIMEOUT_S, options.file.name, Path(path).name):
                    result, _ = run_sample(pipeline, session.run, signature, path)
                results.append(result_arrays(result))
            except InputError as exc:  # feeds that do not fit the model, or a result that cannot be compared
                raise InputError(f"{options.file.name}: {exc.message}",
                                 "make preprocess return what the model takes, and postprocess numbers, arrays or "
                                 "strings") from exc
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types: the feeds' values are wrong
                stage_error = _stage_error(exc)
                if stage_error:
                    raise stage_error from exc
                raise InputError(f"{options.file.name}: the model failed on sample {Path(path).name}: "
                                 f"{' '.join(str(exc).split())[:300]}") from exc
    lingering = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive() and not t.daemon]
    if lingering:
        raise InputError(f"{options.file.name} started thread(s) that are still running ({', '.join(lingering)}): a "
                         "pipeline's stages must finish their work before they return",
                         "join the threads in the stage, or make them daemon threads")
    archive, digest = _pack(paths)
    return PipelinePlan(options, [Path(p).name for p in paths], archive, digest, results, pipeline.custom_load)


@contextmanager
def _time_limit(seconds: float, pipeline_name: str, sample: str):
    """Raise InputError when the block runs longer than `seconds` (SIGALRM: the main thread only; elsewhere no
    limit)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum, frame):
        raise InputError(f"{pipeline_name}: sample {sample} took more than {seconds:.0f} s through the pipeline on "
                         "the host", "a stage that never returns (a loop on a bad input?) must be fixed first")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _stage_error(exc: Exception) -> InputError | None:
    from ..agentlib import PipelineError

    if isinstance(exc, PipelineError):
        return InputError(f"{exc} (on the host, before any upload)", "fix the pipeline file: the host runs it first")
    return None


def _pack(paths: list[str]) -> tuple[Path, str]:
    """The samples as one tar in the host cache, named by its content (made once per set of files)."""
    import os
    import tempfile

    from ..fileio import cache_dir
    from ..agentlib import pack_samples, sha256_file
    from ..errors import FileWriteError

    folder = cache_dir() / "samples"
    temp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pack-", suffix=".tar", delete=False) as out:
            temp = out.name
            pack_samples(paths, out)
        digest = sha256_file(temp)
        final = folder / f"{digest[:20]}.tar"
        os.replace(temp, final)
        temp = None
    except (OSError, ValueError) as exc:
        raise FileWriteError(f"cannot pack the samples into {folder}: {getattr(exc, 'strerror', None) or exc}",
                             "free some space in the edgebench cache") from exc
    finally:
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)
    return final, digest


def request_block(board, planned: PipelinePlan, run_id: str) -> dict:
    """The request's pipeline: the file and the packed samples staged on the board by hash, and where the board
    writes its final results."""
    from ..fileio import file_sha256

    options = planned.options
    return {"file": board.stage(options.file, file_sha256(options.file)),
            "samples": board.stage(planned.samples_archive, planned.samples_sha256),
            "results": board.run_path(run_id, "pipeline-results.npz")}


def result_block(board, planned: PipelinePlan, reply: dict | None) -> dict | None:
    """The pipeline block of a result: what ran, and the board's final results against the host's."""
    from ..agentlib import compare_results, read_results
    from ..errors import AgentError

    answer = (reply or {}).get("pipeline") if (reply or {}).get("status") == "ok" else None
    if not answer:
        return None
    data = board.transport.read_bytes(answer["results_file"])
    if data is None:
        raise AgentError(f"the pipeline results are missing on {board.target.name}: {answer['results_file']}")
    try:
        board_results = read_results(data, len(planned.sample_names))
    except (OSError, ValueError, EOFError) as exc:
        raise AgentError(f"the pipeline results from {board.target.name} are unreadable: {exc}") from exc
    agreement = compare_results(planned.host_results, board_results, planned.sample_names, RESULTS_ATOL, RESULTS_RTOL)
    return {"file": planned.options.file.name, "sha256": answer.get("sha256"), "samples": len(planned.sample_names),
            "samples_folder": str(planned.options.samples), "samples_sha256": planned.samples_sha256,
            "custom_load": planned.custom_load, "stages": answer.get("stages"), "results": agreement}


def stage_lines(document: dict) -> list[str]:
    """What `bench deploy` prints for a pipeline run: where the end-to-end time goes, and whether the board's final
    results agree with the host's."""
    from ..results.report import stage_figures
    from ..results.schema import printable

    from ..results.view import Result

    result = Result(document)
    block = result.get("pipeline")
    if not block or result.status != "ok":
        return []
    figures = stage_figures(result.repeats)
    agreement = result.pipeline_results
    name = printable(document["model"]["name"])
    lines = [f"pipeline {name}: {printable(block.get('file'))} over {block.get('samples')} samples; "
             + " + ".join(f"{stage} {figures[stage + '_ms']:.3g} ms ({figures[stage + '_pct']:.0f}%)"
                          for stage in ("load", "preprocess", "inference", "postprocess") if stage + "_ms" in figures)]
    if agreement:
        verdict = "PASS" if agreement["passed"] else "FAIL"
        text = f"pipeline {name}: {verdict} {agreement['agree']}/{agreement['samples']} final results agree with the host's"
        if agreement.get("mismatched"):
            text += f" (first that differ: {', '.join(printable(m) for m in agreement['mismatched'])})"
        lines.append(text)
    return lines
