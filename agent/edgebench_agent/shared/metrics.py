"""Output agreement metrics, numpy only: the host's parity checks and the board's own comparison (when
sending outputs home would move a lot of data) use this one implementation."""

from __future__ import annotations

import numpy as np


def compare_arrays(expected, actual, atol, rtol):
    """Per-output agreement of `actual` with `expected`.

    Returns a dict: shapes, max_abs, max_rel, mean_abs, cosine, out_of_tolerance_pct (elements with
    |a - e| > atol + rtol * |e|), nonfinite (NaN/Inf where the reference is finite), needed_atol (the
    smallest atol that passes with this rtol). NaN in both counts as agreeing.
    """
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    result = {
        "expected_shape": list(expected.shape), "actual_shape": list(actual.shape), "atol": float(atol),
        "rtol": float(rtol), "max_abs": 0.0, "max_rel": 0.0, "mean_abs": 0.0, "cosine": 1.0,
        "out_of_tolerance_pct": 0.0, "nonfinite": 0, "needed_atol": 0.0,
    }
    if expected.shape != actual.shape or expected.size == 0:
        return result
    if expected.dtype.kind in "USO" or actual.dtype.kind in "USO":  # text: equal or not, element by element
        differ = int(np.count_nonzero(expected.astype(str) != actual.astype(str)))
        result["out_of_tolerance_pct"] = float(100.0 * differ / expected.size)
        result["cosine"] = 1.0 if differ == 0 else 0.0
        result["text"] = True  # compared for equality: tolerances and distances do not apply
        return result
    e = expected.astype(np.float64)
    a = actual.astype(np.float64)
    finite = np.isfinite(e)
    result["nonfinite"] = int(np.count_nonzero(finite & ~np.isfinite(a)))
    both = finite & np.isfinite(a)
    diff = np.where(both, np.abs(a - e), 0.0)
    scale = np.abs(np.where(both, e, 0.0))
    result["max_abs"] = float(diff.max())
    result["mean_abs"] = float(diff[both].mean()) if both.any() else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(both & (scale > 0), diff / np.where(scale > 0, scale, 1.0), 0.0)
    result["max_rel"] = float(rel.max())
    beyond = diff > atol + rtol * scale
    result["out_of_tolerance_pct"] = float(100.0 * np.count_nonzero(beyond) / e.size)
    result["needed_atol"] = float(np.max(diff - rtol * scale)) if beyond.any() else 0.0
    ev, av = e[both].ravel(), a[both].ravel()
    norms = float(np.linalg.norm(ev) * np.linalg.norm(av))
    result["cosine"] = float(np.dot(ev, av) / norms) if norms > 0 else (1.0 if np.array_equal(ev, av) else 0.0)
    return result


def output_passes(metrics, min_cosine=None):
    """The one pass rule for an output, given compare_arrays' metrics: the same shape, no NaN/Inf where the
    reference is finite, and every element within atol + rtol * |reference| -- or, for a quantized variant
    (min_cosine given), a cosine similarity of at least min_cosine, since its element errors are expected."""
    if metrics["expected_shape"] != metrics["actual_shape"] or metrics["nonfinite"]:
        return False
    if min_cosine is not None:
        return metrics["cosine"] >= min_cosine
    return metrics["out_of_tolerance_pct"] == 0.0


def is_classifier_output(array):
    """Scores of shape [samples, classes] (floats, at least 2 classes)."""
    array = np.asarray(array)
    return array.ndim == 2 and array.shape[1] >= 2 and np.issubdtype(array.dtype, np.floating)


def top_k(scores, k):
    k = min(k, scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def topk_agreement(expected, actual):
    """% of samples whose top-1 class agrees, and % whose reference top-1 is in the actual top-5."""
    reference_top1 = top_k(np.asarray(expected, dtype=np.float64), 1)[:, 0]
    actual_top5 = top_k(np.asarray(actual, dtype=np.float64), 5)
    return {
        "top1_agreement_pct": float(100.0 * np.mean(actual_top5[:, 0] == reference_top1)),
        "top5_agreement_pct": float(100.0 * np.mean((actual_top5 == reference_top1[:, None]).any(axis=1))),
    }


def check_labels(scores, labels):
    """Labels must name classes the scores have: [0, classes). A label of 999 for a 10-class model is a dataset
    bug, and counting it as a miss would report a meaningless 0 % as a measurement."""
    from .inputs import InputError

    classes = np.asarray(scores).shape[1]
    labels = np.asarray(labels).ravel()
    outside = labels[(labels < 0) | (labels >= classes)]
    if outside.size:
        raise InputError("%d of %d labels lie outside the model's %d classes [0, %d) (e.g. %d): the labels do not "
                         "belong to this model's output" % (outside.size, labels.size, classes, classes, int(outside[0])))


def label_accuracy(scores, labels):
    """Top-1 / top-5 accuracy of class scores against integer labels, with counts."""
    check_labels(scores, labels)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).ravel()
    top5 = top_k(scores, 5)
    top1_correct = int(np.count_nonzero(top5[:, 0] == labels))
    top5_correct = int(np.count_nonzero((top5 == labels[:, None]).any(axis=1)))
    count = int(labels.size)
    return {"count": count, "top1_correct": top1_correct, "top5_correct": top5_correct,
            "top1_pct": 100.0 * top1_correct / count if count else 0.0,
            "top5_pct": 100.0 * top5_correct / count if count else 0.0}


def join_batches(arrays, samples=None):
    """One output's batches as one array: concatenated on the batch axis (stacked for scalars), trimmed to
    `samples` rows when the last batch was padded."""
    arrays = [np.asarray(a) for a in arrays]
    joined = np.concatenate(arrays, axis=0) if arrays[0].ndim else np.stack(arrays)
    return joined[:samples] if samples is not None and joined.shape[0] > samples else joined


def storable(array):
    """An array np.savez writes without pickle: onnxruntime's string outputs are object arrays of str."""
    array = np.asarray(array)
    return array.astype(str) if array.dtype == object else array


def batch_key(batch, position):
    """Key of one input (or output) of one batch in the accuracy .npz files."""
    return "batch%d_%d" % (batch, position)


def evaluate(names, expected, actual, tolerances, labels=None, label_output=None):
    """Per-output comparison (joined outputs) plus classifier agreement and label accuracy.

    expected/actual: per output, the joined arrays. tolerances: name -> (atol, rtol).
    """
    outputs = []
    for name, e, a in zip(names, expected, actual):
        atol, rtol = tolerances[name]
        entry = {"name": name}
        entry.update(compare_arrays(e, a, atol, rtol))
        if is_classifier_output(e) and np.asarray(a).shape == np.asarray(e).shape:
            entry.update(topk_agreement(e, a))
        outputs.append(entry)
    result = {"outputs": outputs}  # type: dict
    if labels is not None and label_output is not None:
        result["labels"] = {"board": label_accuracy(actual[label_output], labels),
                            "reference": label_accuracy(expected[label_output], labels)}
    return result


def top_operators(events, limit=15):
    """onnxruntime profile events -> the operators that took the most time (node events, `dur` in µs)."""
    by_type = {}  # type: dict
    by_node = {}  # type: dict
    total = 0
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        duration = int(event.get("dur", 0))
        op_type = (event.get("args") or {}).get("op_name", "?")
        node = str(event["name"])[: -len("_kernel_time")]
        total += duration
        entry = by_type.setdefault(op_type, {"op_type": op_type, "total_us": 0, "calls": 0, "nodes": set()})
        entry["total_us"] += duration
        entry["calls"] += 1
        entry["nodes"].add(node)
        by_node[(op_type, node)] = by_node.get((op_type, node), 0) + duration
    ranked = sorted(by_type.values(), key=lambda e: -e["total_us"])[:limit]
    for entry in ranked:
        entry["nodes"] = len(entry["nodes"])
        entry["pct"] = 100.0 * entry["total_us"] / total if total else 0.0
    nodes = [{"op_type": op, "node": node, "total_us": us, "pct": 100.0 * us / total if total else 0.0}
             for (op, node), us in sorted(by_node.items(), key=lambda item: -item[1])[:limit]]
    return {"total_us": total, "top_operators": ranked, "top_nodes": nodes}
