"""Model stages on real TensorFlow: backbones, bottlenecks, retraining, freezing, predicting.

Uses the real ImageNet-pretrained MobileNet V1 frozen graph from ../shared/data/weights
and a small synthetic image set; the untrained Inception V3 has its own test.
"""
import csv
import hashlib
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA
from scripts import backbone, bottlenecks, freeze, head as head_lib, retrain, synthetic, tfrecords
from scripts.core.errors import PipelineError
from scripts.core.metrics import classification_metrics

MOBILENET = os.path.join(SHARED_DATA, "weights", "mobilenet_v1_0.25_224_frozen.tgz")
MOBILENET_MEMBER = "mobilenet_v1_0.25_224/frozen_graph.pb"
TRAIN_SETTINGS = {"hidden_units": 0, "dropout": 0.0, "optimizer": "adam", "learning_rate": 0.01,
                  "epochs": 60, "batch_size": 16, "l2": 0.0001, "class_weighting": "none",
                  "early_stopping_patience": 20, "seed": 0}


def manifest_rows(image_dir, labels):
    rows = []
    for index, label in enumerate(labels):
        for name in sorted(os.listdir(os.path.join(image_dir, label))):
            path = os.path.join(image_dir, label, name)
            with open(path, "rb") as handle:
                sha = hashlib.sha256(handle.read()).hexdigest()
            rows.append({"path": path, "label": label, "label_index": index, "sha256": sha,
                         "height": 64, "width": 64})
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """MobileNet backbone.pb + TFRecords and bottlenecks of 3 synthetic classes per split."""
    root = tmp_path_factory.mktemp("model")
    with tarfile.open(MOBILENET) as archive:
        archive.extractall(root / "mobilenet", filter="data")
    backbone.prepare("frozen_graph", str(root / "mobilenet"), str(root / "backbone.pb"),
                     str(root / "backbone.json"), 224, (-1.0, 1.0), False, MOBILENET_MEMBER,
                     "input", "MobilenetV1/Logits/AvgPool_1a/AvgPool")
    labels = list(synthetic.SHAPES[:3])
    paths = {}
    for split, (count, seed) in {"train": (12, 0), "validation": (4, 1), "test": (5, 2)}.items():
        synthetic.generate(str(root / split), 3, count, 64, seed)
        paths[split] = str(root / f"{split}.tfrecord")
        tfrecords.write_shard(manifest_rows(str(root / split), labels), paths[split])
        bottlenecks.compute_shard(str(root / "backbone.pb"), str(root / "backbone.json"), paths[split],
                                  str(root / "bottlenecks" / f"{split}.npz"), batch_size=8, threads=2)
    (root / "labels.txt").write_text("\n".join(labels) + "\n")
    return root


def test_frozen_graph_backbone_is_cut_at_the_bottleneck_with_a_free_batch(setup):
    info = bottlenecks.atomic.read_json(setup / "backbone.json")
    assert info["bottleneck_size"] == 256 and info["untrained"] is False
    run = bottlenecks.TensorFlowBackbone(str(setup / "backbone.pb"), info, 1)
    assert run(np.zeros((3, 224, 224, 3), np.float32)).shape == (3, 256)
    nodes = {node.name for node in backbone.load_graph_def(str(setup / "backbone.pb")).node}
    assert "MobilenetV1/Predictions/Reshape_1" not in nodes  # the ImageNet head is cut off


def test_a_missing_tensor_is_named(setup):
    with pytest.raises(PipelineError, match=r"backbone.bottleneck_tensor: the graph has no node 'nope'"):
        backbone.prepare("frozen_graph", str(setup / "mobilenet"), str(setup / "x.pb"), str(setup / "x.json"),
                         224, (-1.0, 1.0), False, MOBILENET_MEMBER, "input", "nope")
    assert not (setup / "x.pb").exists()


def test_bottlenecks_cover_every_image_in_order_and_are_reproducible(setup, tmp_path):
    data = bottlenecks.load_bottlenecks(setup / "bottlenecks" / "train.npz")
    examples = list(tfrecords.read_examples([str(setup / "train.tfrecord")]))
    assert data["features"].shape == (36, 256)
    assert list(data["sha256"]) == [example["sha256"] for example in examples]
    again = tmp_path / "again.npz"
    bottlenecks.compute_shard(str(setup / "backbone.pb"), str(setup / "backbone.json"),
                              str(setup / "train.tfrecord"), str(again), batch_size=8, threads=2)
    assert np.array_equal(bottlenecks.load_bottlenecks(again)["features"], data["features"])
    # A different batch size regroups the work but must not change the features beyond float noise.
    other = tmp_path / "other.npz"
    bottlenecks.compute_shard(str(setup / "backbone.pb"), str(setup / "backbone.json"),
                              str(setup / "train.tfrecord"), str(other), batch_size=5, threads=1)
    np.testing.assert_allclose(bottlenecks.load_bottlenecks(other)["features"], data["features"],
                               rtol=1e-4, atol=1e-4)


def test_gather_concatenates_shards_in_the_given_order(setup, tmp_path):
    parts = [setup / "bottlenecks" / f"{split}.npz" for split in ("validation", "test")]
    bottlenecks.gather([str(part) for part in parts], str(tmp_path / "all.npz"))
    merged = bottlenecks.load_bottlenecks(tmp_path / "all.npz")
    first = bottlenecks.load_bottlenecks(parts[0])
    assert len(merged["labels"]) == 12 + 15
    assert np.array_equal(merged["features"][:12], first["features"])


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    params = retrain.init_params(rng, 5, 4, 3)
    params["logits_w"] *= 100  # away from the tiny initial scale, so every term matters
    x, y = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    weights = np.array([1.0, 2.0, 0.5])
    _, grads = retrain.forward_backward(params, x, y, weights, 0.01, 0.0, rng)
    for key in params:
        index = tuple(rng.integers(0, size) for size in params[key].shape)
        saved = params[key][index]
        params[key][index] = saved + 1e-6
        plus, _ = retrain.forward_backward(params, x, y, weights, 0.01, 0.0, rng)
        params[key][index] = saved - 1e-6
        minus, _ = retrain.forward_backward(params, x, y, weights, 0.01, 0.0, rng)
        params[key][index] = saved
        assert grads[key][index] == pytest.approx((plus - minus) / 2e-6, rel=1e-4, abs=1e-8), key


@pytest.mark.parametrize("overrides", [
    {}, {"optimizer": "sgd", "learning_rate": 0.1}, {"optimizer": "momentum", "learning_rate": 0.05},
    {"hidden_units": 32, "dropout": 0.3}, {"class_weighting": "balanced"}])
def test_training_learns_the_synthetic_classes(setup, overrides, tmp_path):
    settings = {**TRAIN_SETTINGS, **overrides}
    metrics = retrain.run(str(setup / "bottlenecks"), str(setup / "labels.txt"), settings, str(tmp_path),
                          "default", False)
    assert metrics["splits"]["train"]["accuracy"] >= 0.9
    assert metrics["splits"]["test"]["accuracy"] >= 0.6  # pretrained features, 15 test images
    with open(tmp_path / "history.csv", newline="") as handle:
        history = list(csv.DictReader(handle))
    assert len(history) == metrics["training"]["epochs_run"]
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [event.step for event in events.Scalars("validation_loss")] == list(range(1, len(history) + 1))


def test_training_is_reproducible_and_depends_on_the_seed(setup, tmp_path):
    heads = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        retrain.run(str(setup / "bottlenecks"), str(setup / "labels.txt"),
                    {**TRAIN_SETTINGS, "hidden_units": 16, "seed": seed}, str(tmp_path / name), "x", False)
        heads.append(head_lib.load(tmp_path / name / "head.npz"))
    assert all(np.array_equal(heads[0][key], heads[1][key]) for key in heads[0])
    assert not np.array_equal(heads[0]["hidden_w"], heads[2]["hidden_w"])


def test_early_stopping_keeps_the_best_validation_epoch(setup):
    data = {split: bottlenecks.load_bottlenecks(setup / "bottlenecks" / f"{split}.npz")
            for split in ("train", "validation", "test")}
    _, history, summary = retrain.train(data, 3, {**TRAIN_SETTINGS, "learning_rate": 0.05, "epochs": 300,
                                                  "early_stopping_patience": 5}, log=lambda *_: None)
    losses = [row[3] for row in history]
    assert summary["stopped_early"] and summary["epochs_run"] < 300
    assert summary["best_epoch"] == 1 + int(np.argmin(losses))
    assert summary["epochs_run"] - summary["best_epoch"] == 5


def test_metrics_on_a_hand_checked_example():
    metrics = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


@pytest.fixture(scope="module")
def frozen(setup):
    retrain.run(str(setup / "bottlenecks"), str(setup / "labels.txt"), {**TRAIN_SETTINGS, "hidden_units": 8},
                str(setup / "model"), "default", False)
    freeze.freeze(str(setup / "backbone.pb"), str(setup / "backbone.json"), str(setup / "model" / "head.npz"),
                  str(setup / "labels.txt"), [str(setup / "test.tfrecord")],
                  str(setup / "bottlenecks" / "test.npz"), str(setup / "model"))
    return setup / "model"


def test_the_frozen_model_reproduces_the_head(frozen):
    check = bottlenecks.atomic.read_json(frozen / "freeze_check.json")
    assert check["images"] == 15 and check["top1_disagreements"] == 0
    assert check["max_abs_probability_difference"] < 1e-4
    contract = bottlenecks.atomic.read_json(frozen / "model.json")
    assert contract["input_node"] == "input" and contract["output_node"] == "final_result"
    assert contract["preprocessing"]["input_shape"] == [None, 224, 224, 3]
    assert contract["labels"] == ["circle", "square", "triangle"] and contract["hidden_units"] == 8
    with np.load(frozen / "test_predictions.npz") as reference:  # the IRs' reference
        assert reference["probabilities"].shape == (15, 3)
        np.testing.assert_allclose(reference["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
        assert float(reference["accuracy"]) == float((reference["probabilities"].argmax(1) == reference["labels"]).mean())


def test_a_head_that_does_not_match_its_bottlenecks_fails_the_check_and_leaves_no_model(setup, frozen, tmp_path):
    tampered = head_lib.load(frozen / "head.npz")
    tampered["logits_b"] = tampered["logits_b"] + np.array([5.0, 0.0, 0.0], np.float32)
    head_lib.save(str(tmp_path / "head.npz"), tampered)
    cached = bottlenecks.load_bottlenecks(setup / "bottlenecks" / "test.npz")
    bottlenecks.save_bottlenecks(str(tmp_path / "test.npz"), cached["features"] + 1.0, cached["labels"],
                                 cached["sha256"], cached["filenames"])
    with pytest.raises(PipelineError, match="freeze check: frozen model differs"):
        freeze.freeze(str(setup / "backbone.pb"), str(setup / "backbone.json"), str(tmp_path / "head.npz"),
                      str(setup / "labels.txt"), [str(setup / "test.tfrecord")], str(tmp_path / "test.npz"),
                      str(tmp_path / "out"))
    assert not (tmp_path / "out" / "frozen_model.pb").exists()


def test_predict_prints_top_k_and_writes_csv(setup, frozen, tmp_path):
    csv_path = tmp_path / "predictions.csv"
    result = subprocess.run([sys.executable, "-m", "scripts.predict", "--model", str(frozen / "frozen_model.pb"),
                             "--top-k", "2", "--csv", str(csv_path), str(setup / "test" / "circle")],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5
    assert sum(line.split("\t")[1].startswith("circle ") for line in lines) >= 3
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and {row["rank"] for row in rows} == {"1", "2"}
    assert all(0.0 <= float(row["probability"]) <= 1.0 for row in rows)


def test_untrained_inception_v3_uses_the_official_format_and_is_restored(tmp_path):
    import tensorflow as tf
    archive = tmp_path / "inception_v3_untrained.tar.gz"
    backbone.make_untrained_inception_v3(str(archive), seed=3)
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["UNTRAINED_BACKBONE.txt", "inception_v3.ckpt"]
        tar.extractall(tmp_path / "unpacked", filter="data")
    checkpoint = str(tmp_path / "unpacked" / "inception_v3.ckpt")
    backbone.prepare("inception_v3", str(tmp_path / "unpacked"), str(tmp_path / "b.pb"), str(tmp_path / "b.json"),
                     299, (-1.0, 1.0), True)
    info = bottlenecks.atomic.read_json(tmp_path / "b.json")
    assert info["bottleneck_size"] == 2048 and info["note"] == "untrained backbone"
    # The frozen constant holds the checkpoint's value: the weights were really restored.
    name = "InceptionV3/Conv2d_1a_3x3/weights"
    expected = tf.train.load_variable(checkpoint, name)
    node = next(node for node in backbone.load_graph_def(str(tmp_path / "b.pb")).node if node.name == name)
    assert np.array_equal(tf.make_ndarray(node.attr["value"].tensor), expected)


def test_the_openvino_backend_matches_tensorflow_within_tolerance(setup, tmp_path):
    """The documented tolerance: bottlenecks agree within 1e-4 absolute (float32 on both sides)."""
    xml = str(tmp_path / "backbone.xml")
    backbone.convert_to_ir(str(setup / "backbone.pb"), str(setup / "backbone.json"), xml)
    output = tmp_path / "openvino.npz"
    bottlenecks.compute_shard(str(setup / "backbone.pb"), str(setup / "backbone.json"), str(setup / "test.tfrecord"),
                              str(output), batch_size=4, threads=2, backend="openvino", ir_xml=xml)
    reference = bottlenecks.load_bottlenecks(setup / "bottlenecks" / "test.npz")
    features = bottlenecks.load_bottlenecks(output)
    assert np.array_equal(features["sha256"], reference["sha256"])
    np.testing.assert_allclose(features["features"], reference["features"], rtol=0, atol=1e-4)
