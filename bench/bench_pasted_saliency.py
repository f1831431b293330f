"""Does the saliency map of a finished run find an image pasted into a larger blank canvas?

Run from the run's folder (the manifest's paths are relative to it). Takes test images of
a run (its manifest.tsv, split `test`), pastes each at a random place
on a plain canvas `--factors` times its sides (`--fills` colours), and runs the real
`python -m scripts.predict --explain` on them. Prints, per canvas, the top-1 accuracy
(against the image's label) and how often the map's peak (the JSON's `explanation.peak`)
lies inside the pasted image, and the same accuracy on the images unpasted.

    python bench/bench_pasted_saliency.py --manifest results/data/manifest.tsv \\
        --model results/<experiment>/model/frozen_model.pb --head results/<experiment>/model/head.npz

With an IR as --model, give --explain-graph (the frozen_model.pb). Everything is written
into a temporary folder and removed.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_images(manifest, per_class, seed):
    """[(path, label)]: up to ``per_class`` test images of each label, drawn with ``seed``."""
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t") if row["split"] == "test"]
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted({row["label"] for row in rows}):
        of_label = [row for row in rows if row["label"] == label]
        picks = rng.permutation(len(of_label))[:per_class]
        chosen += [(os.path.abspath(of_label[index]["path"]), label) for index in picks]  # relative to the run's folder
    return chosen


def pasted(images, folder, factor, fill, rng):
    """Write each image pasted on a canvas into folder/<label>/; {written path: (label, box)}."""
    boxes = {}
    for index, (path, label) in enumerate(images):
        image = Image.open(path).convert("RGB")
        if factor == 1.0:
            canvas, left, top = image, 0, 0
        else:
            width, height = round(image.width * factor), round(image.height * factor)
            canvas = Image.new("RGB", (width, height), fill)
            left = int(rng.integers(0, width - image.width + 1))
            top = int(rng.integers(0, height - image.height + 1))
            canvas.paste(image, (left, top))
        target = os.path.join(folder, label, f"{index:04d}.png")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        canvas.save(target)
        boxes[os.path.abspath(target)] = (label, (left, top, left + image.width, top + image.height))
    return boxes


def predict(args, folder, work):
    """predict --explain on a folder: {absolute path: (top label, peak)}."""
    out_json = os.path.join(work, "predictions.json")
    command = [sys.executable, "-m", "scripts.predict", "--model", os.path.abspath(args.model),
               "--head", os.path.abspath(args.head),
               "--explain", os.path.join(work, "overlays"), "--json", out_json, "--top-k", "1", folder]
    if args.explain_graph:
        command += ["--explain-graph", os.path.abspath(args.explain_graph)]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"predict failed:\n{run.stderr[-3000:]}")
    with open(out_json, encoding="utf-8") as handle:
        entries = json.load(handle)["predictions"]
    return {os.path.abspath(entry["path"]): (entry["label"], entry["explanation"]["peak"]) for entry in entries}


def score(boxes, answers):
    """(accuracy, share of peaks inside the pasted image)."""
    right = inside = 0
    for path, (label, (left, top, right_edge, bottom)) in boxes.items():
        predicted, (x, y) = answers[path]
        right += predicted == label
        inside += left <= x < right_edge and top <= y < bottom
    return right / len(boxes), inside / len(boxes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="a run's results/data/manifest.tsv")
    parser.add_argument("--model", required=True, help="frozen_model.pb or a deployed IR's model.xml")
    parser.add_argument("--head", required=True, help="the model's head.npz")
    parser.add_argument("--explain-graph", help="with an IR: its frozen_model.pb")
    parser.add_argument("--per-class", type=int, default=15, help="test images per class (default 15)")
    parser.add_argument("--factors", type=float, nargs="+", default=[1.5, 2.0, 3.0], help="canvas side / image side")
    parser.add_argument("--fills", nargs="+", default=["white", "black"], help="canvas colours (PIL names)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images = test_images(args.manifest, args.per_class, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    print(f"{len(images)} test images; model {args.model}")
    print("canvas      fill   accuracy  peak inside the pasted image")
    for factor, fill in [(1.0, "-")] + [(factor, fill) for factor in args.factors for fill in args.fills]:
        with tempfile.TemporaryDirectory() as work:
            folder = os.path.join(work, "images")
            boxes = pasted(images, folder, factor, fill, rng)
            accuracy, inside = score(boxes, predict(args, folder, work))
        shown = "-" if factor == 1.0 else f"{inside:.2f}"
        print(f"x{factor:<9g}  {fill:5s}  {accuracy:8.2f}  {shown}", flush=True)


if __name__ == "__main__":
    main()
