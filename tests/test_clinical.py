"""Clinical metrics, bootstrap intervals, calibration, the operating point and the model card (docs/clinical.md).

The metrics are checked against scikit-learn on fabricated predictions and every kind of
interval against a recomputation from saved predictions; the deployed models (frozen
.pb, OpenVINO IR) against softmax(logits / T) of the head on a small real model
(tests/mobilenet.py).
"""
import json
import os
import subprocess
import sys

import mobilenet
import numpy as np
import pytest
from conftest import REPO
from sklearn import metrics as sk
from test_model import LINEAR

from scripts import model_card
from scripts.core import atomic, calibration, formats, images, records
from scripts.core import head as head_lib
from scripts.core.errors import PipelineError
from scripts.core.inference import GraphModel, IrModel
from scripts.core.metrics import bootstrap_rows, probability_metrics
from scripts.deploy import evaluate_ir, ir
from scripts.model import backbone_ir, bottlenecks, freeze, retrain
from scripts.model import calibrate as calibrate_stage

LABELS = ["Benign", "Early", "Pre", "Pro"]
POSITIVE = ["Early", "Pre", "Pro"]


def fabricated(count=400, classes=4, seed=0, sharpness=2.0):
    """Labels and noisy probabilities that mostly favour the true class."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, count)
    logits = rng.normal(0, 1, (count, classes)) + sharpness * np.eye(classes)[true]
    return true, head_lib.softmax(logits)


def interval(values):
    values = [value for value in values if value is not None and np.isfinite(value)]
    return list(np.percentile(values, [2.5, 97.5]))


# ------------------------------------------------------------------ metrics
def test_every_figure_equals_scikit_learns_on_fabricated_predictions():
    true, probs = fabricated()
    predicted = probs.argmax(axis=1)
    metrics = probability_metrics(true, probs, LABELS, POSITIVE)
    assert metrics["accuracy"] == pytest.approx(sk.accuracy_score(true, predicted))
    assert metrics["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(true, predicted))
    assert metrics["macro_f1"] == pytest.approx(sk.f1_score(true, predicted, average="macro"))
    assert metrics["mcc"] == pytest.approx(sk.matthews_corrcoef(true, predicted))
    assert metrics["log_loss"] == pytest.approx(sk.log_loss(true, probs, labels=range(4)))
    assert metrics["brier"] == pytest.approx(sk.brier_score_loss(true, probs, labels=range(4)))
    assert metrics["confusion_matrix"] == sk.confusion_matrix(true, predicted).tolist()
    for index, name in enumerate(LABELS):
        entry, positive, decided = metrics["per_class"][name], true == index, predicted == index
        assert entry["sensitivity"] == pytest.approx(sk.recall_score(positive, decided))
        assert entry["specificity"] == pytest.approx(sk.recall_score(~positive, ~decided))
        assert entry["ppv"] == pytest.approx(sk.precision_score(positive, decided))
        assert entry["npv"] == pytest.approx(sk.precision_score(~positive, ~decided))
        assert entry["f1"] == pytest.approx(sk.f1_score(positive, decided))
        assert entry["roc_auc"] == pytest.approx(sk.roc_auc_score(positive, probs[:, index]))
        assert entry["average_precision"] == pytest.approx(sk.average_precision_score(positive, probs[:, index]))
    binary, positive = metrics["binary"], true > 0
    score = probs[:, 1:].sum(axis=1)
    assert binary["positives"] == positive.sum() and binary["threshold"] == 0.5
    assert binary["sensitivity"] == pytest.approx(sk.recall_score(positive, score >= 0.5))
    assert binary["specificity"] == pytest.approx(sk.recall_score(~positive, score < 0.5))
    assert binary["roc_auc"] == pytest.approx(sk.roc_auc_score(positive, score))
    assert binary["average_precision"] == pytest.approx(sk.average_precision_score(positive, score))
    assert binary["mcc"] == pytest.approx(sk.matthews_corrcoef(positive, score >= 0.5))


def test_ece_is_the_15_bin_top_label_gap():
    true, probs = fabricated(count=300, seed=3)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == true
    expected = 0.0
    for low in np.arange(15) / 15:
        inside = (confidence >= low) & (confidence < low + 1 / 15)
        if inside.any():
            expected += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    assert probability_metrics(true, probs, LABELS)["ece"] == pytest.approx(expected)


def test_every_kind_of_interval_is_a_seeded_bootstrap_of_scikit_learn_figures():
    true, probs = fabricated(count=60, seed=1, sharpness=1.0)
    probs = np.round(probs, 2)  # tied scores: the AUC counts them half, as scikit-learn does
    metrics = probability_metrics(true, probs, LABELS, POSITIVE, bootstrap_samples=150, seed=11)
    rows = np.random.default_rng(11).integers(0, len(true), size=(150, len(true)))
    np.testing.assert_array_equal(rows, bootstrap_rows(len(true), 150, 11))
    predicted, score = probs.argmax(axis=1), probs[:, 1:].sum(axis=1)

    def each(function):
        return [function(true[row], predicted[row], probs[row], score[row]) for row in rows]
    assert metrics["accuracy_ci95"] == pytest.approx(interval(each(lambda t, p, q, s: sk.accuracy_score(t, p))))
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = interval(each(lambda t, p, q, s: sk.balanced_accuracy_score(t, p)))
    assert metrics["balanced_accuracy_ci95"] == pytest.approx(expected)
    pre = metrics["per_class"]["Pre"]
    assert pre["sensitivity_ci95"] == pytest.approx(interval(each(
        lambda t, p, q, s: sk.recall_score(t == 2, p == 2) if (t == 2).any() else None)))
    assert pre["specificity_ci95"] == pytest.approx(interval(each(lambda t, p, q, s: sk.recall_score(t != 2, p != 2))))
    assert pre["roc_auc_ci95"] == pytest.approx(interval(each(lambda t, p, q, s: sk.roc_auc_score(t == 2, q[:, 2]))))
    binary = metrics["binary"]
    assert binary["sensitivity_ci95"] == pytest.approx(interval(each(lambda t, p, q, s: sk.recall_score(t > 0, s >= .5))))
    assert binary["roc_auc_ci95"] == pytest.approx(interval(each(lambda t, p, q, s: sk.roc_auc_score(t > 0, s))))
    assert metrics["bootstrap"] == {"samples": 150, "seed": 11, "level": 0.95, "method": metrics["bootstrap"]["method"]}
    low, high = metrics["accuracy_ci95"]
    assert low < metrics["accuracy"] < high  # and another seed gives another interval
    assert probability_metrics(true, probs, LABELS, bootstrap_samples=150, seed=12)["accuracy_ci95"] != [low, high]


# ------------------------------------------------------------------ calibration and thresholds
def sampled(logits, seed):
    """Labels drawn from softmax(logits): logits that are calibrated by construction."""
    probs = head_lib.softmax(logits)
    rng = np.random.default_rng(seed)
    return (rng.random(len(probs))[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)


def test_the_temperature_lowers_the_log_loss_of_overconfident_logits_and_is_one_on_calibrated_ones():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (20000, 4))
    labels = sampled(logits, 1)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.05)
    overconfident = 3.0 * logits
    temperature = calibration.fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    before = calibration.log_loss(overconfident, labels, 1.0)
    after = calibration.log_loss(overconfident, labels, temperature)
    assert after < before - 0.1
    probs = calibration.calibrated_probabilities(overconfident, temperature)
    assert probability_metrics(labels, probs, LABELS)["ece"] < probability_metrics(
        labels, head_lib.softmax(overconfident), LABELS)["ece"]
    # With views, the fitted quantity is the views' mean of softmax(logits / T), as deployed.
    views = np.stack([overconfident, overconfident + rng.normal(0, 0.5, overconfident.shape)])
    t_views = calibration.fit_temperature(views, labels)
    assert calibration.log_loss(views, labels, t_views) <= calibration.log_loss(views, labels, temperature) + 1e-9


def test_the_threshold_is_the_largest_that_meets_the_target_sensitivity_on_held_out_data():
    true, probs = fabricated(count=500, seed=5, sharpness=1.5)
    score, is_positive = probs[:, 1:].sum(axis=1), true > 0
    for target in (0.9, 0.95, 0.99, 1.0):
        threshold = calibration.sensitivity_threshold(score, is_positive, target)
        assert (score[is_positive] >= threshold).mean() >= target
        higher = np.nextafter(threshold, 1.0)
        assert (score[is_positive] >= higher).mean() < target  # no larger threshold meets it


def test_low_confidence_threshold_gives_the_largest_confident_set_meeting_the_target_accuracy():
    true, probs = fabricated(count=500, seed=6, sharpness=1.5)
    threshold = calibration.confidence_threshold(probs, true, 0.9)
    confident = probs.max(axis=1) >= threshold
    assert (probs.argmax(axis=1)[confident] == true[confident]).mean() >= 0.9
    for lower in np.unique(probs.max(axis=1))[np.unique(probs.max(axis=1)) < threshold]:
        wider = probs.max(axis=1) >= lower
        assert (probs.argmax(axis=1)[wider] == true[wider]).mean() < 0.9
    figures = calibration.confident_figures(probs, true, threshold)
    assert figures["coverage"] == pytest.approx(confident.mean()) and 0 < figures["coverage"] < 1


def write_held_out(path, logits, labels, splits="validation"):
    formats.write_npz(path, logits=np.asarray(logits, np.float32), labels=np.asarray(labels, np.int64),
                      paths=np.array([f"x/{i}.jpg" for i in range(len(labels))]),
                      folds=np.zeros(len(labels), np.int64), splits=np.full(len(labels), splits))


def test_calibrate_writes_temperature_operating_point_and_refuses_the_test_split(tmp_path):
    rng = np.random.default_rng(2)
    true = rng.integers(0, 4, 600)
    logits = 4.0 * (rng.normal(0, 1, (600, 4)) + 1.5 * np.eye(4)[true])  # overconfident
    write_held_out(tmp_path / "oof.npz", logits, true)
    formats.write_labels(tmp_path / "labels.json", LABELS)
    settings = {"positive_classes": POSITIVE, "target_sensitivity": 0.99, "low_confidence_accuracy": 0.95}
    record = calibrate_stage.calibrate(str(tmp_path / "oof.npz"), str(tmp_path / "labels.json"), settings,
                                       str(tmp_path / "calibration.json"))
    held = record["held_out"]
    assert record["temperature"] > 1.5 and held["after"]["log_loss"] < held["before"]["log_loss"]
    assert held["after"]["ece"] < held["before"]["ece"]
    point = record["operating_point"]
    assert point["held_out"]["sensitivity"] >= 0.99 and point["positive_classes"] == POSITIVE
    assert record["low_confidence"]["held_out"]["confident_accuracy"] >= 0.95
    write_held_out(tmp_path / "bad.npz", logits, true, splits="test")
    with pytest.raises(PipelineError, match="never sees the test split"):
        calibrate_stage.calibrate(str(tmp_path / "bad.npz"), str(tmp_path / "labels.json"), settings,
                                  str(tmp_path / "c2.json"))


# ------------------------------------------------------------------ the deployed models
TEMPERATURE = 2.5
EVALUATION = {"positive_classes": ["square", "triangle"], "bootstrap_samples": 200, "seed": 3}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A head on real MobileNet features, a calibration, the frozen model and the FP32 IR with two views."""
    root = tmp_path_factory.mktemp("clinical")
    setup = mobilenet.build(root)
    backbone = str(root / "backbone" / "FP32" / "backbone.xml")
    contract = images.preprocessing_contract(224, (-1.0, 1.0), 1.0, "bilinear")
    backbone_ir.convert(setup["pb"], setup["json"], "FP32", backbone, [setup["train"]], 4, contract, 2)
    features = {}
    for split, kind in (("train", "plain"), ("validation", "plain"), ("test", "plain"), ("test", "view4")):
        features[split, kind] = str(root / f"{split}-{kind}.npz")
        bottlenecks.compute_shard(backbone, setup["json"], setup[split], features[split, kind], kind, 1.0,
                                  "bilinear", 8, 2)
    names = ("head", "history", "tensorboard", "metrics", "predictions", "oof")
    files = ("head.npz", "history.csv", "tb", "metrics.json", "test_predictions.npz", "oof_predictions.npz")
    outputs = {name: str(root / "model" / file) for name, file in zip(names, files)}
    retrain.run({"train": features["train", "plain"], "validation": features["validation", "plain"],
                 "test": features["test", "plain"], "augmented": [], "train_views": [], "validation_views": [],
                 "test_views": [features["test", "view4"]]},
                setup["labels"], setup["json"], {"train": LINEAR, "selection": {"folds": 3}}, outputs, "x", EVALUATION)
    calibration_json = str(root / "model" / "calibration.json")
    # A set temperature (the fitted one of 12 tiny held-out images would be far from 1 or not).
    atomic.write_json(calibration_json, {
        "temperature": TEMPERATURE,
        "operating_point": {"positive_classes": EVALUATION["positive_classes"], "target_sensitivity": 0.99,
                            "threshold": 0.6},
        "low_confidence": {"target_accuracy": 0.95, "threshold": 0.7}})
    tests = [features["test", "plain"], features["test", "view4"]]
    model = {name: str(root / "model" / file) for name, file in (
        ("pb", "frozen_model.pb"), ("json", "model.json"), ("labels", "labels.json"), ("check", "check.json"))}
    settings = {"views": [0, 4], "central_fraction": 1.0, "resize": "bilinear", "check_images": 6, "tolerance": 1e-3}
    freeze.freeze({"backbone_pb": setup["pb"], "backbone_json": setup["json"], "head": outputs["head"],
                   "labels": setup["labels"], "test_tfrecords": [setup["test"]], "test_features": tests[0],
                   "test_view_features": tests[1:], "calibration": calibration_json}, model, settings, 2)
    xml, ir_json = str(root / "ir" / "model.xml"), str(root / "ir" / "ir.json")
    ir.export({"backbone_xml": backbone, "head": outputs["head"], "backbone_json": setup["json"],
               "labels": setup["labels"], "test_tfrecords": [setup["test"]], "test_features": tests[0],
               "test_view_features": tests[1:], "calibration": calibration_json},
              {"xml": xml, "json": ir_json}, {**settings, "precision": "FP32"}, 2)
    return {"root": root, "setup": setup, "outputs": outputs, "model": model, "xml": xml, "ir_json": ir_json,
            "tests": tests, "calibration": calibration_json}


def test_metrics_json_intervals_are_a_bootstrap_of_the_saved_test_predictions(deployed):
    metrics = atomic.read_json(deployed["outputs"]["metrics"])
    test = metrics["splits"]["test"]
    saved = formats.read_predictions(deployed["outputs"]["predictions"])
    true, probs = saved["labels"], saved["probabilities"]
    rows = np.random.default_rng(EVALUATION["seed"]).integers(0, len(true), size=(EVALUATION["bootstrap_samples"],
                                                                                  len(true)))
    assert test["accuracy_ci95"] == pytest.approx(interval(
        [sk.accuracy_score(true[row], probs[row].argmax(axis=1)) for row in rows]))
    score = probs[:, 1:].sum(axis=1)
    assert test["binary"]["roc_auc_ci95"] == pytest.approx(interval(
        [sk.roc_auc_score(true[row] > 0, score[row]) if 0 < (true[row] > 0).sum() < len(row) else None
         for row in rows]))
    assert "accuracy_ci95" not in metrics["splits"]["train"] and "accuracy_ci95" in metrics["splits"]["validation"]
    assert saved["view_logits"].shape == (2, len(true), 3)
    oof = formats.read_npz(deployed["outputs"]["oof"])
    assert set(oof) >= {"logits", "view_logits", "labels", "paths", "folds", "splits"} and set(oof["splits"]) == {"train", "validation"}
    assert oof["logits"].dtype == np.float32 and oof["labels"].dtype == np.int64


def head_reference(deployed, temperature):
    head = head_lib.load(deployed["outputs"]["head"])
    views = [formats.read_bottlenecks(path)["features"] for path in deployed["tests"]]
    return np.mean([head_lib.softmax(head_lib.logits(head, view) / temperature) for view in views], axis=0)


def first_pixels(deployed, count=4):
    contract = atomic.read_json(deployed["model"]["json"])["preprocessing"]
    examples = list(records.read_examples([deployed["setup"]["test"]]))[:count]
    return np.stack([images.preprocess_image(example["encoded"], contract) for example in examples])


def test_the_frozen_model_and_the_ir_output_softmax_of_logits_over_t(deployed):
    expected = head_reference(deployed, TEMPERATURE)
    plain = head_reference(deployed, 1.0)
    assert np.abs(expected - plain).max() > 0.01  # the temperature makes a visible difference
    pixels = first_pixels(deployed)
    graph = GraphModel(deployed["model"]["pb"], "input", "final_result")
    np.testing.assert_allclose(graph(pixels), expected[:4], atol=2e-4)
    model = IrModel(deployed["xml"], 2)
    np.testing.assert_allclose(np.concatenate([model(pixels[i:i + 1]) for i in range(4)]), expected[:4], atol=2e-4)
    import openvino as ov
    read = ov.Core().read_model(deployed["xml"])
    section = {key: read.get_rt_info([ir.RT_INFO_SECTION, key]).astype(str)
               for key in ("calibration", "operating_point", "low_confidence")}
    assert json.loads(section["calibration"])["temperature"] == TEMPERATURE
    assert json.loads(section["operating_point"])["threshold"] == 0.6
    assert json.loads(section["low_confidence"])["threshold"] == 0.7
    for description in (atomic.read_json(deployed["model"]["json"]), atomic.read_json(deployed["ir_json"])):
        assert description["calibration"]["temperature"] == TEMPERATURE
        assert description["operating_point"]["threshold"] == 0.6 and description["low_confidence"]["threshold"] == 0.7


def test_evaluation_json_reports_calibration_and_the_operating_point_from_saved_predictions(deployed, tmp_path):
    output, saved = tmp_path / "evaluation.json", tmp_path / "predictions.npz"
    evaluation = evaluate_ir.evaluate(deployed["ir_json"], deployed["outputs"]["head"], deployed["tests"],
                                      deployed["outputs"]["predictions"], str(output), 0.995, None, EVALUATION,
                                      str(saved))
    predictions = formats.read_predictions(saved)
    np.testing.assert_allclose(predictions["probabilities"], head_reference(deployed, TEMPERATURE), atol=1e-6)
    true, probs = predictions["labels"], predictions["probabilities"]
    figures = evaluation["calibration"]
    assert figures["temperature"] == TEMPERATURE and figures["before"]["ece"] != figures["after"]["ece"]
    assert evaluation["agreement"]["max_abs_probability_difference"] < 1e-5  # calibrated on both sides
    point = evaluation["operating_point"]["test"]
    score, positive = probs[:, 1:].sum(axis=1), true > 0
    assert point["threshold"] == 0.6
    assert point["sensitivity"] == pytest.approx(sk.recall_score(positive, score >= 0.6))
    rows = bootstrap_rows(len(true), EVALUATION["bootstrap_samples"], EVALUATION["seed"])
    assert point["specificity_ci95"] == pytest.approx(interval(
        [sk.recall_score(~positive[row], score[row] < 0.6) if (~positive[row]).any() else None for row in rows]))
    low = evaluation["low_confidence"]["test"]
    assert low["low_confidence"] == int((probs.max(axis=1) < 0.7).sum())


def test_predict_prints_the_decision_and_low_confidence(deployed, tmp_path):
    folder = deployed["root"] / "test"
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "predict.py"), "--model",
                             deployed["model"]["pb"], "--csv", str(tmp_path / "p.csv"), "--json",
                             str(tmp_path / "p.json"), str(folder)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "p.json").read_text())
    lines = result.stdout.splitlines()
    assert len(lines) == len(report["predictions"]) == 15
    assert report["operating_point"]["threshold"] == 0.6
    for line, entry in zip(lines, report["predictions"]):
        positive = sum(top["probability"] for top in entry["top"] if top["label"] in ("square", "triangle"))
        assert entry["positive_probability"] == pytest.approx(positive, abs=1e-6)
        assert entry["decision"] == ("positive" if positive >= 0.6 else "negative")
        assert f"decision {entry['decision']} (p={positive:.4f})" in line
        assert entry["low_confidence"] == (entry["top"][0]["probability"] < 0.7)
        assert line.endswith("low_confidence") == entry["low_confidence"]
    rows = atomic.read_table(tmp_path / "p.csv")
    assert {row["decision"] for row in rows} <= {"positive", "negative"} and rows[0]["low_confidence"] in ("yes", "no")


def test_the_model_card_names_its_sources_intervals_and_that_it_is_no_diagnostic_device(deployed, tmp_path):
    evaluation = tmp_path / "evaluation.json"
    evaluate_ir.evaluate(deployed["ir_json"], deployed["outputs"]["head"], deployed["tests"],
                         deployed["outputs"]["predictions"], str(evaluation), None, None, EVALUATION)
    atomic.write_json(tmp_path / "split.json", {"train": {"circle": 12}, "validation": {"circle": 4},
                                                "test": {"circle": 5}})
    atomic.write_json(tmp_path / "structure.json", {"rejects": 1, "duplicates": 2})
    atomic.write_table(tmp_path / "manifest.tsv", ["path", "label", "sha256"], [["a.jpg", "circle", "ab" * 32]])
    calibration_json = tmp_path / "calibration.json"
    write_held_out(tmp_path / "oof.npz", np.eye(3)[[0, 1, 2, 0]] * 3, [0, 1, 2, 1])
    calibrate_stage.calibrate(str(tmp_path / "oof.npz"), deployed["setup"]["labels"],
                              {"positive_classes": ["square", "triangle"], "target_sensitivity": 0.99,
                               "low_confidence_accuracy": 0.9}, str(calibration_json))
    inputs = {"split": str(tmp_path / "split.json"), "structure": str(tmp_path / "structure.json"),
              "manifest": str(tmp_path / "manifest.tsv"), "backbone": deployed["setup"]["json"],
              "metrics": deployed["outputs"]["metrics"], "calibration": str(calibration_json),
              "evaluations": [str(evaluation)], "irs": [deployed["ir_json"]], "selected": None}
    params = {"dataset": {"source": "../shared/data/x", "sha256": None, "layout": "folders", "class_map": {}},
              "backbone": {"kind": "frozen_graph", "source": "w.tgz", "sha256": "cd" * 32},
              "selection": {"metric": "validation_accuracy"}, "split": {"validation": 0.1}}
    text = model_card.card(inputs, params, "x")
    count, fingerprint = model_card.data_fingerprint(inputs["manifest"])
    assert count == 1 and fingerprint in text and "cd" * 32 in text
    assert "research tool, not a diagnostic device" in text
    test = atomic.read_json(deployed["outputs"]["metrics"])["splits"]["test"]
    assert model_card.interval(test["accuracy"], test["accuracy_ci95"]) in text
    assert "Temperature T = " in text and "## Limitations" in text and "## Intended use" in text
