"""End-to-end pipelines: the user's own load / preprocess / postprocess around the model, timed stage by stage.

A pipeline file is code the user chose to run, like a `file.py:factory` model spec: it is loaded only when named
(`--pipeline stages.py`), never found implicitly. It defines

    load(path) -> sample            optional; default: a .npy file's array, any other file's bytes
    preprocess(sample) -> feeds     a dict {input name: array}, or one array for a one-input model
    postprocess(outputs) -> result  outputs: the model's outputs as a list of arrays; result: a number, an array,
                                    a string, or a dict {name: any of those}

The board runs it with its own Python (numpy, plus whatever the file imports); the host runs the same stages on
the same samples and compares the final results, so the whole pipeline's accuracy is checked, not only the model's.
Samples are the files directly in a folder, as they are (images, .npy, .wav, .pgm), in name order.
"""

from __future__ import annotations

import io
import os
import time

import numpy as np

from .files import pack_files, unpacked_folder
from .inputs import InputError, _check_user_array, load_npz, numpy_dtype

STAGES = ("load", "preprocess", "inference", "postprocess")
MAX_SAMPLES = 10000
MAX_SAMPLES_BYTES = 1 << 30  # 1 GiB of sample files: more is a data set, not a pipeline check
# A sample folder packed for upload is unpacked beside the archive, once, under this suffix.


class PipelineError(Exception):
    """A stage that raised on a sample: which stage, which sample, and what it said."""

    def __init__(self, stage, sample, message):
        Exception.__init__(self, "the pipeline's %s stage failed on sample %s: %s" % (stage, sample, message))
        self.stage = stage
        self.sample = sample


class MissingModule(InputError):
    """The pipeline file imports a module this machine lacks (Pillow, OpenCV, ...)."""


def default_load(path):
    """A .npy file's array (never pickled objects), any other file's bytes."""
    if path.endswith(".npy"):
        return load_npz(path)[""]
    with open(path, "rb") as handle:
        return handle.read()


class Pipeline(object):
    def __init__(self, path, load, preprocess, postprocess, custom_load):
        self.path = path
        self.name = os.path.basename(path)
        self.load = load
        self.preprocess = preprocess
        self.postprocess = postprocess
        self.custom_load = custom_load


def load_pipeline(path):
    """Import the user's pipeline file (running its code: the user named it) and check its stages."""
    import importlib.util

    if not os.path.isfile(path):
        raise InputError("pipeline file not found: %s" % path)
    if not path.endswith(".py"):
        raise InputError("a pipeline is a Python file (stages.py) defining preprocess and postprocess, got %s" % path)
    name = "edgebench_pipeline_%s" % abs(hash(os.path.abspath(path)))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError("cannot load the pipeline %s as a Python module" % path)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[name] = module  # registered, as an import would: dataclasses and pickling look their module up
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise MissingModule("the pipeline %s needs the module %r, which this machine's Python (%s) lacks: install it "
                            "there (Pillow: pip install pillow; OpenCV: pip install opencv-python-headless)"
                            % (os.path.basename(path), missing, _python()))
    except SyntaxError as exc:
        raise InputError("the pipeline %s is not valid Python for this machine's Python (%s): %s, line %s"
                         % (os.path.basename(path), _python(), exc.msg, exc.lineno))
    except (Exception, SystemExit) as exc:  # a module-level sys.exit() must not end the harness
        raise InputError("the pipeline %s raised while loading: %s" % (os.path.basename(path), _one_line(exc)))
    stages = {}
    for stage in ("load", "preprocess", "postprocess"):
        found = getattr(module, stage, None)
        if found is None and stage != "load":
            raise InputError("the pipeline %s defines no %s(): a pipeline needs preprocess(sample) -> feeds and "
                             "postprocess(outputs) -> result (load(path) -> sample is optional)"
                             % (os.path.basename(path), stage))
        if found is not None and not callable(found):
            raise InputError("%s in the pipeline %s must be a function" % (stage, os.path.basename(path)))
        stages[stage] = found
    return Pipeline(path, stages["load"] or default_load, stages["preprocess"], stages["postprocess"],
                    stages["load"] is not None)


def _python():
    import sys

    return "%s %d.%d" % (sys.executable or "python", sys.version_info[0], sys.version_info[1])


def _one_line(exc):
    if isinstance(exc, SystemExit):
        return "sys.exit(%s) was called" % ("" if exc.code is None else repr(exc.code))
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = "%s: %s" % (type(exc).__name__, text)
    return text if len(text) <= 400 else text[:397] + "..."


def list_samples(folder):
    """The sample files of a folder: regular, non-hidden files directly in it, in name order."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise InputError("cannot read the samples folder %s: %s" % (folder, exc.strerror or exc))
    paths = [os.path.join(folder, n) for n in names if not n.startswith(".") and os.path.isfile(os.path.join(folder, n))]
    inside = os.path.realpath(folder)
    for path in paths:
        if os.path.islink(path) and os.path.dirname(os.path.realpath(path)) != inside:
            raise InputError("sample %s is a link to %s, outside the samples folder: copy the file in (links never "
                             "take files from elsewhere)" % (path, os.path.realpath(path)))
    if not paths:
        raise InputError("the samples folder %s holds no sample files (the files directly in it are the samples)" % folder)
    if len(paths) > MAX_SAMPLES:
        raise InputError("the samples folder %s holds %d files; at most %d are used for a pipeline run: give a folder "
                         "with fewer" % (folder, len(paths), MAX_SAMPLES))
    total = 0
    for path in paths:
        if not os.access(path, os.R_OK):
            raise InputError("sample %s is not readable" % path)
        total += os.path.getsize(path)
    if total > MAX_SAMPLES_BYTES:
        raise InputError("the samples in %s add up to %.1f GiB; at most 1 GiB is used for a pipeline run"
                         % (folder, total / 2.0 ** 30))
    return paths


def as_feeds(value, signature):
    """preprocess()'s answer as the model's feeds, checked against the model's inputs (names, types, ranks,
    fixed sizes); InputError saying what differs."""
    names = [name for name, _, _ in signature]
    if isinstance(value, dict):
        feeds = dict(value)
    elif isinstance(value, (list, tuple)) and len(value) == len(names) and len(names) > 1:
        feeds = dict(zip(names, value))
    elif len(names) == 1:
        feeds = {names[0]: value}
    else:
        raise InputError("preprocess must return a dict {input name: array} for a model with %d inputs (%s), got %s"
                         % (len(names), ", ".join(names), type(value).__name__))
    unknown = sorted(str(k) for k in set(feeds) - set(names))
    missing = [n for n in names if n not in feeds]
    if unknown or missing:
        raise InputError("preprocess returned feeds %s but the model's inputs are %s"
                         % (", ".join(sorted(map(str, feeds))) or "none", ", ".join(names)))
    for name, ort_type, shape in signature:
        array = feeds[name]
        if not isinstance(array, np.ndarray):
            array = np.asarray(array)
            if array.dtype == object:
                raise InputError("preprocess returned %s for input %r, not an array" % (type(feeds[name]).__name__, name))
        _check_user_array(name, array, numpy_dtype(ort_type, name), shape)
        feeds[name] = array if array.flags.c_contiguous else np.ascontiguousarray(array)
    return feeds


def result_arrays(result):
    """postprocess()'s answer as named arrays (a bare value is named ""): what is stored and compared."""
    items = result.items() if isinstance(result, dict) else [("", result)]
    arrays = {}
    for key, value in items:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged lists
            raise InputError("postprocess must return numbers, arrays or strings (or a dict of them); %s: %s"
                             % (type(value).__name__, _one_line(exc)))
        if array.dtype.kind not in "biufU":  # objects, bytes, complex, times: nothing compared honestly
            raise InputError("postprocess must return numbers, arrays or strings (or a dict of them), got %s%s"
                             % (type(value).__name__, " (decode bytes to str)" if array.dtype.kind == "S" else ""))
        arrays[str(key)] = array
    return arrays


def run_sample(pipeline, run, signature, path, check=True, clock=time.perf_counter_ns):
    """One sample through every stage: (result, [load, preprocess, inference, postprocess] in ns).

    A stage that raises becomes PipelineError naming it and the sample; feeds that do not fit the model an
    InputError (the same words on the host and the board). `check` False skips the feeds check (a sample seen
    before): the timed loop then holds nothing but the user's stages and the clock reads."""
    sample_name = os.path.basename(path)
    t0 = clock()
    try:
        sample = pipeline.load(path)
    except (Exception, SystemExit) as exc:  # sys.exit() in a stage is the stage's failure, not the harness's end
        raise PipelineError("load", sample_name, _one_line(exc))
    t1 = clock()
    try:
        value = pipeline.preprocess(sample)
    except (Exception, SystemExit) as exc:
        raise PipelineError("preprocess", sample_name, _one_line(exc))
    t2 = clock()
    if check:
        try:
            feeds = as_feeds(value, signature)
        except InputError as exc:
            raise InputError("sample %s: %s" % (sample_name, exc))
    else:
        feeds = value if type(value) is dict else {signature[0][0]: value} if len(signature) == 1 else \
            dict(zip([name for name, _, _ in signature], value))
    t2b = clock() if check else t2  # the feeds check is the harness's, not the user's: not charged to any stage
    outputs = run(None, feeds)
    t3 = clock()
    try:
        result = pipeline.postprocess(outputs)
    except (Exception, SystemExit) as exc:
        raise PipelineError("postprocess", sample_name, _one_line(exc))
    t4 = clock()
    return result, [t1 - t0, t2 - t1, t3 - t2b, t4 - t3]


class Cycle(object):
    """Samples in name order, round and round: one call is one sample through the whole pipeline. Each sample's
    feeds are checked the first time it is seen."""

    def __init__(self, pipeline, run, signature, paths, clock=time.perf_counter_ns):
        self.pipeline, self.run, self.signature, self.paths, self.clock = pipeline, run, signature, paths, clock
        self.position = 0

    def __call__(self):
        count = len(self.paths)
        path = self.paths[self.position % count]
        check = self.position < count
        self.position += 1
        return run_sample(self.pipeline, self.run, self.signature, path, check, self.clock)[1]


def timed_pipeline(cycle, min_iterations, min_seconds, max_iterations, max_seconds, clock=time.perf_counter_ns):
    """The timed loop of a pipeline run, under the same rules as a bare model's: until both min_iterations and
    min_seconds are met, or a maximum is hit. Returns (end-to-end ns per sample, {stage: ns per sample})."""
    stages = [[] for _ in STAGES]  # type: list
    totals = []
    start = clock()
    while True:
        times = cycle()
        for column, value in zip(stages, times):
            column.append(value)
        totals.append(sum(times))
        elapsed = clock() - start
        count = len(totals)
        if ((count >= min_iterations and elapsed >= min_seconds * 1e9) or count >= max_iterations
                or elapsed >= max_seconds * 1e9):
            return totals, dict(zip(STAGES, stages))


def stage_summary(repeats):
    """Each stage's median (ns) and share of the end-to-end time (%), pooled over repeats that carry `stages_ns`;
    None when any repeat lacks them. The agent's summary and the host's reports both read this."""
    if not repeats or not all(isinstance(r.get("stages_ns"), dict) for r in repeats):
        return None
    pooled = dict((stage, np.concatenate([np.asarray(r["stages_ns"][stage], dtype=np.float64) for r in repeats]))
                  for stage in STAGES)
    whole = float(sum(values.sum() for values in pooled.values())) or 1.0
    return dict((stage, (float(np.median(values)), 100.0 * float(values.sum()) / whole)) for stage, values in pooled.items())


# ------------------------------------------------------------------------------------- results and samples
def result_key(index, name):
    """Key of one sample's result in a results .npz: s<index>, or s<index>.<name> for a dict result."""
    return "s%d" % index + ("." + name if name else "")


def results_npz(results):
    """The per-sample results (a list of result_arrays dicts) as .npz bytes (no pickle)."""
    buffer = io.BytesIO()
    np.savez(buffer, **dict((result_key(i, name), array) for i, arrays in enumerate(results) for name, array in arrays.items()))
    return buffer.getvalue()


def compare_results(expected, actual, names, atol, rtol):
    """The board's results against the host's, sample by sample (the same pass rule as outputs): a summary with
    the count that agree and the first samples that do not."""
    from .metrics import compare_arrays, output_passes

    agree, worst, mismatches = 0, 0.0, []  # type: int, float, list
    for index, sample in enumerate(names):
        want, got = expected[index], actual[index] if index < len(actual) else {}
        ok = set(want) == set(got)
        for key in want:
            if key not in got:
                continue
            metrics = compare_arrays(want[key], got[key], atol, rtol)
            worst = max(worst, metrics["max_abs"])
            ok = ok and output_passes(metrics)
        if ok:
            agree += 1
        elif len(mismatches) < 5:
            mismatches.append(sample)
    count = len(names)
    return {"samples": count, "agree": agree, "agree_pct": 100.0 * agree / count if count else 0.0,
            "max_abs": worst, "mismatched": mismatches, "atol": atol, "rtol": rtol, "passed": agree == count}


def read_results(data, count):
    """A results .npz (bytes or a path) back into a list of result dicts, one per sample."""
    loaded = load_npz("the pipeline's results", data) if isinstance(data, bytes) else load_npz(data)
    results = [dict() for _ in range(count)]  # type: list
    for key, value in loaded.items():
        index, _, name = key[1:].partition(".")
        if key.startswith("s") and index.isdigit() and int(index) < count:
            results[int(index)][name] = value
    return results


def pack_samples(paths, out):
    """The sample files as one deterministic tar (shared.files.pack_files), written to the binary file `out`."""
    pack_files(paths, out)


def samples_folder(path):
    """The folder of sample files for a run: `path` itself, or a packed archive unpacked beside it once."""
    return unpacked_folder(path, "samples archive")
