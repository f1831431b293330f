"""Fine-tuning the top of a frozen backbone with its head (scripts/model/finetune.py), on real TensorFlow.

The backbone is the real ImageNet-pretrained MobileNet V1 0.25 frozen graph, cut at its
bottleneck as the backbone stage cuts it; the images are tiny synthetic TFRecords; the
starting head is a deliberately short softmax regression on the frozen bottlenecks, so a
few fine-tuning steps have something to improve.
"""
import hashlib
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA

from scripts.core import atomic, images, inference, records, tfcompat
from scripts.core import head as head_lib
from scripts.core.errors import PipelineError
from scripts.data import synthetic
from scripts.model import finetune

MOBILENET = os.path.join(SHARED_DATA, "weights", "mobilenet_v1_0.25_224_frozen.tgz")
MOBILENET_MEMBER = "mobilenet_v1_0.25_224/frozen_graph.pb"
BOTTLENECK = "MobilenetV1/Logits/AvgPool_1a/AvgPool"
TRAINABLE = "^MobilenetV1/Conv2d_13_"
SETTINGS = {"trainable": TRAINABLE, "learning_rate": 1e-4, "optimizer": "adam", "epochs": 2,
            "steps_per_epoch": 2, "batch_size": 8, "early_stopping_patience": 2, "l2": 1e-4, "seed": 0,
            "augment": {"flip": True, "crop": 0.9, "color_jitter": 0.1}}


def write_backbone(root):
    """backbone.pb + backbone.json: MobileNet cut at its bottleneck with a free batch, as the backbone stage does."""
    tf = tfcompat.tf_v1()
    with tarfile.open(MOBILENET) as archive:
        graph_def = tf.GraphDef.FromString(archive.extractfile(MOBILENET_MEMBER).read())
    graph_def = tf.graph_util.extract_sub_graph(graph_def, [BOTTLENECK])
    next(node for node in graph_def.node if node.name == "input").attr["shape"].shape.dim[0].size = -1
    atomic.write_bytes(root / "backbone.pb", graph_def.SerializeToString(deterministic=True))
    atomic.write_json(root / "backbone.json", {
        "kind": "frozen_graph", "input_tensor": "input:0", "bottleneck_tensor": BOTTLENECK + ":0",
        "bottleneck_size": 256, "input_size": 224, "input_range": [-1.0, 1.0], "untrained": False, "note": ""})


def write_tfrecord(folder, path, classes, per_class, seed):
    """Synthetic 64-pixel images of ``classes`` shapes as one TFRecord file."""
    synthetic.generate(str(folder), classes, per_class, 64, seed)
    examples = []
    for label, shape in enumerate(synthetic.SHAPES[:classes]):
        for name in sorted(os.listdir(folder / shape)):
            encoded = (folder / shape / name).read_bytes()
            examples.append(records.make_example(encoded, b"jpeg", label, 64, 64, name,
                                                 hashlib.sha256(encoded).hexdigest()))
    records.write_records(str(path), examples)


def bottlenecks(root, backbone_pb, tfrecord):
    info = atomic.read_json(root / "backbone.json")
    model = inference.GraphModel(str(backbone_pb), info["input_tensor"], info["bottleneck_tensor"])
    contract = atomic.read_json(root / "preprocessing.json")
    features, labels, _, _ = inference.run_over_tfrecords(model, contract, [str(tfrecord)], 12, 2)
    return features.reshape(len(labels), -1), np.asarray(labels)


def short_head(features, labels, classes, steps=15, rate=0.05):
    """A softmax regression stopped early on purpose: fine-tuning then has room to lower the loss."""
    mean, scale = features.mean(0), 1.0 / np.maximum(features.std(0), 1e-6)
    x, onehot = (features - mean) * scale, np.eye(classes)[labels]
    weights, bias = np.zeros((x.shape[1], classes)), np.zeros(classes)
    for _ in range(steps):
        error = (head_lib.softmax(x @ weights + bias) - onehot) / len(x)
        weights, bias = weights - rate * x.T @ error, bias - rate * error.sum(0)
    return {key: value.astype(np.float32) for key, value in
            {"mean": mean, "scale": scale, "logits_w": weights, "logits_b": bias}.items()}


def validation_loss(root, backbone_pb, head):
    features, labels = bottlenecks(root, backbone_pb, root / "validation.tfrecord")
    return finetune.cross_entropy(np.log(head_lib.probabilities(head, features)), labels)


PREPROCESSING = {"central_fraction": 1.0, "resize": "bilinear"}


def arguments(root, out, settings=SETTINGS):
    """finetune()'s arguments, in the CLI's order."""
    return (str(root / "backbone.pb"), str(root / "backbone.json"), str(root / "head.npz"),
            PREPROCESSING, [str(root / "train.tfrecord")], [str(root / "validation.tfrecord")],
            settings, str(out / "backbone.pb"), str(out / "backbone.json"), str(out / "head.npz"),
            str(out / "history.csv"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    write_backbone(root)
    atomic.write_json(root / "preprocessing.json", images.preprocessing_contract(224, (-1.0, 1.0), 1.0))
    write_tfrecord(root / "train", root / "train.tfrecord", 3, 8, 0)
    write_tfrecord(root / "validation", root / "validation.tfrecord", 3, 4, 1)
    features, labels = bottlenecks(root, root / "backbone.pb", root / "train.tfrecord")
    head_lib.save(str(root / "head.npz"), short_head(features, labels, 3))
    return root


@pytest.fixture(scope="module")
def tuned(setup):
    out = setup / "tuned"
    lines = []
    result = finetune.finetune(*arguments(setup, out), threads=2, log=lines.append)
    return out, result, lines


def constants(path):
    return {node.name: node for node in inference.load_graph_def(str(path)).node}


def test_only_the_matched_weights_change_and_the_graph_keeps_its_names(setup, tuned):
    out, result, _ = tuned
    before, after = constants(setup / "backbone.pb"), constants(out / "backbone.pb")
    assert list(before) == list(after)  # same nodes, same order: every tensor name still resolves
    changed = {name for name in before if before[name] != after[name]}
    matched = {name for name, node in before.items() if node.op == "Const" and name.startswith(TRAINABLE[1:])
               and node.attr["value"].tensor.tensor_shape.dim and "moving_" not in name}
    assert changed == matched and len(changed) == result["variables"] == 6  # 2 layers x (weights, gamma, beta)
    assert result["best_epoch"] >= 1  # else nothing would have changed
    for name in changed:
        assert after[name].attr["value"].tensor.dtype == before[name].attr["value"].tensor.dtype


def test_the_fine_tuned_backbone_is_a_drop_in_backbone(setup, tuned):
    out, result, _ = tuned
    info = atomic.read_json(out / "backbone.json")
    assert info["input_tensor"] == "input:0" and info["bottleneck_tensor"] == BOTTLENECK + ":0"
    assert info["fine_tuned"]["trainable"] == TRAINABLE and info["fine_tuned"]["best_epoch"] == result["best_epoch"]
    # Conv2d_13 of a 0.25-wide MobileNet: depthwise 3x3 and pointwise 1x1 on 256 channels, each + gamma, beta.
    assert info["fine_tuned"]["parameters"] == 3 * 3 * 256 + 2 * 256 + 256 * 256 + 2 * 256
    model = inference.GraphModel(str(out / "backbone.pb"), info["input_tensor"], info["bottleneck_tensor"])
    assert model.output_width() == 256
    assert model(np.zeros((2, 224, 224, 3), np.float32)).reshape(2, -1).shape == (2, 256)


def test_fine_tuning_does_not_worsen_the_validation_loss(setup, tuned):
    out, result, lines = tuned
    before = validation_loss(setup, setup / "backbone.pb", head_lib.load(setup / "head.npz"))
    after = validation_loss(setup, out / "backbone.pb", head_lib.load(out / "head.npz"))
    assert after < before - 1e-3
    assert after == pytest.approx(result["validation_loss"], abs=1e-4)  # the in-graph head is the numpy head
    head, tuned_head = head_lib.load(setup / "head.npz"), head_lib.load(out / "head.npz")
    assert np.array_equal(head["mean"], tuned_head["mean"]) and np.array_equal(head["scale"], tuned_head["scale"])
    history = atomic.read_table(out / "history.csv")
    assert [row["epoch"] for row in history] == ["0", "1", "2"]
    assert float(history[0]["validation_loss"]) == pytest.approx(before, abs=1e-4)
    assert any(line.startswith("epoch 2: train loss") for line in lines)


def test_the_same_inputs_give_the_same_outputs(setup, tuned, tmp_path):
    out, _, _ = tuned
    finetune.finetune(*arguments(setup, tmp_path), threads=2, log=lambda line: None)
    for name in ("backbone.pb", "backbone.json", "history.csv"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    first, second = head_lib.load(out / "head.npz"), head_lib.load(tmp_path / "head.npz")
    assert all(np.array_equal(first[key], second[key]) for key in first)
    from tensorflow.python.framework import config
    assert not config.is_op_determinism_enabled()  # the process-wide flag is restored after training
    finetune.finetune(*arguments(setup, tmp_path / "seed1", {**SETTINGS, "seed": 1}), threads=2,
                      log=lambda line: None)
    assert (tmp_path / "seed1" / "backbone.pb").read_bytes() != (out / "backbone.pb").read_bytes()


def test_a_hidden_layer_head_and_streamed_validation(setup, tmp_path, monkeypatch):
    head = head_lib.load(setup / "head.npz")
    rng = np.random.default_rng(0)
    hidden = {"hidden_w": rng.normal(0, 0.06, (256, 16)).astype(np.float32), "hidden_b": np.zeros(16, np.float32),
              "logits_w": rng.normal(0, 0.25, (16, 3)).astype(np.float32)}
    head_lib.save(str(tmp_path / "head.npz"), {**head, **hidden})
    monkeypatch.setattr(finetune, "VALIDATION_CACHE_BYTES", 0)  # decode the validation images each epoch
    args = list(arguments(setup, tmp_path / "out", {**SETTINGS, "epochs": 1, "steps_per_epoch": 1}))
    args[2] = str(tmp_path / "head.npz")
    result = finetune.finetune(*args, threads=1, log=lambda line: None)
    expected = validation_loss(setup, setup / "backbone.pb", {**head, **hidden})
    assert result["validation_loss_before"] == pytest.approx(expected, abs=1e-4)
    tuned = head_lib.load(tmp_path / "out" / "head.npz")
    assert sorted(tuned) == sorted({**head, **hidden}) and tuned["hidden_w"].shape == (256, 16)
    assert result["validation_loss"] <= result["validation_loss_before"]


def test_a_regex_that_matches_nothing_is_refused_in_one_line(setup, tmp_path):
    with pytest.raises(PipelineError, match=r"^config key finetune\.trainable: '\^Nope/' matches no") as error:
        finetune.finetune(*arguments(setup, tmp_path, {**SETTINGS, "trainable": "^Nope/"}))
    assert "\n" not in str(error.value) and not list(tmp_path.iterdir())


@pytest.mark.parametrize("change, key", [
    ({"optimizer": "adagrad"}, "optimizer"), ({"epochs": 0}, "epochs"), ({"steps_per_epoch": 1.5}, "steps_per_epoch"),
    ({"trainable": "("}, "trainable"), ({"augment": {"mirror": True}}, "augment"), ({"lr": 0.1}, "lr")])
def test_bad_settings_are_named_by_their_key(change, key):
    with pytest.raises(PipelineError, match=rf"^config key finetune\.{key}: "):
        finetune.check_settings({**SETTINGS, **change})


def cli_command(setup, folder):
    return [sys.executable, "-m", "scripts.model.finetune",
            "--backbone-pb", str(setup / "backbone.pb"), "--backbone-json", str(setup / "backbone.json"),
            "--head", str(setup / "head.npz"), "--central-fraction", "1.0", "--resize", "bilinear",
            "--train-tfrecords", str(setup / "train.tfrecord"),
            "--validation-tfrecords", str(setup / "validation.tfrecord"), "--settings", json.dumps(SETTINGS),
            "--output-backbone-pb", str(folder / "backbone.pb"),
            "--output-backbone-json", str(folder / "backbone.json"),
            "--output-head", str(folder / "head.npz"), "--history", str(folder / "history.csv"),
            "--threads", "2"]


def test_the_cli_runs_end_to_end(setup, tuned, tmp_path):
    out, _, _ = tuned
    result = subprocess.run(cli_command(setup, tmp_path), capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("fine-tuned 6 constants") and len(result.stdout.splitlines()) == 1
    assert "fine-tuning epoch 2/2: 16/16 images (100%)" in result.stderr
    # Another process, the same bytes: nothing depends on the process or on thread timing
    # (on one instruction set: docs/int8.md, "Fine-tuning reproducibility").
    assert (tmp_path / "backbone.pb").read_bytes() == (out / "backbone.pb").read_bytes()


@pytest.mark.slow
def test_two_processes_on_the_avx2_kernels_give_the_same_bytes(setup, tmp_path):
    """TensorFlow's oneDNN honours ONEDNN_MAX_CPU_ISA: fine-tuning on an AVX2-only CPU's kernels, twice."""
    env = {key: value for key, value in os.environ.items() if key not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    runs = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        subprocess.run(cli_command(setup, tmp_path / name), capture_output=True, text=True, cwd=REPO, check=True,
                       env=env, timeout=600)
        runs.append((tmp_path / name / "backbone.pb").read_bytes())
    assert runs[0] == runs[1]

