"""Freeze backbone + retrained head into one GraphDef, and prove it predicts the same.

The frozen model takes ``input``: float32 [N, size, size, 3], RGB, NHWC, values in the
backbone's range (scripts/preprocess.py makes them), and returns ``final_result``:
float32 [N, classes] softmax probabilities. ``model.json`` beside it records those
names, the preprocessing contract and the labels; ``labels.txt`` is copied beside it.

Before the model is written, a check reloads the serialized graph, runs the test split
through it and compares with the trained head on the cached test bottlenecks; any
disagreement fails the job and leaves no model behind. The same test-split softmax is
kept as ``test_predictions.npz``, the reference the OpenVINO IRs are evaluated against.

    python -m scripts.freeze --backbone-pb P --backbone-json J --head H --labels L \
        --test-tfrecords T... --test-bottlenecks B --out-dir O
"""
import argparse
import os
import shutil

import numpy as np

from scripts import atomic, head as head_lib, tfcompat
from scripts.backbone import load_graph_def
from scripts.bottlenecks import load_bottlenecks, run_over_tfrecords
from scripts.core.errors import PipelineError, run_cli
from scripts.core.images import preprocessing_contract

INPUT_NODE = "input"
OUTPUT_NODE = "final_result"


def build_frozen_graph(backbone_def, info, head):
    """One GraphDef: input placeholder -> backbone -> head (constants) -> softmax."""
    tf = tfcompat.tf_v1()
    size = info["input_size"]
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, [None, size, size, 3], name=INPUT_NODE)
        bottleneck, = tf.import_graph_def(backbone_def, input_map={info["input_tensor"]: images},
                                          return_elements=[info["bottleneck_tensor"]], name="backbone")
        with tf.name_scope("head"):
            x = tf.reshape(bottleneck, [-1, info["bottleneck_size"]], name="bottleneck")
            x = (x - tf.constant(head["mean"])) * tf.constant(head["scale"])
            if "hidden_w" in head:
                x = tf.nn.relu(tf.matmul(x, tf.constant(head["hidden_w"])) + tf.constant(head["hidden_b"]))
            logits = tf.matmul(x, tf.constant(head["logits_w"])) + tf.constant(head["logits_b"])
        tf.nn.softmax(logits, name=OUTPUT_NODE)
    return tf.graph_util.extract_sub_graph(graph.as_graph_def(), [OUTPUT_NODE])


class FrozenModel:
    """A frozen model loaded from disk, as a user would load it."""

    def __init__(self, model_pb, threads=1):
        tf = tfcompat.tf_v1()
        graph = tf.Graph()
        with graph.as_default():
            tf.import_graph_def(load_graph_def(model_pb), name="")
        self.session = tf.Session(graph=graph, config=tf.ConfigProto(
            intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1))
        self.input = graph.get_tensor_by_name(INPUT_NODE + ":0")
        self.output = graph.get_tensor_by_name(OUTPUT_NODE + ":0")

    def __call__(self, pixels):
        return self.session.run(self.output, {self.input: pixels})


def frozen_predictions(model_pb, info, test_tfrecords, batch_size=32, threads=1):
    """(probabilities, labels, sha256s) of the test split through the frozen model."""
    model = FrozenModel(model_pb, threads)
    probs, labels, hashes, _ = run_over_tfrecords(model, info, test_tfrecords, batch_size, threads)
    if probs is None:
        probs = np.zeros((0, int(model.output.shape[-1])), np.float32)
    return probs, np.asarray(labels, np.int64), np.asarray(hashes, dtype=str)


def save_predictions(path, probs, labels, hashes):
    """The frozen model's test-split softmax: the reference every OpenVINO IR is compared with."""
    accuracy = float((probs.argmax(axis=1) == labels).mean()) if len(labels) else 0.0
    with atomic.atomic_path(path) as temp, open(temp, "wb") as handle:
        np.savez(handle, probabilities=probs, labels=labels, sha256=hashes, accuracy=np.float64(accuracy))
    return accuracy


def check_agreement(frozen_probs, frozen_hashes, head_probs, head_hashes, tolerance):
    """Fail unless the frozen model reproduces the trained head on every test image."""
    if list(frozen_hashes) != list(head_hashes):
        raise PipelineError("freeze check: test TFRecords and test bottlenecks list different images")
    difference = float(np.abs(frozen_probs - head_probs).max()) if len(head_hashes) else 0.0
    disagree = int((frozen_probs.argmax(axis=1) != head_probs.argmax(axis=1)).sum())
    result = {"images": len(head_hashes), "top1_disagreements": disagree,
              "max_abs_probability_difference": difference, "tolerance": tolerance}
    if disagree or difference > tolerance:
        raise PipelineError(f"freeze check: frozen model differs from the trained head on the test split "
                            f"({disagree} top-1 disagreements, max probability difference {difference:.2e} "
                            f"> {tolerance:g})")
    return result


def freeze(backbone_pb, backbone_json, head_path, labels_path, test_tfrecords, test_bottlenecks,
           out_dir, tolerance=1e-3, batch_size=32, threads=1):
    info = atomic.read_json(backbone_json)
    head = head_lib.load(head_path)
    graph_def = build_frozen_graph(load_graph_def(backbone_pb), info, head)
    model_pb = os.path.join(out_dir, "frozen_model.pb")
    with atomic.atomic_path(model_pb) as temp:
        with open(temp, "wb") as handle:
            handle.write(graph_def.SerializeToString())
        frozen_probs, frozen_labels, frozen_hashes = frozen_predictions(temp, info, test_tfrecords,
                                                                        batch_size, threads)
        cached = load_bottlenecks(test_bottlenecks)
        check = check_agreement(frozen_probs, frozen_hashes, head_lib.probabilities(head, cached["features"]),
                                cached["sha256"], tolerance)
        atomic.write_json(os.path.join(out_dir, "freeze_check.json"), check)
        save_predictions(os.path.join(out_dir, "test_predictions.npz"), frozen_probs, frozen_labels,
                         frozen_hashes)
    with open(labels_path, encoding="utf-8") as handle:
        labels = [line.rstrip("\n") for line in handle if line.strip()]
    with atomic.atomic_path(os.path.join(out_dir, "labels.txt")) as temp:
        shutil.copyfile(labels_path, temp)
    atomic.write_json(os.path.join(out_dir, "model.json"), {
        "input_node": INPUT_NODE,
        "output_node": OUTPUT_NODE,
        "output": "float32 [N, classes] softmax probabilities, classes in labels.txt order",
        "preprocessing": preprocessing_contract(info["input_size"], info["input_range"]),
        "labels": labels,
        "backbone": info,
        "untrained_backbone": info["untrained"],
        "note": "untrained backbone" if info["untrained"] else "",
        "hidden_units": int(head["hidden_w"].shape[1]) if "hidden_w" in head else 0,
    })
    return check


def main(argv=None):
    parser = argparse.ArgumentParser(description="Freeze backbone + head into one .pb and check it.")
    parser.add_argument("--backbone-pb", required=True)
    parser.add_argument("--backbone-json", required=True)
    parser.add_argument("--head", required=True, help="head.npz from retrain")
    parser.add_argument("--labels", required=True)
    parser.add_argument("--test-tfrecords", nargs="+", required=True)
    parser.add_argument("--test-bottlenecks", required=True, help="test.npz (cached bottlenecks)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest allowed probability difference (default 1e-3)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    check = freeze(args.backbone_pb, args.backbone_json, args.head, args.labels, args.test_tfrecords,
                   args.test_bottlenecks, args.out_dir, args.tolerance, threads=args.threads)
    print(f"froze {args.out_dir}/frozen_model.pb; check on {check['images']} test images: "
          f"max probability difference {check['max_abs_probability_difference']:.2e}")


if __name__ == "__main__":
    run_cli(main)
