"""Test-split accuracy of one deployed IR, and its agreement with the trained model.

The deployed IR is its precision's backbone IR plus the head (scripts/deploy/ir.py), and
its sample check proved that the file computes the head on that backbone's features. So
its accuracy on the whole test split comes from the cached test features of that same
backbone IR: no image goes through the backbone again when only the head changed.

    python -m scripts.deploy.evaluate_ir --ir-json J --head H --test-features F --test-view-features V... \
        --reference test_predictions.npz --output evaluation.json [--min-fp-agreement 0.995] \
        [--max-int8-accuracy-drop 1.0]

evaluation.json:
    {"schema_version": 2, "precision": "FP16",
     "metrics": {...},                         # scripts/core/metrics.py:classification_metrics
     "tensorflow_accuracy": float,             # the trained model's (test_predictions.npz)
     "accuracy_drop_points": float,            # trained minus IR, percentage points
     "agreement": {"top1_agreement": float, "max_abs_probability_difference": float, "images": int},
     "check": {...},                           # the sample run through the IR file (ir.json)
     "cpu": {...},                             # scripts/core/cpu.py:description of the evaluating machine
     "untrained_backbone": bool, "note": str}

FP32 and FP16 must agree with the trained model's top-1 on at least
``export.min_fp_agreement`` of the images; INT8 fails only above
``export.max_int8_accuracy_drop``, when it is set.
"""
import argparse

import numpy as np

from scripts.core import atomic, cpu, formats
from scripts.core import head as head_lib
from scripts.core.checks import reference_probabilities
from scripts.core.contract import note_suffix
from scripts.core.errors import PipelineError, run_cli
from scripts.core.metrics import classification_metrics


def agreement(ir_probs, reference_probs):
    return {
        "top1_agreement": float((ir_probs.argmax(axis=1) == reference_probs.argmax(axis=1)).mean()),
        "max_abs_probability_difference": float(np.abs(ir_probs - reference_probs).max()),
        "images": len(ir_probs),
    }


def check_thresholds(evaluation, min_fp_agreement, max_int8_drop):
    """Fail a FP IR that disagrees with the trained model, or an INT8 IR that lost too much accuracy."""
    precision, rate = evaluation["precision"], evaluation["agreement"]["top1_agreement"]
    if precision != "INT8" and min_fp_agreement is not None and rate < min_fp_agreement:
        raise PipelineError(f"config key export.min_fp_agreement: the {precision} IR agrees with the trained model's "
                            f"top-1 on {rate:.2%} of {evaluation['agreement']['images']} test images, "
                            f"below the required {min_fp_agreement:.2%}")
    drop = evaluation["accuracy_drop_points"]
    if precision == "INT8" and max_int8_drop is not None and drop > max_int8_drop:
        raise PipelineError(f"config key export.max_int8_accuracy_drop: the INT8 IR's test accuracy is "
                            f"{drop:.2f} points below the trained model's "
                            f"({evaluation['metrics']['accuracy']:.2%} vs "
                            f"{evaluation['tensorflow_accuracy']:.2%}), more than the allowed {max_int8_drop:g}")


def evaluate(ir_json, head_path, features_paths, reference_npz, output, min_fp_agreement, max_int8_drop):
    """Write evaluation.json of one IR, or fail on the thresholds (then nothing is written)."""
    description = atomic.read_json(ir_json)
    probs, test = reference_probabilities(head_lib.load(head_path), features_paths)
    reference = formats.read_predictions(reference_npz)
    if list(test["sha256"]) != list(reference["sha256"]):
        raise PipelineError(f"{reference_npz}: made from other test images than {features_paths[0]}")
    if len(test["labels"]) == 0:
        raise PipelineError(f"{features_paths[0]}: the test split is empty, there is nothing to evaluate")
    metrics = classification_metrics(test["labels"], probs.argmax(axis=1), description["labels"])
    reference_accuracy = float(reference["accuracy"])
    evaluation = {
        "schema_version": 2,
        "precision": description["precision"],
        "metrics": metrics,
        "tensorflow_accuracy": reference_accuracy,
        "accuracy_drop_points": 100.0 * (reference_accuracy - metrics["accuracy"]),
        "agreement": agreement(probs, reference["probabilities"]),
        "check": description["check"],
        # The evaluating process's CPU; the IR's inference precision as its check compiled it.
        "cpu": cpu.description(inference_precision=(description.get("cpu") or {}).get("inference_precision")),
        "untrained_backbone": description["untrained_backbone"],
        "note": description["note"],
    }
    check_thresholds(evaluation, min_fp_agreement, max_int8_drop)
    atomic.write_json(output, evaluation)
    return evaluation


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ir-json", required=True, help="ir.json of the IR")
    parser.add_argument("--head", required=True)
    parser.add_argument("--test-features", required=True, help="cached test features of the IR's backbone")
    parser.add_argument("--test-view-features", nargs="*", default=[])
    parser.add_argument("--reference", required=True, help="test_predictions.npz of the trained model")
    parser.add_argument("--output", required=True)
    parser.add_argument("--min-fp-agreement", type=float, default=None,
                        help="FP32/FP16: least top-1 agreement with the trained model, 0 to 1")
    parser.add_argument("--max-int8-accuracy-drop", type=float, default=None,
                        help="points of test accuracy; omit to only report the drop")
    args = parser.parse_args(argv)
    evaluation = evaluate(args.ir_json, args.head, [args.test_features, *args.test_view_features], args.reference,
                          args.output, args.min_fp_agreement, args.max_int8_accuracy_drop)
    print(f"{evaluation['precision']} IR: accuracy {evaluation['metrics']['accuracy']:.2%} "
          f"(trained model {evaluation['tensorflow_accuracy']:.2%}), top-1 agreement "
          f"{evaluation['agreement']['top1_agreement']:.2%}{note_suffix(evaluation['note'])}")


if __name__ == "__main__":
    run_cli(main)
