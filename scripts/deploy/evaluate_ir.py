"""Evaluate an IR on the test split against the frozen TensorFlow model it came from.

Two entry points, one job each:

    python -m scripts.evaluate_ir tensorflow --model-pb P --test-tfrecords T... --output test_predictions.npz
    python -m scripts.evaluate_ir ir --ir-xml X --tensorflow test_predictions.npz \
        --test-tfrecords T... --output evaluation.json --min-fp-agreement 0.995

``tensorflow`` saves the frozen model's softmax on the test split (probabilities,
labels, sha256, accuracy) once per experiment; ``ir`` runs one IR on the CPU over the
same images and writes evaluation.json:

    {"schema_version": 1, "precision": "FP16",
     "metrics": {...},                         # scripts/metrics.py:classification_metrics
     "tensorflow_accuracy": float,
     "accuracy_drop_points": float,            # TensorFlow minus IR, percentage points
     "agreement": {"top1_agreement": float, "max_abs_probability_difference": float, "images": int},
     "untrained_backbone": bool, "note": str}

FP32 and FP16 must agree with TensorFlow's top-1 on at least ``export.min_fp_agreement``
of the images; INT8 fails only above ``export.max_int8_accuracy_drop``, when it is set.
"""
import argparse
import os

import numpy as np

from scripts.core import atomic
from scripts.bottlenecks import run_over_tfrecords
from scripts.core.errors import PipelineError, run_cli
from scripts.ir import IrModel, input_spec, model_contract, note_suffix
from scripts.core.metrics import classification_metrics

BATCH_SIZE = 32


def predictions(model, spec, test_tfrecords, threads=1):
    """(probabilities [N, classes], labels [N], sha256 [N]) of a model over the test split."""
    probs, labels, hashes, _ = run_over_tfrecords(model, spec, test_tfrecords, BATCH_SIZE, threads)
    if probs is None:
        raise PipelineError(f"{test_tfrecords[0]}: the test split is empty, there is nothing to evaluate")
    return probs, np.asarray(labels, np.int64), np.asarray(hashes, dtype=str)


def tensorflow_predictions(model_pb, test_tfrecords, output, threads=1):
    """Save a frozen model's test-split softmax (the `freeze` rule does this itself); return its accuracy."""
    from scripts.freeze import FrozenModel, save_predictions
    spec = input_spec(model_contract(model_pb))
    probs, labels, hashes = predictions(FrozenModel(model_pb, threads), spec, test_tfrecords, threads)
    return save_predictions(output, probs, labels, hashes)


def load_predictions(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def agreement(ir_probs, tf_probs):
    return {
        "top1_agreement": float((ir_probs.argmax(axis=1) == tf_probs.argmax(axis=1)).mean()),
        "max_abs_probability_difference": float(np.abs(ir_probs - tf_probs).max()),
        "images": len(ir_probs),
    }


def check_thresholds(evaluation, min_fp_agreement, max_int8_drop):
    """Fail a FP IR that disagrees with TensorFlow, or an INT8 IR that lost too much accuracy."""
    precision, rate = evaluation["precision"], evaluation["agreement"]["top1_agreement"]
    if precision != "INT8" and min_fp_agreement is not None and rate < min_fp_agreement:
        raise PipelineError(f"config key export.min_fp_agreement: the {precision} IR agrees with TensorFlow's "
                            f"top-1 on {rate:.2%} of {evaluation['agreement']['images']} test images, "
                            f"below the required {min_fp_agreement:.2%}")
    drop = evaluation["accuracy_drop_points"]
    if precision == "INT8" and max_int8_drop is not None and drop > max_int8_drop:
        raise PipelineError(f"config key export.max_int8_accuracy_drop: the INT8 IR's test accuracy is "
                            f"{drop:.2f} points below TensorFlow's "
                            f"({evaluation['metrics']['accuracy']:.2%} vs "
                            f"{evaluation['tensorflow_accuracy']:.2%}), more than the allowed {max_int8_drop:g}")


def evaluate_ir(ir_xml, tensorflow_npz, test_tfrecords, output, min_fp_agreement=None,
                max_int8_drop=None, threads=1):
    """Write evaluation.json of one IR, or fail on the thresholds (then nothing is written)."""
    description = atomic.read_json(os.path.join(os.path.dirname(ir_xml), "model.json"))
    reference = load_predictions(tensorflow_npz)
    probs, labels, hashes = predictions(IrModel(ir_xml, threads), input_spec(description),
                                        test_tfrecords, threads)
    if list(hashes) != list(reference["sha256"]):
        raise PipelineError(f"{tensorflow_npz}: made from other test images than {test_tfrecords[0]}")
    metrics = classification_metrics(labels, probs.argmax(axis=1), description["labels"])
    tensorflow_accuracy = float(reference["accuracy"])
    evaluation = {
        "schema_version": 1,
        "precision": description["precision"],
        "metrics": metrics,
        "tensorflow_accuracy": tensorflow_accuracy,
        "accuracy_drop_points": 100.0 * (tensorflow_accuracy - metrics["accuracy"]),
        "agreement": agreement(probs, reference["probabilities"]),
        "untrained_backbone": description["untrained_backbone"],
        "note": description["note"],
    }
    check_thresholds(evaluation, min_fp_agreement, max_int8_drop)
    atomic.write_json(output, evaluation)
    return evaluation


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    reference = commands.add_parser("tensorflow", help="the frozen model's softmax on the test split")
    reference.add_argument("--model-pb", required=True, help="frozen_model.pb (model.json beside it)")
    ir = commands.add_parser("ir", help="evaluate one IR against the TensorFlow predictions")
    ir.add_argument("--ir-xml", required=True, help="model.xml (model.json beside it)")
    ir.add_argument("--tensorflow", required=True, help="test_predictions.npz of the frozen model")
    ir.add_argument("--min-fp-agreement", type=float, default=None,
                    help="FP32/FP16: least top-1 agreement with TensorFlow, 0 to 1")
    ir.add_argument("--max-int8-accuracy-drop", type=float, default=None,
                    help="points of test accuracy; omit to only report the drop")
    for command in (reference, ir):
        command.add_argument("--test-tfrecords", nargs="+", required=True)
        command.add_argument("--output", required=True)
        command.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "tensorflow":
        tf_accuracy = tensorflow_predictions(args.model_pb, args.test_tfrecords, args.output, args.threads)
        print(f"wrote {args.output}: TensorFlow test accuracy {tf_accuracy:.2%}")
        return
    evaluation = evaluate_ir(args.ir_xml, args.tensorflow, args.test_tfrecords, args.output,
                             args.min_fp_agreement, args.max_int8_accuracy_drop, args.threads)
    print(f"{evaluation['precision']} IR: accuracy {evaluation['metrics']['accuracy']:.2%} "
          f"(TensorFlow {evaluation['tensorflow_accuracy']:.2%}), top-1 agreement "
          f"{evaluation['agreement']['top1_agreement']:.2%}{note_suffix(evaluation['note'])}")


if __name__ == "__main__":
    run_cli(main)
