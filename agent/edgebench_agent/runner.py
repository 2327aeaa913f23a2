"""One benchmark run: fresh sessions, cold first inference, calibrated warm-up, then a timed loop.

The agent measures, the host analyses: every raw sample (ns, time.perf_counter_ns) goes back; no
statistics beyond what the warm-up needs are computed here. Nothing but `session.run` sits between the
two clock reads of a sample.
"""

from __future__ import annotations

import gc
import os
import time

from . import device, telemetry
from .protocol import PASS_DEFAULTS
from .shared.files import atomic_file, sha256_file, write_atomically
from .shared.inputs import InputError, build_feeds, load_npz, session_signature
from .shared.pipeline import PipelineError

NS_PER_S = 1000000000
MLPERF_OFFLINE_SAMPLES = 24576  # LoadGen's offline minimum sample count

# Warm-up compares the median of the last WARMUP_WINDOW samples with the window before it.
WARMUP_WINDOW = 10
# How often (seconds) the measuring loop reports progress.
PROGRESS_INTERVAL_S = 0.5


class RunError(Exception):
    """A run that could not be carried out. `kind` says whose fault: input, model, provider, runtime."""

    def __init__(self, kind, message):
        Exception.__init__(self, message)
        self.kind = kind


def _median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def warm_up(run_once, min_iterations, max_iterations, max_seconds, tolerance, clock=time.perf_counter_ns):
    """Run until the rolling median settles, bounded by iterations and time.

    Returns (samples_ns, settled). `settled` is False when a bound ended the warm-up first.
    """
    samples = []
    if max_iterations <= 0:
        return samples, min_iterations <= 0
    deadline = clock() + int(max_seconds * NS_PER_S)
    while True:
        t0 = clock()
        run_once()
        t1 = clock()
        samples.append(t1 - t0)
        count = len(samples)
        if count >= max(min_iterations, 2 * WARMUP_WINDOW):
            recent = _median(samples[-WARMUP_WINDOW:])
            before = _median(samples[-2 * WARMUP_WINDOW : -WARMUP_WINDOW])
            if before > 0 and abs(recent - before) / before <= tolerance:
                return samples, True
        if count >= max_iterations or t1 >= deadline:
            return samples, False


def timed_loop(run, feeds, min_iterations, min_seconds, max_iterations, max_seconds,
               clock=time.perf_counter_ns, on_progress=None):
    """Time `run(None, feeds)` until BOTH min_iterations and min_seconds are met, or a maximum is hit.

    Returns the list of per-iteration times in ns.
    """
    samples = []
    append = samples.append
    min_ns = int(min_seconds * NS_PER_S)
    max_ns = int(max_seconds * NS_PER_S)
    report_every = int(PROGRESS_INTERVAL_S * NS_PER_S)
    start = clock()
    next_report = start + report_every
    count = 0
    while True:
        t0 = clock()
        run(None, feeds)
        t1 = clock()
        append(t1 - t0)
        count += 1
        elapsed = t1 - start
        if (count >= min_iterations and elapsed >= min_ns) or count >= max_iterations or elapsed >= max_ns:
            return samples
        if on_progress is not None and t1 >= next_report:
            next_report = t1 + report_every
            on_progress(count, elapsed / NS_PER_S)


def create_session(request):
    """A fresh session of the request's model with its runtime (onnxruntime unless the request names another)."""
    from .runtimes import SessionError, create_session as make

    try:
        return make(request)
    except SessionError as exc:
        raise RunError(exc.kind, str(exc))
    except Exception as exc:
        raise runtime_failed(request, "loading the model", exc)


def runtime_failed(request, during, exc):
    """The RunError for an exception from the runtime's library (kind `onnxruntime` or `runtime`), else `exc`."""
    from .runtimes import is_runtime_error

    if not is_runtime_error(exc):
        return exc
    name = request["runtime"]
    return RunError("onnxruntime" if name == "onnxruntime" else "runtime",
                    "%s failed %s: %s" % (name, during, _one_line(exc)))


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."


class Sampler(object):
    """Samples the board's state (sysfs only) every `interval` seconds in a thread, while measuring."""

    def __init__(self, interval):
        import threading

        self.interval = interval
        self.samples = []
        self.errors = []  # why a sample failed: recorded, so an empty record is never mistaken for a calm board
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgebench-telemetry")
        self._thread.daemon = True

    def _loop(self):
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(telemetry.snapshot(light=True))
            except Exception as exc:  # best effort: never stop a run (a thread's exception would vanish anyway)
                if len(self.errors) < 3:
                    self.errors.append("%s: %s" % (type(exc).__name__, exc))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def set_affinity(cpus):
    if cpus is None:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise RunError("input", "CPU affinity (--cpus) is not supported on this system")
    available = sorted(os.sched_getaffinity(0))
    missing = sorted(set(cpus) - set(available))
    if missing:
        raise RunError("input", "cpus %s are not available on this board; it has %s" % (missing, available))
    os.sched_setaffinity(0, set(cpus))
    return sorted(cpus)


def cool_down(spec, emit):
    """Wait until the hottest sensor is within margin_c of the idle baseline (the coolest seen on this board,
    remembered in idle_file), or timeout_s. Returns what happened."""
    import json

    margin = float(spec.get("margin_c", PASS_DEFAULTS["cooldown"]["margin_c"]))
    timeout = float(spec.get("timeout_s", PASS_DEFAULTS["cooldown"]["timeout_s"]))
    idle_file = spec.get("idle_file")
    now = telemetry.max_temperature(telemetry.snapshot(light=True))
    if now is None:
        return {"skipped": "no temperature sensor"}
    idle = now
    if idle_file:
        try:
            with open(idle_file) as handle:
                idle = min(idle, float(json.load(handle)["idle_c"]))
        except (IOError, OSError, ValueError, KeyError, TypeError):
            pass
    started = time.time()
    emit({"event": "cooldown", "temp_c": now, "target_c": idle + margin})
    while now > idle + margin and time.time() - started < timeout:
        time.sleep(1.0)
        now = telemetry.max_temperature(telemetry.snapshot(light=True))
    if idle_file:
        try:
            write_atomically(idle_file, json.dumps({"idle_c": min(idle, now)}))
        except (IOError, OSError):
            pass
    return {"idle_c": idle, "end_c": now, "waited_s": round(time.time() - started, 1),
            "reached": now <= idle + margin}


def measure(run, feeds, request, warmup_ns, progress, emit):
    """The timed part of a repeat: (latencies in ns, the scenario's own figures or None for single-stream)."""
    from . import scenarios

    scenario = request["scenario"] or {"name": "single-stream", "mlperf": False}
    min_s, min_q = scenarios.minimums(scenario, request["min_seconds"], request["min_iterations"])
    max_s, max_q = max(request["max_seconds"], min_s), max(request["max_iterations"], min_q)
    if scenario["mlperf"]:  # LoadGen's minimums are minimums: no iteration cap may end the run before them
        max_q = 10 ** 12
    name = scenario["name"]
    try:
        if name == "single-stream":
            samples = timed_loop(run, feeds, min_q, min_s, max_q, max_s, on_progress=progress)
            return samples, ({"name": name, "mlperf": True} if scenario["mlperf"] else None)
        if name == "multi-stream":
            per_query = scenario["samples_per_query"]
            latencies = scenarios.multi_stream(run, feeds, per_query, min_q, min_s, max_q, max_s)
            return latencies, {"name": name, "samples_per_query": per_query, "queries": len(latencies),
                               "mlperf": scenario["mlperf"]}
        service_ns = _median(warmup_ns[-WARMUP_WINDOW:]) if warmup_ns else 1e6
        concurrency = scenario["concurrency"]
        if name == "offline":
            count = MLPERF_OFFLINE_SAMPLES if scenario["mlperf"] else int(min(max_q, max(min_q, concurrency * min_s * NS_PER_S / service_ns)))
            outcome = scenarios.offline(run, feeds, count, concurrency)
            return outcome.pop("latencies_ns"), {"name": name, "concurrency": concurrency, "mlperf": scenario["mlperf"],
                                                 **outcome}
        probes, qps, bound = None, scenario["qps"], scenario["latency_bound_s"]
        if qps == "auto":
            qps, probes = scenarios.search_qps(run, feeds, bound * NS_PER_S, service_ns, min_s, concurrency,
                                               request["seed"], max_q, emit)
            if qps is None and any(p["met"] for p in probes):
                best = max((p for p in probes if p["met"]), key=lambda p: p["qps"])
                raise RunError("input", "no QPS held the latency bound of %g ms on fresh arrival schedules: %.4g QPS met "
                               "it once, but every rate missed it on a confirmation; the board's tail latency is unstable "
                               "(pin --cpus, leave a core to the harness with --threads, or raise the bound)"
                               % (bound * 1e3, best["qps"]))
            if qps is None:
                lowest = min(probes, key=lambda p: p["p99_ns"])
                raise RunError("input", "no QPS meets the latency bound of %g ms: the lowest p99 seen was %.3f ms (at %.3g "
                               "QPS); raise the bound or lighten the model" % (bound * 1e3, lowest["p99_ns"] / 1e6, lowest["qps"]))
        if qps * max_s < 1:
            raise RunError("input", "at %g QPS not one query arrives within the run's %g s (--max-seconds): raise --qps"
                           % (qps, max_s))
        seconds = min(max_s, max(min_s, min_q / float(qps)))
        emit({"event": "phase", "phase": "server %.4g qps" % qps, "repeat": 1, "repeats": 1})
        outcome = scenarios.server(run, feeds, qps, seconds, concurrency, request["seed"], max_q)
        return outcome.pop("latencies_ns"), {"name": name, "concurrency": concurrency, "latency_bound_s": bound,
                                             "mlperf": scenario["mlperf"], "probes": probes, **outcome}
    except RunError:
        raise
    except scenarios.ScenarioError as exc:
        raise RunError("input", str(exc))
    except Exception as exc:
        raise runtime_failed(request, "in the %s scenario" % name, exc)


def run_benchmark(request, emit=None):
    """Carry out a normalized run request. Returns the measurement part of the reply.

    Raises RunError for anything that stops the run; `emit(event_dict)` receives progress events.
    """
    emit = emit or (lambda event: None)
    affinity = set_affinity(request["cpus"])
    board = {"before": telemetry.snapshot(), "during": [], "cooldowns": []}
    try:
        model_sha = sha256_file(request["model"])
    except OSError as exc:
        raise RunError("input", "cannot read model %s: %s" % (request["model"], exc.strerror or exc))
    user_arrays = None
    if request["inputs"]:
        try:
            user_arrays = load_npz(request["inputs"])
        except InputError as exc:
            raise RunError("input", str(exc))

    pipeline = load_pipeline_for(request)
    repeats = []
    feeds = described = outputs = providers = runtime = None
    rss_baseline = device.current_rss_bytes()
    for index in range(request["repeats"]):
        if request["cooldown"] is not None:
            board["cooldowns"].append(cool_down(request["cooldown"], emit))
        emit({"event": "phase", "phase": "session", "repeat": index + 1, "repeats": request["repeats"]})
        t0 = time.perf_counter_ns()
        session = create_session(request)
        session_create_ns = time.perf_counter_ns() - t0
        if runtime is None:
            from .runtimes import settings_of

            runtime = settings_of(session, request)
        run = session.run
        # What the timed loops call: the runtime's inference with its outputs fetched, minus the conversion to numpy
        # arrays that only the accuracy and pipeline passes need (onnxruntime's run is both).
        timed = getattr(session, "timed_run", run)
        if pipeline is not None:  # the feeds come from the samples, through the user's stages
            cycle = pipeline_cycle(pipeline, run, session_signature(session))
            try:
                t0 = time.perf_counter_ns()
                cycle()  # the cold start of the whole pipeline: first sample, first load, first inference
                first_inference_ns = time.perf_counter_ns() - t0
                if feeds is None:
                    feeds, first = first_feeds(cycle)
                    described = [{"name": name, "shape": list(array.shape), "dtype": str(array.dtype), "source": "pipeline"}
                                 for name, array in feeds.items()]
                    providers = session.get_providers()
            except PipelineError as exc:
                raise RunError("pipeline", str(exc))
            except InputError as exc:
                raise RunError("input", str(exc))
            except Exception as exc:
                raise runtime_failed(request, "at the first inference", exc)
            run_once = cycle
        else:
            if feeds is None:
                try:
                    feeds, described = build_feeds(
                        session_signature(session), user_arrays, request["values"], request["dims"], request["seed"],
                        request["batch"], request["int_ranges"],
                    )
                except InputError as exc:
                    raise RunError("input", str(exc))
                providers = session.get_providers()
            try:
                t0 = time.perf_counter_ns()
                first = run(None, feeds)
                first_inference_ns = time.perf_counter_ns() - t0
            except Exception as exc:
                raise runtime_failed(request, "at the first inference", exc)

            def run_once(run=timed):
                run(None, feeds)
        if outputs is None:
            outputs = [
                {"name": meta.name, "shape": list(getattr(value, "shape", ())), "dtype": str(getattr(value, "dtype", type(value).__name__))}
                for meta, value in zip(session.get_outputs(), first)
            ]
        emit({"event": "phase", "phase": "warmup", "repeat": index + 1, "repeats": request["repeats"]})
        try:
            warmup_ns, settled = warm_up(
                run_once,
                request["warmup_min_iterations"],
                request["warmup_max_iterations"],
                request["warmup_max_seconds"],
                request["warmup_tolerance"],
            )
        except PipelineError as exc:
            raise RunError("pipeline", str(exc))
        except InputError as exc:
            raise RunError("input", str(exc))
        emit({"event": "phase", "phase": "measure", "repeat": index + 1, "repeats": request["repeats"]})

        def progress(count, elapsed_s, repeat=index + 1):
            emit({"event": "progress", "phase": "measure", "repeat": repeat, "iterations": count,
                  "elapsed_s": round(elapsed_s, 3), "min_iterations": request["min_iterations"],
                  "min_seconds": request["min_seconds"], "max_seconds": request["max_seconds"]})

        stages = None
        with Sampler(request["telemetry_interval_s"]) as sampler:
            if pipeline is not None:
                samples, stages = measure_pipeline(cycle, request)
                scenario = None
            else:
                samples, scenario = measure(timed, feeds, request, warmup_ns, progress, emit)
        board["during"].extend(sampler.samples)
        if sampler.errors:
            board.setdefault("sampler_errors", []).extend(sampler.errors)
        repeats.append({
            "session_create_ns": session_create_ns,
            "first_inference_ns": first_inference_ns,
            "warmup_ns": warmup_ns,
            "warmup_settled": settled,
            "samples_ns": samples,
        })
        if scenario is not None:
            repeats[-1]["scenario"] = scenario
        if stages is not None:
            repeats[-1]["stages_ns"] = stages
        session = run = timed = first = cycle = run_once = None  # released before the next fresh session (gc.collect below)
        gc.collect()

    peak_rss = device.peak_rss_bytes()  # of the timed pass: the accuracy pass may hold more data
    board["after"] = telemetry.snapshot()
    accuracy = None
    if request["accuracy"] is not None:
        emit({"event": "phase", "phase": "accuracy", "repeat": 1, "repeats": 1})
        accuracy = accuracy_pass(request)
    pipeline_block = None
    if pipeline is not None:
        emit({"event": "phase", "phase": "pipeline results", "repeat": 1, "repeats": 1})
        pipeline_block = pipeline_results(request, pipeline)
    energy = None
    if request["energy"] is not None:  # never during a timed pass: reading sensors costs time
        emit({"event": "phase", "phase": "energy", "repeat": 1, "repeats": 1})
        energy = run_energy_pass(request, feeds, emit)
    profile = None
    if request["profile"] is not None:  # never during a timed pass: profiling slows a run up to ~3x
        emit({"event": "phase", "phase": "profile", "repeat": 1, "repeats": 1})
        profile = profile_pass(request, feeds)
    return {
        "model": {"path": request["model"], "sha256": model_sha},
        "providers": providers,
        "runtime": runtime,
        "inputs": described,
        "outputs": outputs,
        "repeats": repeats,
        "memory": {"rss_baseline_bytes": rss_baseline, "peak_rss_bytes": peak_rss},
        "accuracy": accuracy,
        "telemetry": board,
        "placement": {"cpus": affinity, "spin_wait": request["spin_wait"],
                      "intra_op_threads": request["intra_op_threads"], "inter_op_threads": request["inter_op_threads"]},
        "profile": profile,
        "pipeline": pipeline_block,
        "energy": energy,
    }


def run_energy_pass(request, feeds, emit):
    """The energy pass in a fresh session with the same settings and feeds (a pipeline run: its first sample's)."""
    from .energy import energy_pass

    session = create_session(request)
    try:
        return energy_pass(session.run, feeds, request["energy"], emit)
    except Exception as exc:
        raise runtime_failed(request, "in the energy pass", exc)


def load_pipeline_for(request):
    """The request's pipeline (its code runs now: the user named it) with its sample files, or None."""
    from .shared import pipeline as stages

    spec = request["pipeline"]
    if spec is None:
        return None
    try:
        loaded = stages.load_pipeline(spec["file"])
        loaded.samples = stages.list_samples(stages.samples_folder(spec["samples"]))
    except stages.MissingModule as exc:
        raise RunError("missing", str(exc))
    except InputError as exc:
        raise RunError("input", str(exc))
    return loaded


def pipeline_cycle(pipeline, run, signature):
    from .shared.pipeline import Cycle

    return Cycle(pipeline, run, signature, pipeline.samples)


def first_feeds(cycle):
    """The first sample's feeds and outputs (for the reply's description of inputs and outputs; the profile pass)."""
    from .shared.pipeline import as_feeds

    sample = cycle.pipeline.load(cycle.paths[0])
    feeds = as_feeds(cycle.pipeline.preprocess(sample), cycle.signature)
    return feeds, cycle.run(None, feeds)


def measure_pipeline(cycle, request):
    """The timed part of a pipeline repeat: (end-to-end ns per sample, {stage: ns per sample})."""
    from .shared.pipeline import timed_pipeline

    try:
        return timed_pipeline(cycle, request["min_iterations"], request["min_seconds"], request["max_iterations"],
                              request["max_seconds"])
    except PipelineError as exc:
        raise RunError("pipeline", str(exc))
    except InputError as exc:
        raise RunError("input", str(exc))
    except Exception as exc:
        raise runtime_failed(request, "in the pipeline", exc)


def pipeline_results(request, pipeline):
    """Every sample once through the pipeline in a fresh session, never timed: each final result is written for
    the host to compare with its own run of the same pipeline."""
    from .shared.pipeline import result_arrays, results_npz, run_sample

    session = create_session(request)
    signature = session_signature(session)
    results = []
    try:
        for path in pipeline.samples:
            results.append(result_arrays(run_sample(pipeline, session.run, signature, path)[0]))
    except PipelineError as exc:
        raise RunError("pipeline", str(exc))
    except InputError as exc:
        raise RunError("input", "%s: %s" % (pipeline.name, exc))
    except Exception as exc:
        raise runtime_failed(request, "in the pipeline", exc)
    spec = request["pipeline"]
    block = {"file": spec["file"], "sha256": sha256_file(spec["file"]), "samples": len(pipeline.samples),
             "custom_load": pipeline.custom_load, "stages": ["load", "preprocess", "inference", "postprocess"]}
    if spec.get("results"):
        write_atomically(spec["results"], results_npz(results))
        block["results_file"] = spec["results"]
    return block


def dataset_pass(request):
    """Standalone accuracy: a labelled .npz run on the board, top-1/top-5 computed here (no host needed)."""
    from .shared.dataset import batches_of, load_dataset
    from .shared.metrics import is_classifier_output, join_batches, label_accuracy

    spec = request["accuracy"]
    session = create_session(request)
    try:
        arrays, labels = load_dataset(spec["dataset"], session_signature(session))
    except InputError as exc:
        raise RunError("input", str(exc))
    batches, total = batches_of(arrays, session_signature(session), int(spec.get("batch_size", PASS_DEFAULTS["accuracy"]["batch_size"])))
    names = [arg.name for arg in session.get_outputs()]
    per_output = [[] for _ in names]
    for batch in batches:
        for position, value in enumerate(session.run(None, batch)):
            per_output[position].append(value)
    joined = [join_batches(values, total) for values in per_output]
    scores = next((index for index, value in enumerate(joined) if is_classifier_output(value)), None)
    if scores is None:
        raise RunError("input", "no output of this model looks like class scores [samples, classes]: "
                                "top-1/top-5 accuracy needs one")
    try:
        board = label_accuracy(joined[scores], labels)
    except InputError as exc:
        raise RunError("input", "%s: %s" % (spec["dataset"], exc))
    return {"source": "dataset", "compared_on": "board", "samples": total, "batches": len(batches),
            "output_names": names, "scores_output": names[scores], "labels": {"board": board}}


def profile_pass(request, feeds):
    """A separate session with onnxruntime's profiler on; returns where its JSON trace was written (the protocol
    allows a profile with onnxruntime only)."""
    import onnxruntime as ort

    from .runtimes.rt_onnxruntime import providers_of, session_options

    spec = request["profile"]
    options = session_options(ort, request)
    options.enable_profiling = True
    folder = spec.get("dir") or os.getcwd()
    options.profile_file_prefix = os.path.join(folder, "profile")
    session = ort.InferenceSession(request["model"], sess_options=options, providers=providers_of(request))
    iterations = int(spec.get("iterations", PASS_DEFAULTS["profile"]["iterations"]))
    for _ in range(iterations):
        session.run(None, feeds)
    path = session.end_profiling()
    summary = {}
    try:  # a summary here too, for a board with no host: the trace itself stays beside it
        import json

        from .shared.metrics import top_operators

        with open(path) as handle:
            summary = top_operators(json.load(handle))
    except (IOError, OSError, ValueError):
        pass
    summary.update({"file": os.path.abspath(path), "iterations": iterations})
    return summary


def accuracy_pass(request):
    """Run every accuracy batch in a fresh session with the same settings; never timed.

    Writes the outputs for the host to compare, or compares them here against a reference (when sending
    them home would move more data than the reference did).
    """

    import numpy as np

    from .shared.metrics import batch_key, evaluate, join_batches, storable

    spec = request["accuracy"]
    if spec.get("dataset"):
        return dataset_pass(request)
    try:
        arrays = load_npz(spec["inputs"])
    except InputError as exc:
        raise RunError("input", str(exc))
    session = create_session(request)
    input_names = [arg.name for arg in session.get_inputs()]
    output_names = [arg.name for arg in session.get_outputs()]
    per_output = [[] for _ in output_names]
    try:
        for batch in range(spec["batches"]):
            feeds = {name: arrays[batch_key(batch, position)] for position, name in enumerate(input_names)}
            for position, value in enumerate(session.run(None, feeds)):
                per_output[position].append(value)
    except KeyError as exc:
        raise RunError("input", "the accuracy inputs lack %s" % exc)
    except Exception as exc:
        raise runtime_failed(request, "in the accuracy pass", exc)
    result = {"batches": spec["batches"], "output_names": output_names}
    if spec.get("reference"):
        try:
            reference = load_npz(spec["reference"])
        except InputError as exc:
            raise RunError("input", str(exc))
        samples = spec.get("samples")
        expected = [join_batches([reference[batch_key(b, j)] for b in range(spec["batches"])], samples)
                    for j in range(len(output_names))]
        actual = [join_batches(values, samples) for values in per_output]
        default_tolerance = (PASS_DEFAULTS["accuracy"]["atol"], PASS_DEFAULTS["accuracy"]["rtol"])
        tolerances = dict((name, tuple(spec.get("tolerances", {}).get(name, default_tolerance))) for name in output_names)
        try:
            result.update(evaluate(output_names, expected, actual, tolerances, reference.get("labels"), spec.get("label_output")))
        except InputError as exc:
            raise RunError("input", str(exc))
        result["compared_on"] = "board"
    else:
        with atomic_file(spec["outputs"]) as out:
            np.savez(out, **dict((batch_key(b, j), storable(values[b])) for j, values in enumerate(per_output)
                                 for b in range(spec["batches"])))
        result["outputs_file"] = spec["outputs"]
        result["output_bytes"] = int(sum(storable(v).nbytes for values in per_output for v in values))
        result["compared_on"] = "host"
    return result
