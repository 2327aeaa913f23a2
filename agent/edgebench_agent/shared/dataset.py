"""Labelled datasets (.npz of input arrays by name plus `labels`) and their batching along the model's batch axis.

Shared by the host (accuracy passes it prepares) and the agent standing alone on a board (--dataset).
"""

from __future__ import annotations

import numpy as np

from .inputs import InputError, is_free, load_npz, numpy_dtype


def load_dataset(path, signature, require_labels=True):
    """(arrays by input name, labels or None), with one clear error for each way a dataset can misfit.

    signature: list of (name, onnxruntime type, shape). Without require_labels (calibration data), labels are
    optional and unused.
    """
    arrays = load_npz(str(path))
    if "labels" not in arrays and require_labels:
        raise InputError("%s has no 'labels' array (it holds: %s); save the dataset with "
                         "np.savez(path, <input name>=inputs, labels=labels)" % (path, ", ".join(sorted(arrays)) or "nothing"))
    labels = arrays.pop("labels", None)
    names = [name for name, _, _ in signature]
    if len(names) == 1 and names[0] not in arrays and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}  # a single-input model may name its array anything
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError("%s lacks input(s) %s; it holds %s" % (path, ", ".join(missing), ", ".join(sorted(arrays)) or "only labels"))
    if labels is not None and (labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer)):
        raise InputError("%s: labels must be a 1-D integer array, got %s %s" % (path, labels.dtype, list(labels.shape)))
    for name, ort_type, shape in signature:
        array = arrays[name]
        if array.ndim == 0 or array.shape[0] == 0:
            raise InputError("%s: input %r holds no samples (shape %s): a dataset needs at least one"
                             % (path, name, list(array.shape)))
        dtype = numpy_dtype(ort_type, name)
        if array.dtype != dtype:
            raise InputError("%s: input %r is %s but the model takes %s" % (path, name, array.dtype, dtype))
        if array.ndim != len(shape):
            raise InputError("%s: input %r has shape %s but the model takes rank %d %s (samples go along the first axis)"
                             % (path, name, list(array.shape), len(shape), shape))
        fixed = [(axis, want, array.shape[axis]) for axis, want in enumerate(shape)
                 if axis > 0 and not is_free(want) and want != array.shape[axis]]
        if fixed:
            axis, want, got = fixed[0]
            raise InputError("%s: input %r axis %d is %d but the model fixes it at %d (dataset shape %s, model %s)"
                             % (path, name, axis, got, want, list(array.shape), shape))
        if labels is not None and array.shape[0] != labels.shape[0]:
            raise InputError("%s: %d samples of %r but %d labels" % (path, array.shape[0], name, labels.shape[0]))
    return arrays, labels


def batches_of(arrays, signature, batch_size):
    """Split samples along the batch axis: the model's fixed batch if it has one (padding the last batch by
    repeating rows), else batch_size. Returns (batches, number of real samples)."""
    first_dims = set(shape[0] for _, _, shape in signature if shape)
    fixed = next((d for d in first_dims if not is_free(d)), None)
    size = fixed or batch_size
    total = next(iter(arrays.values())).shape[0]
    batches = []
    for start in range(0, total, size):
        batch = {}
        for name, array in arrays.items():
            part = array[start:start + size]
            if fixed and part.shape[0] < size:
                part = np.concatenate([part, np.repeat(part[-1:], size - part.shape[0], axis=0)])
            batch[name] = np.ascontiguousarray(part)
        batches.append(batch)
    return batches, total
