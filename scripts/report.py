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
    python -m scripts.report near-duplicates --table near_duplicates.csv --summary near_duplicates.json \
        --tfrecords T... --output N.png
    python -m scripts.report label-issues --table label_issues.csv --tfrecords T... --shown 24 --output L.png
    python -m scripts.report clinical --predictions test_predictions.npz --held-out oof_predictions.npz \
        --calibration calibration.json --output-roc R.png --output-precision-recall P.png \
        --output-reliability C.png --output-operating-point O.png

Every figure made from an untrained backbone says so in its title.
"""
import argparse
import json
import shutil

import numpy as np

from scripts.core import atomic, decode, formats, records
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


CV_COLUMNS = ("cv_accuracy_mean", "cv_accuracy_std", "cv_log_loss_mean", "cv_folds")


def cv_cells(metrics):
    """The cross-validation's figures (empty for a fine-tuned experiment, which has none)."""
    cv = metrics.get("cv")
    if not cv:
        return [""] * len(CV_COLUMNS)
    return [f"{cv['accuracy']['mean']:.4f}", f"{cv['accuracy']['std']:.4f}", f"{cv['log_loss']['mean']:.4f}",
            cv["folds"]]


def experiments(names, metrics_paths, output, selected=None):
    """One row per experiment: the settings that differ between experiments (one column
    each), its cross-validation and accuracies; the selected one marked. (IR accuracies are
    the deployment report's, per deployed experiment.) validation_accuracy: a head's
    out-of-fold accuracy on the validation images (a fine-tuned experiment's plain validation split)."""
    all_metrics = [atomic.read_json(path) for path in metrics_paths]
    varying = differing_settings([metrics.get("settings", {}) for metrics in all_metrics])
    chosen = atomic.read_json(selected).get("experiment") if selected else None
    rows = []
    for name, metrics in zip(names, all_metrics):
        settings = flatten(metrics.get("settings", {}))
        rows.append([name, "yes" if name == chosen else "", metrics.get("mode", ""),
                     *(_cell(settings.get(setting)) for setting in varying),
                     metrics["training"]["best_epoch"], *cv_cells(metrics),
                     f"{metrics['splits']['validation']['accuracy']:.4f}",
                     f"{metrics['splits']['test']['accuracy']:.4f}",
                     f"{metrics['splits']['test']['macro_f1']:.4f}",
                     metrics["note"]])
    atomic.write_table(output, ["experiment", "selected", "mode", *varying, "best_epoch", *CV_COLUMNS, "validation_accuracy",
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
            image = decode.decode_rgb(example["encoded"])
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
    figure, axes = gallery_grid(plt, len(shown))
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


def gallery_grid(plt, count):
    """A figure of ``count`` image tiles, GALLERY_COLUMNS a line, every axis blank until drawn on."""
    columns = min(GALLERY_COLUMNS, count)
    lines = -(-count // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(2.3 * columns, 2.75 * lines + 0.6), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    return figure, axes


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


# ------------------------------------------------------------------ audit (docs/audit.md)
AUDIT_PAIRS_SHOWN = 6


def near_duplicates_figure(table_csv, summary_json, tfrecord_paths, path):
    """Per similarity, the copies' and distinct neighbours' distributions with the threshold;
    below, the most alike flagged pairs side by side."""
    summary, rows = atomic.read_json(summary_json), atomic.read_table(table_csv)
    shown_rows = rows[:AUDIT_PAIRS_SHOWN]
    pictures = thumbnails(tfrecord_paths, [row[key] for row in shown_rows for key in ("sha256", "train_sha256")])
    plt = pyplot()
    lines = 1 + len(shown_rows)
    figure = plt.figure(figsize=(10, 3.2 + 2.2 * len(shown_rows)))
    grid = figure.add_gridspec(lines, 2, height_ratios=[1.4] + [1] * len(shown_rows))
    for column, (name, signal) in enumerate(summary["signals"].items()):
        axis = figure.add_subplot(grid[0, column])
        keys = [("copies", signal["copies"]["all_used"]),
                ("distinct (other class)", signal["distinct_nearest_neighbours"]["train_to_train_of_another_class"]),
                ("train to other train", signal["distinct_nearest_neighbours"]["train_to_other_train"]),
                *((f"{split} to train", signal["distinct_nearest_neighbours"].get(f"{split}_to_train", {}))
                  for split in ("validation", "test"))]
        for position, (label, values) in enumerate(keys):
            if values.get("n"):
                axis.plot([values["q0.05"], values["q0.95"]], [position] * 2, color="tab:blue", linewidth=6)
                axis.plot([values["q0"], values["q1"]], [position] * 2, color="tab:blue", linewidth=1)
                axis.plot(values["q0.5"], position, "o", color="black")
        axis.axvline(signal["threshold"], color="darkred", linestyle="--")
        axis.set_yticks(range(len(keys)), [label for label, _ in keys])
        axis.set(xlabel="cosine similarity (box 5-95%, line min-max, dot median)",
                 title=f"{name}: threshold {signal['threshold']:.3f}")
    for line, row in enumerate(shown_rows, 1):
        for column, (key, split) in enumerate((("sha256", row["split"]), ("train_sha256", "train"))):
            axis = figure.add_subplot(grid[line, column])
            axis.axis("off")
            picture = pictures.get(row[key])
            if picture is not None:
                axis.imshow(np.asarray(picture))
            name = row["path"] if column == 0 else row["train_path"]
            axis.set_title(f"{split}: {_wrap(name.rsplit('/', 1)[-1], 40)}\nfeatures {row['feature_similarity']}, "
                           f"pixels {row['pixel_similarity']}", fontsize=8)
    counts = summary["near_duplicates"]
    figure.suptitle(f"{summary['near_duplicate_images']} validation/test images near-duplicate a training image "
                    f"(validation {counts['validation']}, test {counts['test']} pairs)")
    figure.tight_layout()
    save_figure(figure, path)


def label_issues_gallery(table_csv, tfrecord_paths, shown, path):
    """The top suspects: thumbnail, given and likely label, self-confidence."""
    rows = atomic.read_table(table_csv)[:shown]
    pictures = thumbnails(tfrecord_paths, [row["sha256"] for row in rows if row["sha256"]])
    plt = pyplot()
    if not rows:
        figure, axis = plt.subplots(figsize=(6, 1.6))
        axis.axis("off")
        axis.text(0.5, 0.5, "No images to rank.", ha="center", va="center")
        save_figure(figure, path)
        return
    figure, axes = gallery_grid(plt, len(rows))
    for axis, row in zip(axes.flat, rows):
        picture = pictures.get(row["sha256"])
        if picture is None:
            axis.text(0.5, 0.5, _wrap(row["path"].rsplit("/", 1)[-1]), ha="center", va="center", fontsize=8)
        else:
            axis.imshow(np.asarray(picture))
        axis.set_title(f"#{row['rank']} given: {_wrap(row['given_label'])}\nlikely: {_wrap(row['likely_label'])}\n"
                       f"p(given) {float(row['self_confidence']):.0%}", fontsize=8,
                       color="darkred" if row["issue"] == "1" else "black")
    figure.suptitle(f"The {len(rows)} images whose given label is least likely out of fold "
                    "(red: flagged by confident learning)")
    figure.tight_layout()
    save_figure(figure, path)


# ------------------------------------------------------------------ clinical figures (docs/clinical.md)
def _calibrated(logits_or_probabilities, temperature):
    from scripts.core.calibration import calibrated_probabilities
    return calibrated_probabilities(logits_or_probabilities, temperature)


def test_probabilities(predictions, temperature):
    """(calibrated, uncalibrated) test probabilities of the trained model, from its per-view logits."""
    if "view_logits" not in predictions:
        raise PipelineError("test_predictions.npz has no view_logits array (made before calibration existed)")
    return _calibrated(predictions["view_logits"], temperature), _calibrated(predictions["view_logits"], 1.0)


def curve_figure(kind, labels, true, probabilities, point, title, path):
    """ROC or precision-recall curves: one-vs-rest per class, and the positive set's (with the operating point)."""
    from sklearn import metrics as sk

    from scripts.core.metrics import positive_probability
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 5))
    curves = [(name, true == index, probabilities[:, index], "-") for index, name in enumerate(labels)]
    if point:
        score, members = positive_probability(probabilities, labels, point["positive_classes"])
        curves.append(("+".join(point["positive_classes"]) + " vs rest", members[true], score, "--"))
    for name, positive, score, style in curves:
        if positive.all() or not positive.any():
            continue
        if kind == "roc":
            x, y, _ = sk.roc_curve(positive, score)
            value = sk.roc_auc_score(positive, score)
            axis.plot(x, y, style, label=f"{name} (AUC {value:.4f})")
        else:
            y, x, _ = sk.precision_recall_curve(positive, score)
            value = sk.average_precision_score(positive, score)
            axis.plot(x, y, style, label=f"{name} (AP {value:.4f})")
    if point:
        score, members = positive_probability(probabilities, labels, point["positive_classes"])
        decided, positive = score >= point["threshold"], members[true]
        sensitivity = float(decided[positive].mean()) if positive.any() else 0.0
        if kind == "roc":
            x_value = float(decided[~positive].mean()) if (~positive).any() else 0.0
        else:
            x_value, sensitivity = sensitivity, float(positive[decided].mean()) if decided.any() else 1.0
        axis.plot([x_value], [sensitivity], "ko", label=f"operating point (threshold {point['threshold']:.3g})")
    if kind == "roc":
        axis.plot([0, 1], [0, 1], ":", color="grey")
        axis.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)")
    else:
        axis.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)")
    axis.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), title=title)
    axis.legend(fontsize=8, loc="lower right" if kind == "roc" else "lower left")
    axis.grid(alpha=0.3)
    save_figure(figure, path)


def reliability_figure(panels, title, path):
    """Reliability diagrams (accuracy against confidence per bin), before and after calibration, per data set."""
    from scripts.core.metrics import reliability
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for axis, (name, true, before, after) in zip(axes[0], panels):
        axis.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
        for label, probabilities, style in (("before", before, "s--"), ("after", after, "o-")):
            bins = reliability(probabilities, true)
            shown = [(c, a) for c, a in zip(bins["confidence"], bins["accuracy"]) if c is not None]
            axis.plot([c for c, _ in shown], [a for _, a in shown], style, label=f"{label} (ECE {bins['ece']:.4f})")
        axis.set(xlabel="confidence (top probability)", ylabel="accuracy", xlim=(0, 1.01), ylim=(0, 1.01),
                 title=f"{name} ({len(true)} images)")
        axis.legend(fontsize=8, loc="upper left")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    save_figure(figure, path)


def operating_point_figure(panels, point, title, path):
    """The binary confusion matrices at the operating point (held-out and test), or a note without one."""
    plt = pyplot()
    if not point:
        figure, axis = plt.subplots(figsize=(6, 1.6))
        axis.axis("off")
        axis.text(0.5, 0.5, "No operating point: config evaluation.positive_classes is not set.", ha="center",
                  va="center")
        figure.suptitle(title)
        save_figure(figure, path)
        return
    from scripts.core.metrics import binary_view
    names = ["rest", "+".join(point["positive_classes"])]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for axis, (name, true, probabilities, labels) in zip(axes[0], panels):
        view, _ = binary_view(true, probabilities, labels, point["positive_classes"], point["threshold"])
        matrix = np.asarray(view["confusion_matrix"])
        axis.imshow(matrix, cmap="Blues")
        for (row, column), count in np.ndenumerate(matrix):
            axis.text(column, row, str(count), ha="center", va="center",
                      color="white" if count > matrix.max() / 2 else "black")
        axis.set_xticks([0, 1], names)
        axis.set_yticks([0, 1], names)
        axis.set(xlabel="decided", ylabel="true", title=f"{name}: sensitivity {view['sensitivity']:.3f}, "
                 f"specificity {view['specificity']:.3f}")
    figure.suptitle(title)
    save_figure(figure, path)


def clinical(predictions_npz, held_out_npz, calibration_json, outputs, experiment=""):
    """outputs: {"roc", "precision_recall", "reliability", "operating_point"} PNG paths."""
    calibration = atomic.read_json(calibration_json)
    labels, temperature, point = calibration["labels"], calibration["temperature"], calibration["operating_point"]
    predictions = formats.read_predictions(predictions_npz)
    held_out = formats.read_npz(held_out_npz)
    true = np.asarray(predictions["labels"], np.int64)
    after, before = test_probabilities(predictions, temperature)
    held_logits = held_out.get("view_logits", held_out["logits"])
    held_true = np.asarray(held_out["labels"], np.int64)
    held_after, held_before = _calibrated(held_logits, temperature), _calibrated(held_logits, 1.0)
    prefix = f"{experiment}: " if experiment else ""
    suffix = f" (calibrated, T = {temperature:.3f})"
    curve_figure("roc", labels, true, after, point, f"{prefix}test ROC curves{suffix}", outputs["roc"])
    curve_figure("pr", labels, true, after, point, f"{prefix}test precision-recall curves{suffix}",
                 outputs["precision_recall"])
    reliability_figure([("held-out (fit)", held_true, held_before, held_after), ("test", true, before, after)],
                       f"{prefix}reliability before and after temperature scaling (T = {temperature:.3f})",
                       outputs["reliability"])
    operating_point_figure([("held-out", held_true, held_after, labels), ("test", true, after, labels)], point,
                           f"{prefix}binary decision at the operating point", outputs["operating_point"])


CLINICAL_OUTPUTS = ("roc", "precision_recall", "reliability", "operating_point")


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
    duplicates = commands.add_parser("near-duplicates", help="the leakage audit's distributions and pairs")
    duplicates.add_argument("--table", required=True, help="near_duplicates.csv")
    duplicates.add_argument("--summary", required=True, help="near_duplicates.json")
    duplicates.add_argument("--tfrecords", nargs="+", required=True, help="every split's TFRecord shards")
    duplicates.add_argument("--output", required=True)
    suspects = commands.add_parser("label-issues", help="the top suspected label errors")
    suspects.add_argument("--table", required=True, help="label_issues.csv")
    suspects.add_argument("--tfrecords", nargs="+", required=True, help="the train and validation TFRecord shards")
    suspects.add_argument("--shown", type=int, required=True, help="images shown (audit.label_issues_shown)")
    suspects.add_argument("--output", required=True)
    clinic = commands.add_parser("clinical", help="ROC, precision-recall, reliability and operating-point figures")
    clinic.add_argument("--predictions", required=True, help="test_predictions.npz (with view_logits)")
    clinic.add_argument("--held-out", required=True, help="oof_predictions.npz")
    clinic.add_argument("--calibration", required=True, help="calibration.json")
    clinic.add_argument("--experiment", default="", help="its name, for the titles")
    for name in CLINICAL_OUTPUTS:
        clinic.add_argument(f"--output-{name.replace('_', '-')}", required=True)
    args = parser.parse_args(argv)
    if args.command == "near-duplicates":
        near_duplicates_figure(args.table, args.summary, args.tfrecords, args.output)
    elif args.command == "label-issues":
        label_issues_gallery(args.table, args.tfrecords, args.shown, args.output)
    elif args.command == "clinical":
        clinical(args.predictions, args.held_out, args.calibration, outputs_of(args, CLINICAL_OUTPUTS),
                 args.experiment)
    elif args.command == "data":
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
