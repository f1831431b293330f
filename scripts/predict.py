"""Classify images with the trained model: the frozen TensorFlow graph or an OpenVINO IR.

    python scripts/predict.py --model results/default/model/frozen_model.pb photo.jpg images/
    python scripts/predict.py --model results/default/ir/INT8/model.xml --device CPU \\
        --top-k 3 --csv predictions.csv --json predictions.json images/

It runs from any directory, as a file (``python <repo>/scripts/predict.py``) or as a
module (``python -m scripts.predict`` from the repository root). The model's description
beside it (``model.json`` beside a ``.pb``, ``ir.json`` beside an IR's ``.xml``) gives the
labels and the preprocessing contract; every image goes through the same preprocessing as
in training (scripts/core/images.py). A ``.pb`` runs on TensorFlow (CPU); an IR on any
OpenVINO device (``--device CPU``, ``GPU``, ``NPU``, ``AUTO``). Folders are searched for
images recursively. An image that cannot be read gets an error row and the others go on.

Printed: one line per image, ``path<TAB>label probability  label probability ...``.
``--csv``: path, rank, label, probability, error (one row per label shown, or one error row).
``--json``: the model, its note, the labels, and per image its top labels or its error.
``--explain DIR --head head.npz``: a saliency overlay PNG per image (DIR mirrors the
folders given), the map of the top label (scripts/core/saliency.py: CAM for a linear
head, Grad-CAM for one with a hidden layer), from the float graph: the --model itself
when it is a .pb, else ``--explain-graph`` (frozen_model.pb, or a backbone.pb with its
backbone.json beside it). The JSON then gives each image's overlay file and map peak.
"""
import argparse
import os
import sys

if not __package__:  # run as a file: make the repository's `scripts` package importable
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from PIL import Image

from scripts.core import atomic, inference, saliency
from scripts.core import head as head_lib
from scripts.core.contract import note_suffix, read_description
from scripts.core.errors import PipelineError, run_cli
from scripts.core.images import decode_rgb, preprocess_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")
# A model file's kind, by extension: its description file and what runs it.
MODEL_KINDS = {".pb": ("model.json", "frozen_graph"), ".xml": ("ir.json", "openvino_ir")}
VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
BATCH_SIZE = 16


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
    if not paths:
        raise PipelineError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(inputs)}")
    return paths


# ------------------------------------------------------------------ the model
def model_kind(path):
    extension = os.path.splitext(path)[1].lower()
    if extension not in MODEL_KINDS:
        raise PipelineError(f"--model {path}: give a frozen TensorFlow graph (.pb) or an OpenVINO IR (.xml)")
    if not os.path.isfile(path):
        raise PipelineError(f"--model {path}: no such file")
    return MODEL_KINDS[extension]


def check_device(device):
    """One line naming the devices OpenVINO has when ``device`` is not one of them."""
    import openvino as ov
    base = device.split(":")[0].split(".")[0]
    available = ov.Core().available_devices
    if base not in VIRTUAL_DEVICES and not any(name.split(".")[0] == base for name in available):
        raise PipelineError(f"--device {device}: not present on this machine; OpenVINO sees: "
                            f"{', '.join(available)}")


def load_model(path, device="CPU", threads=1):
    """(model, description): a callable pixels [N, S, S, 3] -> probabilities [N, classes]."""
    description_name, kind = model_kind(path)
    description = read_description(os.path.join(os.path.dirname(os.path.abspath(path)), description_name))
    if kind == "frozen_graph":
        if device != "CPU":
            raise PipelineError(f"--device {device}: a frozen .pb runs on TensorFlow's CPU; "
                                "give an OpenVINO IR (.xml) to use another device")
        model = inference.GraphModel(path, description.get("input_node", "input"),
                                     description.get("output_node", "final_result"), threads)
    else:
        check_device(device)
        try:
            model = inference.IrModel(path, threads, device)
        except RuntimeError as error:  # OpenVINO's own message is many lines
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PipelineError(f"--model {path}: OpenVINO cannot load it on {device} ({first})") from None
    return model, description


# ------------------------------------------------------------------ predicting
def top_k(probabilities, labels, k):
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(labels[index], float(probabilities[index])) for index in order]


def _chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict(model, description, paths, k=3, batch_size=BATCH_SIZE):
    """Yield one dict per image, in order: path, top [(label, probability)], error (or None)."""
    contract, labels = description["preprocessing"], description["labels"]
    for chunk in _chunks(paths, batch_size):
        results, pixels, readable = [], [], []
        for path in chunk:
            try:
                pixels.append(preprocess_image(path, contract))
            except UNREADABLE as error:
                results.append({"path": path, "top": [], "error": f"cannot read the image ({error})"})
                continue
            readable.append(len(results))
            results.append({"path": path, "top": [], "error": None})
        if pixels:
            for index, probabilities in zip(readable, model(np.stack(pixels))):
                results[index]["top"] = top_k(probabilities, labels, k)
        yield from results


# ------------------------------------------------------------------ explaining
def overlay_names(paths, inputs):
    """A .png name per image, relative to the folder given that holds it (or its own name), all different."""
    folders = [os.path.abspath(item) for item in inputs if os.path.isdir(item)]
    names, taken = [], set()
    for path in paths:
        absolute = os.path.abspath(path)
        holder = next((folder for folder in folders if absolute.startswith(folder + os.sep)), None)
        relative = os.path.relpath(absolute, holder) if holder else os.path.basename(path)
        stem, extension = os.path.splitext(relative)
        name = stem + ".png"
        if name in taken:
            name = f"{stem}_{extension.lstrip('.')}.png"
        taken.add(name)
        names.append(name)
    return names


def graph_description(graph_pb):
    """The description beside a float graph: backbone.json for backbone.pb, else model.json."""
    folder, stem = os.path.dirname(os.path.abspath(graph_pb)), os.path.splitext(os.path.basename(graph_pb))[0]
    own = os.path.join(folder, stem + ".json")
    return read_description(own if os.path.isfile(own) and stem != "frozen_model" else os.path.join(folder, "model.json"))


def explain(results, names, description, explain_graph, head_path, out_dir, threads, batch_size=BATCH_SIZE):
    """Write an overlay PNG per readable image; add ``explanation`` (file, label, method, peak) to each result."""
    if os.path.splitext(explain_graph)[1].lower() != ".pb" or not os.path.isfile(explain_graph):
        raise PipelineError(f"--explain-graph {explain_graph}: give a frozen_model.pb or backbone.pb")
    contract, labels = description["preprocessing"], description["labels"]
    head = head_lib.load(head_path)
    if head["logits_b"].shape[0] != len(labels):
        raise PipelineError(f"--head {head_path}: {head['logits_b'].shape[0]} classes, the model has {len(labels)}")
    model = saliency.SpatialModel(explain_graph, graph_description(explain_graph), contract["input_size"], threads)
    method = "grad-cam" if "hidden_w" in head else "cam"
    readable = [index for index, result in enumerate(results) if not result["error"]]
    largest = 0.0
    for chunk in _chunks(readable, batch_size):
        pictures = [preprocess_image(results[index]["path"], contract) for index in chunk]
        features, spatial = model(np.stack(pictures))
        classes = [labels.index(results[index]["top"][0][0]) for index in chunk]
        if description.get("test_time_views", [0]) == [0]:  # the head on these features is the model itself
            shown = head_lib.probabilities(head, features)[np.arange(len(chunk)), classes]
            largest = max(largest, float(np.abs(shown - [results[index]["top"][0][1] for index in chunk]).max()))
        for index, cells in zip(chunk, saliency.class_maps(head, features, spatial, classes)):
            image = decode_rgb(results[index]["path"])
            full = saliency.image_map(cells, image.width, image.height, contract)
            target = os.path.join(out_dir, names[index])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with atomic.atomic_path(target) as temp:
                saliency.overlay(image, full).save(temp, format="PNG")
            results[index]["explanation"] = {"file": target, "label": results[index]["top"][0][0], "method": method,
                                             "peak": list(saliency.peak(full))}
    for result in results:
        result.setdefault("explanation", None)
    if largest > 0.05:
        print(f"warning: --head {head_path}: on the explained features its top probability differs from the "
              f"model's by up to {largest:.3f}; is it this model's head?", file=sys.stderr)


# ------------------------------------------------------------------ output
def write_csv(path, results):
    rows = []
    for result in results:
        if result["error"]:
            rows.append([result["path"], "", "", "", result["error"]])
        rows += [[result["path"], rank, label, f"{probability:.6f}", ""]
                 for rank, (label, probability) in enumerate(result["top"], start=1)]
    atomic.write_table(path, ["path", "rank", "label", "probability", "error"], rows)


def write_json(path, model_path, kind, device, description, results):
    atomic.write_json(path, {
        "model": os.path.abspath(model_path),
        "model_kind": kind,
        "device": device if kind == "openvino_ir" else "tensorflow CPU",
        "precision": description.get("precision"),
        "note": description.get("note", ""),
        "labels": description["labels"],
        "images": len(results),
        "unreadable": sum(1 for result in results if result["error"]),
        "predictions": [{"path": result["path"],
                         "label": result["top"][0][0] if result["top"] else None,
                         "top": [{"label": label, "probability": probability}
                                 for label, probability in result["top"]],
                         "error": result["error"],
                         **({"explanation": result["explanation"]} if "explanation" in result else {})}
                        for result in results],
    })


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("inputs", nargs="+", help="image files and/or folders")
    parser.add_argument("--model", required=True,
                        help="frozen_model.pb (model.json beside it) or an IR's model.xml (ir.json beside it)")
    parser.add_argument("--device", default="CPU", help="OpenVINO device for an IR (default CPU)")
    parser.add_argument("--top-k", type=int, default=3, help="labels to show per image (default 3)")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1),
                        help="inference threads (default: up to 4)")
    parser.add_argument("--csv", help="also write path,rank,label,probability,error rows to this file")
    parser.add_argument("--json", help="also write the predictions as JSON to this file")
    parser.add_argument("--explain", metavar="DIR", help="write a saliency overlay PNG per image into DIR")
    parser.add_argument("--head", help="--explain: the model's head.npz")
    parser.add_argument("--explain-graph", help="--explain with an IR: the float graph that computes the maps "
                        "(frozen_model.pb, or backbone.pb with backbone.json beside it; default: a .pb --model)")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        raise PipelineError(f"--top-k {args.top_k}: must be at least 1")
    explain_graph = args.explain_graph or (args.model if model_kind(args.model)[1] == "frozen_graph" else None)
    if args.explain and not args.head:
        raise PipelineError("--explain needs --head (the model's head.npz)")
    if args.explain and not explain_graph:
        raise PipelineError("--explain with an IR needs --explain-graph (its frozen_model.pb or backbone.pb)")
    paths = image_paths(args.inputs)
    model, description = load_model(args.model, args.device, args.threads)
    if description.get("note"):
        print(f"note: {description['note']}: this model's predictions say nothing about the method",
              file=sys.stderr)
    results = []
    for result in predict(model, description, paths, args.top_k):
        results.append(result)
        if result["error"]:
            print(f"{result['path']}\terror: {result['error']}", flush=True)
        else:
            print(f"{result['path']}\t" + "  ".join(f"{label} {probability:.4f}"
                                                     for label, probability in result["top"]), flush=True)
    if args.explain:
        explain(results, overlay_names([result["path"] for result in results], args.inputs), description,
                explain_graph, args.head, args.explain, args.threads)
        print(f"wrote {sum(1 for result in results if result['explanation'])} overlays into {args.explain}",
              file=sys.stderr)
    if args.csv:
        write_csv(args.csv, results)
    if args.json:
        write_json(args.json, args.model, model_kind(args.model)[1], args.device, description, results)
    unreadable = sum(1 for result in results if result["error"])
    print(f"{len(results) - unreadable} of {len(results)} images classified{note_suffix(description.get('note'))}"
          + (f"; {unreadable} unreadable" if unreadable else ""), file=sys.stderr)
    if unreadable == len(results):
        raise PipelineError(f"none of the {len(results)} images could be read")


if __name__ == "__main__":
    run_cli(main)
