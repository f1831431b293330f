"""Test-split accuracy of one deployed IR, and its agreement with the trained model.

The deployed IR is its precision's backbone IR plus the head (scripts/deploy/ir.py), and
its sample check proved that the file computes the head on that backbone's features. So
its accuracy on the whole test split comes from the cached test features of that same
backbone IR: no image goes through the backbone again when only the head changed.

    python -m scripts.deploy.evaluate_ir --ir-json J --head H --test-features F --test-view-features V... \
        --reference test_predictions.npz --trained-features FP32 --output evaluation.json \
        [--min-fp-agreement 0.995] [--max-int8-accuracy-drop 0.5] [--evaluation JSON] [--output-predictions P]

``--output-predictions``: the IR's calibrated test probabilities (the predictions format of
scripts/core/formats.py), from which every figure of evaluation.json can be recomputed.

evaluation.json:
    {"schema_version": 2, "precision": "FP16",
     "metrics": {...},                         # scripts/core/metrics.py:probability_metrics, with intervals
     "trained_model_accuracy": float,          # the trained model's (test_predictions.npz), calibrated
     "trained_model_features": str,            # what computed the features it was trained and tested on
     "accuracy_drop_points": float,            # trained minus IR, percentage points
     "agreement": {"top1_agreement": float, "max_abs_probability_difference": float, "images": int,
                   "same_features": bool},     # true: the IR's features are the trained model's (FP32 on FP32)
     "check": {...},                           # the sample run through the IR file (ir.json), with
                                               # "frozen_model_in_tensorflow": its agreement with the .pb in TF
     "cpu": {...},                             # scripts/core/cpu.py:description of the evaluating machine
     "calibration": {"temperature": T, "before": {ece, brier, log_loss}, "after": {...}},  # on test
     "operating_point": null | binary view at the held-out threshold, with intervals,
     "low_confidence": null | {"threshold", "target_accuracy", "test": {coverage, confident_accuracy, ...}},
     "untrained_backbone": bool, "note": str}

The IR outputs calibrated probabilities (the temperature is in ir.json), so every figure
is of those; ``calibration`` also has the test figures of the uncalibrated ones (T = 1).

FP32 and FP16 must agree with the trained model's top-1 on at least
``export.min_fp_agreement`` of the images; where the IR's cached features are the very
ones the trained model used (``same_features``: that agreement is 1 by construction), the
IR file's agreement with the frozen .pb run in TensorFlow on the check sample is gated
instead. INT8 fails above ``export.max_int8_accuracy_drop`` (default 0.5 points).
"""
import argparse
import json

import numpy as np

from scripts.core import atomic, calibration, cpu, formats
from scripts.core import head as head_lib
from scripts.core.checks import reference_probabilities
from scripts.core.contract import note_suffix
from scripts.core.errors import PipelineError, run_cli
from scripts.core.metrics import evaluation_metrics, operating_point_metrics

FEATURE_ENGINES = {"tensorflow": "TensorFlow on backbone.pb", "FP32": "OpenVINO FP32 backbone IR",
                   "FP16": "OpenVINO FP16 backbone IR", "INT8": "OpenVINO INT8 backbone IR"}


def agreement(ir_probs, reference_probs, same_features):
    return {
        "top1_agreement": float((ir_probs.argmax(axis=1) == reference_probs.argmax(axis=1)).mean()),
        "max_abs_probability_difference": float(np.abs(ir_probs - reference_probs).max()),
        "images": len(ir_probs),
        "same_features": same_features,
    }


def gated_agreement(evaluation):
    """(top-1 agreement, images, what it is compared with) that export.min_fp_agreement gates."""
    independent = evaluation["check"].get("frozen_model_in_tensorflow")
    if evaluation["agreement"]["same_features"] and independent:
        return independent["top1_agreement"], independent["images"], "the frozen .pb in TensorFlow"
    return evaluation["agreement"]["top1_agreement"], evaluation["agreement"]["images"], "the trained model"


def check_thresholds(evaluation, min_fp_agreement, max_int8_drop):
    """Fail a FP IR that disagrees with the trained model, or an INT8 IR that lost too much accuracy."""
    precision = evaluation["precision"]
    rate, images, reference = gated_agreement(evaluation)
    if precision != "INT8" and min_fp_agreement is not None and rate < min_fp_agreement:
        raise PipelineError(f"config key export.min_fp_agreement: the {precision} IR agrees with {reference}'s "
                            f"top-1 on {rate:.2%} of {images} test images, "
                            f"below the required {min_fp_agreement:.2%}")
    drop = evaluation["accuracy_drop_points"]
    if precision == "INT8" and max_int8_drop is not None and drop > max_int8_drop:
        raise PipelineError(f"config key export.max_int8_accuracy_drop: the INT8 IR's test accuracy is "
                            f"{drop:.2f} points below the trained model's "
                            f"({evaluation['metrics']['accuracy']:.2%} vs "
                            f"{evaluation['trained_model_accuracy']:.2%}), more than the allowed {max_int8_drop:g}")


def calibration_figures(raw, calibrated, labels, temperature):
    """Test ECE, Brier score and log loss before (T = 1) and after calibration."""
    def figures(probs):
        metrics = evaluation_metrics(labels, probs, [str(index) for index in range(probs.shape[1])], None, False)
        return {key: metrics[key] for key in ("ece", "brier", "log_loss")}
    return {"temperature": temperature, "before": figures(raw), "after": figures(calibrated)}


def calibrated_reference(reference, temperature):
    """The trained model's test probabilities and accuracy at the deployed temperature (from its per-view logits)."""
    if temperature == 1.0 or "view_logits" not in reference:
        return reference["probabilities"], float(reference["accuracy"])
    probs = calibration.calibrated_probabilities(reference["view_logits"], temperature)
    return probs, float((probs.argmax(axis=1) == reference["labels"]).mean())


def decision_figures(description, labels, probs, evaluation):
    """The operating point's and the low-confidence threshold's test figures (None where not set)."""
    point, confidence = description.get("operating_point"), description.get("low_confidence")
    samples, seed = evaluation.get("bootstrap_samples", 0), evaluation.get("seed", 0)
    at_point = None if not point else {
        "target_sensitivity": point["target_sensitivity"], "chosen_on": "held-out predictions",
        "test": operating_point_metrics(labels, probs, description["labels"], point["positive_classes"],
                                        point["threshold"], samples, seed)}
    low = None if not confidence else {**confidence,
                                       "test": calibration.confident_figures(probs, labels, confidence["threshold"])}
    return at_point, low


def evaluate(ir_json, head_path, features_paths, reference_npz, output, min_fp_agreement, max_int8_drop,
             evaluation_settings=None, predictions_output=None, trained_features="FP32"):
    """Write evaluation.json of one IR, or fail on the thresholds (then nothing is written)."""
    description = atomic.read_json(ir_json)
    evaluation_settings = evaluation_settings or {}
    temperature = description.get("calibration", {}).get("temperature", 1.0)
    head = head_lib.load(head_path)
    probs, test = reference_probabilities(head, features_paths, temperature)
    raw, _ = reference_probabilities(head, features_paths)
    reference = formats.read_predictions(reference_npz)
    if list(test["sha256"]) != list(reference["sha256"]):
        raise PipelineError(f"{reference_npz}: made from other test images than {features_paths[0]}")
    if len(test["labels"]) == 0:
        raise PipelineError(f"{features_paths[0]}: the test split is empty, there is nothing to evaluate")
    metrics = evaluation_metrics(test["labels"], probs, description["labels"], evaluation_settings)
    reference_probs, reference_accuracy = calibrated_reference(reference, temperature)
    at_point, low = decision_figures(description, test["labels"], probs, evaluation_settings)
    evaluation = {
        "schema_version": 2,
        "precision": description["precision"],
        "metrics": metrics,
        "trained_model_accuracy": reference_accuracy,
        "trained_model_features": FEATURE_ENGINES[trained_features],
        "accuracy_drop_points": 100.0 * (reference_accuracy - metrics["accuracy"]),
        "agreement": agreement(probs, reference_probs, trained_features == description["precision"]),
        "check": description["check"],
        # The evaluating process's CPU; the IR's inference precision as its check compiled it.
        "cpu": cpu.description(inference_precision=(description.get("cpu") or {}).get("inference_precision")),
        "calibration": calibration_figures(raw, probs, test["labels"], temperature),
        "operating_point": at_point,
        "low_confidence": low,
        "untrained_backbone": description["untrained_backbone"],
        "note": description["note"],
    }
    check_thresholds(evaluation, min_fp_agreement, max_int8_drop)
    if predictions_output:
        formats.write_predictions(predictions_output, probs, test["labels"], test["sha256"], test["filenames"])
    atomic.write_json(output, evaluation)
    return evaluation


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ir-json", required=True, help="ir.json of the IR")
    parser.add_argument("--head", required=True)
    parser.add_argument("--test-features", required=True, help="cached test features of the IR's backbone")
    parser.add_argument("--test-view-features", nargs="*", default=[])
    parser.add_argument("--reference", required=True, help="test_predictions.npz of the trained model")
    parser.add_argument("--trained-features", choices=sorted(FEATURE_ENGINES), default="FP32",
                        help="what computed the trained model's features (bottlenecks.backend/precision)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--min-fp-agreement", type=float, default=None,
                        help="FP32/FP16: least top-1 agreement with the trained model, 0 to 1")
    parser.add_argument("--max-int8-accuracy-drop", type=float, default=None,
                        help="points of test accuracy; omit to only report the drop")
    parser.add_argument("--evaluation", default="{}", help="JSON: positive_classes, bootstrap_samples, seed")
    parser.add_argument("--output-predictions", help="the IR's calibrated test probabilities (.npz)")
    args = parser.parse_args(argv)
    evaluation = evaluate(args.ir_json, args.head, [args.test_features, *args.test_view_features], args.reference,
                          args.output, args.min_fp_agreement, args.max_int8_accuracy_drop,
                          json.loads(args.evaluation), args.output_predictions, args.trained_features)
    print(f"{evaluation['precision']} IR: accuracy {evaluation['metrics']['accuracy']:.2%} "
          f"(trained model {evaluation['trained_model_accuracy']:.2%}), top-1 agreement "
          f"{evaluation['agreement']['top1_agreement']:.2%}{note_suffix(evaluation['note'])}")


if __name__ == "__main__":
    run_cli(main)
