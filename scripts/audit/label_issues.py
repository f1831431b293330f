"""Label-error audit: rank the images whose given label the model finds least likely.

The probabilities are out of fold: each image's come from a model that never saw it.
Two sources, one ranking:

    --oof-predictions P   results/<experiment>/model/oof_predictions.npz from the
                          selection's cross-validation: logits [N, C], labels [N],
                          paths [N], folds [N], splits [N]
    (otherwise)           a k-fold logistic regression on the cached train + validation
                          features (scikit-learn), folds kept group-whole by the
                          manifest's ``group`` column (StratifiedGroupKFold)

Ranking (confident learning, in a few lines rather than the cleanlab package, which
would bring pandas into the pipeline's environments for two formulas): ``self_confidence``
is the probability of the given label (lowest first: cleanlab's default ranking), the
``normalized_margin`` that probability minus the largest other one, the ``likely``
label the most probable one. ``issue`` marks confident-learning's off-diagonal of the
confident joint: some other class k is at least as probable as k's own threshold (the
mean probability of k over the images labelled k), and the given label is below its own.

    python -m scripts.audit.label_issues --train T --validation V --manifest M --labels L \
        [--oof-predictions P] --folds 5 --seed 0 --output-table label_issues.csv \
        --output-summary label_issues.json
"""
import argparse
import collections

import numpy as np

from scripts.core import atomic, formats
from scripts.core.errors import PipelineError, run_cli

TABLE_HEADER = ("rank", "path", "given_label", "likely_label", "self_confidence", "normalized_margin",
                "likely_probability", "issue", "split", "fold", "sha256")
OOF_KEYS = ("logits", "labels", "paths", "folds", "splits")


def softmax(logits):
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def rank_label_issues(probabilities, labels):
    """Order (most suspect first) and scores of given labels under out-of-fold probabilities.

    Returns (order, self_confidence, normalized_margin, likely, issue); independent of
    where the probabilities come from.
    """
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels, np.int64)
    rows = np.arange(len(labels))
    self_confidence = probabilities[rows, labels]
    others = probabilities.copy()
    others[rows, labels] = -np.inf
    normalized_margin = self_confidence - others.max(axis=1)
    likely = probabilities.argmax(axis=1)
    thresholds = np.array([probabilities[labels == k, k].mean() if (labels == k).any() else 1.0
                           for k in range(probabilities.shape[1])])
    confident_other = (others >= thresholds[None, :]).any(axis=1)
    issue = confident_other & (self_confidence < thresholds[labels])
    order = np.lexsort((normalized_margin, self_confidence))
    return order, self_confidence, normalized_margin, likely, issue


def group_folds(labels, groups, folds, seed):
    """A fold number per image, whole groups per fold, classes spread over folds."""
    from sklearn.model_selection import StratifiedGroupKFold
    smallest = min(collections.Counter(labels.tolist()).values())
    splits = min(folds, len(set(groups)), max(2, smallest))
    if splits < 2:
        raise PipelineError(f"config key audit.folds: need at least 2 groups to cross-validate (got {len(set(groups))})")
    fold_of = np.zeros(len(labels), np.int64)
    splitter = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed)
    for number, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        fold_of[held_out] = number
    return fold_of


def out_of_fold_probabilities(features, labels, classes, fold_of):
    """Each image's class probabilities from a logistic regression trained on the other folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    probabilities = np.zeros((len(labels), classes))
    for fold in np.unique(fold_of):
        train, held_out = fold_of != fold, fold_of == fold
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(features[train], labels[train])
        probabilities[np.ix_(held_out, model.classes_)] = model.predict_proba(features[held_out])
    return probabilities


def own_predictions(train_path, validation_path, manifest_path, classes, folds, seed):
    """(probabilities, labels, paths, folds, splits, sha256) by the k-fold logistic regression."""
    parts = [(name, formats.read_bottlenecks(path)) for name, path in (("train", train_path),
                                                                       ("validation", validation_path))]
    features = np.concatenate([part["features"] for _, part in parts]).astype(np.float64)
    labels = np.concatenate([part["labels"] for _, part in parts]).astype(np.int64)
    hashes = np.concatenate([part["sha256"] for _, part in parts]).astype(str)
    splits = np.concatenate([[name] * len(part["labels"]) for name, part in parts]).astype(str)
    manifest = {row["sha256"]: row for row in atomic.read_table(manifest_path)}
    missing = [sha for sha in hashes if sha not in manifest]
    if missing:
        raise PipelineError(f"{manifest_path}: does not list {len(missing)} image(s) of the features, "
                            f"e.g. sha256 {missing[0]}")
    groups = np.asarray([manifest[sha].get("group") or sha for sha in hashes])
    paths = np.asarray([manifest[sha]["path"] for sha in hashes])
    fold_of = group_folds(labels, groups, folds, seed)
    return out_of_fold_probabilities(features, labels, classes, fold_of), labels, paths, fold_of, splits, hashes


def contract_predictions(oof_path, classes):
    """The same from an oof_predictions.npz of the selection's cross-validation."""
    data = formats.read_npz(oof_path)
    missing = [key for key in OOF_KEYS if key not in data]
    if missing:
        raise PipelineError(f"{oof_path}: missing array(s) {', '.join(missing)}")
    if data["logits"].ndim != 2 or data["logits"].shape[1] != classes:
        raise PipelineError(f"{oof_path}: logits of shape {data['logits'].shape}, expected [N, {classes}]")
    count = len(data["labels"])
    return (softmax(data["logits"]), data["labels"].astype(np.int64), data["paths"].astype(str),
            data["folds"].astype(np.int64), data["splits"].astype(str), np.asarray([""] * count))


def audit(train_path, validation_path, manifest_path, labels_path, table_path, summary_path, folds=5, seed=0,
          oof_path=None):
    """Write label_issues.csv (every image, most suspect first) and its summary; return the summary."""
    names = formats.read_labels(labels_path)
    if oof_path:
        source = f"out-of-fold logits from {oof_path}"
        probabilities, labels, paths, fold_of, splits, hashes = contract_predictions(oof_path, len(names))
    else:
        source = f"{folds}-fold logistic regression on the cached train+validation features (group-whole folds)"
        probabilities, labels, paths, fold_of, splits, hashes = own_predictions(
            train_path, validation_path, manifest_path, len(names), folds, seed)
    order, self_confidence, margin, likely, issue = rank_label_issues(probabilities, labels)
    rows = [(rank, paths[index], names[labels[index]], names[likely[index]], f"{self_confidence[index]:.4f}",
             f"{margin[index]:.4f}", f"{probabilities[index, likely[index]]:.4f}", int(issue[index]),
             splits[index], int(fold_of[index]), hashes[index]) for rank, index in enumerate(order, 1)]
    summary = {"source": source, "images": int(len(labels)), "issues": int(issue.sum()),
               "out_of_fold_accuracy": float((likely == labels).mean()) if len(labels) else 0.0,
               "ranked_by": "self_confidence (ties: normalized_margin)",
               "issues_by_given_label": {name: int((issue & (labels == k)).sum()) for k, name in enumerate(names)}}
    atomic.write_table(table_path, TABLE_HEADER, rows)
    atomic.write_json(summary_path, summary)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="the train split's plain features (.npz)")
    parser.add_argument("--validation", required=True, help="the validation split's plain features (.npz)")
    parser.add_argument("--manifest", required=True, help="manifest.tsv: paths and groups by content hash")
    parser.add_argument("--labels", required=True, help="labels.json")
    parser.add_argument("--oof-predictions", default=None, help="oof_predictions.npz to rank instead of "
                                                                "fitting our own folds")
    parser.add_argument("--folds", type=int, required=True, help="folds of the logistic regression (audit.folds)")
    parser.add_argument("--seed", type=int, required=True, help="shuffles the folds (audit.seed)")
    parser.add_argument("--output-table", required=True, help="label_issues.csv to write")
    parser.add_argument("--output-summary", required=True, help="JSON to write: counts and the source")
    args = parser.parse_args(argv)
    summary = audit(args.train, args.validation, args.manifest, args.labels, args.output_table,
                    args.output_summary, args.folds, args.seed, args.oof_predictions)
    print(f"{summary['issues']} of {summary['images']} images flagged as likely label errors "
          f"(out-of-fold accuracy {summary['out_of_fold_accuracy']:.4f}) -> {args.output_table}")


if __name__ == "__main__":
    run_cli(main)
