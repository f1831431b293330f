"""Classify image files or folders with a frozen model and print the top-k labels.

    python -m scripts.predict --model results/default/model/frozen_model.pb IMAGE_OR_FOLDER...
    python -m scripts.predict --model M --top-k 3 --csv predictions.csv images/

The model's model.json (next to the .pb) gives the input contract and the labels; the
images go through the same preprocessing as training (scripts/preprocess.py).
"""
import argparse
import os
import sys

import numpy as np

from scripts.core import atomic
from scripts.core.errors import PipelineError, run_cli
from scripts.core.images import preprocess_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")


def image_paths(inputs):
    """The image files named, and those found (recursively, sorted) in named folders."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            for folder, dirs, files in os.walk(item):
                dirs.sort()
                paths += [os.path.join(folder, name) for name in sorted(files)
                          if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")]
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise PipelineError(f"{item}: no such file or folder")
    return paths


def top_k(probabilities, labels, k):
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(labels[index], float(probabilities[index])) for index in order]


def predict(model_pb, inputs, k=3):
    """Yield (path, [(label, probability), ...]) or (path, error) per image."""
    from scripts.core.inference import GraphModel
    contract = atomic.read_json(os.path.join(os.path.dirname(model_pb), "model.json"))
    model = GraphModel(model_pb, contract["input_node"], contract["output_node"])
    for path in image_paths(inputs):
        try:
            pixels = preprocess_image(path, contract["preprocessing"])[None]
        except OSError as error:
            yield path, f"unreadable image ({error})"
            continue
        yield path, top_k(model(pixels)[0], contract["labels"], k)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="image files and/or folders")
    parser.add_argument("--model", required=True, help="frozen_model.pb (model.json must be beside it)")
    parser.add_argument("--top-k", type=int, default=3, help="labels to show per image (default 3)")
    parser.add_argument("--csv", help="also write path,rank,label,probability rows to this file")
    args = parser.parse_args(argv)
    contract = atomic.read_json(os.path.join(os.path.dirname(args.model), "model.json"))
    if contract.get("untrained_backbone"):
        print("note: this model was made from an untrained backbone", file=sys.stderr)
    rows = []
    for path, result in predict(args.model, args.inputs, args.top_k):
        if isinstance(result, str):
            print(f"{path}\terror: {result}")
            continue
        print(f"{path}\t" + "  ".join(f"{label} {probability:.4f}" for label, probability in result))
        rows += [[path, rank + 1, label, f"{probability:.6f}"]
                 for rank, (label, probability) in enumerate(result)]
    if args.csv:
        atomic.write_table(args.csv, ["path", "rank", "label", "probability"], rows)


if __name__ == "__main__":
    run_cli(main)
