"""Cross-validated selection, the one-standard-error rule and the refit (docs/selection.md).

Small Gaussian feature sets written as real bottleneck files; no backbone is run.
"""
import numpy as np
import pytest

from scripts.core import atomic, crossval, formats
from scripts.core import head as head_lib
from scripts.core.errors import PipelineError
from scripts.model import retrain, select

LINEAR = {"head": "linear", "l2": "auto", "class_weighting": "none", "max_iterations": 200}
MLP = {"head": "mlp", "hidden_units": 8, "dropout": 0.0, "optimizer": "adam", "learning_rate": 0.05, "epochs": 60,
       "batch_size": 16, "l2": 0.0001, "class_weighting": "none", "patience": 5, "seed": 0}
LABELS = ["a", "b", "c"]


def blobs(count, seed, offset=0):
    """Three separable-ish classes in 6 dimensions, as a bottleneck dict."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    features = rng.normal(size=(count, 6)) + 2.0 * np.eye(3, 6)[labels]
    hashes = [f"{offset + index:064x}" for index in range(count)]
    return features.astype(np.float32), labels, hashes, [f"img/{offset + index}.jpg" for index in range(count)]


@pytest.fixture(scope="module")
def feature_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    paths = {}
    for split, count, offset in (("train", 45, 0), ("validation", 15, 1000), ("test", 12, 2000)):
        paths[split] = str(folder / f"{split}.npz")
        formats.write_bottlenecks(paths[split], *blobs(count, offset, offset))
    formats.write_labels(folder / "labels.json", LABELS)
    atomic.write_json(folder / "backbone.json", {"untrained": False})
    return folder, paths


def run_retrain(feature_files, folder, train, folds=5, manifest=None):
    source, paths = feature_files
    paths = {**paths, "augmented": [], "train_views": [], "validation_views": [], "test_views": [],
             "manifest": manifest}
    names = {"head": "head.npz", "history": "history.csv", "tensorboard": "tb", "metrics": "metrics.json",
             "predictions": "test_predictions.npz", "oof": "oof_predictions.npz"}
    outputs = {key: str(folder / name) for key, name in names.items()}
    settings = {"train": train, "selection": {"folds": folds}, "augment": {"copies": 0, "test_time": "none"}}
    metrics = retrain.run(paths, str(source / "labels.json"), str(source / "backbone.json"), settings, outputs, "x")
    return metrics, outputs


# ------------------------------------------------------------------ folds
def test_folds_are_stratified_and_reproducible():
    labels = np.array([0] * 20 + [1] * 10 + [2] * 5)
    folds = crossval.fold_assignment(labels, 5)
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    for fold in range(5):  # every fold holds the classes in their proportions
        assert list(np.bincount(labels[folds == fold], minlength=3)) == [4, 2, 1]
    assert np.array_equal(folds, crossval.fold_assignment(labels, 5))


def test_groups_stay_whole_in_one_fold():
    labels = np.repeat(np.arange(2), 30)
    groups = np.array([f"patient{index // 3}" for index in range(60)])  # 3 images per patient
    folds = crossval.fold_assignment(labels, 5, groups)
    for group in np.unique(groups):
        assert len(set(folds[groups == group])) == 1, group
    assert len(np.unique(folds)) == 5


def test_folds_are_capped_by_the_smallest_class_and_a_single_image_class_is_refused():
    assert crossval.usable_folds([0, 0, 0, 1, 1, 1], 5) == 3
    assert crossval.usable_folds([0, 0, 1, 1, 1], 5, groups=["g", "h", "i", "i", "j"]) == 2  # groups, not images
    with pytest.raises(PipelineError, match="at least 2"):
        crossval.usable_folds([0, 0, 0, 1], 5)


def test_fold_metrics_match_hand_checked_values():
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    values = crossval.fold_metrics(np.array([0, 0, 1, 1]), probabilities, 2)
    assert values["accuracy"] == 0.5 and values["balanced_accuracy"] == 0.5
    assert values["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.8, 0.3])))
    summary = crossval.summarise([values, {**values, "accuracy": 1.0}])
    assert summary["accuracy"] == {"mean": 0.75, "std": 0.25, "folds": [0.5, 1.0]}
    assert crossval.standard_error(summary["accuracy"]) == pytest.approx(np.std([0.5, 1.0], ddof=1) / np.sqrt(2))


# ------------------------------------------------------------------ the tie rule
def candidate(mean, std, head="linear", mode="head", name="accuracy"):
    folds = [mean - std, mean + std]
    return {"mode": mode, "settings": {"train": {"head": head}}, "cv": {name: {"mean": mean, "std": std,
                                                                             "folds": folds}}}


def test_the_simplest_candidate_within_one_standard_error_wins():
    # se = std / sqrt(k - 1) = std with two folds: the mlp's 0.92 +- 0.03 puts the threshold at 0.89
    candidates = {"crop1-linear": candidate(0.90, 0.01), "crop1-mlp": candidate(0.92, 0.03, "mlp"),
                  "crop0.875-linear": candidate(0.895, 0.01)}
    chosen, best, threshold, _ = select.select(candidates, "cv_accuracy")
    assert best == "crop1-mlp" and threshold == pytest.approx(0.89) and chosen == "crop1-linear"
    candidates["crop1-linear"] = candidate(0.88, 0.01)  # now outside: the next simplest in sweep order
    assert select.select(candidates, "cv_accuracy")[0] == "crop0.875-linear"
    candidates["crop0.875-linear"] = candidate(0.85, 0.01)  # no linear head is within: the best stands
    assert select.select(candidates, "cv_accuracy")[0] == "crop1-mlp"


def test_exact_ties_go_to_the_simpler_head_then_to_sweep_order():
    candidates = {"a-mlp": candidate(0.9, 0.0, "mlp"), "b-linear": candidate(0.9, 0.0), "c-linear": candidate(0.9, 0.0)}
    assert select.select(candidates, "cv_accuracy")[0] == "b-linear"


def test_log_loss_is_better_when_lower():
    candidates = {"linear": candidate(0.50, 0.01, name="log_loss"), "mlp": candidate(0.30, 0.01, "mlp", name="log_loss")}
    chosen, best, threshold, _ = select.select(candidates, "cv_log_loss")
    assert chosen == best == "mlp" and threshold == pytest.approx(0.31)


def test_a_fine_tuned_candidate_is_scored_on_its_validation_split():
    finetuned = {"mode": "finetune", "settings": {"train": {"head": "linear"}},
                 "splits": {"validation": {"accuracy": 0.99, "loss": 0.1, "per_class": {
                     "a": {"recall": 1.0, "support": 3}, "b": {"recall": 0.5, "support": 2}, "c": {"recall": 0, "support": 0}}}}}
    score = select.candidate_score(finetuned, "cv_balanced_accuracy")
    assert score == {"mean": 0.75, "std": 0.0, "se": 0.0, "folds": 1, "source": "validation split", "complexity": 2}
    assert select.select({"head": candidate(0.97, 0.02), "tuned": finetuned}, "cv_accuracy")[0] == "tuned"
    assert select.select({"head": candidate(0.99, 0.02), "tuned": finetuned}, "cv_accuracy")[0] == "head"  # a tie


# ------------------------------------------------------------------ head settings
def test_a_head_kind_takes_exactly_its_own_keys():
    retrain.check_head_settings(LINEAR)
    retrain.check_head_settings(MLP)
    with pytest.raises(PipelineError, match="not read by this head kind: learning_rate"):
        retrain.check_head_settings({**LINEAR, "learning_rate": 0.1})
    with pytest.raises(PipelineError, match="missing: patience"):
        retrain.check_head_settings({key: value for key, value in MLP.items() if key != "patience"})
    with pytest.raises(PipelineError, match="'svm' is not one of linear, mlp"):
        retrain.check_head_settings({"head": "svm"})


# ------------------------------------------------------------------ cross-validation in retrain, and the refit
def test_retrain_cross_validates_and_refits_a_linear_head_on_train_and_validation(feature_files, tmp_path):
    metrics, outputs = run_retrain(feature_files, tmp_path, LINEAR)
    cv = metrics["cv"]
    assert cv["folds"] == 5 and cv["images"] == 60 and not cv["grouped"]
    for name in crossval.METRICS:
        assert len(cv[name]["folds"]) == 5 and cv[name]["mean"] == pytest.approx(np.mean(cv[name]["folds"]))
    oof = formats.read_npz(outputs["oof"])
    assert oof["logits"].dtype == np.float32 and oof["logits"].shape == (60, 3)
    assert oof["labels"].dtype == np.int64 and oof["folds"].dtype == np.int64
    assert list(oof["splits"]) == ["train"] * 45 + ["validation"] * 15 and oof["paths"][45] == "img/1000.jpg"
    # Each fold's figures come from the out-of-fold logits: rows no fold model saw while training.
    for fold in range(5):
        rows = oof["folds"] == fold
        accuracy = float((oof["logits"][rows].argmax(axis=1) == oof["labels"][rows]).mean())
        assert accuracy == pytest.approx(cv["accuracy"]["folds"][fold])
    # The refit: the same as one fit on all 60 training + validation rows, with C=1's l2 for 60 images.
    source, paths = feature_files
    data = {"train": formats.concatenate_bottlenecks([formats.read_bottlenecks(paths[split])
                                                      for split in ("train", "validation")]),
            "validation": formats.empty_bottlenecks(6)}
    expected, _, _ = retrain.train(data, 3, {**LINEAR, "l2": 1 / 60}, log=lambda *_: None)
    head = head_lib.load(outputs["head"])
    for key in expected:
        np.testing.assert_array_equal(head[key], expected[key])
    test = formats.read_bottlenecks(paths["test"])
    predicted = head_lib.probabilities(head, test["features"]).argmax(axis=1)
    assert metrics["splits"]["test"]["accuracy"] == pytest.approx(float((predicted == test["labels"]).mean()))
    assert metrics["splits"]["validation"]["out_of_fold"] and metrics["splits"]["validation"]["n"] == 15


def test_an_mlp_refit_runs_the_folds_median_best_epoch(feature_files, tmp_path):
    metrics, outputs = run_retrain(feature_files, tmp_path, MLP, folds=3)
    best_epochs = metrics["cv"]["best_epochs"]
    assert len(best_epochs) == 3
    assert metrics["training"]["epochs_run"] == max(1, round(float(np.median(best_epochs))))
    assert metrics["training"]["monitored"] == "fixed epochs"
    assert "hidden_w" in head_lib.load(outputs["head"])


def test_a_manifest_group_column_keeps_groups_in_one_fold(feature_files, tmp_path):
    source, paths = feature_files
    hashes = [*formats.read_bottlenecks(paths["train"])["sha256"], *formats.read_bottlenecks(paths["validation"])["sha256"]]
    rows = [[f"img/{index}.jpg", sha, f"g{index % 12}"] for index, sha in enumerate(hashes)]
    atomic.write_table(tmp_path / "manifest.tsv", ["path", "sha256", "group"], rows)
    metrics, outputs = run_retrain(feature_files, tmp_path, LINEAR, manifest=str(tmp_path / "manifest.tsv"))
    assert metrics["cv"]["grouped"] and metrics["cv"]["groups"] == 12
    assert metrics["cv"]["folds"] == 4  # each class has 4 groups
    folds = formats.read_npz(outputs["oof"])["folds"]
    for group in range(12):
        assert len({folds[index] for index in range(60) if index % 12 == group}) == 1
    atomic.write_table(tmp_path / "plain.tsv", ["path", "sha256"], [row[:2] for row in rows])
    assert retrain.manifest_groups(str(tmp_path / "plain.tsv"), hashes) is None  # no column: plain stratified folds


def test_an_mlp_fold_stops_early_on_rows_outside_its_held_out_fold():
    labels = np.repeat(np.arange(3), 20)
    assignment = crossval.fold_assignment(labels, 5)
    held_out, rows = np.flatnonzero(assignment == 0), np.flatnonzero(assignment != 0)
    train_rows, watched = retrain.early_stopping_split(rows, labels, None, 5)
    assert not set(watched) & set(held_out) and not set(train_rows) & set(watched)
    assert sorted([*train_rows, *watched]) == sorted(rows)
    assert list(np.bincount(labels[watched], minlength=3)) == [4, 4, 4]  # 1/(k-1) of the 48 rows, stratified
