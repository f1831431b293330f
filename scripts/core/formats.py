"""One home for each file format the stages hand each other.

    labels.json                a JSON list of class names; index = label id
    bottlenecks *.npz          features [N, D] float32, labels [N], sha256 [N], filenames [N]
    predictions *.npz          probabilities [N, classes], labels [N], sha256 [N], filenames [N], accuracy
                               (test_predictions.npz also view_logits [views, N, classes])
    backbone.json, model.json  JSON descriptions of a model (see scripts/core/contract.py)

Tables (.csv/.tsv) and JSON are read and written by scripts/core/atomic.py; the head's
parameters (head.npz) by scripts/core/head.py.
"""
import glob
import json
import os
import shutil
import tempfile

import numpy as np

from scripts.core import atomic
from scripts.core.errors import PipelineError


# ------------------------------------------------------------------ labels
# JSON, not one name per line: a name holding a newline or tab cannot shift the others.
def write_labels(path, labels):
    atomic.write_text(path, json.dumps(list(labels), ensure_ascii=False, indent=1) + "\n")


def read_labels(path):
    try:
        labels = atomic.read_json(path)
    except (OSError, ValueError) as error:
        raise PipelineError(f"{path}: cannot read the labels ({error})") from None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise PipelineError(f"{path}: not a JSON list of class names")
    if len(set(labels)) != len(labels):
        raise PipelineError(f"{path}: a class name is listed twice, so label ids are ambiguous")
    return labels


# ------------------------------------------------------------------ arrays
def write_npz(path, **arrays):
    with atomic.atomic_path(path) as temp, open(temp, "wb") as handle:
        np.savez(handle, **arrays)


def read_npz(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def write_bottlenecks(path, features, labels, hashes, names):
    write_npz(path, features=np.asarray(features, np.float32), labels=np.asarray(labels, np.int64),
              sha256=np.asarray(hashes, dtype=str), filenames=np.asarray(names, dtype=str))


def empty_bottlenecks(width):
    return {"features": np.zeros((0, width), np.float32), "labels": np.zeros(0, np.int64),
            "sha256": np.zeros(0, dtype=str), "filenames": np.zeros(0, dtype=str)}


read_bottlenecks = read_npz


def read_views(paths):
    """A split's features as a list of views (the plain file first), checked to list the same images."""
    views = [read_bottlenecks(path) for path in paths]
    for path, view in zip(paths[1:], views[1:]):
        if list(view["sha256"]) != list(views[0]["sha256"]):
            raise PipelineError(f"{path}: lists other images than {paths[0]}")
    return views


def concatenate_bottlenecks(parts):
    """One bottleneck dict from several, in order."""
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def write_predictions(path, probabilities, labels, hashes, names, **extra):
    """A model's softmax over a split (and any ``extra`` arrays, e.g. view_logits); returns its accuracy."""
    labels = np.asarray(labels, np.int64)
    accuracy = float((probabilities.argmax(axis=1) == labels).mean()) if len(labels) else 0.0
    write_npz(path, probabilities=np.asarray(probabilities, np.float32), labels=labels,
              sha256=np.asarray(hashes, dtype=str), filenames=np.asarray(names, dtype=str),
              accuracy=np.float64(accuracy), **extra)
    return accuracy


read_predictions = read_npz


# ------------------------------------------------------------------ OpenVINO IR
def write_ir(model, xml_path, compress_to_fp16=False):
    """Save an OpenVINO model as xml + bin atomically: an .xml never stands beside another run's .bin.

    Both files are written to a hidden temporary folder beside the target, then the .bin
    is moved first and the .xml last. A killed run's temporary folder is removed by the
    next attempt.
    """
    import openvino as ov
    folder = os.path.dirname(os.path.abspath(xml_path))
    name = os.path.splitext(os.path.basename(xml_path))[0]
    os.makedirs(folder, exist_ok=True)
    prefix = f".{name}.xml.tmp-"
    for stale in glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + "*")):
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=folder) as temp:
        ov.save_model(model, os.path.join(temp, name + ".xml"), compress_to_fp16=compress_to_fp16)
        if os.path.exists(xml_path):
            os.remove(xml_path)
        os.replace(os.path.join(temp, name + ".bin"), os.path.join(folder, name + ".bin"))
        os.replace(os.path.join(temp, name + ".xml"), xml_path)
