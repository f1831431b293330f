"""Classification metrics by scikit-learn, with seeded bootstrap intervals (docs/clinical.md).

``classification_metrics(true, predicted, labels)`` (from predicted labels):

    {"n": int, "accuracy": float, "macro_f1": float,
     "labels": [name, ...],                       # index = label id
     "per_class": {name: {"precision": float, "recall": float, "f1": float, "support": int}},
     "confusion_matrix": [[int, ...], ...]}       # rows = true label, columns = predicted

``probability_metrics(true, probabilities, labels, ...)`` (from probabilities; the
prediction is the top class) adds: ``balanced_accuracy``, ``mcc``, ``log_loss``,
``brier`` (multi-class: mean over images of the summed squared error), ``ece`` (15
bins); per class one-vs-rest ``sensitivity``, ``specificity``, ``ppv``, ``npv``,
``roc_auc``, ``average_precision`` and ``tp``/``fp``/``tn``/``fn``; with
``positive_classes`` a ``binary`` view (the positive set against the rest, on the
positive-set probability, positive at ``threshold``) with the same figures.
With ``bootstrap_samples`` > 0, 95% percentile intervals ``<name>_ci95: [low, high]``
for accuracy, balanced accuracy, and (per class and binary) sensitivity, specificity
and ROC-AUC, and ``bootstrap: {samples, seed, level, method}``.

The bootstrap: ``rng = numpy.random.default_rng(seed)``; ``rows = rng.integers(0, n,
size=(samples, n))``, one resample of the images per row; each statistic is computed
on every resample (a resample where it is undefined, e.g. no positive image for a
sensitivity, is left out) and the interval is ``numpy.percentile(values, [2.5, 97.5])``.
Undefined figures (no positive image, one class only) are null.
"""
import numpy as np
from sklearn import metrics as sk

ECE_BINS = 15
CI_LEVEL = 0.95
CI_METHOD = "percentile bootstrap over images (resampled with replacement)"


def _labels_range(labels):
    return list(range(len(labels)))


def confusion_matrix(true, predicted, num_classes):
    return sk.confusion_matrix(np.asarray(true, np.int64), np.asarray(predicted, np.int64),
                               labels=list(range(num_classes)))


def classification_metrics(true, predicted, labels):
    """Accuracy, per-class precision/recall/F1 and the confusion matrix."""
    true, predicted = np.asarray(true, np.int64), np.asarray(predicted, np.int64)
    ids = _labels_range(labels)
    matrix = confusion_matrix(true, predicted, len(labels))
    if len(true) == 0:
        precision = recall = f1 = np.zeros(len(labels))
        support = np.zeros(len(labels), np.int64)
    else:
        precision, recall, f1, support = sk.precision_recall_fscore_support(true, predicted, labels=ids,
                                                                            zero_division=0.0)
    per_class = {name: {"precision": float(precision[index]), "recall": float(recall[index]),
                        "f1": float(f1[index]), "support": int(support[index])}
                 for index, name in enumerate(labels)}
    return {
        "n": int(len(true)),
        "accuracy": float(sk.accuracy_score(true, predicted)) if len(true) else 0.0,
        "macro_f1": float(np.mean(f1)) if len(labels) else 0.0,
        "labels": list(labels),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


# ------------------------------------------------------------------ single figures
def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else None


def _auc(is_positive, score):
    """ROC-AUC and average precision of a binary problem, None where one class is absent."""
    if is_positive.all() or not is_positive.any():
        return None, None
    return float(sk.roc_auc_score(is_positive, score)), float(sk.average_precision_score(is_positive, score))


def binary_figures(is_positive, score, decided_positive):
    """Sensitivity, specificity, PPV, NPV, F1, ROC-AUC, average precision and the counts of one binary view."""
    tn, fp, fn, tp = sk.confusion_matrix(is_positive, decided_positive, labels=[False, True]).ravel()
    roc_auc, average_precision = _auc(is_positive, score)
    return {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp), "ppv": _ratio(tp, tp + fp),
            "npv": _ratio(tn, tn + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn), "roc_auc": roc_auc,
            "average_precision": average_precision,
            "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}


def expected_calibration_error(probabilities, true, bins=ECE_BINS):
    """Top-label ECE: sum over equal-width confidence bins of |bin| / n * |accuracy - mean confidence|."""
    return reliability(probabilities, true, bins)["ece"]


def reliability(probabilities, true, bins=ECE_BINS):
    """Per confidence bin (equal width over [0, 1], the top probability; 1.0 in the last bin):
    count, accuracy and mean confidence; and the ECE."""
    probabilities, true = np.asarray(probabilities, np.float64), np.asarray(true, np.int64)
    confidence = probabilities.max(axis=1) if len(true) else np.zeros(0)
    correct = probabilities.argmax(axis=1) == true if len(true) else np.zeros(0, bool)
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    hits = np.bincount(index, weights=correct, minlength=bins)
    confidences = np.bincount(index, weights=confidence, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy, mean_confidence = hits / counts, confidences / counts
    ece = float(np.sum(np.abs(hits - confidences)) / len(true)) if len(true) else None
    return {"bins": bins, "edges": np.linspace(0, 1, bins + 1).tolist(), "count": counts.tolist(),
            "accuracy": [None if c == 0 else float(a) for a, c in zip(accuracy, counts)],
            "confidence": [None if c == 0 else float(m) for m, c in zip(mean_confidence, counts)], "ece": ece}


def multiclass_brier(probabilities, true, num_classes):
    """Mean over images of sum over classes of (probability - one-hot)^2 (0 best, 2 worst)."""
    return float(np.mean(np.sum((probabilities - np.eye(num_classes)[true]) ** 2, axis=1)))


def positive_probability(probabilities, labels, positive_classes):
    """The summed probability of the positive classes, and each label's membership."""
    unknown = [name for name in positive_classes if name not in labels]
    if unknown:
        raise ValueError(f"positive classes {unknown} are not among the labels {labels}")
    members = np.array([name in positive_classes for name in labels])
    return np.asarray(probabilities, np.float64)[:, members].sum(axis=1), members


# ------------------------------------------------------------------ bootstrap
def bootstrap_rows(n, samples, seed):
    """The resampled image indices, one resample per row (see the module docstring)."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def percentile_interval(values):
    values = np.asarray([value for value in values if value is not None and np.isfinite(value)], np.float64)
    if len(values) == 0:
        return None
    low, high = np.percentile(values, [100 * (1 - CI_LEVEL) / 2, 100 * (1 + CI_LEVEL) / 2])
    return [float(low), float(high)]


def _resampled_confusions(true, predicted, rows, num_classes):
    """[samples, classes, classes] confusion matrices of every resample, in one bincount."""
    samples = rows.shape[0]
    cells = true[rows] * num_classes + predicted[rows] + (np.arange(samples) * num_classes * num_classes)[:, None]
    return np.bincount(cells.ravel(), minlength=samples * num_classes * num_classes).reshape(
        samples, num_classes, num_classes)


def _class_rates(confusions):
    """Per resample and class: sensitivity and specificity (NaN where undefined)."""
    tp = np.diagonal(confusions, axis1=1, axis2=2).astype(np.float64)
    support = confusions.sum(axis=2)
    predicted = confusions.sum(axis=1)
    total = confusions.sum(axis=(1, 2))[:, None]
    negatives = total - support
    tn = negatives - (predicted - tp)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / support, tn / negatives


def _resampled_aucs(is_positive, score, rows):
    """ROC-AUC of every resample by the Mann-Whitney statistic on average ranks (scikit-learn's value, tied
    scores counted half), all resamples at once; NaN where a resample lacks positives or negatives."""
    from scipy.stats import rankdata
    positive = is_positive[rows]
    ranks = rankdata(score[rows], method="average", axis=1)
    count = positive.sum(axis=1).astype(np.float64)
    others = rows.shape[1] - count
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * positive).sum(axis=1) - count * (count + 1) / 2) / (count * others)
    return np.where((count > 0) & (others > 0), auc, np.nan)


def add_intervals(result, true, probabilities, samples, seed, binary=None):
    """Bootstrap intervals into ``result`` (probability_metrics' dict)."""
    num_classes = probabilities.shape[1]
    rows = bootstrap_rows(len(true), samples, seed)
    predicted = probabilities.argmax(axis=1)
    confusions = _resampled_confusions(true, predicted, rows, num_classes)
    sensitivity, specificity = _class_rates(confusions)
    with np.errstate(invalid="ignore"):
        accuracy = np.trace(confusions, axis1=1, axis2=2) / len(true)
        balanced = np.nanmean(np.where(confusions.sum(axis=2) > 0, sensitivity, np.nan), axis=1)
    result["accuracy_ci95"] = percentile_interval(accuracy)
    result["balanced_accuracy_ci95"] = percentile_interval(balanced)
    for index, name in enumerate(result["labels"]):
        entry = result["per_class"][name]
        entry["sensitivity_ci95"] = percentile_interval(sensitivity[:, index])
        entry["specificity_ci95"] = percentile_interval(specificity[:, index])
        entry["roc_auc_ci95"] = percentile_interval(_resampled_aucs(true == index, probabilities[:, index], rows))
    if binary is not None:
        view, is_positive, score, decided = binary
        add_binary_intervals(view, is_positive, score, decided, rows)
    result["bootstrap"] = {"samples": int(samples), "seed": int(seed), "level": CI_LEVEL, "method": CI_METHOD}


def add_binary_intervals(view, is_positive, score, decided, rows):
    """Sensitivity, specificity, accuracy and ROC-AUC intervals of a binary view on the resamples ``rows``."""
    positive, hit = is_positive[rows], decided[rows] == is_positive[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = (positive & hit).sum(axis=1) / positive.sum(axis=1)
        specificity = (~positive & hit).sum(axis=1) / (~positive).sum(axis=1)
    view["sensitivity_ci95"] = percentile_interval(sensitivity)
    view["specificity_ci95"] = percentile_interval(specificity)
    view["accuracy_ci95"] = percentile_interval(hit.mean(axis=1))
    view["roc_auc_ci95"] = percentile_interval(_resampled_aucs(is_positive, score, rows))


# ------------------------------------------------------------------ the whole record
def probability_metrics(true, probabilities, labels, positive_classes=None, bootstrap_samples=0, seed=0,
                        threshold=0.5):
    """Every figure of one split from its labels and probabilities (see the module docstring)."""
    true = np.asarray(true, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    predicted = probabilities.argmax(axis=1) if len(true) else np.zeros(0, np.int64)
    result = classification_metrics(true, predicted, labels)
    if len(true) == 0:
        return result
    ids = _labels_range(labels)
    result["balanced_accuracy"] = float(sk.balanced_accuracy_score(true, predicted))
    result["mcc"] = float(sk.matthews_corrcoef(true, predicted))
    result["log_loss"] = float(sk.log_loss(true, probabilities / probabilities.sum(axis=1, keepdims=True), labels=ids))
    result["brier"] = multiclass_brier(probabilities, true, len(labels))
    result["ece"] = expected_calibration_error(probabilities, true)
    for index, name in enumerate(labels):
        result["per_class"][name].update(binary_figures(true == index, probabilities[:, index], predicted == index))
    binary = None
    if positive_classes:
        view, binary = binary_view(true, probabilities, labels, positive_classes, threshold)
        result["binary"] = view
    if bootstrap_samples:
        add_intervals(result, true, probabilities, bootstrap_samples, seed, binary)
    return result


def binary_view(true, probabilities, labels, positive_classes, threshold):
    """(the binary view's figures, (view, is_positive, score, decided)) for the positive set at ``threshold``."""
    score, members = positive_probability(probabilities, labels, positive_classes)
    is_positive = members[true]
    decided = score >= threshold
    view = {"positive_classes": list(positive_classes), "threshold": float(threshold), "n": int(len(true)),
            "positives": int(is_positive.sum()), "accuracy": float(np.mean(decided == is_positive)),
            "balanced_accuracy": float(sk.balanced_accuracy_score(is_positive, decided)),
            "mcc": float(sk.matthews_corrcoef(is_positive, decided)),
            "brier": float(sk.brier_score_loss(is_positive, np.clip(score, 0, 1), labels=[False, True])),
            "log_loss": float(sk.log_loss(is_positive, np.clip(score, 1e-15, 1 - 1e-15), labels=[False, True])),
            **binary_figures(is_positive, score, decided),
            "confusion_matrix": sk.confusion_matrix(is_positive, decided, labels=[False, True]).tolist()}
    return view, (view, is_positive, score, decided)


def operating_point_metrics(true, probabilities, labels, positive_classes, threshold, bootstrap_samples, seed):
    """The binary view at a chosen threshold, with its bootstrap intervals."""
    true = np.asarray(true, np.int64)
    view, binary = binary_view(true, np.asarray(probabilities, np.float64), labels, positive_classes, threshold)
    if bootstrap_samples and len(true):
        add_binary_intervals(*binary, bootstrap_rows(len(true), bootstrap_samples, seed))
        view["bootstrap"] = {"samples": int(bootstrap_samples), "seed": int(seed), "level": CI_LEVEL,
                             "method": CI_METHOD}
    return view


def evaluation_metrics(true, probabilities, labels, evaluation=None, intervals=True):
    """probability_metrics with the config's ``evaluation`` section (positive_classes, bootstrap_samples, seed)."""
    evaluation = evaluation or {}
    samples = evaluation.get("bootstrap_samples", 0) if intervals else 0
    return probability_metrics(true, probabilities, labels, evaluation.get("positive_classes"), samples,
                               evaluation.get("seed", 0))
