"""Classification metrics with one documented, stable shape (see README, "Metrics JSON").

    {"n": int, "accuracy": float, "macro_f1": float,
     "labels": [name, ...],                       # index = label id
     "per_class": {name: {"precision": float, "recall": float, "f1": float, "support": int}},
     "confusion_matrix": [[int, ...], ...]}       # rows = true label, columns = predicted
"""
import numpy as np


def confusion_matrix(true, predicted, num_classes):
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else 0.0


def classification_metrics(true, predicted, labels):
    """Accuracy, per-class precision/recall/F1 and the confusion matrix."""
    matrix = confusion_matrix(true, predicted, len(labels))
    per_class = {}
    for index, name in enumerate(labels):
        hits = matrix[index, index]
        precision = _ratio(hits, matrix[:, index].sum())
        recall = _ratio(hits, matrix[index, :].sum())
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "support": int(matrix[index, :].sum()),
        }
    total = int(matrix.sum())
    return {
        "n": total,
        "accuracy": _ratio(np.trace(matrix), total),
        "macro_f1": float(np.mean([entry["f1"] for entry in per_class.values()])),
        "labels": list(labels),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }
