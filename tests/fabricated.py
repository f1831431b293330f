"""Results of a run, fabricated with the documented shapes (README, "Metrics JSON", and the
results layout), for the tests of the report and the console summary.

Everything is written with the project's own writers (atomic, formats, records), so a
change of a format shows up here too.
"""
import hashlib
import io

import numpy as np
from PIL import Image, ImageDraw

from scripts.core import atomic, formats, images, records
from scripts.core.contract import note
from scripts.core.layout import Layout
from scripts.core.metrics import classification_metrics

LABELS = ["circle", "square", "triangle"]
COLOURS = {"circle": (200, 40, 40), "square": (40, 160, 40), "triangle": (40, 40, 200)}


def picture(label, index, size=48):
    """A small JPEG of its class: a coloured shape on grey, varied by index."""
    image = Image.new("RGB", (size, size), (200 + index % 40, 200, 200))
    draw = ImageDraw.Draw(image)
    box = (6 + index % 5, 6, size - 6, size - 6 - index % 4)
    colour = COLOURS[label]
    if label == "circle":
        draw.ellipse(box, fill=colour)
    elif label == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def metrics(experiment, untrained=False, settings=None, accuracy=(0.9, 0.8), mode="head"):
    """A metrics.json dict of the README's shape (confusion matrices that match the accuracies)."""
    splits = {}
    for split, value in zip(("validation", "test"), accuracy):
        true = np.repeat(np.arange(3), 10)
        predicted = true.copy()
        predicted[: round((1 - value) * 30)] = 1  # the first circles called squares
        splits[split] = classification_metrics(true, predicted, LABELS)
    splits["train"] = classification_metrics(np.arange(3), np.arange(3), LABELS)
    return {"schema_version": 1, "experiment": experiment, "untrained_backbone": untrained, "note": note(untrained),
            "mode": mode,
            "settings": settings or {"hidden_units": 0, "dropout": 0.0, "optimizer": "adam", "learning_rate": 0.001,
                                     "epochs": 100, "batch_size": 64, "l2": 0.0001, "class_weighting": "none",
                                     "patience": 20, "seed": 0},
            "training": {"epochs_run": 30, "best_epoch": 20, "monitored": "validation", "stopped_early": True},
            "splits": splits, **({"cv": cv_record(accuracy[0])} if mode == "head" else {})}


def cv_record(accuracy, std=0.02, folds=5):
    """metrics.json's "cv" (retrain's cross-validation) around a mean accuracy."""
    values = [accuracy + std * sign for sign in (-1, 1, 0, -1, 1)][:folds]
    entry = {"mean": float(np.mean(values)), "std": float(np.std(values)), "folds": values}
    return {"folds": folds, "images": 90, "grouped": False, "groups": None, "best_epochs": [20] * folds,
            "accuracy": entry, "macro_f1": entry, "balanced_accuracy": entry,
            "log_loss": {"mean": 0.3, "std": 0.05, "folds": [0.3] * folds}}


def write_history(path, epochs=30):
    rows = [[epoch, 1.0 / epoch, 1.2 / epoch, 1 - 0.5 / epoch, 1 - 0.6 / epoch] for epoch in range(1, epochs + 1)]
    atomic.write_table(path, ["epoch", "train_loss", "validation_loss", "train_accuracy", "validation_accuracy"], rows)


def write_test_split(results, count=12):
    """results/data/labels.json and one test TFRecord shard; returns (paths, labels, hashes, names)."""
    formats.write_labels(Layout(results).labels(), LABELS)
    serialized, labels, hashes, names = [], [], [], []
    for index in range(count):
        label = index % 3
        encoded = picture(LABELS[label], index)
        sha = hashlib.sha256(encoded).hexdigest()
        name = f"{LABELS[label]}/{index:03d}.jpg"
        serialized.append(records.make_example(encoded, b"jpeg", label, 48, 48, name, sha))
        labels.append(label)
        hashes.append(sha)
        names.append(name)
    path = Layout(results).tfrecord("test", 0, 1)
    records.write_records(path, serialized)
    return [path], labels, hashes, names


def write_model(results, experiment, labels, hashes, names, wrong=(1, 5), untrained=False, accuracy=(0.9, 0.8),
                settings=None, mode="head"):
    """The model folder of one experiment; the test images at ``wrong`` are misclassified."""
    layout = Layout(results)
    atomic.write_json(layout.metrics(experiment),
                      metrics(experiment, untrained, settings, accuracy, mode))
    write_history(layout.history(experiment))
    description = {"input_node": "input", "output_node": "final_result", "labels": LABELS,
                   "preprocessing": images.preprocessing_contract(48, (-1.0, 1.0), 0.875),
                   "untrained_backbone": untrained, "note": note(untrained)}
    atomic.write_json(layout.model_json(experiment), description)
    formats.write_labels(layout.model_labels(experiment), LABELS)
    atomic.write_bytes(layout.frozen_model(experiment), b"not a real graph")
    probabilities = np.full((len(labels), 3), 0.05, np.float32)
    for index, label in enumerate(labels):
        chosen = (label + 1) % 3 if index in wrong else label
        probabilities[index, chosen] = 0.9 - 0.01 * index
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    formats.write_npz(layout.test_predictions(experiment), probabilities=probabilities,
                      labels=np.asarray(labels, np.int64), sha256=np.asarray(hashes, dtype=str),
                      filenames=np.asarray(names, dtype=str),
                      accuracy=np.float64((probabilities.argmax(1) == np.asarray(labels)).mean()))
    return layout.model_dir(experiment)


def write_deployment(results, experiment, precisions=("FP32", "FP16", "INT8"), devices=("CPU",), untrained=False,
                     absent=()):
    """IRs with their evaluation and the benchmarks of one experiment."""
    for position, precision in enumerate(precisions):
        atomic.write_text(Layout(results).ir_xml(experiment, precision), "<net/>")
        atomic.write_bytes(Layout(results).ir_bin(experiment, precision), b"")
        accuracy = 0.8 - 0.01 * position
        atomic.write_json(Layout(results).evaluation(experiment, precision), {
            "precision": precision, "metrics": {"accuracy": accuracy, "macro_f1": accuracy},
            "trained_model_accuracy": 0.8, "trained_model_features": "OpenVINO FP32 backbone IR",
            "accuracy_drop_points": round((0.8 - accuracy) * 100, 2),
            "agreement": {"top1_agreement": 1.0 - 0.01 * position, "max_abs_probability_difference": 1e-6,
                          "images": 30, "same_features": precision == "FP32"},
            "check": {"frozen_model_in_tensorflow": {"top1_agreement": 1.0, "max_abs_probability_difference": 1e-6,
                                                     "images": 8}},
            "note": note(untrained)})
    rows = []
    for device in (*devices, *absent):
        for position, precision in enumerate(precisions):
            for mode in ("latency", "throughput"):
                if device in absent:
                    rows.append({"device": device, "precision": precision, "mode": mode, "skipped": True,
                                 "latency_median_ms": None, "throughput_fps": None})
                    continue
                rows.append({"device": device, "precision": precision, "mode": mode, "skipped": False,
                             "latency_median_ms": 30.0 / (position + 1), "throughput_fps": 33.0 * (position + 1)})
    atomic.write_json(Layout(results).benchmarks(experiment, "json"),
                      {"rows": rows, "note": note(untrained)})
    atomic.write_table(Layout(results).benchmarks(experiment, "csv"),
                       list(rows[0]), [list(row.values()) for row in rows])


def write_run(results, experiments=("default",), selected="default", untrained=False, deployed=("default",)):
    """A whole run's results: data summaries, backbone, models, the selection, deployments."""
    atomic.write_json(Layout(results).structure_summary(),
                      {"classes": dict.fromkeys(LABELS, 40), "images": 120, "rejects": 2, "duplicates": 1,
                       "rejects_by_reason": {}})
    atomic.write_json(Layout(results).split_summary(),
                      {"train": dict.fromkeys(LABELS, 27), "validation": dict.fromkeys(LABELS, 3),
                       "test": dict.fromkeys(LABELS, 10)})
    atomic.write_json(Layout(results).backbone_json(),
                      {"bottleneck_size": 2048, "untrained": untrained, "note": note(untrained)})
    paths, labels, hashes, names = write_test_split(results)
    candidates = {}
    for position, experiment in enumerate(experiments):
        accuracy = (0.9 - 0.05 * position, 0.8 - 0.05 * position)
        settings = metrics(experiment)["settings"] | {"learning_rate": 0.001 * (position + 1)}
        write_model(results, experiment, labels, hashes, names, untrained=untrained, accuracy=accuracy,
                    settings=settings)
        candidates[experiment] = accuracy[0]
    if selected:
        atomic.write_json(Layout(results).selected(),
                          {"experiment": selected, "metric": "cv_accuracy", "value": candidates[selected],
                           "candidates": candidates})
    for experiment in deployed:
        write_deployment(results, experiment, untrained=untrained)
    return paths
