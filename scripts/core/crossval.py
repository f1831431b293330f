"""Cross-validation folds and the selection metrics (docs/selection.md).

Folds are stratified by class (scikit-learn's StratifiedKFold) or, when images carry a
group (e.g. one patient, one slide), stratified with whole groups in one fold
(StratifiedGroupKFold). The assignment depends only on the labels, the groups and the
fixed FOLD_SEED, so every experiment over the same images gets the same folds and the
candidates are compared fold by fold on the same held-out images.
"""
import warnings

import numpy as np

from scripts.core.errors import PipelineError

FOLD_SEED = 0
# The figures each fold records; every one but log_loss is better when higher.
METRICS = ("accuracy", "macro_f1", "balanced_accuracy", "log_loss")
LOWER_IS_BETTER = {"log_loss"}


def usable_folds(labels, requested, groups=None):
    """The folds that can be made: at most the images (or groups) of the smallest class, at least 2."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    if groups is None:
        smallest = min(int((labels == label).sum()) for label in present)
    else:
        groups = np.asarray(groups)
        smallest = min(len(np.unique(groups[labels == label])) for label in present)
    if smallest < 2:
        raise PipelineError(f"cross-validation needs at least 2 training + validation images (or groups) per class; "
                            f"a class has {smallest}")
    return min(requested, smallest)


def fold_assignment(labels, requested, groups=None):
    """The fold (0..k-1) of each row, stratified by label; rows of one group share a fold."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    labels = np.asarray(labels, np.int64)
    folds = usable_folds(labels, requested, groups)
    if groups is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=FOLD_SEED)
        splits = splitter.split(np.zeros(len(labels)), labels)
    else:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=FOLD_SEED)
        splits = splitter.split(np.zeros(len(labels)), labels, np.asarray(groups))
    assignment = np.full(len(labels), -1, np.int64)
    with warnings.catch_warnings():  # "the least populated class has only N members": folds are capped above
        warnings.simplefilter("ignore", UserWarning)
        for fold, (_, held_out) in enumerate(splits):
            assignment[held_out] = fold
    return assignment


def fold_metrics(true, probabilities, num_classes):
    """{metric: value} of one held-out fold (probabilities [N, classes])."""
    from sklearn import metrics
    predicted = probabilities.argmax(axis=1)
    classes = list(range(num_classes))
    with warnings.catch_warnings():  # a class absent from a small fold
        warnings.simplefilter("ignore")
        return {
            "accuracy": float(metrics.accuracy_score(true, predicted)),
            "macro_f1": float(metrics.f1_score(true, predicted, labels=classes, average="macro", zero_division=0)),
            "balanced_accuracy": float(metrics.balanced_accuracy_score(true, predicted)),
            "log_loss": float(metrics.log_loss(true, np.clip(probabilities, 1e-12, 1.0), labels=classes)),
        }


def summarise(per_fold):
    """{metric: {"mean", "std", "folds": [...]}} from a list of fold_metrics (std: population, ddof 0)."""
    summary = {}
    for name in METRICS:
        values = [fold[name] for fold in per_fold]
        summary[name] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "folds": values}
    return summary


def standard_error(entry):
    """The standard error of a fold mean: std / sqrt(k - 1) with the population std (= sample std / sqrt(k))."""
    k = len(entry["folds"])
    return float(entry["std"] / np.sqrt(k - 1)) if k > 1 else 0.0
