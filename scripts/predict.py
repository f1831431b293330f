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
The model file is checked before anything runs it (scripts/core/model_check.py), and the
description must be this model's (its input size, one label per output). Images are read
one batch ahead and each row is written as it comes, so a folder of any size streams.

The model's probabilities are calibrated (its temperature is in the description). Where
the description has an operating point (config ``evaluation.positive_classes``), each image
also gets a ``decision``: "positive" when the summed probability of the positive classes
is at least the threshold chosen on held-out data, else "negative"; and where it has a
low-confidence threshold, ``low_confidence`` marks an image whose top probability is
below it (docs/clinical.md).

Printed: one line per image, ``path<TAB>label probability  label probability ...``, then
``decision positive (p=0.9731)`` and ``low_confidence`` where they apply.
``--csv``: path, rank, label, probability, decision, positive_probability, low_confidence,
error (one row per label shown, or one error row).
``--json``: the model, its note, the labels, its operating point and low-confidence
threshold, and per image its top labels, decision, positive probability and
low_confidence, or its error. Both are written as the images come (streamed).
``--explain DIR --head head.npz``: a saliency overlay PNG per image (DIR mirrors the
folders given), the map of the top label (scripts/core/saliency.py: CAM for a linear
head, Grad-CAM for one with a hidden layer), from the float graph: the --model itself
when it is a .pb, else ``--explain-graph`` (frozen_model.pb, or a backbone.pb with its
backbone.json beside it). The JSON then gives each image's overlay file and map peak.
"""
import argparse
import contextlib
import csv
import itertools
import json
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
    """The image files named, and those found (recursively, sorted) in named folders, lazily.

    A folder is listed one subfolder at a time, so that thousands of images stream.
    """
    for item in inputs:
        if not (os.path.isdir(item) or os.path.isfile(item)):
            raise PipelineError(f"{item}: no such file or folder")
    found = False
    for item in inputs:
        if os.path.isfile(item):
            found = True
            yield item
            continue
        for folder, dirs, files in os.walk(item):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                    found = True
                    yield os.path.join(folder, name)
    if not found:
        raise PipelineError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(inputs)}")


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


def load_description(path, description_name):
    """The model's description beside it, checked enough to be used: one line if it is not."""
    description_path = os.path.join(os.path.dirname(os.path.abspath(path)), description_name)
    try:
        description = read_description(description_path)
    except (ValueError, UnicodeDecodeError) as error:
        raise PipelineError(f"{description_path}: not the model's JSON description ({error})") from None
    labels = description.get("labels") if isinstance(description, dict) else None
    contract = description.get("preprocessing") if isinstance(description, dict) else None
    if not (isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels)):
        raise PipelineError(f"{description_path}: no list of labels (is it the description of this model?)")
    if not (isinstance(contract, dict) and isinstance(contract.get("input_size"), int)):
        raise PipelineError(f"{description_path}: no preprocessing contract (is it the description of this model?)")
    return description_path, description


def check_description_matches(model_path, description_path, description, input_shape, output_width):
    """The description beside a model must be this model's: its input size and number of labels.

    ``input_shape`` is [] when the model does not say; an unknown dimension is None or -1.
    """
    size, labels = description["preprocessing"]["input_size"], description["labels"]
    if input_shape and (len(input_shape) != 4 or any(dim not in (None, -1, size) for dim in input_shape[1:3])):
        raise PipelineError(f"{description_path}: describes another model: it says {size}x{size} input images, "
                            f"{model_path} takes {list(input_shape)}")
    if output_width is not None and output_width != len(labels):
        raise PipelineError(f"{description_path}: describes another model: {len(labels)} labels, "
                            f"{model_path} gives {output_width} outputs")


def load_graph(path, description_path, description, threads):
    input_node = description.get("input_node", "input")
    output_node = description.get("output_node", "final_result")
    try:
        model = inference.GraphModel(path, input_node, output_node, threads)
    except KeyError:  # the graph has no such tensor
        raise PipelineError(f"{description_path}: describes another model: {path} has no tensor "
                            f"{inference.tensor_name(input_node)!r} or {inference.tensor_name(output_node)!r}") from None
    shape = model.input.shape.as_list() if model.input.shape.rank is not None else []
    width = model.output.shape[-1] if model.output.shape.rank else None
    check_description_matches(path, description_path, description, shape, width)
    return model


def load_ir(path, description_path, description, threads, device):
    check_device(device)
    try:
        model = inference.IrModel(path, threads, device)
    except RuntimeError as error:  # OpenVINO's own message is many lines
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PipelineError(f"--model {path}: OpenVINO cannot load it on {device} ({first})") from None
    shape = [None if dim.is_dynamic else dim.get_length() for dim in model.compiled.input(0).get_partial_shape()]
    output = model.compiled.output(0).get_partial_shape()
    width = None if output.rank.is_dynamic or output[-1].is_dynamic else output[-1].get_length()
    check_description_matches(path, description_path, description, shape, width)
    return model


def load_model(path, device="CPU", threads=1):
    """(model, description): a callable pixels [N, S, S, 3] -> probabilities [N, classes]."""
    description_name, kind = model_kind(path)
    description_path, description = load_description(path, description_name)
    if kind == "frozen_graph":
        if device != "CPU":
            raise PipelineError(f"--device {device}: a frozen .pb runs on TensorFlow's CPU; "
                                "give an OpenVINO IR (.xml) to use another device")
        return load_graph(path, description_path, description, threads), description
    return load_ir(path, description_path, description, threads, device), description


# ------------------------------------------------------------------ predicting
def top_k(probabilities, labels, k):
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(labels[index], float(probabilities[index])) for index in order]


def _chunks(items, size):
    """Lists of up to ``size`` items of any iterable, taken as they are needed."""
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def decide(probabilities, description):
    """The image's decision, positive-set probability and low_confidence flag (None where the model has none)."""
    point, confidence = description.get("operating_point"), description.get("low_confidence")
    result = {"decision": None, "positive_probability": None, "low_confidence": None}
    if point:
        positive = sum(float(probabilities[description["labels"].index(name)]) for name in point["positive_classes"])
        result["positive_probability"] = positive
        result["decision"] = "positive" if positive >= point["threshold"] else "negative"
    if confidence:
        result["low_confidence"] = bool(float(np.max(probabilities)) < confidence["threshold"])
    return result


def predict(model, description, paths, k=3, batch_size=BATCH_SIZE):
    """Yield one dict per image, in order: path, top [(label, probability)], decision, positive_probability,
    low_confidence (None where the model has no such threshold), error (or None).

    ``paths`` may be any iterable; it is read one batch ahead, so only a batch of images is in memory.
    """
    contract, labels = description["preprocessing"], description["labels"]
    for chunk in _chunks(paths, batch_size):
        results, pixels, readable = [], [], []
        for path in chunk:
            try:
                pixels.append(preprocess_image(path, contract))
            except UNREADABLE as error:
                results.append({"path": path, "top": [], "error": f"cannot read the image ({error})",
                                **decide(None, {})})
                continue
            readable.append(len(results))
            results.append({"path": path, "top": [], "error": None})
        if pixels:
            for index, probabilities in zip(readable, model(np.stack(pixels))):
                results[index]["top"] = top_k(probabilities, labels, k)
                results[index].update(decide(probabilities, description))
        yield from results


# ------------------------------------------------------------------ explaining
def overlay_names(paths, inputs, taken):
    """A .png name per image, relative to the folder given that holds it (or its own name), none in ``taken``."""
    folders = [os.path.abspath(item) for item in inputs if os.path.isdir(item)]
    names = []
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


class Explainer:
    """Writes an overlay PNG per readable image, a batch of results at a time, and adds ``explanation``
    (file, label, method, peak) to each result."""

    def __init__(self, description, explain_graph, head_path, out_dir, inputs, threads):
        if os.path.splitext(explain_graph)[1].lower() != ".pb" or not os.path.isfile(explain_graph):
            raise PipelineError(f"--explain-graph {explain_graph}: give a frozen_model.pb or backbone.pb")
        self.contract, self.labels = description["preprocessing"], description["labels"]
        self.views = description.get("test_time_views", [0])
        self.head_path, self.head = head_path, head_lib.load(head_path)
        if self.head["logits_b"].shape[0] != len(self.labels):
            raise PipelineError(f"--head {head_path}: {self.head['logits_b'].shape[0]} classes, "
                                f"the model has {len(self.labels)}")
        self.model = saliency.SpatialModel(explain_graph, graph_description(explain_graph),
                                           self.contract["input_size"], threads)
        self.method = "grad-cam" if "hidden_w" in self.head else "cam"
        self.out_dir, self.inputs, self.taken = out_dir, inputs, set()
        self.largest = 0.0  # the largest top-probability difference between the head and the model
        self.written = 0

    def __call__(self, results):
        names = overlay_names([result["path"] for result in results], self.inputs, self.taken)
        readable = [index for index, result in enumerate(results) if not result["error"]]
        for result in results:
            result["explanation"] = None
        if not readable:
            return
        pictures = [preprocess_image(results[index]["path"], self.contract) for index in readable]
        features, spatial = self.model(np.stack(pictures))
        classes = [self.labels.index(results[index]["top"][0][0]) for index in readable]
        if self.views == [0]:  # the head on these features is the model itself
            shown = head_lib.probabilities(self.head, features)[np.arange(len(readable)), classes]
            model_top = [results[index]["top"][0][1] for index in readable]
            self.largest = max(self.largest, float(np.abs(shown - model_top).max()))
        for index, cells in zip(readable, saliency.class_maps(self.head, features, spatial, classes)):
            image = decode_rgb(results[index]["path"])
            full = saliency.image_map(cells, image.width, image.height, self.contract)
            target = os.path.join(self.out_dir, names[index])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with atomic.atomic_path(target) as temp:
                saliency.overlay(image, full).save(temp, format="PNG")
            results[index]["explanation"] = {"file": target, "label": results[index]["top"][0][0],
                                             "method": self.method, "peak": list(saliency.peak(full))}
            self.written += 1

    def finish(self):
        print(f"wrote {self.written} overlays into {self.out_dir}", file=sys.stderr)
        if self.largest > 0.05:
            print(f"warning: --head {self.head_path}: on the explained features its top probability differs from "
                  f"the model's by up to {self.largest:.3f}; is it this model's head?", file=sys.stderr)


# ------------------------------------------------------------------ output
CSV_HEADER = ["path", "rank", "label", "probability", "decision", "positive_probability", "low_confidence", "error"]


def _cell(value, digits=6):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.{digits}f}" if isinstance(value, float) else value


def decision_text(result):
    """`` decision positive (p=0.9731)  low_confidence`` for the printed line ("" where none applies)."""
    text = ""
    if result["decision"]:
        text += f"  decision {result['decision']} (p={result['positive_probability']:.4f})"
    if result["low_confidence"]:
        text += "  low_confidence"
    return text


def csv_rows(result):
    if result["error"]:
        return [[result["path"], "", "", "", "", "", "", result["error"]]]
    decision = [_cell(result[key]) for key in ("decision", "positive_probability", "low_confidence")]
    return [[result["path"], rank, label, f"{probability:.6f}", *decision, ""]
            for rank, (label, probability) in enumerate(result["top"], start=1)]


def json_entry(result):
    entry = {"path": result["path"], "label": result["top"][0][0] if result["top"] else None,
             "top": [{"label": label, "probability": probability} for label, probability in result["top"]],
             "decision": result["decision"], "positive_probability": result["positive_probability"],
             "low_confidence": result["low_confidence"], "error": result["error"]}
    if "explanation" in result:
        entry["explanation"] = result["explanation"]
    return entry


class Outputs:
    """The --csv and --json files, written row by row as results come (each renamed into place at the end)."""

    def __init__(self, stack, csv_path, json_path, header):
        self.csv = self.json = None
        self.first = True
        if csv_path:
            handle = stack.enter_context(open(stack.enter_context(atomic.atomic_path(csv_path)), "w", newline="",
                                              encoding="utf-8"))
            self.csv = csv.writer(handle, delimiter="," if csv_path.lower().endswith(".csv") else "\t",
                                  lineterminator="\n")
            self.csv.writerow(CSV_HEADER)
        if json_path:
            self.json = stack.enter_context(open(stack.enter_context(atomic.atomic_path(json_path)), "w",
                                                 encoding="utf-8"))
            self.json.write(json.dumps(header, indent=2, sort_keys=True)[:-2] + ',\n  "predictions": [')

    def add(self, result):
        if self.csv:
            self.csv.writerows(csv_rows(result))
        if self.json:
            self.json.write(("\n    " if self.first else ",\n    ") + json.dumps(json_entry(result), sort_keys=True))
        self.first = False

    def finish(self, images, unreadable):
        if self.json:
            self.json.write(f"\n  ],\n  \"images\": {images},\n  \"unreadable\": {unreadable}\n}}\n")


def json_header(model_path, kind, device, description):
    return {
        "model": os.path.abspath(model_path),
        "model_kind": kind,
        "device": device if kind == "openvino_ir" else "tensorflow CPU",
        "precision": description.get("precision"),
        "note": description.get("note", ""),
        "labels": description["labels"],
        "calibration": description.get("calibration"),
        "operating_point": description.get("operating_point"),
        "low_confidence": description.get("low_confidence"),
    }


def print_result(result):
    if result["error"]:
        print(f"{result['path']}\terror: {result['error']}", flush=True)
    else:
        print(f"{result['path']}\t" + "  ".join(f"{label} {probability:.4f}"
                                                for label, probability in result["top"])
              + decision_text(result), flush=True)


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
    first = next(paths)  # a missing input or no image at all: one line before the model is loaded
    model, description = load_model(args.model, args.device, args.threads)
    if description.get("note"):
        print(f"note: {description['note']}: this model's predictions say nothing about the method",
              file=sys.stderr)
    explainer = Explainer(description, explain_graph, args.head, args.explain, args.inputs, args.threads) \
        if args.explain else None
    images = unreadable = 0
    header = json_header(args.model, model_kind(args.model)[1], args.device, description)
    with contextlib.ExitStack() as stack:
        outputs = Outputs(stack, args.csv, args.json, header)
        results = predict(model, description, itertools.chain([first], paths), args.top_k)
        for chunk in _chunks(results, BATCH_SIZE):
            if explainer:
                explainer(chunk)
            for result in chunk:
                images, unreadable = images + 1, unreadable + bool(result["error"])
                print_result(result)
                outputs.add(result)
        outputs.finish(images, unreadable)
    if explainer:
        explainer.finish()
    print(f"{images - unreadable} of {images} images classified{note_suffix(description.get('note'))}"
          + (f"; {unreadable} unreadable" if unreadable else ""), file=sys.stderr)
    if unreadable == images:
        raise PipelineError(f"none of the {images} images could be read")


if __name__ == "__main__":
    run_cli(main)
