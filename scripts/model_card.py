"""The model card of one deployed experiment: a Markdown page beside its model, and in the report.

Everything on it comes from the files and settings its rule passes: the data's summaries
and manifest, the backbone's description, the experiment's metrics.json, calibration.json,
each deployed precision's ir.json and evaluation.json, and the selection.

    python -m scripts.model_card --experiment E --split-summary S --structure-summary T --manifest M \
        --backbone-json B --metrics metrics.json --calibration calibration.json \
        --evaluations FP32/evaluation.json ... --ir-json FP32/ir.json ... [--selected selected.json] \
        --dataset JSON --backbone JSON --selection JSON --split JSON --output model_card.md
"""
import argparse
import csv
import hashlib
import json

from scripts.core import atomic
from scripts.core.contract import note_suffix
from scripts.core.errors import run_cli

SPLITS = ("train", "validation", "test")
NOT_A_DEVICE = ("**This is a research tool, not a diagnostic device.** It has not been validated for clinical use, "
                "is not a medical device under any regulation, and must not be used to diagnose, treat or triage "
                "patients.")


def data_fingerprint(manifest_tsv):
    """(images, sha256 of the sorted "label<TAB>image sha256" lines): the data set's content, whatever its paths."""
    with open(manifest_tsv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    lines = sorted(f"{row['label']}\t{row['sha256']}" for row in rows)
    return len(rows), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def interval(value, ci, digits=4):
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    return text + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def data_section(inputs, params):
    dataset, splits = params["dataset"], atomic.read_json(inputs["split"])
    structure = atomic.read_json(inputs["structure"])
    images, fingerprint = data_fingerprint(inputs["manifest"])
    names = sorted({name for split in SPLITS for name in splits.get(split, {})})
    rows = [[name, *(splits.get(split, {}).get(name, 0) for split in SPLITS)] for name in names]
    rows.append(["all", *(sum(splits.get(split, {}).values()) for split in SPLITS)])
    lines = ["## Data", "",
             f"- Source: `{dataset['source']}` (layout `{dataset['layout']}`"
             + (f", classes mapped by {json.dumps(dataset['class_map'])}" if dataset.get("class_map") else "") + ")",
             f"- Archive sha256 (verified on download): `{dataset['sha256']}`" if dataset.get("sha256")
             else "- Archive sha256: none given (a folder, or an archive whose first hash was recorded)",
             f"- Content sha256 of the {images} images used (sorted `label<TAB>image sha256` lines of manifest.tsv): "
             f"`{fingerprint}`",
             f"- {structure.get('rejects', 0)} files rejected, {structure.get('duplicates', 0)} duplicates dropped",
             f"- Split: {json.dumps(params['split'])} (train/validation/test by a hash of each image"
             + ("; by group" if "groups" in splits else "") + ")", "", "Images per class and split:", "",
             *table(["class", *SPLITS], rows)]
    if "groups" in splits:
        groups = splits["groups"]
        lines += ["", "Groups per split: " + ", ".join(f"{split} {groups.get(split)}" for split in SPLITS
                                                        if split in groups)]
    return lines


def model_section(inputs, params, metrics, ir_descriptions):
    info = atomic.read_json(inputs["backbone"])
    backbone, settings = params["backbone"], metrics.get("settings", {})
    first = ir_descriptions[0] if ir_descriptions else {}
    preprocessing = first.get("preprocessing", {})
    selected = atomic.read_json(inputs["selected"]) if inputs.get("selected") else None
    lines = ["## Model", "",
             f"- Backbone: {backbone['kind']} from `{backbone['source']}`"
             + (f" (sha256 `{backbone['sha256']}`)" if backbone.get("sha256") else "")
             + f"; features `{info.get('bottleneck_tensor')}` ({info.get('bottleneck_size')} values)"
             + (f" plus {', '.join(info['extra_endpoints'])}" if info.get("extra_endpoints") else "")
             + note_suffix(info.get("note", "")),
             f"- Preprocessing: {json.dumps(preprocessing, sort_keys=True)}",
             f"- Test-time views: {first.get('test_time_views')}",
             f"- Training ({metrics.get('mode')}): {json.dumps(settings.get('train', {}), sort_keys=True)}",
             f"- Augmentation: {json.dumps(settings.get('augment', {}), sort_keys=True)}",
             f"- Training run: {json.dumps(metrics.get('training', {}), sort_keys=True)}",
             f"- Selection: {json.dumps(params['selection'], sort_keys=True)}"
             + (f"; selected `{selected['experiment']}` on {selected['metric']} = {selected['value']:.4f}"
                if selected else ""),
             f"- OpenVINO {first.get('openvino_version', 'n/a')}"]
    return lines


def metrics_section(metrics, evaluations):
    splits = metrics["splits"]
    rows = []
    for name, split in (("validation (trained model)", splits["validation"]), ("test (trained model)", splits["test"]),
                        *((f"test, {e['precision']} IR", e["metrics"]) for e in evaluations)):
        rows.append([name, split.get("n"), interval(split.get("accuracy"), split.get("accuracy_ci95")),
                     interval(split.get("balanced_accuracy"), split.get("balanced_accuracy_ci95")),
                     interval(split.get("macro_f1"), None), interval(split.get("mcc"), None),
                     interval(split.get("log_loss"), None), interval(split.get("brier"), None),
                     interval(split.get("ece"), None)])
    lines = ["## Performance", "", "95% intervals: percentile bootstrap over the images "
             f"({(splits['test'].get('bootstrap') or {}).get('samples', 0)} resamples). "
             "The validation split may have chosen the experiment; the test split was never used for a choice.", "",
             *table(["split", "n", "accuracy", "balanced accuracy", "macro F1", "MCC", "log loss", "Brier", "ECE"],
                    rows)]
    for title, split in (("test, trained model", splits["test"]),
                         *((f"test, {e['precision']} IR", e["metrics"]) for e in evaluations[:1])):
        per_class = [[name, interval(v.get("sensitivity"), v.get("sensitivity_ci95")),
                      interval(v.get("specificity"), v.get("specificity_ci95")), interval(v.get("ppv"), None),
                      interval(v.get("npv"), None), interval(v.get("f1"), None),
                      interval(v.get("roc_auc"), v.get("roc_auc_ci95")), interval(v.get("average_precision"), None)]
                     for name, v in split["per_class"].items()]
        binary = split.get("binary")
        if binary:
            per_class.append([f"**{'+'.join(binary['positive_classes'])} vs rest** (p >= 0.5)",
                              interval(binary["sensitivity"], binary.get("sensitivity_ci95")),
                              interval(binary["specificity"], binary.get("specificity_ci95")),
                              interval(binary["ppv"], None), interval(binary["npv"], None),
                              interval(binary["f1"], None), interval(binary["roc_auc"], binary.get("roc_auc_ci95")),
                              interval(binary["average_precision"], None)])
        lines += ["", f"One-vs-rest per class ({title}):", "",
                  *table(["class", "sensitivity", "specificity", "PPV", "NPV", "F1", "ROC-AUC", "AP"], per_class)]
    return lines


def calibration_section(calibration, evaluations):
    held = calibration["held_out"]
    rows = [["held-out (fit)", held["n"], f"{held['before']['ece']:.4f}", f"{held['after']['ece']:.4f}",
             f"{held['before']['log_loss']:.4f}", f"{held['after']['log_loss']:.4f}",
             f"{held['before']['brier']:.4f}", f"{held['after']['brier']:.4f}"]]
    for evaluation in evaluations:
        figures = evaluation.get("calibration") or {}
        if figures:
            rows.append([f"test, {evaluation['precision']} IR", evaluation["metrics"]["n"],
                         *(f"{figures[when][key]:.4f}" for key in ("ece", "log_loss", "brier")
                           for when in ("before", "after"))])
    return ["## Calibration", "",
            f"Temperature T = {calibration['temperature']:.4f}, fitted on {held['n']} held-out images "
            f"({', '.join(held['splits'])}; folds {held['folds']}) by minimising the log loss; the deployed "
            "models output softmax(logits / T) per view, then the views' mean. ECE: 15 equal-width bins.", "",
            *table(["data", "n", "ECE before", "ECE after", "log loss before", "log loss after", "Brier before",
                    "Brier after"], rows)]


def decision_section(calibration, evaluations):
    point, confidence = calibration.get("operating_point"), calibration.get("low_confidence")
    lines = ["## Operating point", ""]
    if not point:
        lines.append("No positive classes are set (config `evaluation.positive_classes`): no binary decision.")
    else:
        held = point["held_out"]
        lines += [f"Positive: {', '.join(point['positive_classes'])}. Decision \"positive\" when the summed calibrated "
                  f"probability of those classes is at least **{point['threshold']:.6f}**, the largest threshold "
                  f"reaching the target sensitivity {point['target_sensitivity']} on the held-out data "
                  f"(held-out sensitivity {held['sensitivity']:.4f}, specificity {held['specificity']:.4f}).", ""]
        rows = []
        for evaluation in evaluations:
            test = (evaluation.get("operating_point") or {}).get("test")
            if test:
                rows.append([evaluation["precision"], test["n"],
                             interval(test["sensitivity"], test.get("sensitivity_ci95")),
                             interval(test["specificity"], test.get("specificity_ci95")), interval(test["ppv"], None),
                             interval(test["npv"], None), f"{test['tp']}/{test['fn']}/{test['tn']}/{test['fp']}"])
        lines += ["At that threshold on the test split:", "",
                  *table(["IR", "n", "sensitivity", "specificity", "PPV", "NPV", "TP/FN/TN/FP"], rows)]
    lines += ["", "### Low confidence", ""]
    if not confidence:
        lines.append("No low-confidence threshold (config `evaluation.low_confidence_accuracy` is null).")
    else:
        held = confidence["held_out"]
        lines.append(f"`low_confidence` when the top calibrated probability is below **{confidence['threshold']:.6f}**: "
                     f"the lowest top probability at which the held-out images at or above it reach "
                     f"{confidence['target_accuracy']} accuracy (held-out coverage {held['coverage']:.4f}).")
        for evaluation in evaluations:
            test = (evaluation.get("low_confidence") or {}).get("test")
            if test:
                accuracy = test["confident_accuracy"]
                lines.append(f"- test, {evaluation['precision']} IR: {test['low_confidence']} of {test['n']} marked "
                             f"low_confidence (coverage {test['coverage']:.4f}); accuracy of the others "
                             + ("n/a" if accuracy is None else f"{accuracy:.4f}"))
    return lines


def cpu_section(evaluations):
    cpus = sorted({json.dumps(e["cpu"], sort_keys=True) if not isinstance(e["cpu"], str) else e["cpu"]
                   for e in evaluations if e.get("cpu")})
    return ["## Evaluated on", "", "- CPU: " + ("; ".join(cpus) if cpus else
                                                 "not recorded in evaluation.json (the figures above are computed "
                                                 "from cached features, on the machine that ran the pipeline)")]


def card(inputs, params, experiment):
    metrics = atomic.read_json(inputs["metrics"])
    calibration = atomic.read_json(inputs["calibration"])
    evaluations = [atomic.read_json(path) for path in inputs["evaluations"]]
    descriptions = [atomic.read_json(path) for path in inputs["irs"]]
    labels = metrics["labels"]
    lines = [f"# Model card: {experiment}{note_suffix(metrics.get('note', ''))}", "", NOT_A_DEVICE, "",
             "## Intended use", "",
             f"Research on automated classification of blood-cell images into {', '.join(labels)}: comparing "
             "methods, studying errors, and as a second look for trained staff in a research setting. Every output "
             "is a probability to be reviewed by an expert, never a diagnosis.", "",
             *data_section(inputs, params), "", *model_section(inputs, params, metrics, descriptions), "",
             *metrics_section(metrics, evaluations), "", *calibration_section(calibration, evaluations), "",
             *decision_section(calibration, evaluations), "", *cpu_section(evaluations), "",
             "## Limitations", "",
             "- Figures hold for images like the test split: the same source, staining, microscope and "
             "preparation. Other laboratories, scanners or patient populations need their own validation.",
             "- Unless the split is by patient/slide (config `split.group_regex`), images of one patient can fall "
             "into both training and test, and the test figures are then optimistic.",
             "- The intervals cover resampling of the test images only, not a new training run, another split or "
             "another data source.",
             "- Calibration and thresholds were chosen on held-out images of the same source; class frequencies "
             "differ in practice, and PPV/NPV change with prevalence.",
             "- The model sees one cell image at a time; it knows nothing of the patient, the smear or other cells.",
             ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True)
    for name in ("split-summary", "structure-summary", "manifest", "backbone-json", "metrics", "calibration", "output"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--evaluations", nargs="+", required=True, help="evaluation.json of each deployed precision")
    parser.add_argument("--ir-json", nargs="+", required=True, help="ir.json of each deployed precision")
    parser.add_argument("--selected", required=True, help="selected.json")
    for name in ("dataset", "backbone", "selection", "split"):
        parser.add_argument(f"--{name}", required=True, help="JSON of the config section's keys shown")
    args = parser.parse_args(argv)
    inputs = {"split": args.split_summary, "structure": args.structure_summary, "manifest": args.manifest,
              "backbone": args.backbone_json, "metrics": args.metrics, "calibration": args.calibration,
              "evaluations": args.evaluations, "irs": args.ir_json, "selected": args.selected}
    params = {name: json.loads(getattr(args, name)) for name in ("dataset", "backbone", "selection", "split")}
    atomic.write_text(args.output, card(inputs, params, args.experiment))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_cli(main)
