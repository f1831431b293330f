"""Freeze backbone + trained head into one GraphDef, and prove it predicts the same.

The frozen model takes ``input``: float32 [N, size, size, 3], RGB, NHWC, values in the
backbone's range (scripts/core/images.py makes them), and returns ``final_result``:
float32 [N, classes] calibrated softmax probabilities: softmax(logits / T) with the
temperature T of calibration.json. With test-time views the graph runs every view of
each image (scripts/core/augment.py's dihedral views, as one batch) and averages their
probabilities. ``model.json`` beside it records those names, the preprocessing contract,
the views, the labels, the temperature, the operating point and the low-confidence threshold.

Before the model is written, a check reloads the serialized graph, runs a sample of
real test images through it and compares with the trained head on the cached features
of the same images; any difference beyond the tolerance fails the job and leaves no
model behind.

    python -m scripts.model.freeze --backbone-pb P --backbone-json J --head H --labels L \
        --test-tfrecords T... --test-features F --test-view-features V... --views 0 4 \
        --central-fraction 1.0 --resize bilinear --check-images 32 --tolerance 0.001 \
        --calibration calibration.json --output-pb M --output-json MJ --output-labels ML --output-check C
"""
import argparse

from scripts.core import atomic, formats, images, tfcompat
from scripts.core import head as head_lib
from scripts.core.checks import reference_probabilities, sample_check
from scripts.core.contract import note_suffix
from scripts.core.errors import run_cli
from scripts.core.inference import GraphModel, load_graph_def
from scripts.core.model_contract import model_contract

INPUT_NODE = "input"
OUTPUT_NODE = "final_result"


def tf_dihedral_view(tf, pixels, view):
    """scripts/core/augment.dihedral_view as TensorFlow ops on [N, H, W, C]."""
    for _ in range(view % 4):  # np.rot90 over (H, W): mirror W, then swap H and W
        pixels = tf.transpose(tf.reverse(pixels, axis=[2]), [0, 2, 1, 3])
    return tf.reverse(pixels, axis=[2]) if view >= 4 else pixels


def build_frozen_graph(backbone_def, info, head, views, temperature=1.0):
    """One GraphDef: input placeholder -> views -> backbone -> head (constants) -> logits / T -> mean softmax."""
    tf = tfcompat.tf_v1()
    size = info["input_size"]
    graph = tf.Graph()
    with graph.as_default():
        images_in = tf.placeholder(tf.float32, [None, size, size, 3], name=INPUT_NODE)
        batch = images_in
        if len(views) > 1:
            batch = tf.concat([tf_dihedral_view(tf, images_in, view) for view in views], axis=0, name="views")
        bottleneck, = tf.import_graph_def(backbone_def, input_map={info["input_tensor"]: batch},
                                          return_elements=[info["bottleneck_tensor"]], name="backbone")
        with tf.name_scope("head"):
            x = tf.reshape(bottleneck, [-1, info["bottleneck_size"]], name="bottleneck")
            logits = head_lib.tf_logits(tf, x, head)
            logits = tf.divide(logits, tf.constant(temperature, tf.float32), name="calibrated_logits")
            probs = tf.nn.softmax(logits)
            if len(views) > 1:
                classes = head["logits_b"].shape[0]
                probs = tf.reduce_mean(tf.reshape(probs, [len(views), -1, classes]), axis=0)
        tf.identity(probs, name=OUTPUT_NODE)
    return tf.graph_util.extract_sub_graph(graph.as_graph_def(), [OUTPUT_NODE])


def freeze(paths, outputs, settings, threads):
    """Write the frozen model, its description, labels, check result and test predictions."""
    info = atomic.read_json(paths["backbone_json"])
    head = head_lib.load(paths["head"])
    labels = formats.read_labels(paths["labels"])
    views = settings["views"]
    contract = model_contract(info, labels, settings["central_fraction"], settings["resize"], views,
                              int(head["hidden_w"].shape[1]) if "hidden_w" in head else 0, paths.get("calibration"))
    temperature = contract["calibration"]["temperature"]
    probabilities, test = reference_probabilities(head, [paths["test_features"], *paths["test_view_features"]],
                                                  temperature)
    reference = {"probabilities": probabilities, "sha256": test["sha256"]}
    graph_def = build_frozen_graph(load_graph_def(paths["backbone_pb"]), info, head, views, temperature)
    with atomic.atomic_path(outputs["pb"]) as temp:
        with open(temp, "wb") as handle:
            handle.write(graph_def.SerializeToString(deterministic=True))
        model = GraphModel(temp, INPUT_NODE, OUTPUT_NODE, threads)
        check = sample_check(model, contract["preprocessing"], paths["test_tfrecords"], reference,
                             settings["check_images"], settings["tolerance"], threads, "freeze")
        atomic.write_json(outputs["check"], check)
    formats.write_labels(outputs["labels"], labels)
    atomic.write_json(outputs["json"], contract)
    return check, contract


def main(argv=None):
    parser = argparse.ArgumentParser(description="Freeze backbone + head into one .pb and check it.")
    parser.add_argument("--backbone-pb", required=True)
    parser.add_argument("--backbone-json", required=True)
    parser.add_argument("--head", required=True, help="head.npz")
    parser.add_argument("--labels", required=True, help="labels.json")
    parser.add_argument("--test-tfrecords", nargs="+", required=True)
    parser.add_argument("--test-features", required=True, help="cached test features (plain)")
    parser.add_argument("--test-view-features", nargs="*", default=[], help="cached features of each extra view")
    parser.add_argument("--views", type=int, nargs="+", required=True, help="test-time views, 0 first")
    parser.add_argument("--central-fraction", type=float, required=True)
    parser.add_argument("--resize", choices=sorted(images.RESIZE_METHODS), required=True)
    parser.add_argument("--check-images", type=int, required=True)
    parser.add_argument("--tolerance", type=float, required=True, help="largest allowed probability difference")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--calibration", help="calibration.json: the temperature and thresholds (default: none, T=1)")
    for name in ("pb", "json", "labels", "check"):
        parser.add_argument(f"--output-{name}", required=True)
    args = parser.parse_args(argv)
    paths = {key: getattr(args, key) for key in ("backbone_pb", "backbone_json", "head", "labels", "test_tfrecords",
                                                 "test_features", "test_view_features", "calibration")}
    outputs = {name: getattr(args, f"output_{name}") for name in ("pb", "json", "labels", "check")}
    settings = {"views": args.views, "central_fraction": args.central_fraction, "resize": args.resize,
                "check_images": args.check_images, "tolerance": args.tolerance}
    check, contract = freeze(paths, outputs, settings, args.threads)
    print(f"froze {args.output_pb}; check on {check['images']} test images: max probability difference "
          f"{check['max_abs_probability_difference']:.2e}{note_suffix(contract['note'])}")


if __name__ == "__main__":
    run_cli(main)
