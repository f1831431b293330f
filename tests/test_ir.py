"""Backbone IRs, deployed IRs (backbone IR + head) and their evaluation, on real TensorFlow and OpenVINO.

A small real model: the pretrained MobileNet V1 0.25 backbone (tests/mobilenet.py) with a
head trained on a few synthetic images.
"""
import os
import subprocess
import sys

import mobilenet
import numpy as np
import pytest
from conftest import REPO
from test_model import LINEAR

from scripts.core import atomic, formats, images, records
from scripts.core import head as head_lib
from scripts.core.errors import PipelineError
from scripts.deploy import evaluate_ir, ir
from scripts.model import backbone_ir, bottlenecks, freeze

CALIBRATION = 8
TEST_IMAGES = 15
EVALUATION_KEYS = {"schema_version", "precision", "metrics", "trained_model_accuracy", "trained_model_features",
                   "accuracy_drop_points", "agreement", "check", "cpu", "untrained_backbone", "note",
                   "calibration", "operating_point", "low_confidence"}


def ir_settings(precision):
    return {"precision": precision, "views": [0, 4], "central_fraction": 1.0, "resize": "bilinear",
            "check_images": 8, "tolerance": 1e-3}


def features(setup, model, split, kind, folder):
    engine = os.path.basename(os.path.dirname(model))  # the precision's folder
    path = str(folder / f"{engine}-{kind}-{split}.npz")
    if not os.path.exists(path):
        bottlenecks.compute_shard(model, setup["json"], setup[split], path, kind, 1.0, "bilinear", 8, 2)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Backbone IRs, a head, the frozen model with two test-time views, and the deployed IRs."""
    root = tmp_path_factory.mktemp("ir")
    setup = mobilenet.build(root)
    contract = images.preprocessing_contract(224, (-1.0, 1.0), 1.0, "bilinear")
    backbones = {}
    for precision in ir.PRECISIONS:
        backbones[precision] = str(root / "backbone" / precision / "backbone.xml")
        backbone_ir.convert(setup["pb"], setup["json"], precision, backbones[precision], [setup["train"]],
                            CALIBRATION, contract, 2)
    split_features = {split: features(setup, backbones["FP32"], split, "plain", root)
                      for split in ("train", "validation", "test")}
    from scripts.model import retrain
    test_views = [features(setup, backbones["FP32"], "test", "view4", root)]
    names = ("head", "history", "tensorboard", "metrics", "predictions", "oof")
    files = ("head.npz", "history.csv", "tb", "metrics.json", "test_predictions.npz", "oof_predictions.npz")
    outputs = {name: str(root / "model" / file) for name, file in zip(names, files)}
    retrain.run({**split_features, "augmented": [], "train_views": [], "validation_views": [], "test_views": test_views},
                setup["labels"], setup["json"], {"train": {**LINEAR, "l2": "auto"}, "selection": {"folds": 3}}, outputs, "x")
    head = outputs["head"]
    model = {name: str(root / "model" / file) for name, file in (
        ("pb", "frozen_model.pb"), ("json", "model.json"), ("labels", "labels.json"),
        ("check", "freeze_check.json"))}
    views = [0, 4]
    freeze.freeze({"backbone_pb": setup["pb"], "backbone_json": setup["json"], "head": head,
                   "labels": setup["labels"], "test_tfrecords": [setup["test"]],
                   "test_features": split_features["test"],
                   "test_view_features": test_views},
                  model, {"views": views, "central_fraction": 1.0, "resize": "bilinear", "check_images": 8,
                          "tolerance": 1e-3}, 2)
    deployed = {}
    for precision in ir.PRECISIONS:
        test = [features(setup, backbones[precision], "test", kind, root) for kind in ("plain", "view4")]
        out = root / "deployed" / precision
        description = ir.export(
            {"backbone_xml": backbones[precision], "head": head, "backbone_json": setup["json"],
             "labels": setup["labels"], "test_tfrecords": [setup["test"]], "test_features": test[0],
             "test_view_features": test[1:], "frozen_check": model["check"]},
            {"xml": str(out / "model.xml"), "json": str(out / "ir.json")}, ir_settings(precision), 2)
        deployed[precision] = {"xml": str(out / "model.xml"), "json": str(out / "ir.json"), "test": test,
                               "description": description}
    model["predictions"] = outputs["predictions"]
    return {"root": root, "setup": setup, "backbones": backbones, "head": head, "model": model,
            "deployed": deployed}


def constant_types(xml):
    """The element types of the IR's weights (Constant ops), e.g. {"f32", "i8"}."""
    import openvino as ov
    model = ov.Core().read_model(xml)
    return {op.get_output_element_type(0).get_type_name() for op in model.get_ops()
            if op.get_type_name() == "Constant" and op.get_output_size()}


def test_each_backbone_precision_stores_its_weights_in_its_type(exported):
    xmls = exported["backbones"]
    sizes = {precision: os.path.getsize(xml[:-len(".xml")] + ".bin") for precision, xml in xmls.items()}
    assert "f16" not in constant_types(xmls["FP32"]) and "f16" in constant_types(xmls["FP16"])
    assert "i8" in constant_types(xmls["INT8"])
    assert sizes["FP16"] < 0.6 * sizes["FP32"] and sizes["INT8"] < 0.4 * sizes["FP32"]


def test_int8_calibration_takes_the_first_images_in_shard_order_and_is_reproducible(exported, tmp_path):
    setup = exported["setup"]
    contract = images.preprocessing_contract(224, (-1.0, 1.0), 1.0, "bilinear")
    calibration = backbone_ir.calibration_images([setup["train"]], contract, CALIBRATION, 2)
    first = list(records.read_examples([setup["train"]]))[:CALIBRATION]
    assert len(calibration) == CALIBRATION and calibration[0].shape == (1, 224, 224, 3)
    np.testing.assert_array_equal(calibration[7][0], images.preprocess_image(first[7]["encoded"], contract))
    again = str(tmp_path / "again.xml")
    backbone_ir.convert(setup["pb"], setup["json"], "INT8", again, [setup["train"]], CALIBRATION, contract, 2)
    with open(again[:-4] + ".bin", "rb") as one, open(exported["backbones"]["INT8"][:-4] + ".bin", "rb") as two:
        assert one.read() == two.read()


@pytest.mark.parametrize("precision", ir.PRECISIONS)
def test_the_deployed_ir_is_checked_on_real_test_images_against_the_head(exported, precision):
    check = exported["deployed"][precision]["description"]["check"]
    assert check["images"] == 8 and check["top1_disagreements"] == 0
    assert check["max_abs_probability_difference"] <= 1e-3


def test_the_deployed_ir_runs_the_views_and_matches_cached_features_on_every_test_image(exported):
    from scripts.core.inference import IrModel, run_over_tfrecords
    deployed = exported["deployed"]["INT8"]
    contract = atomic.read_json(exported["model"]["json"])["preprocessing"]
    probs, _, _, _ = run_over_tfrecords(IrModel(deployed["xml"], 2), contract, [exported["setup"]["test"]], 8, 2)
    head = head_lib.load(exported["head"])
    cached = [formats.read_bottlenecks(path)["features"] for path in deployed["test"]]
    np.testing.assert_allclose(probs, head_lib.view_probabilities(head, cached), atol=1e-4)


def test_ir_description_and_rt_info_carry_the_contract(exported):
    import openvino as ov
    contract = atomic.read_json(exported["model"]["json"])
    for precision, deployed in exported["deployed"].items():
        description = atomic.read_json(deployed["json"])
        assert description["precision"] == precision
        assert description["input"] == {"name": "input", "shape": [1, 224, 224, 3], "layout": "NHWC",
                                        "dtype": "float32", "range": [-1.0, 1.0]}
        assert description["output"]["shape"] == [1, 3]
        assert description["preprocessing"] == contract["preprocessing"]
        assert description["test_time_views"] == [0, 4]
        assert description["labels"] == mobilenet.LABELS and description["openvino_version"] == ov.get_version()
        model = ov.Core().read_model(deployed["xml"])
        assert model.get_rt_info([ir.RT_INFO_SECTION, "labels"]).astype(str) == '["circle", "square", "triangle"]'
        folder = os.path.dirname(deployed["xml"])
        assert not [name for name in os.listdir(folder) if name.startswith(".")]  # no temporaries


def test_a_deployed_ir_that_fails_its_check_is_not_left_behind(exported, tmp_path):
    deployed = exported["deployed"]["FP32"]
    cached = formats.read_bottlenecks(deployed["test"][0])
    formats.write_bottlenecks(tmp_path / "wrong.npz", cached["features"] * 2, cached["labels"], cached["sha256"],
                              cached["filenames"])
    out = tmp_path / "FP32"
    with pytest.raises(PipelineError, match="FP32 IR check: the model differs from the trained head"):
        ir.export({"backbone_xml": exported["backbones"]["FP32"], "head": exported["head"],
                   "backbone_json": exported["setup"]["json"], "labels": exported["setup"]["labels"],
                   "test_tfrecords": [exported["setup"]["test"]], "test_features": str(tmp_path / "wrong.npz"),
                   "test_view_features": deployed["test"][1:]},
                  {"xml": str(out / "model.xml"), "json": str(out / "ir.json")}, ir_settings("FP32"), 2)
    assert not (out / "model.xml").exists() and not (out / "ir.json").exists()


def evaluate(exported, precision, tmp_path, reference=None, ir_json=None, **thresholds):
    deployed = exported["deployed"][precision]
    output = tmp_path / f"{precision}.json"
    evaluation = evaluate_ir.evaluate(ir_json or deployed["json"], exported["head"], deployed["test"],
                                      reference or exported["model"]["predictions"], str(output),
                                      thresholds.get("min_fp_agreement"), thresholds.get("max_int8_drop"),
                                      trained_features="FP32")
    return evaluation, output


def test_every_ir_is_compared_with_the_frozen_pb_run_in_tensorflow(exported):
    """An independent reference: another file (frozen_model.pb) in another engine, on the same sample."""
    for precision, deployed in exported["deployed"].items():
        frozen = atomic.read_json(deployed["json"])["check"]["frozen_model_in_tensorflow"]
        assert frozen["images"] == 8, precision
        limit = 1e-3 if precision == "FP32" else 0.5
        assert frozen["max_abs_probability_difference"] <= limit and frozen["max_abs_probability_difference"] > 0


def test_an_fp32_ir_on_the_trained_features_is_gated_by_its_agreement_with_the_frozen_pb(exported, tmp_path):
    """FP32 on FP32 features agrees with the trained model by construction; the TensorFlow reference can fail."""
    description = atomic.read_json(exported["deployed"]["FP32"]["json"])
    description["check"]["frozen_model_in_tensorflow"]["top1_agreement"] = 0.5  # as if the .pb disagreed on half
    tampered = tmp_path / "ir.json"
    atomic.write_json(tampered, description)
    evaluation, _ = evaluate(exported, "FP32", tmp_path)
    assert evaluation["agreement"]["same_features"] is True and evaluation["agreement"]["top1_agreement"] == 1.0
    with pytest.raises(PipelineError, match="agrees with the frozen .pb in TensorFlow's top-1 on 50.00% of 8"):
        evaluate(exported, "FP32", tmp_path, ir_json=str(tampered), min_fp_agreement=0.995)


def tampered_reference(exported, tmp_path, change):
    """A copy of the trained model's test predictions with ``change`` applied to its arrays."""
    data = formats.read_predictions(exported["model"]["predictions"])
    change(data)
    path = str(tmp_path / "tampered.npz")
    formats.write_npz(path, **data)
    return path


@pytest.mark.parametrize("precision", ["FP32", "FP16"])
def test_fp_irs_agree_with_the_trained_model(exported, tmp_path, precision):
    evaluation, output = evaluate(exported, precision, tmp_path, min_fp_agreement=0.995)
    assert evaluation["agreement"]["images"] == TEST_IMAGES
    assert evaluation["agreement"]["top1_agreement"] >= 0.995
    assert evaluation["accuracy_drop_points"] == pytest.approx(0.0, abs=1e-9)
    assert atomic.read_json(output) == evaluation


def test_evaluation_json_has_the_documented_keys(exported, tmp_path):
    evaluation, _ = evaluate(exported, "INT8", tmp_path)
    assert set(evaluation) == EVALUATION_KEYS
    assert evaluation["schema_version"] == 2 and evaluation["precision"] == "INT8"
    assert set(evaluation["agreement"]) == {"top1_agreement", "max_abs_probability_difference", "images", "same_features"}
    assert evaluation["agreement"]["same_features"] is False  # INT8 features, the model trained on FP32 ones
    assert evaluation["metrics"]["n"] == TEST_IMAGES and evaluation["metrics"]["labels"] == mobilenet.LABELS
    assert evaluation["accuracy_drop_points"] == pytest.approx(
        100 * (evaluation["trained_model_accuracy"] - evaluation["metrics"]["accuracy"]))
    assert evaluation["untrained_backbone"] is False and evaluation["note"] == ""
    assert evaluation["cpu"]["inference_precision"] == "f32" and "avx2" in evaluation["cpu"]["isa_flags"]


def test_ir_json_records_the_cpu_and_the_kernels_its_check_ran(exported):
    facts = atomic.read_json(exported["deployed"]["INT8"]["json"])["cpu"]
    assert facts["model_name"] and facts["inference_precision"] == "f32"
    assert facts["kernels"] and all(kernel.endswith("_I8") for kernel in facts["kernels"] if "conv" in kernel)
    assert facts["vnni"] == ("avx512_vnni" in facts["isa_flags"] or "avx_vnni" in facts["isa_flags"])


def test_fp_disagreement_fails_with_one_line_naming_the_precision_and_both_numbers(exported, tmp_path):
    def swap_classes(data):  # the trained model now "predicts" another class for every image
        data["probabilities"] = np.roll(data["probabilities"], 1, axis=1)

    reference = tampered_reference(exported, tmp_path, swap_classes)
    with pytest.raises(PipelineError) as failure:
        evaluate(exported, "FP16", tmp_path, reference, min_fp_agreement=0.995)
    message = str(failure.value)
    assert "\n" not in message and "export.min_fp_agreement" in message
    assert "FP16" in message and "0.00%" in message and "99.50%" in message
    assert not (tmp_path / "FP16.json").exists()


def test_int8_accuracy_drop_fails_only_above_the_set_threshold(exported, tmp_path):
    plain, _ = evaluate(exported, "INT8", tmp_path)

    def better_reference(data):  # a reference 10 points more accurate than the INT8 IR
        data["accuracy"] = np.float64(plain["metrics"]["accuracy"] + 0.1)

    reference = tampered_reference(exported, tmp_path, better_reference)
    reported, _ = evaluate(exported, "INT8", tmp_path, reference)  # no threshold: reported only
    assert reported["accuracy_drop_points"] == pytest.approx(10.0)
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
    deployed = exported["deployed"]["FP16"]
    result = subprocess.run([sys.executable, "-m", "scripts.deploy.evaluate_ir", "--ir-json", deployed["json"],
                             "--head", exported["head"], "--test-features", deployed["test"][0],
                             "--test-view-features", *deployed["test"][1:], "--reference", reference,
                             "--output", str(tmp_path / "e.json"), "--min-fp-agreement", "0.995"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: config key export.min_fp_agreement: the FP16 IR")


def test_openvino_views_match_numpy_views():
    import openvino as ov

    from scripts.core import augment
    ops = ir.ov_ops()
    pixels = np.random.default_rng(0).normal(size=(1, 5, 5, 3)).astype(np.float32)
    for view in range(8):
        holder = ops.parameter([1, 5, 5, 3], np.float32)
        model = ov.Model([ops.result(ir.dihedral_view(ops, holder.output(0), view))], [holder])
        result = ov.Core().compile_model(model, "CPU")(pixels)[0]
        np.testing.assert_array_equal(result, augment.dihedral_view(pixels, view))
