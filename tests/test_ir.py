"""IR export and evaluation on real TensorFlow and real OpenVINO.

A small real model: the pretrained MobileNet V1 0.25 graph from ../shared/data/weights
with a random softmax head, frozen by scripts/freeze.py, on a few synthetic images.
"""
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from conftest import REPO
from scripts import atomic, backbone, bottlenecks, evaluate_ir, freeze, head as head_lib, ir, synthetic, tfrecords
from scripts.core.errors import PipelineError
from scripts.core.images import preprocess_image
from test_model import MOBILENET, MOBILENET_MEMBER, manifest_rows

LABELS = list(synthetic.SHAPES[:3])
TEST_IMAGES = 18
EVALUATION_KEYS = {"schema_version", "precision", "metrics", "tensorflow_accuracy", "accuracy_drop_points",
                   "agreement", "untrained_backbone", "note"}


def write_images_shard(folder, output, images_per_class, seed):
    """Synthetic images of the three classes in one TFRecord shard."""
    synthetic.generate(folder, len(LABELS), images_per_class, 64, seed)
    tfrecords.write_shard(manifest_rows(folder, LABELS), output)
    return output


def random_head(features, seed=0):
    """A softmax head with random weights over standardised bottlenecks: confident, untrained."""
    rng = np.random.default_rng(seed)
    # (+0.1: features that barely vary are not blown up into noise, as training would not.)
    return {"mean": features.mean(axis=0), "scale": 1.0 / (features.std(axis=0) + 0.1),
            "logits_w": rng.normal(0, 0.2, (features.shape[1], len(LABELS))).astype(np.float32),
            "logits_b": np.zeros(len(LABELS), np.float32)}


def mobilenet_frozen_model(root):
    """frozen_model.pb + model.json (as the freeze stage writes them), train and test shards."""
    with tarfile.open(MOBILENET) as archive:
        archive.extractall(root / "mobilenet", filter="data")
    backbone_pb, backbone_json = str(root / "backbone.pb"), str(root / "backbone.json")
    backbone.prepare("frozen_graph", str(root / "mobilenet"), backbone_pb, backbone_json, 224, (-1.0, 1.0),
                     False, MOBILENET_MEMBER, "input", "MobilenetV1/Logits/AvgPool_1a/AvgPool")
    train = [write_images_shard(str(root / f"train{shard}"), str(root / f"train-{shard}.tfrecord"), 2, shard)
             for shard in range(2)]
    test = [write_images_shard(str(root / "test"), str(root / "test.tfrecord"), TEST_IMAGES // 3, 7)]
    bottlenecks.compute_shard(backbone_pb, backbone_json, test[0], str(root / "test.npz"), 16, 2)
    head_lib.save(str(root / "head.npz"), random_head(bottlenecks.load_bottlenecks(root / "test.npz")["features"]))
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    freeze.freeze(backbone_pb, backbone_json, str(root / "head.npz"), str(root / "labels.txt"), test,
                  str(root / "test.npz"), str(root / "model"), threads=2)
    return str(root / "model" / "frozen_model.pb"), train, test


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The frozen model, its TensorFlow test predictions and its IR at each precision."""
    root = tmp_path_factory.mktemp("ir")
    model_pb, train, test = mobilenet_frozen_model(root)
    reference = str(root / "model" / "test_predictions.npz")
    evaluate_ir.tensorflow_predictions(model_pb, test, reference, threads=2)
    irs = {precision: ir.export_ir(model_pb, precision, str(root / "ir" / precision), train, 8, threads=2)
           for precision in ir.PRECISIONS}
    return {"root": root, "model_pb": model_pb, "train": train, "test": test, "reference": reference,
            "xml": {precision: str(root / "ir" / precision / "model.xml") for precision in irs}}


def constant_types(xml):
    """The element types of the IR's weights (Constant ops), e.g. {"f32", "i8"}."""
    import openvino as ov
    model = ov.Core().read_model(xml)
    return {op.get_output_element_type(0).get_type_name() for op in model.get_ops()
            if op.get_type_name() == "Constant" and op.get_output_size()}


def evaluate(exported, precision, tmp_path, reference=None, **thresholds):
    output = tmp_path / f"{precision}.json"
    return evaluate_ir.evaluate_ir(exported["xml"][precision], reference or exported["reference"],
                                   exported["test"], str(output), threads=2, **thresholds), output


def tampered_reference(exported, tmp_path, change):
    """A copy of the TensorFlow predictions with ``change`` applied to its arrays."""
    data = evaluate_ir.load_predictions(exported["reference"])
    change(data)
    path = str(tmp_path / "tampered.npz")
    with open(path, "wb") as handle:
        np.savez(handle, **data)
    return path


def test_tensorflow_predictions_cover_the_test_split(exported):
    data = evaluate_ir.load_predictions(exported["reference"])
    examples = list(tfrecords.read_examples(exported["test"]))
    assert data["probabilities"].shape == (TEST_IMAGES, 3)
    np.testing.assert_allclose(data["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert list(data["sha256"]) == [example["sha256"] for example in examples]
    assert list(data["labels"]) == [example["label"] for example in examples]
    assert float(data["accuracy"]) == pytest.approx(float((data["probabilities"].argmax(1) == data["labels"]).mean()))


# FP16 weights move the small MobileNet's probabilities by a few points; top-1 must hold.
@pytest.mark.parametrize("precision, max_difference", [("FP32", 1e-4), ("FP16", 0.1)])
def test_fp_irs_agree_with_tensorflow(exported, tmp_path, precision, max_difference):
    evaluation, output = evaluate(exported, precision, tmp_path, min_fp_agreement=0.995)
    assert evaluation["agreement"]["images"] == TEST_IMAGES
    assert evaluation["agreement"]["top1_agreement"] >= 0.995
    assert evaluation["agreement"]["max_abs_probability_difference"] < max_difference
    assert evaluation["accuracy_drop_points"] == pytest.approx(0.0, abs=1e-9)
    assert atomic.read_json(output) == evaluation


def test_evaluation_json_has_the_documented_keys(exported, tmp_path):
    evaluation, _ = evaluate(exported, "INT8", tmp_path)
    assert set(evaluation) == EVALUATION_KEYS
    assert evaluation["schema_version"] == 1 and evaluation["precision"] == "INT8"
    assert set(evaluation["agreement"]) == {"top1_agreement", "max_abs_probability_difference", "images"}
    assert evaluation["metrics"]["n"] == TEST_IMAGES and evaluation["metrics"]["labels"] == LABELS
    assert evaluation["accuracy_drop_points"] == pytest.approx(
        100 * (evaluation["tensorflow_accuracy"] - evaluation["metrics"]["accuracy"]))
    assert evaluation["untrained_backbone"] is False and evaluation["note"] == ""


def test_ir_description_and_rt_info_carry_the_contract(exported):
    import openvino as ov
    contract = atomic.read_json(os.path.join(os.path.dirname(exported["model_pb"]), "model.json"))
    for precision, xml in exported["xml"].items():
        description = atomic.read_json(os.path.join(os.path.dirname(xml), "model.json"))
        assert description["precision"] == precision
        assert description["input"] == {"name": "input:0", "shape": [1, 224, 224, 3], "layout": "NHWC",
                                        "dtype": "float32", "range": [-1.0, 1.0]}
        assert description["preprocessing"] == contract["preprocessing"]
        assert description["labels"] == LABELS and description["openvino_version"] == ov.get_version()
        model = ov.Core().read_model(xml)
        assert model.get_rt_info([ir.RT_INFO_SECTION, "labels"]).astype(str) == '["circle", "square", "triangle"]'
        assert not [name for name in os.listdir(os.path.dirname(xml)) if name.startswith(".")]  # no temporaries
    assert atomic.read_json(os.path.join(os.path.dirname(exported["xml"]["INT8"]), "model.json"))[
        "int8_calibration_images"] == 8


def test_each_precision_stores_its_weights_in_its_type(exported):
    sizes = {precision: os.path.getsize(xml[:-len(".xml")] + ".bin") for precision, xml in exported["xml"].items()}
    assert "f16" not in constant_types(exported["xml"]["FP32"])
    assert "f16" in constant_types(exported["xml"]["FP16"])
    assert "i8" in constant_types(exported["xml"]["INT8"])
    assert sizes["FP16"] < 0.6 * sizes["FP32"] and sizes["INT8"] < 0.4 * sizes["FP32"]


def test_int8_calibration_takes_the_first_images_in_shard_order(exported, tmp_path):
    contract = ir.model_contract(exported["model_pb"])
    images = ir.calibration_images(exported["train"], contract, 8)
    first = list(tfrecords.read_examples(exported["train"]))[:8]
    assert len(images) == 8 and images[0].shape == (1, 224, 224, 3)
    expected = preprocess_image(first[7]["encoded"], 224, (-1.0, 1.0))
    np.testing.assert_array_equal(images[7][0], expected)
    # The same inputs give the same INT8 IR.
    ir.export_ir(exported["model_pb"], "INT8", str(tmp_path / "again"), exported["train"], 8)
    with open(tmp_path / "again" / "model.bin", "rb") as again, \
            open(exported["xml"]["INT8"][:-len(".xml")] + ".bin", "rb") as first_run:
        assert again.read() == first_run.read()


def test_fp_disagreement_fails_with_one_line_naming_the_precision_and_both_numbers(exported, tmp_path):
    def swap_classes(data):  # TensorFlow now "predicts" another class for every image
        data["probabilities"] = np.roll(data["probabilities"], 1, axis=1)

    reference = tampered_reference(exported, tmp_path, swap_classes)
    with pytest.raises(PipelineError) as failure:
        evaluate(exported, "FP16", tmp_path, reference, min_fp_agreement=0.995)
    message = str(failure.value)
    assert "\n" not in message and "export.min_fp_agreement" in message
    assert "FP16" in message and "0.00%" in message and "99.50%" in message
    assert not (tmp_path / "FP16.json").exists()


def test_int8_accuracy_drop_fails_only_above_the_set_threshold(exported, tmp_path):
    def perfect_tensorflow(data):
        data["probabilities"] = np.eye(3, dtype=np.float32)[data["labels"]]
        data["accuracy"] = np.float64(1.0)

    reference = tampered_reference(exported, tmp_path, perfect_tensorflow)
    reported, _ = evaluate(exported, "INT8", tmp_path, reference)  # no threshold: reported only
    assert reported["accuracy_drop_points"] > 5
    with pytest.raises(PipelineError) as failure:
        evaluate(exported, "INT8", tmp_path, reference, max_int8_drop=5.0)
    assert "\n" not in str(failure.value)
    assert str(failure.value).startswith("config key export.max_int8_accuracy_drop: the INT8 IR")
    assert f"{reported['accuracy_drop_points']:.2f} points" in str(failure.value)
    passed, _ = evaluate(exported, "INT8", tmp_path, reference, max_int8_drop=reported["accuracy_drop_points"])
    assert passed["accuracy_drop_points"] == reported["accuracy_drop_points"]


def test_command_line_prints_one_error_line(exported, tmp_path):
    reference = tampered_reference(exported, tmp_path, lambda data: data.update(
        probabilities=np.roll(data["probabilities"], 1, axis=1)))
    result = subprocess.run([sys.executable, "-m", "scripts.evaluate_ir", "ir", "--ir-xml", exported["xml"]["FP32"],
                             "--tensorflow", reference, "--test-tfrecords", *exported["test"],
                             "--output", str(tmp_path / "e.json"), "--min-fp-agreement", "0.995"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: config key export.min_fp_agreement: the FP32 IR")


def test_a_frozen_model_without_its_contract_is_named(tmp_path):
    (tmp_path / "frozen_model.pb").write_bytes(b"")
    with pytest.raises(PipelineError, match=r"model.json: missing"):
        ir.export_ir(str(tmp_path / "frozen_model.pb"), "FP32", str(tmp_path / "ir"))
