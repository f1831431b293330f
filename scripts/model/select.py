"""Pick the best experiment on the validation split and write selected.json.

Only the validation split is read: the test split stays an unbiased estimate of the
selected model. Ties on the metric go to the lower validation loss, then to the
experiment listed first (the sweep lists simpler settings first).

    python -m scripts.model.select --metric validation_accuracy --output selected.json \
        --experiments NAME=metrics.json ...

selected.json: {"experiment": str, "metric": str, "value": float, "candidates": {name: value}}
"""
import argparse

from scripts.core import atomic
from scripts.core.errors import PipelineError, run_cli

METRICS = {"validation_accuracy": "accuracy", "validation_macro_f1": "macro_f1"}


def validation_score(metrics, metric):
    """(the metric's value, the validation loss) of one experiment's metrics.json."""
    validation = metrics["splits"]["validation"]
    return validation[METRICS[metric]], validation.get("loss", float("inf"))


def select(candidates, metric):
    """The name of the best candidate ({name: metrics dict}, in order) and {name: value}."""
    if not candidates:
        raise PipelineError("select: no experiments to choose from")
    scores = {name: validation_score(metrics, metric) for name, metrics in candidates.items()}
    order = list(scores)
    best = min(order, key=lambda name: (-scores[name][0], scores[name][1], order.index(name)))
    return best, {name: value for name, (value, _) in scores.items()}


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
    best, values = select(candidates, args.metric)
    atomic.write_json(args.output, {"experiment": best, "metric": args.metric, "value": values[best],
                                    "candidates": values})
    print(f"selected {best}: {args.metric} {values[best]:.4f} (of {len(values)} experiments)")


if __name__ == "__main__":
    run_cli(main)
