"""What the model looks at: saliency overlays of test images for the report.

    python -m scripts.explain gallery --predictions test_predictions.npz --tfrecords T... \\
        --description metrics.json --head head.npz --graph backbone.pb --graph-json backbone.json \\
        --central-fraction 1.0 --resize bilinear --misclassified 12 --per-class 3 --experiment NAME \\
        --threads 2 --output-figure explained.png --output-table explained.csv

The most confident misclassified test images, then ``--per-class`` correctly classified
ones of each class (the first by sha256, an order unrelated to the images), each with the
map of its predicted class laid over it (scripts/core/saliency.py: CAM for a linear head,
Grad-CAM for a hidden layer), from the float backbone graph run by OpenVINO. The table
lists every image shown with its map's peak (pixel x, y in the stored image).
"""
import argparse

import numpy as np

from scripts.core import atomic, formats, images, records, saliency
from scripts.core import head as head_lib
from scripts.core.contract import note_suffix, read_description
from scripts.core.errors import PipelineError, run_cli

COLUMNS = 6
THUMBNAIL_PIXELS = 200


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def chosen_images(predictions, labels, misclassified, per_class):
    """[(index, group)]: the most confident mistakes, then the first correct ones of each class by sha256."""
    probabilities = np.asarray(predictions["probabilities"])
    true = np.asarray(predictions["labels"])
    if len(true) == 0:
        return []
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != true)
    chosen = [(int(index), "misclassified") for index in wrong[np.argsort(-confidence[wrong], kind="stable")][:misclassified]]
    hashes = np.asarray(predictions["sha256"]).astype(str)
    for label in range(len(labels)):
        right = np.flatnonzero((predicted == true) & (true == label))
        chosen += [(int(index), "correct") for index in right[np.argsort(hashes[right], kind="stable")][:per_class]]
    return chosen


def encoded_images(tfrecord_paths, hashes):
    """{sha256: encoded image} of the wanted test images."""
    wanted, found = set(hashes), {}
    for example in records.read_examples(tfrecord_paths):
        if example["sha256"] in wanted:
            found.setdefault(example["sha256"], example["encoded"])
            if len(found) == len(wanted):
                break
    missing = wanted - set(found)
    if missing:
        raise PipelineError(f"{tfrecord_paths[0]}: {len(missing)} predicted test images are not in the test TFRecords")
    return found


def explain_images(model, head, contract, encoded, classes):
    """(overlay, peak) per encoded image, for the given class of each."""
    pictures = [images.decode_rgb(data) for data in encoded]
    features, spatial = model(np.stack([images.preprocess_image(picture, contract) for picture in pictures]))
    results = []
    for picture, cells in zip(pictures, saliency.class_maps(head, features, spatial, classes)):
        full = saliency.image_map(cells, picture.width, picture.height, contract)
        results.append((saliency.overlay(picture, full), saliency.peak(full)))
    return results


def figure(rows, title, path):
    """A grid of overlays titled with the true and predicted label and the confidence."""
    plt = pyplot()
    if not rows:
        figure_, axis = plt.subplots(figsize=(6, 1.6))
        axis.axis("off")
        axis.text(0.5, 0.5, "No test images to show.", ha="center", va="center", fontsize=12)
    else:
        columns = min(COLUMNS, len(rows))
        lines = -(-len(rows) // columns)
        figure_, axes = plt.subplots(lines, columns, figsize=(2.3 * columns, 2.75 * lines + 0.6), squeeze=False)
        for axis in axes.flat:
            axis.axis("off")
        for axis, row in zip(axes.flat, rows):
            picture = row["overlay"].copy()
            picture.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
            axis.imshow(np.asarray(picture))
            axis.set_title(f"true: {row['true'][:20]}\npredicted: {row['predicted'][:20]}\nconfidence "
                           f"{row['confidence']:.0%}", fontsize=8,
                           color="darkred" if row["group"] == "misclassified" else "darkgreen")
    figure_.suptitle(title)
    figure_.tight_layout()
    with atomic.atomic_path(path) as temp, open(temp, "wb") as handle:
        figure_.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure_)


def gallery(paths, settings, outputs, threads=1):
    """explained.png and explained.csv; settings: central_fraction, resize, misclassified, per_class, experiment."""
    predictions = formats.read_predictions(paths["predictions"])
    description = read_description(paths["description"])
    labels, note = description["labels"], description.get("note", "")
    info, head = atomic.read_json(paths["graph_json"]), head_lib.load(paths["head"])
    contract = images.preprocessing_contract(info["input_size"], info["input_range"], settings["central_fraction"],
                                             settings["resize"])
    chosen = chosen_images(predictions, labels, settings["misclassified"], settings["per_class"])
    hashes = [str(predictions["sha256"][index]) for index, _ in chosen]
    encoded = encoded_images(paths["tfrecords"], hashes) if chosen else {}
    probabilities = np.asarray(predictions["probabilities"])
    predicted = [int(probabilities[index].argmax()) for index, _ in chosen]
    explained = []
    if chosen:
        model = saliency.SpatialModel(paths["graph"], info, info["input_size"], threads)
        explained = explain_images(model, head, contract, [encoded[sha] for sha in hashes], predicted)
    filenames = predictions.get("filenames", [""] * len(predictions["sha256"]))
    method = "grad-cam" if "hidden_w" in head else "cam"
    rows = [{"group": group, "filename": str(filenames[index]), "sha256": hashes[number],
             "true": labels[int(predictions["labels"][index])], "predicted": labels[predicted[number]],
             "confidence": float(probabilities[index].max()), "overlay": overlay, "peak": peak}
            for number, ((index, group), (overlay, peak)) in enumerate(zip(chosen, explained))]
    wrong = sum(1 for row in rows if row["group"] == "misclassified")
    experiment = settings["experiment"]
    title = (f"{experiment + ': ' if experiment else ''}where the model looks ({method}, predicted class): "
             f"{wrong} misclassified, {len(rows) - wrong} correct test images{note_suffix(note)}")
    figure(rows, title, outputs["figure"])
    atomic.write_table(outputs["table"], ["group", "filename", "sha256", "true", "predicted", "confidence", "method",
                                          "peak_x", "peak_y", "note"],
                       [[row["group"], row["filename"], row["sha256"], row["true"], row["predicted"],
                         f"{row['confidence']:.4f}", method, row["peak"][0], row["peak"][1], note] for row in rows])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description="Saliency overlays of test images for the report.")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("gallery", help="misclassified and correct test images with their maps")
    show.add_argument("--predictions", required=True, help="test_predictions.npz")
    show.add_argument("--tfrecords", nargs="+", required=True, help="the test split's TFRecord shards")
    show.add_argument("--description", required=True, help="metrics.json: labels and note")
    show.add_argument("--head", required=True, help="head.npz")
    show.add_argument("--graph", required=True, help="backbone.pb (float)")
    show.add_argument("--graph-json", required=True, help="backbone.json (with spatial_tensor)")
    show.add_argument("--central-fraction", type=float, required=True)
    show.add_argument("--resize", choices=sorted(images.RESIZE_METHODS), required=True)
    show.add_argument("--misclassified", type=int, required=True, help="most confident mistakes shown")
    show.add_argument("--per-class", type=int, required=True, help="correct images shown per class")
    show.add_argument("--experiment", default="", help="its name, for the title")
    show.add_argument("--threads", type=int, default=1)
    show.add_argument("--output-figure", required=True)
    show.add_argument("--output-table", required=True)
    args = parser.parse_args(argv)
    paths = {key: getattr(args, key) for key in ("predictions", "tfrecords", "description", "head", "graph",
                                                 "graph_json")}
    settings = {key: getattr(args, key) for key in ("central_fraction", "resize", "misclassified", "per_class",
                                                    "experiment")}
    rows = gallery(paths, settings, {"figure": args.output_figure, "table": args.output_table}, args.threads)
    print(f"wrote {args.output_figure}: {len(rows)} test images with their maps")


if __name__ == "__main__":
    run_cli(main)
