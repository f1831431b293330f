"""Pick an experiment by its cross-validation and write selected.json (docs/selection.md).

Candidates are compared by the mean over their folds of the selection metric (metrics.json
"cv", made by retrain over training + validation). The test split is never read: it stays
an unbiased estimate of the selected model. The rule for ties and near-ties (one standard
error): the best mean sets a threshold, best mean minus its standard error (plus, for
log loss); of the candidates whose mean reaches it, the simplest wins: a linear head before
an MLP before a fine-tuned backbone, then the first in sweep order (the order given).
A fine-tuned experiment has no folds: its plain validation-split figure stands in, with a
standard error of 0.

    python -m scripts.model.select --metric cv_accuracy --output selected.json \
        --experiments NAME=metrics.json ...

selected.json: {"experiment": str, "metric": str, "value": float (its mean), "best": str (the
best mean), "threshold": float, "rule": str,
"candidates": {name: {"mean", "std", "se", "folds", "complexity", "source"}}}
"""
import argparse

from scripts.core import atomic, crossval
from scripts.core.errors import PipelineError, run_cli

METRICS = {"cv_accuracy": "accuracy", "cv_macro_f1": "macro_f1", "cv_balanced_accuracy": "balanced_accuracy",
           "cv_log_loss": "log_loss"}
# Simplest first: the tie rule's order before the sweep order.
COMPLEXITY = {"linear": 0, "mlp": 1, "finetune": 2}
RULE = ("the simplest candidate (linear < mlp < fine-tuned, then sweep order) whose cross-validated mean "
        "is within one standard error of the best mean")


def complexity(metrics):
    if metrics.get("mode") == "finetune":
        return COMPLEXITY["finetune"]
    return COMPLEXITY[metrics["settings"]["train"]["head"]]


def validation_value(validation, name):
    """A fine-tuned candidate's figure from its validation split."""
    if name == "log_loss":
        return validation["loss"]
    if name == "balanced_accuracy":
        recalls = [entry["recall"] for entry in validation["per_class"].values() if entry["support"]]
        return sum(recalls) / len(recalls)
    return validation[name]


def candidate_score(metrics, metric):
    """{"mean", "std", "se", "folds", "complexity", "source"} of one experiment's metrics.json."""
    name = METRICS[metric]
    if "cv" in metrics:
        entry = metrics["cv"][name]
        score = {"mean": entry["mean"], "std": entry["std"], "se": crossval.standard_error(entry),
                 "folds": len(entry["folds"]), "source": "cross-validation"}
    else:
        score = {"mean": validation_value(metrics["splits"]["validation"], name), "std": 0.0, "se": 0.0,
                 "folds": 1, "source": "validation split"}
    return {**score, "complexity": complexity(metrics)}


def select(candidates, metric):
    """(chosen name, best-mean name, threshold, {name: score}) for {name: metrics dict}, in sweep order."""
    if not candidates:
        raise PipelineError("select: no experiments to choose from")
    scores = {name: candidate_score(metrics, metric) for name, metrics in candidates.items()}
    order = list(scores)
    sign = -1.0 if METRICS[metric] in crossval.LOWER_IS_BETTER else 1.0  # compare sign * mean, higher better
    best = max(order, key=lambda name: (sign * scores[name]["mean"], -order.index(name)))
    threshold = scores[best]["mean"] - sign * scores[best]["se"]
    within = [name for name in order if sign * scores[name]["mean"] >= sign * threshold - 1e-12]
    chosen = min(within, key=lambda name: (scores[name]["complexity"], order.index(name)))
    return chosen, best, threshold, scores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metric", choices=sorted(METRICS), required=True)
    parser.add_argument("--output", required=True, help="selected.json to write")
    parser.add_argument("--experiments", nargs="+", required=True, help="NAME=metrics.json, in sweep order")
    args = parser.parse_args(argv)
    candidates = {}
    for item in args.experiments:
        name, path = item.split("=", 1)
        candidates[name] = atomic.read_json(path)
    chosen, best, threshold, scores = select(candidates, args.metric)
    atomic.write_json(args.output, {"experiment": chosen, "metric": args.metric, "value": scores[chosen]["mean"],
                                    "best": best, "threshold": threshold, "rule": RULE, "candidates": scores})
    for name, score in scores.items():
        print(f"  {name}: {args.metric} {score['mean']:.4f} +- {score['std']:.4f} ({score['source']}, "
              f"{score['folds']} folds)")
    print(f"selected {chosen}: {args.metric} {scores[chosen]['mean']:.4f} (best mean: {best}; "
          f"threshold {threshold:.4f}; of {len(scores)} experiments)")


if __name__ == "__main__":
    run_cli(main)
