"""Fit the deployed model's temperature, operating point and low-confidence threshold on held-out data.

Reads only held-out predictions (oof_predictions.npz: logits of images the head was not
trained on; never the test split) and writes calibration.json, which the frozen model,
the IRs, their evaluation, ``predict`` and the model card read
(scripts/core/calibration.py says how each value is chosen).

    python -m scripts.model.calibrate --held-out oof_predictions.npz --labels labels.json \
        --evaluation '{"positive_classes": ["Early", "Pre", "Pro"], "target_sensitivity": 0.99, ...}' \
        --output calibration.json

oof_predictions.npz: logits float32 [N, C], labels int64 [N], paths str [N], folds int64 [N],
splits str [N]; optionally view_logits [V, N, C] (test-time views), which the fit then uses.
"""
import argparse
import json

import numpy as np

from scripts.core import atomic, calibration, formats
from scripts.core.errors import PipelineError, run_cli
from scripts.core.metrics import (
    binary_view,
    expected_calibration_error,
    multiclass_brier,
    positive_probability,
    reliability,
)

REQUIRED_KEYS = ("logits", "labels", "paths", "folds", "splits")


def read_held_out(path, num_classes):
    """The held-out logits ([V, N, C]) and labels, checked against the contract."""
    data = formats.read_npz(path)
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise PipelineError(f"{path}: has no {', '.join(missing)} array (see docs/clinical.md)")
    logits = data["view_logits"] if "view_logits" in data else data["logits"]
    logits, labels = calibration.as_views(logits), np.asarray(data["labels"], np.int64)
    if logits.shape[1:] != (len(labels), num_classes):
        raise PipelineError(f"{path}: logits of shape {list(logits.shape)} do not match {len(labels)} labels "
                            f"and {num_classes} classes")
    if "test" in set(map(str, data["splits"])):
        raise PipelineError(f"{path}: holds test-split images; the calibration never sees the test split")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise PipelineError(f"{path}: a label id outside 0..{num_classes - 1}")
    return logits, labels, data


def quality(probabilities, labels, num_classes):
    return {"log_loss": float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-15, None)))),
            "brier": multiclass_brier(probabilities, labels, num_classes),
            "ece": expected_calibration_error(probabilities, labels),
            "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels))}


def operating_point(probabilities, labels, names, evaluation):
    """The decision threshold on the positive-set probability, or None without a positive set and target."""
    positive, target = evaluation.get("positive_classes"), evaluation.get("target_sensitivity")
    if not positive or target is None:
        return None
    try:
        score, members = positive_probability(probabilities, names, positive)
    except ValueError as error:
        raise PipelineError(f"config key evaluation.positive_classes: {error}") from None
    threshold = calibration.sensitivity_threshold(score, members[labels], target)
    if threshold is None:
        raise PipelineError("config key evaluation.target_sensitivity: the held-out data has no image of the "
                            f"positive classes {positive}")
    view, _ = binary_view(labels, probabilities, names, positive, threshold)
    return {"positive_classes": list(positive), "target_sensitivity": float(target), "threshold": threshold,
            "chosen_on": "held-out predictions", "held_out": view}


def low_confidence(probabilities, labels, target):
    if target is None:
        return None
    threshold = calibration.confidence_threshold(probabilities, labels, target)
    return {"target_accuracy": float(target), "threshold": threshold, "chosen_on": "held-out predictions",
            "rule": "low_confidence when the top calibrated probability is below threshold",
            "held_out": calibration.confident_figures(probabilities, labels, threshold)}


def calibrate(held_out_path, labels_path, evaluation, output):
    names = formats.read_labels(labels_path)
    logits, labels, data = read_held_out(held_out_path, len(names))
    if len(labels) == 0:
        raise PipelineError(f"{held_out_path}: no held-out images to calibrate on")
    temperature = calibration.fit_temperature(logits, labels)
    before = calibration.calibrated_probabilities(logits, 1.0)
    after = calibration.calibrated_probabilities(logits, temperature)
    record = {
        "schema_version": 1,
        "temperature": temperature,
        "method": "temperature scaling: softmax(logits / T) per test-time view, then the views' mean; "
                  "T minimises the held-out log loss",
        "held_out": {"n": int(len(labels)), "views": int(logits.shape[0]),
                     "splits": sorted(set(map(str, data["splits"]))), "folds": sorted(set(map(int, data["folds"]))),
                     "before": quality(before, labels, len(names)), "after": quality(after, labels, len(names)),
                     "reliability_before": reliability(before, labels), "reliability_after": reliability(after, labels)},
        "labels": names,
        "operating_point": operating_point(after, labels, names, evaluation),
        "low_confidence": low_confidence(after, labels, evaluation.get("low_confidence_accuracy")),
    }
    atomic.write_json(output, record)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held-out", required=True, help="oof_predictions.npz (never the test split)")
    parser.add_argument("--labels", required=True, help="labels.json")
    parser.add_argument("--evaluation", default="{}", help="JSON: positive_classes, target_sensitivity, "
                        "low_confidence_accuracy")
    parser.add_argument("--output", required=True, help="calibration.json")
    args = parser.parse_args(argv)
    record = calibrate(args.held_out, args.labels, json.loads(args.evaluation), args.output)
    held = record["held_out"]
    line = (f"temperature {record['temperature']:.4f} on {held['n']} held-out images: ECE "
            f"{held['before']['ece']:.4f} -> {held['after']['ece']:.4f}, log loss "
            f"{held['before']['log_loss']:.4f} -> {held['after']['log_loss']:.4f}")
    if record["operating_point"]:
        line += f"; threshold {record['operating_point']['threshold']:.4f} on the positive-set probability"
    print(line)


if __name__ == "__main__":
    run_cli(main)
