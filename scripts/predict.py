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
low_confidence, or its error.
"""
import argparse
import os
import sys

if not __package__:  # run as a file: make the repository's `scripts` package importable
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from PIL import Image

from scripts.core import atomic, inference
from scripts.core.contract import note_suffix, read_description
from scripts.core.errors import PipelineError, run_cli
from scripts.core.images import preprocess_image

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
    low_confidence (None where the model has no such threshold), error (or None)."""
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


# ------------------------------------------------------------------ output
def _cell(value, digits=6):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.{digits}f}" if isinstance(value, float) else value


def write_csv(path, results):
    rows = []
    for result in results:
        if result["error"]:
            rows.append([result["path"], "", "", "", "", "", "", result["error"]])
        decision = [_cell(result[key]) for key in ("decision", "positive_probability", "low_confidence")]
        rows += [[result["path"], rank, label, f"{probability:.6f}", *decision, ""]
                 for rank, (label, probability) in enumerate(result["top"], start=1)]
    atomic.write_table(path, ["path", "rank", "label", "probability", "decision", "positive_probability",
                              "low_confidence", "error"], rows)


def decision_text(result):
    """`` decision positive (p=0.9731)  low_confidence`` for the printed line ("" where none applies)."""
    text = ""
    if result["decision"]:
        text += f"  decision {result['decision']} (p={result['positive_probability']:.4f})"
    if result["low_confidence"]:
        text += "  low_confidence"
    return text


def write_json(path, model_path, kind, device, description, results):
    atomic.write_json(path, {
        "model": os.path.abspath(model_path),
        "model_kind": kind,
        "device": device if kind == "openvino_ir" else "tensorflow CPU",
        "precision": description.get("precision"),
        "note": description.get("note", ""),
        "labels": description["labels"],
        "calibration": description.get("calibration"),
        "operating_point": description.get("operating_point"),
        "low_confidence": description.get("low_confidence"),
        "images": len(results),
        "unreadable": sum(1 for result in results if result["error"]),
        "predictions": [{"path": result["path"],
                         "label": result["top"][0][0] if result["top"] else None,
                         "top": [{"label": label, "probability": probability}
                                 for label, probability in result["top"]],
                         "decision": result["decision"], "positive_probability": result["positive_probability"],
                         "low_confidence": result["low_confidence"],
                         "error": result["error"]} for result in results],
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
    args = parser.parse_args(argv)
    if args.top_k < 1:
        raise PipelineError(f"--top-k {args.top_k}: must be at least 1")
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
                                                     for label, probability in result["top"])
                  + decision_text(result), flush=True)
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
