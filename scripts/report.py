"""Figures and tables for `snakemake --report`, made from the run's own outputs.

    python -m scripts.report data --structure-summary S --split-summary P --output CSV
    python -m scripts.report training --history H --metrics M --output-curves C.png \
        --output-confusion-validation V.png --output-confusion-test T.png --output-per-class P.csv
    python -m scripts.report deployment --evaluations E... --benchmarks J --benchmarks-csv C \
        --output-ir-table I.csv --output-chart B.png --output-table B.csv
    python -m scripts.report experiments --names N... --metrics M... [--selected S] --output CSV
        [--selected selected.json]
    python -m scripts.report gallery --predictions P --tfrecords T... --description metrics.json \
        --output-figure G.png --output-table G.csv

Every figure made from an untrained backbone says so in its title.
"""
import argparse
import json
import shutil

import numpy as np

from scripts.core import atomic, formats, images, records
from scripts.core.contract import note_suffix, read_description
from scripts.core.errors import PipelineError, run_cli


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def save_figure(figure, path):
    with atomic.atomic_path(path) as temp, open(temp, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(figure)


# ------------------------------------------------------------------ data
def data_summary(structure_summary, split_summary, output):
    """classes x splits image counts, plus rejects and duplicates."""
    structure, splits = atomic.read_json(structure_summary), atomic.read_json(split_summary)
    names = sorted(structure["classes"])
    rows = [[name, *(splits.get(split, {}).get(name, 0) for split in ("train", "validation", "test")),
             structure["classes"][name]] for name in names]
    rows.append(["all", *(sum(splits.get(split, {}).values()) for split in ("train", "validation", "test")),
                 structure["images"]])
    rows.append([f"rejected: {structure['rejects']}", "", "", "", ""])
    rows.append([f"duplicates dropped: {structure['duplicates']}", "", "", "", ""])
    atomic.write_table(output, ["class", "train", "validation", "test", "total"], rows)


# ------------------------------------------------------------------ training
def training_curves(history_csv, note, path):
    rows = atomic.read_table(history_csv)
    epochs = [int(row["epoch"]) for row in rows]
    plt = pyplot()
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split in ("train", "validation"):
        loss_axis.plot(epochs, [float(row[f"{split}_loss"]) for row in rows], label=split)
        accuracy_axis.plot(epochs, [float(row[f"{split}_accuracy"]) for row in rows], label=split)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for axis in (loss_axis, accuracy_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.suptitle("Training of the new final layer" + note_suffix(note))
    save_figure(figure, path)


def confusion_figure(split_metrics, title, path):
    matrix = np.asarray(split_metrics["confusion_matrix"])
    labels = split_metrics["labels"]
    plt = pyplot()
    size = max(3.5, 0.7 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        axis.text(column, row, str(count), ha="center", va="center", color=colour)
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    save_figure(figure, path)


def per_class_table(metrics, output):
    """Precision, recall, F1 and support per class and split; every row carries the note."""
    note = metrics.get("note", "")
    rows = []
    for split in ("validation", "test"):
        for label, values in metrics["splits"][split]["per_class"].items():
            rows.append([split, label, f"{values['precision']:.4f}", f"{values['recall']:.4f}",
                         f"{values['f1']:.4f}", values["support"], note])
        rows.append([split, "accuracy", "", "", f"{metrics['splits'][split]['accuracy']:.4f}",
                     metrics["splits"][split]["n"], note])
    atomic.write_table(output, ["split", "class", "precision", "recall", "f1", "support", "note"], rows)


def training(history_csv, metrics_json, outputs):
    """outputs: {"curves", "confusion_validation", "confusion_test", "per_class"} paths."""
    metrics = atomic.read_json(metrics_json)
    note = metrics["note"]
    training_curves(history_csv, note, outputs["curves"])
    for split in ("validation", "test"):
        split_metrics = metrics["splits"][split]
        title = f"{split}: accuracy {split_metrics['accuracy']:.3f}{note_suffix(note)}"
        confusion_figure(split_metrics, title, outputs[f"confusion_{split}"])
    per_class_table(metrics, outputs["per_class"])


# ------------------------------------------------------------------ deployment
def ir_table(evaluation_paths, output):
    """One row per IR: its accuracy against the trained model's, and its agreement with the trained
    model (all test images; "same features" where that is the IR's own features) and with the frozen
    .pb run in TensorFlow (the check sample: an independent reference)."""
    rows = []
    for path in evaluation_paths:
        evaluation = atomic.read_json(path)
        frozen = evaluation.get("check", {}).get("frozen_model_in_tensorflow")
        rows.append([evaluation["precision"], f"{evaluation['metrics']['accuracy']:.4f}",
                     f"{evaluation['trained_model_accuracy']:.4f}", f"{evaluation['accuracy_drop_points']:.2f}",
                     f"{evaluation['agreement']['top1_agreement']:.4f}",
                     "yes" if evaluation["agreement"].get("same_features") else "",
                     f"{evaluation['agreement']['max_abs_probability_difference']:.2e}",
                     evaluation["agreement"]["images"],
                     f"{frozen['top1_agreement']:.4f}" if frozen else "",
                     f"{frozen['max_abs_probability_difference']:.2e}" if frozen else "",
                     frozen["images"] if frozen else "", evaluation["note"]])
    atomic.write_table(output, ["precision", "ir_accuracy", "trained_model_accuracy", "drop_points",
                              "top1_agreement_with_trained_model", "same_features", "max_abs_probability_difference",
                              "test_images", "top1_agreement_with_frozen_pb_in_tensorflow",
                              "max_abs_difference_with_frozen_pb", "frozen_pb_sample_images", "note"], rows)


def benchmark_chart(benchmarks_json, path):
    summary = atomic.read_json(benchmarks_json)
    rows = [row for row in summary["rows"] if not row["skipped"] and row["mode"]]
    plt = pyplot()
    figure, (latency_axis, throughput_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, mode, key, label in ((latency_axis, "latency", "latency_median_ms", "median latency (ms)"),
                                   (throughput_axis, "throughput", "throughput_fps", "throughput (images/s)")):
        chosen = [row for row in rows if row["mode"] == mode]
        names = [f"{row['device']}\n{row['precision']}" for row in chosen]
        values = [float(row[key]) for row in chosen]
        axis.bar(names, values, color="tab:blue")
        for index, value in enumerate(values):
            axis.text(index, value, f"{value:.1f}", ha="center", va="bottom")
        axis.set(ylabel=label, title=f"{mode} setting")
        axis.grid(axis="y", alpha=0.3)
    skipped = sorted({row["device"] for row in summary["rows"] if row["skipped"]})
    extra = f"; skipped absent devices: {', '.join(skipped)}" if skipped else ""
    figure.suptitle("OpenVINO benchmarks" + note_suffix(summary["note"]) + extra)
    save_figure(figure, path)


def deployment(evaluation_paths, benchmarks_json, benchmarks_csv, outputs):
    """outputs: {"ir_table", "chart", "table"} paths."""
    ir_table(evaluation_paths, outputs["ir_table"])
    benchmark_chart(benchmarks_json, outputs["chart"])
    with atomic.atomic_path(outputs["table"]) as temp:
        shutil.copyfile(benchmarks_csv, temp)  # the full table, beside its chart in the report


# ------------------------------------------------------------------ experiments
def flatten(settings, prefix=""):
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def differing_settings(settings_by_experiment):
    """The (flattened) setting names whose values are not the same in every experiment, sorted."""
    flat = [flatten(settings) for settings in settings_by_experiment]
    names = sorted({name for settings in flat for name in settings})
    return [name for name in names
            if len({json.dumps(settings.get(name), sort_keys=True) for settings in flat}) > 1]


def _cell(value):
    if value is None:
        return ""
    return value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else json.dumps(value)


def experiments(names, metrics_paths, output, selected=None):
    """One row per experiment: the settings that differ between experiments (one column
    each) and its accuracies; the one selected on validation marked. (IR accuracies are
    the deployment report's, per deployed experiment.)"""
    all_metrics = [atomic.read_json(path) for path in metrics_paths]
    varying = differing_settings([metrics.get("settings", {}) for metrics in all_metrics])
    chosen = atomic.read_json(selected).get("experiment") if selected else None
    rows = []
    for name, metrics in zip(names, all_metrics):
        settings = flatten(metrics.get("settings", {}))
        rows.append([name, "yes" if name == chosen else "", metrics.get("mode", ""),
                     *(_cell(settings.get(setting)) for setting in varying),
                     metrics["training"]["best_epoch"],
                     f"{metrics['splits']['validation']['accuracy']:.4f}",
                     f"{metrics['splits']['test']['accuracy']:.4f}",
                     f"{metrics['splits']['test']['macro_f1']:.4f}",
                     metrics["note"]])
    atomic.write_table(output, ["experiment", "selected", "mode", *varying, "best_epoch", "validation_accuracy",
                                "test_accuracy", "test_macro_f1", "note"], rows)


# ------------------------------------------------------------------ misclassified test images
GALLERY_LIMIT = 24   # most confident mistakes shown
GALLERY_COLUMNS = 6
THUMBNAIL_PIXELS = 160


def misclassified(predictions, labels):
    """Rows (index, true, predicted, confidence) of the wrong predictions, most confident first."""
    probabilities = np.asarray(predictions["probabilities"])
    true = np.asarray(predictions["labels"])
    if len(true) == 0:
        return []
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != true)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
    return [(int(index), labels[true[index]], labels[predicted[index]], float(confidence[index]))
            for index in wrong]


def thumbnails(tfrecord_paths, hashes):
    """{sha256: PIL thumbnail} of the wanted images of TFRecord files."""
    wanted, found = set(hashes), {}
    for example in records.read_examples(tfrecord_paths):
        if example["sha256"] in wanted and example["sha256"] not in found:
            image = images.decode_rgb(example["encoded"])
            image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
            found[example["sha256"]] = image
            if len(found) == len(wanted):
                break
    return found


def _wrap(text, width=22):
    return text if len(text) <= width else text[:width - 1] + "\u2026"


def gallery_figure(rows, pictures, hashes, total, title, path):
    """A grid of thumbnails titled with the true and predicted label and the confidence."""
    plt = pyplot()
    shown = rows[:GALLERY_LIMIT]
    if not shown:
        figure, axis = plt.subplots(figsize=(6, 1.6))
        axis.axis("off")
        axis.text(0.5, 0.5, f"All {total} test images are classified correctly.", ha="center", va="center",
                  fontsize=12)
        figure.suptitle(title)
        save_figure(figure, path)
        return
    columns = min(GALLERY_COLUMNS, len(shown))
    lines = -(-len(shown) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(2.3 * columns, 2.75 * lines + 0.6), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (index, true, predicted, confidence) in zip(axes.flat, shown):
        picture = pictures.get(str(hashes[index]))
        if picture is None:
            axis.text(0.5, 0.5, "image not in\nthe test TFRecords", ha="center", va="center", fontsize=8)
        else:
            axis.imshow(np.asarray(picture))
        axis.set_title(f"true: {_wrap(true)}\npredicted: {_wrap(predicted)}\nconfidence {confidence:.0%}",
                       fontsize=8, color="darkred")
    figure.suptitle(title)
    figure.tight_layout()
    save_figure(figure, path)


def gallery(predictions_npz, tfrecord_paths, description_json, outputs, experiment=""):
    """misclassified.png (the most confident mistakes) and misclassified.csv (all of them)."""
    predictions = formats.read_predictions(predictions_npz)
    description = read_description(description_json)
    labels, note = description["labels"], description.get("note", "")
    for key in ("probabilities", "labels", "sha256"):
        if key not in predictions:
            raise PipelineError(f"{predictions_npz}: has no {key!r} array")
    hashes = predictions["sha256"]
    filenames = predictions.get("filenames", [""] * len(hashes))
    rows = misclassified(predictions, labels)
    total = len(predictions["labels"])
    pictures = thumbnails(tfrecord_paths, [str(hashes[index]) for index, *_ in rows[:GALLERY_LIMIT]])
    title = f"{experiment + ': ' if experiment else ''}{len(rows)} of {total} test images misclassified"
    if len(rows) > GALLERY_LIMIT:
        title += f", the {GALLERY_LIMIT} most confident shown"
    gallery_figure(rows, pictures, hashes, total, title + note_suffix(note),
                   outputs["figure"])
    atomic.write_table(outputs["table"],
                       ["filename", "sha256", "true", "predicted", "confidence", "note"],
                       [[str(filenames[index]), str(hashes[index]), true, predicted, f"{confidence:.4f}", note]
                        for index, true, predicted, confidence in rows])


TRAINING_OUTPUTS = ("curves", "confusion_validation", "confusion_test", "per_class")
DEPLOYMENT_OUTPUTS = ("ir_table", "chart", "table")
GALLERY_OUTPUTS = ("figure", "table")


def outputs_of(args, names):
    return {name: getattr(args, f"output_{name}") for name in names}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Figures and tables for the Snakemake report.")
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="class counts per split, rejects, duplicates")
    data.add_argument("--structure-summary", required=True)
    data.add_argument("--split-summary", required=True)
    data.add_argument("--output", required=True)
    train = commands.add_parser("training", help="training curves, confusion matrices, per-class table")
    train.add_argument("--history", required=True)
    train.add_argument("--metrics", required=True)
    for name in TRAINING_OUTPUTS:
        train.add_argument(f"--output-{name.replace('_', '-')}", required=True)
    deploy = commands.add_parser("deployment", help="IR accuracy table and benchmark chart")
    deploy.add_argument("--evaluations", nargs="+", required=True)
    deploy.add_argument("--benchmarks", required=True, help="benchmarks.json")
    deploy.add_argument("--benchmarks-csv", required=True, help="benchmarks.csv")
    for name in DEPLOYMENT_OUTPUTS:
        deploy.add_argument(f"--output-{name.replace('_', '-')}", required=True)
    compare = commands.add_parser("experiments", help="one comparison table of all experiments")
    compare.add_argument("--names", nargs="+", required=True)
    compare.add_argument("--metrics", nargs="+", required=True)
    compare.add_argument("--selected", help="selected.json: the experiment chosen on validation")
    compare.add_argument("--output", required=True)
    wrong = commands.add_parser("gallery", help="the misclassified test images of one experiment")
    wrong.add_argument("--predictions", required=True, help="test_predictions.npz")
    wrong.add_argument("--tfrecords", nargs="+", required=True, help="the test split's TFRecord shards")
    wrong.add_argument("--description", required=True, help="metrics.json (or model.json): labels and note")
    wrong.add_argument("--experiment", default="", help="its name, for the title")
    for name in GALLERY_OUTPUTS:
        wrong.add_argument(f"--output-{name}", required=True)
    args = parser.parse_args(argv)
    if args.command == "data":
        data_summary(args.structure_summary, args.split_summary, args.output)
    elif args.command == "training":
        training(args.history, args.metrics, outputs_of(args, TRAINING_OUTPUTS))
    elif args.command == "deployment":
        deployment(args.evaluations, args.benchmarks, args.benchmarks_csv, outputs_of(args, DEPLOYMENT_OUTPUTS))
    elif args.command == "gallery":
        gallery(args.predictions, args.tfrecords, args.description, outputs_of(args, GALLERY_OUTPUTS),
                args.experiment)
    else:
        experiments(args.names, args.metrics, args.output, args.selected)


if __name__ == "__main__":
    run_cli(main)
