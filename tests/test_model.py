"""Model stages on real TensorFlow and OpenVINO: backbones, features, heads, selection, freezing.

Uses the real ImageNet-pretrained MobileNet V1 frozen graph from ../shared/data/weights
and a small synthetic image set (tests/mobilenet.py); the untrained Inception V3 has its
own test.
"""
import os
import tarfile

import mobilenet
import numpy as np
import pytest

from scripts.core import atomic, augment, formats, images, records
from scripts.core import head as head_lib
from scripts.core.errors import PipelineError
from scripts.core.inference import GraphModel, load_graph_def
from scripts.core.metrics import classification_metrics
from scripts.model import backbone, backbone_ir, bottlenecks, freeze, retrain, select

LINEAR = {"head": "linear", "l2": 0.0001, "class_weighting": "none", "max_iterations": 60}
MLP = {"head": "mlp", "hidden_units": 16, "dropout": 0.0, "optimizer": "adam", "learning_rate": 0.01, "epochs": 60,
       "batch_size": 16, "l2": 0.0001, "class_weighting": "none", "patience": 20, "seed": 0}
AUGMENT = {"copies": 2, "flip": True, "rotate90": True, "crop": 0.8, "color_jitter": 0.2, "seed": 0}


def features_of(setup, split, kind="plain", model=None, augment_settings=None, central_fraction=1.0):
    """Compute (once per test module) and return the path of a split's features."""
    model = model or setup["pb"]
    engine = "ir" if model.endswith(".xml") else "tf"
    path = os.path.join(os.path.dirname(setup["pb"]), "features", f"{engine}-{kind}-{central_fraction}-{split}.npz")
    if not os.path.exists(path):
        bottlenecks.compute_shard(model, setup["json"], setup[split], path, kind, central_fraction, "bilinear", 8, 2,
                                  augment_settings)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return mobilenet.build(tmp_path_factory.mktemp("model"))


def test_frozen_graph_backbone_is_cut_at_the_bottleneck_with_a_free_batch(setup):
    info = atomic.read_json(setup["json"])
    assert info["bottleneck_size"] == 256 and info["untrained"] is False and info["note"] == ""
    model = GraphModel(setup["pb"], info["input_tensor"], info["bottleneck_tensor"])
    assert model(np.zeros((3, 224, 224, 3), np.float32)).reshape(3, -1).shape == (3, 256)
    nodes = {node.name for node in load_graph_def(setup["pb"]).node}
    assert "MobilenetV1/Predictions/Reshape_1" not in nodes  # the ImageNet head is cut off


def test_extra_end_points_are_pooled_and_appended(tmp_path):
    folder = mobilenet.unpack_mobilenet(tmp_path / "mobilenet")
    extra = "MobilenetV1/MobilenetV1/Conv2d_11_pointwise/Relu6"  # [N, 14, 14, 128]
    width = backbone.prepare("frozen_graph", folder, str(tmp_path / "b.pb"), str(tmp_path / "b.json"), 224,
                             (-1.0, 1.0), False, mobilenet.MOBILENET_MEMBER, "input",
                             mobilenet.MOBILENET_BOTTLENECK, [extra])
    assert width == 256 + 128
    info = atomic.read_json(tmp_path / "b.json")
    assert info["bottleneck_tensor"] == "features:0" and info["extra_endpoints"] == [extra]
    pixels = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    combined = GraphModel(str(tmp_path / "b.pb"), "input:0", "features:0")(pixels)
    graph = load_graph_def(os.path.join(folder, mobilenet.MOBILENET_MEMBER))
    original = GraphModel(graph, "input:0", extra + ":0")  # its batch is fixed at one image
    layer = np.concatenate([original(pixels[index:index + 1]) for index in range(2)])
    np.testing.assert_allclose(combined[:, 256:], layer.mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)


def test_a_missing_tensor_is_named(setup, tmp_path):
    with pytest.raises(PipelineError, match=r"backbone.extra_endpoints: the graph has no node 'nope'"):
        backbone.prepare("frozen_graph", os.path.join(os.path.dirname(setup["pb"]), "mobilenet"),
                         str(tmp_path / "x.pb"), str(tmp_path / "x.json"), 224, (-1.0, 1.0), False,
                         mobilenet.MOBILENET_MEMBER, "input", mobilenet.MOBILENET_BOTTLENECK, ["nope"])
    assert not (tmp_path / "x.pb").exists()


def test_features_cover_every_image_in_order_and_are_reproducible(setup, tmp_path):
    data = formats.read_bottlenecks(features_of(setup, "train"))
    examples = list(records.read_examples([setup["train"]]))
    assert data["features"].shape == (36, 256)
    assert list(data["sha256"]) == [example["sha256"] for example in examples]
    again = tmp_path / "again.npz"
    bottlenecks.compute_shard(setup["pb"], setup["json"], setup["train"], str(again), "plain", 1.0, "bilinear", 8, 2)
    assert np.array_equal(formats.read_bottlenecks(again)["features"], data["features"])


def test_the_central_crop_is_part_of_the_features(setup):
    whole = formats.read_bottlenecks(features_of(setup, "test"))["features"]
    cropped = formats.read_bottlenecks(features_of(setup, "test", central_fraction=0.5))["features"]
    assert whole.shape == cropped.shape and not np.allclose(whole, cropped, atol=1e-3)


def test_view_features_are_the_features_of_the_rotated_images(setup):
    view = formats.read_bottlenecks(features_of(setup, "test", kind="view1"))
    info = atomic.read_json(setup["json"])
    contract = images.preprocessing_contract(224, (-1.0, 1.0), 1.0, "bilinear")
    example = next(records.read_examples([setup["test"]]))
    pixels = np.rot90(images.preprocess_image(example["encoded"], contract), 1, axes=(0, 1))[None]
    expected = GraphModel(setup["pb"], info["input_tensor"], info["bottleneck_tensor"])(np.ascontiguousarray(pixels))
    np.testing.assert_allclose(view["features"][0], expected.reshape(-1), atol=1e-4)


def test_augmented_copies_are_seeded_per_image_and_copy(setup, tmp_path):
    first = formats.read_bottlenecks(features_of(setup, "train", kind="aug-test", augment_settings=AUGMENT))
    assert first["features"].shape == (72, 256)  # 2 copies of 36 images
    assert list(first["sha256"][::2]) == list(formats.read_bottlenecks(features_of(setup, "train"))["sha256"])
    assert not np.allclose(first["features"][0], first["features"][1])  # two different copies
    again = tmp_path / "again.npz"
    bottlenecks.compute_shard(setup["pb"], setup["json"], setup["train"], str(again), "aug-test", 1.0, "bilinear",
                              5, 1, AUGMENT)
    np.testing.assert_allclose(formats.read_bottlenecks(again)["features"], first["features"], atol=1e-4)


def test_augmentation_keeps_the_contract_and_dihedral_views_are_a_group():
    rng = np.random.default_rng(0)
    contract = images.preprocessing_contract(32, (-1.0, 1.0), 1.0, "bilinear")
    image = images.decode_rgb(_jpeg(rng))
    pixels = augment.augmented_pixels(_jpeg(rng), contract, rng, AUGMENT)
    assert pixels.shape == (32, 32, 3) and pixels.min() >= -1 and pixels.max() <= 1
    plain = images.preprocess_image(image, contract)
    views = [augment.dihedral_view(plain, view) for view in range(augment.DIHEDRAL_VIEWS)]
    assert len({view.tobytes() for view in views}) == 8  # all eight differ for a generic image
    np.testing.assert_array_equal(augment.dihedral_view(plain, 4), plain[:, ::-1])


def _jpeg(rng):
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_openvino_backbone_matches_tensorflow_within_tolerance(setup, tmp_path):
    """The documented tolerance: FP32 IR features agree with TensorFlow's within 1e-4 absolute."""
    xml = str(tmp_path / "backbone.xml")
    backbone_ir.convert(setup["pb"], setup["json"], "FP32", xml)
    openvino = formats.read_bottlenecks(features_of(setup, "test", model=xml))
    reference = formats.read_bottlenecks(features_of(setup, "test"))
    assert np.array_equal(openvino["sha256"], reference["sha256"])
    np.testing.assert_allclose(openvino["features"], reference["features"], rtol=0, atol=1e-4)


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


def train_head(setup, folder, train=None, views=(), augmented=(), folds=3, **overrides):
    """retrain.run on the test module's features; ``train`` overrides the linear head's settings (or names mlp)."""
    paths = {"train": features_of(setup, "train"), "validation": features_of(setup, "validation"),
             "test": features_of(setup, "test"), "augmented": list(augmented),
             "train_views": [features_of(setup, "train", kind=f"view{view}") for view in views],
             "validation_views": [features_of(setup, "validation", kind=f"view{view}") for view in views],
             "test_views": [features_of(setup, "test", kind=f"view{view}") for view in views]}
    files = ("head.npz", "history.csv", "tensorboard", "metrics.json", "test_predictions.npz", "oof_predictions.npz")
    outputs = dict(zip(("head", "history", "tensorboard", "metrics", "predictions", "oof"),
                       (str(folder / name) for name in files)))
    train = train or {}
    base = MLP if train.get("head") == "mlp" else LINEAR
    settings = {"train": {**base, **train}, "selection": {"folds": folds}, **overrides}
    return retrain.run(paths, setup["labels"], setup["json"], settings, outputs, "x"), outputs


@pytest.mark.parametrize("overrides", [
    {}, {"head": "mlp", "optimizer": "sgd", "learning_rate": 0.1}, {"head": "mlp", "optimizer": "momentum",
                                                                    "learning_rate": 0.1},
    {"head": "mlp", "hidden_units": 32, "dropout": 0.3}, {"class_weighting": "balanced"}])
def test_training_learns_the_synthetic_classes(setup, overrides, tmp_path):
    metrics, outputs = train_head(setup, tmp_path, overrides)
    # 48 training + validation images: an MLP fold trains on 16 and stops early on 16, so its refit is short.
    assert metrics["splits"]["train"]["accuracy"] >= 0.85
    assert metrics["splits"]["test"]["accuracy"] >= 0.6  # pretrained features, 15 test images
    assert metrics["mode"] == "head" and metrics["splits"]["validation"]["loss"] > 0
    assert metrics["cv"]["folds"] == 3 and metrics["cv"]["accuracy"]["mean"] >= 0.6
    history = atomic.read_table(outputs["history"])  # the first fold's: trained on the others, validated on it
    assert len(history) >= 2 and len(history) >= metrics["cv"]["best_epochs"][0]
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(outputs["tensorboard"]).Reload()
    assert [event.step for event in events.Scalars("validation_loss")] == list(range(1, len(history) + 1))


def test_test_time_views_average_the_probabilities_and_augmented_copies_add_training_rows(setup, tmp_path):
    augmented = [features_of(setup, "train", kind="aug-test", augment_settings=AUGMENT)]
    metrics, outputs = train_head(setup, tmp_path, views=(4,), augmented=augmented)
    head = head_lib.load(outputs["head"])
    plain = formats.read_bottlenecks(features_of(setup, "test"))
    mirrored = formats.read_bottlenecks(features_of(setup, "test", kind="view4"))
    probs = (head_lib.probabilities(head, plain["features"]) + head_lib.probabilities(head, mirrored["features"])) / 2
    expected = classification_metrics(plain["labels"], probs.argmax(axis=1), mobilenet.LABELS)
    assert metrics["splits"]["test"]["accuracy"] == expected["accuracy"]
    assert metrics["splits"]["train"]["n"] == 36  # metrics of the plain training images only


def test_a_view_file_of_other_images_is_refused(setup, tmp_path):
    with pytest.raises(PipelineError, match="lists other images"):
        retrain.load_split(features_of(setup, "test"), [features_of(setup, "validation")])


def test_training_is_reproducible_and_depends_on_the_seed(setup, tmp_path):
    heads = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / name).mkdir()
        _, outputs = train_head(setup, tmp_path / name, {"head": "mlp", "seed": seed})
        heads.append(head_lib.load(outputs["head"]))
    assert all(np.array_equal(heads[0][key], heads[1][key]) for key in heads[0])
    assert not np.array_equal(heads[0]["hidden_w"], heads[2]["hidden_w"])


def test_constant_features_get_no_weight_in_the_standardisation():
    features = np.random.default_rng(0).normal(size=(50, 4))
    features[:, 2] = 3.0
    mean, scale = retrain.standardisation(features)
    assert scale[2] == 0.0 and np.all(scale[[0, 1, 3]] > 0.5)


def test_early_stopping_keeps_the_best_validation_epoch(setup):
    data = {split: formats.read_bottlenecks(features_of(setup, split)) for split in ("train", "validation")}
    _, history, summary = retrain.train(data, 3, {**MLP, "hidden_units": 8, "learning_rate": 0.05,
                                                  "epochs": 300, "patience": 5}, log=lambda *_: None)
    losses = [row[3] for row in history]
    assert summary["stopped_early"] and summary["epochs_run"] < 300
    assert summary["best_epoch"] == 1 + int(np.argmin(losses))
    assert summary["epochs_run"] - summary["best_epoch"] == 5


def test_a_softmax_layer_alone_is_solved_to_the_optimum_like_a_logistic_regression(setup):
    data = {split: formats.read_bottlenecks(features_of(setup, split)) for split in ("train", "validation")}
    images = len(data["train"]["labels"])
    settings = {**LINEAR, "l2": retrain.resolved_l2("auto", images, 3), "max_iterations": 500}
    head, history, summary = retrain.train(data, 3, settings, log=lambda *_: None)
    assert settings["l2"] == 1 / 36 and summary["monitored"].startswith("train objective")
    x = (data["train"]["features"] - head["mean"]) * head["scale"]
    params = {key: head[key].astype(np.float64) for key in ("logits_w", "logits_b")}
    _, grads = retrain.forward_backward(params, x, data["train"]["labels"], np.ones(3), settings["l2"], 0.0, None)
    assert max(np.abs(grad).max() for grad in grads.values()) < 1e-3  # the regularised loss's minimum
    assert len(history) == summary["epochs_run"] < 500


def test_metrics_on_a_hand_checked_example():
    metrics = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def fake_metrics(cv, test, head="linear", std=0.0):
    folds = [cv - std, cv + std, cv]
    return {"settings": {"train": {"head": head}},
            "cv": {name: {"mean": cv, "std": float(np.std(folds)), "folds": folds}
                   for name in ("accuracy", "macro_f1", "balanced_accuracy", "log_loss")},
            "splits": {"validation": {"accuracy": cv, "macro_f1": cv, "loss": 0.5},
                       "test": {"accuracy": test, "macro_f1": test, "loss": 0.5}}}


def test_selection_reads_the_cross_validation_never_the_test_split():
    candidates = {"a": fake_metrics(0.90, 0.99), "b": fake_metrics(0.95, 0.50, "mlp"), "c": fake_metrics(0.93, 1.00)}
    best, _, _, scores = select.select(candidates, "cv_accuracy")
    assert best == "b" and {name: score["mean"] for name, score in scores.items()} == {"a": 0.90, "b": 0.95, "c": 0.93}
    for name in candidates:  # any change of every test figure leaves the choice as it was
        changed = {key: {**value, "splits": {**value["splits"], "test": {
            metric: (1.0 if key == name else 0.0) for metric in ("accuracy", "macro_f1", "loss")}}}
            for key, value in candidates.items()}
        assert select.select(changed, "cv_accuracy")[0] == "b"


def test_select_writes_the_documented_file(tmp_path):
    paths = []
    for name, value in (("x", 0.8), ("y", 0.9)):
        atomic.write_json(tmp_path / f"{name}.json", fake_metrics(value, 0.0))
        paths.append(f"{name}={tmp_path / f'{name}.json'}")
    select.main(["--metric", "cv_accuracy", "--output", str(tmp_path / "selected.json"), "--experiments", *paths])
    written = atomic.read_json(tmp_path / "selected.json")
    assert {key: written[key] for key in ("experiment", "metric", "value", "best")} == {
        "experiment": "y", "metric": "cv_accuracy", "value": 0.9, "best": "y"}
    assert written["candidates"]["x"] == pytest.approx({"mean": 0.8, "std": 0.0, "se": 0.0, "folds": 3,
                                                        "complexity": 0, "source": "cross-validation"})


def freeze_model(setup, head_path, folder, views=(0,), test_features=None, tolerance=1e-3):
    view_files = [features_of(setup, "test", kind=f"view{view}") for view in views[1:]]
    paths = {"backbone_pb": setup["pb"], "backbone_json": setup["json"], "head": head_path,
             "labels": setup["labels"], "test_tfrecords": [setup["test"]],
             "test_features": test_features or features_of(setup, "test"), "test_view_features": view_files}
    outputs = {name: str(folder / file) for name, file in (
        ("pb", "frozen_model.pb"), ("json", "model.json"), ("labels", "labels.json"),
        ("check", "freeze_check.json"))}
    settings = {"views": list(views), "central_fraction": 1.0, "resize": "bilinear", "check_images": 8,
                "tolerance": tolerance}
    return freeze.freeze(paths, outputs, settings, 2), outputs


@pytest.fixture(scope="module")
def frozen(setup, tmp_path_factory):
    folder = tmp_path_factory.mktemp("frozen")
    _, outputs = train_head(setup, folder, {"head": "mlp", "hidden_units": 8}, views=(4,))
    (check, _), files = freeze_model(setup, outputs["head"], folder, views=(0, 4))
    return folder, check, {**files, "predictions": outputs["predictions"]}


def test_the_frozen_model_reproduces_the_head_with_test_time_views(setup, frozen):
    folder, check, files = frozen
    assert check["images"] == 8 and check["top1_disagreements"] == 0
    assert check["max_abs_probability_difference"] < 1e-4
    contract = atomic.read_json(files["json"])
    assert contract["input_node"] == "input" and contract["output_node"] == "final_result"
    assert contract["preprocessing"]["input_size"] == 224 and contract["preprocessing"]["central_fraction"] == 1.0
    assert contract["labels"] == mobilenet.LABELS and contract["hidden_units"] == 8
    assert contract["test_time_views"] == [0, 4]
    reference = formats.read_predictions(files["predictions"])  # retrain's, from cached features: the IRs' reference
    assert reference["probabilities"].shape == (15, 3) and len(reference["filenames"]) == 15
    np.testing.assert_allclose(reference["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    model = GraphModel(files["pb"], "input", "final_result")
    example = next(records.read_examples([setup["test"]]))
    pixels = images.preprocess_image(example["encoded"], contract["preprocessing"])[None]
    np.testing.assert_allclose(model(pixels)[0], reference["probabilities"][0], atol=1e-4)


def test_a_head_that_does_not_match_its_features_fails_the_check_and_leaves_no_model(setup, frozen, tmp_path):
    folder, _, _ = frozen
    cached = formats.read_bottlenecks(features_of(setup, "test"))
    formats.write_bottlenecks(tmp_path / "test.npz", cached["features"] * 3.0, cached["labels"], cached["sha256"],
                              cached["filenames"])
    with pytest.raises(PipelineError, match="freeze check: the model differs from the trained head"):
        freeze_model(setup, str(folder / "head.npz"), tmp_path, test_features=str(tmp_path / "test.npz"))
    assert not (tmp_path / "frozen_model.pb").exists()


def test_tensorflow_views_match_numpy_views():
    from scripts.core import tfcompat
    tf = tfcompat.tf_v1()
    pixels = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        holder = tf.placeholder(tf.float32, [None, 5, 5, 3])
        outputs = [freeze.tf_dihedral_view(tf, holder, view) for view in range(8)]
        with tf.Session() as session:
            results = session.run(outputs, {holder: pixels})
    for view, result in enumerate(results):
        np.testing.assert_array_equal(result, augment.dihedral_view(pixels, view))


def test_untrained_inception_v3_uses_the_official_format_and_is_restored(tmp_path):
    import tensorflow as tf
    archive = tmp_path / "inception_v3_untrained.tar.gz"
    backbone.make_untrained_inception_v3(str(archive), seed=3, size=299)
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["UNTRAINED_BACKBONE.txt", "inception_v3.ckpt"]
        tar.extractall(tmp_path / "unpacked", filter="data")
    checkpoint = str(tmp_path / "unpacked" / "inception_v3.ckpt")
    backbone.prepare("inception_v3", str(tmp_path / "unpacked"), str(tmp_path / "b.pb"), str(tmp_path / "b.json"),
                     299, (-1.0, 1.0), True, None, None, None, ["Mixed_6e"])
    info = atomic.read_json(tmp_path / "b.json")
    assert info["bottleneck_size"] == 2048 + 768 and info["note"] == "untrained backbone"
    assert [(block["name"], block["width"], block["offset"]) for block in info["feature_blocks"]] == \
        [("PreLogits", 2048, 0), ("Mixed_6e", 768, 2048)]
    assert info["spatial_shape"] == [8, 8, 2048] and "Mixed_7c" in info["spatial_tensor"]
    # The frozen constant holds the checkpoint's value: the weights were really restored.
    name = "InceptionV3/Conv2d_1a_3x3/weights"
    expected = tf.train.load_variable(checkpoint, name)
    node = next(node for node in load_graph_def(str(tmp_path / "b.pb")).node if node.name == name)
    assert np.array_equal(tf.make_ndarray(node.attr["value"].tensor), expected)
    with pytest.raises(PipelineError, match="has no end point 'Mixed_9z'"):
        backbone.prepare("inception_v3", str(tmp_path / "unpacked"), str(tmp_path / "c.pb"),
                         str(tmp_path / "c.json"), 299, (-1.0, 1.0), True, None, None, None, ["Mixed_9z"])


def test_zoom_out_puts_the_whole_image_on_a_plain_canvas():
    from PIL import Image
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), "RGB")
    fills = set()
    for _ in range(30):
        canvas = augment.zoom_out(image, rng, 3.0)
        assert 30 <= canvas.width <= 90 and 20 <= canvas.height <= 60
        pixels = np.asarray(canvas)
        # the image is there, whole, at one place; every other pixel is the canvas colour
        found = [(x, y) for y in range(canvas.height - 19) for x in range(canvas.width - 29)
                 if np.array_equal(pixels[y:y + 20, x:x + 30], np.asarray(image))]
        assert len(found) == 1
        x, y = found[0]
        rest = pixels.copy()
        rest[y:y + 20, x:x + 30] = pixels[0, 0] if (x, y) != (0, 0) else pixels[-1, -1]
        assert len(np.unique(rest.reshape(-1, 3), axis=0)) == 1
        fills.add(tuple(rest[0, 0]))
    assert {(255, 255, 255), (0, 0, 0)} <= fills and len(fills) > 3  # white, black and random colours
    settings = {**augment.NO_AUGMENTATION, "zoom_out": 2.0}
    assert augment.augmented_image(image, np.random.default_rng(0), settings).size != image.size
    assert augment.augmented_image(image, np.random.default_rng(0), augment.NO_AUGMENTATION).size == image.size
