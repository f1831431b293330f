"""The deployed OpenVINO IR of one precision: that precision's backbone IR with the head appended.

No conversion or calibration happens here: the backbone IR (FP32, FP16 or INT8, rule
`backbone_ir`) is read as it is and the head's arithmetic (scripts/core/head.py) is
appended as OpenVINO ops, float32, with the test-time views in front of the backbone
and their mean behind the softmax. So a change of the head never sends an image through
a converter or a quantizer, and the deployed INT8 model is the very INT8 backbone whose
features the head was trained or evaluated on.

The IR takes ``input``: [1, size, size, 3] NHWC float32 in the model's value range
(scripts/core/images.py makes it) and returns ``final_result``: the softmax over the
labels, calibrated: softmax(logits / T) per view with the temperature T of
calibration.json. ``ir.json`` beside ``model.xml`` records the input, the preprocessing
contract, the views, the labels, the precision, the temperature, the operating point and
the low-confidence threshold; the labels, the contract, those three and the note are also
in the IR's rt_info under ``deployment``. Before it is published, a sample of real test
images runs through the saved file and must match the trained head on the cached
features of the same backbone IR (scripts/core/checks.py). With ``--frozen-check`` the
IR's outputs on that sample are also compared with the frozen .pb's, run in TensorFlow by
the freeze job: a reference computed by another engine from another file, recorded as
``check.frozen_model_in_tensorflow`` (top-1 agreement, largest probability difference).

    python -m scripts.deploy.ir --backbone-xml B --head H --backbone-json J --labels L --views 0 4 \
        --central-fraction 1.0 --resize bilinear --precision INT8 \
        --test-tfrecords T... --test-features F --test-view-features V... --check-images 32 \
        --tolerance 0.001 --calibration calibration.json --frozen-check freeze_check.json --output-xml X \
        --output-json J --threads 2
"""
import argparse
import json
import os

import numpy as np

from scripts.core import atomic, cpu, formats, model_check
from scripts.core import head as head_lib
from scripts.core.backbones import PRECISIONS
from scripts.core.checks import reference_probabilities, sample_agreement, sample_check
from scripts.core.contract import note_suffix
from scripts.core.errors import run_cli
from scripts.core.inference import IrModel
from scripts.core.model_contract import model_contract

RT_INFO_SECTION = "deployment"


def ov_ops():
    import openvino.opset13 as ops
    return ops


def mirror_width(ops, pixels):
    """[N, H, W, C] mirrored left-right: a slice of the width axis with step -1."""
    last = np.iinfo(np.int64).min
    return ops.slice(pixels, np.array([-1], np.int64), np.array([last], np.int64), np.array([-1], np.int64),
                     np.array([2], np.int64))


def dihedral_view(ops, pixels, view):
    """scripts/core/augment.dihedral_view as OpenVINO ops on [N, H, W, C]."""
    for _ in range(view % 4):  # np.rot90 over (H, W): mirror W, then swap H and W
        pixels = ops.transpose(mirror_width(ops, pixels), np.array([0, 2, 1, 3]))
    return mirror_width(ops, pixels) if view >= 4 else pixels


def append_head(ops, features, head, views, temperature=1.0):
    """The head's softmax(logits / T) [1, classes] on the backbone's features, averaged over the views."""
    width = head["mean"].shape[0]
    # A no-op barrier: without it, the CPU plugin's low-precision passes move the INT8
    # backbone's last dequantization into the head and average-pool in 8 bits, so the
    # deployed model's features would differ (by ~4e-3) from the backbone IR's own.
    features = ops.maximum(features, ops.constant(np.float32(np.finfo(np.float32).min)))
    x = ops.reshape(features, np.array([-1, width], np.int64), special_zero=False)
    x = ops.multiply(ops.subtract(x, ops.constant(head["mean"])), ops.constant(head["scale"]))
    if "hidden_w" in head:
        x = ops.relu(ops.add(ops.matmul(x, ops.constant(head["hidden_w"]), False, False),
                             ops.constant(head["hidden_b"])))
    logits = ops.add(ops.matmul(x, ops.constant(head["logits_w"]), False, False), ops.constant(head["logits_b"]))
    logits = ops.divide(logits, ops.constant(np.float32(temperature)))
    probs = ops.softmax(logits, 1)
    if len(views) > 1:
        probs = ops.reduce_mean(probs, np.array([0], np.int64), keep_dims=True)
    return probs


def join(backbone_xml, head, size, views, temperature=1.0):
    """One OpenVINO model: input [1, S, S, 3] -> views -> the backbone IR -> head -> final_result."""
    import openvino as ov
    ops = ov_ops()
    model_check.check_ir(backbone_xml)
    backbone = ov.Core().read_model(backbone_xml)
    old_input = backbone.get_parameters()[0]
    image = ops.parameter([1, size, size, 3], np.float32, name="input")
    image.output(0).get_tensor().set_names({"input"})
    batch = image.output(0)
    if len(views) > 1:
        batch = ops.concat([dihedral_view(ops, batch, view) for view in views], 0).output(0)
    for target in old_input.output(0).get_target_inputs():
        target.replace_source_output(batch)
    features = backbone.get_results()[0].input_value(0)  # what feeds the backbone's Result node
    probs = append_head(ops, features, head, views, temperature)
    result = ops.result(probs)
    probs.output(0).get_tensor().set_names({"final_result"})
    model = ov.Model([result], [image], "classifier")
    model.validate_nodes_and_infer_types()
    return model


def set_rt_info(model, contract):
    model.set_rt_info(json.dumps(contract["labels"]), [RT_INFO_SECTION, "labels"])
    model.set_rt_info(json.dumps(contract["preprocessing"], sort_keys=True), [RT_INFO_SECTION, "preprocessing"])
    model.set_rt_info(json.dumps(contract["test_time_views"]), [RT_INFO_SECTION, "test_time_views"])
    model.set_rt_info(contract["note"], [RT_INFO_SECTION, "note"])
    model.set_rt_info(json.dumps(contract["calibration"], sort_keys=True), [RT_INFO_SECTION, "calibration"])
    model.set_rt_info(json.dumps(contract["operating_point"], sort_keys=True), [RT_INFO_SECTION, "operating_point"])
    model.set_rt_info(json.dumps(contract["low_confidence"], sort_keys=True), [RT_INFO_SECTION, "low_confidence"])


def ir_description(model, contract, precision, check, cpu_facts=None):
    """ir.json: how to feed the IR, what it returns, where it came from and the CPU its check ran on."""
    import openvino as ov
    preprocessing = contract["preprocessing"]
    return {
        "schema_version": 2,
        "precision": precision,
        "files": {"xml": "model.xml", "bin": "model.bin"},
        "input": {"name": "input", "shape": list(model.input(0).get_shape()), "layout": preprocessing["input_layout"],
                  "dtype": preprocessing["input_dtype"], "range": preprocessing["input_range"]},
        "output": {"name": "final_result", "shape": list(model.output(0).get_shape()), "dtype": "float32",
                   "meaning": "calibrated softmax probabilities (softmax(logits / temperature), the views' mean), "
                              "classes in `labels` order"},
        "preprocessing": preprocessing,
        "test_time_views": contract["test_time_views"],
        "labels": contract["labels"],
        "calibration": contract["calibration"],
        "operating_point": contract["operating_point"],
        "low_confidence": contract["low_confidence"],
        "openvino_version": ov.get_version(),
        "check": check,
        "cpu": cpu_facts,
        "untrained_backbone": contract["untrained_backbone"],
        "note": contract["note"],
    }


def export(paths, outputs, settings, threads):
    """Join, save and check the IR of one precision; write ir.json; return the description.

    settings: precision, views, central_fraction, resize, check_images, tolerance.
    """
    head = head_lib.load(paths["head"])
    views, precision = settings["views"], settings["precision"]
    contract = model_contract(atomic.read_json(paths["backbone_json"]), formats.read_labels(paths["labels"]),
                              settings["central_fraction"], settings["resize"], views,
                              int(head["hidden_w"].shape[1]) if "hidden_w" in head else 0, paths.get("calibration"))
    temperature = contract["calibration"]["temperature"]
    model = join(paths["backbone_xml"], head, contract["preprocessing"]["input_size"], views, temperature)
    set_rt_info(model, contract)
    formats.write_ir(model, outputs["xml"])
    probabilities, test = reference_probabilities(head, [paths["test_features"], *paths["test_view_features"]],
                                                  temperature)
    try:
        ir_model = IrModel(outputs["xml"], threads)
        check = sample_check(ir_model, contract["preprocessing"], paths["test_tfrecords"],
                             {"probabilities": probabilities, "sha256": test["sha256"]}, settings["check_images"],
                             settings["tolerance"],
                             threads, f"{precision} IR")
    except Exception:
        for path in (outputs["xml"], os.path.splitext(outputs["xml"])[0] + ".bin"):
            if os.path.exists(path):
                os.remove(path)  # a model that failed its check is not left under its final name
        raise
    sample = check.pop("sample")
    if paths.get("frozen_check"):
        # An independent reference: the frozen .pb, run in TensorFlow on the same images by the freeze job.
        check["frozen_model_in_tensorflow"] = sample_agreement({"sample": sample}, atomic.read_json(paths["frozen_check"]),
                                                              f"{precision} IR vs {paths['frozen_check']}")
    description = ir_description(model, contract, precision, check, cpu.description(ir_model.compiled))
    atomic.write_json(outputs["json"], description)
    return description


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone-xml", required=True, help="the backbone IR of this precision")
    parser.add_argument("--head", required=True, help="head.npz")
    parser.add_argument("--backbone-json", required=True, help="the backbone's description")
    parser.add_argument("--labels", required=True, help="labels.json")
    parser.add_argument("--views", type=int, nargs="+", required=True, help="test-time views, 0 first")
    parser.add_argument("--central-fraction", type=float, required=True)
    parser.add_argument("--resize", required=True)
    parser.add_argument("--precision", choices=PRECISIONS, required=True)
    parser.add_argument("--test-tfrecords", nargs="+", required=True)
    parser.add_argument("--test-features", required=True, help="cached test features of this backbone IR")
    parser.add_argument("--test-view-features", nargs="*", default=[])
    parser.add_argument("--frozen-check", help="freeze_check.json: the frozen .pb's TensorFlow outputs on the sample")
    parser.add_argument("--check-images", type=int, required=True)
    parser.add_argument("--tolerance", type=float, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--calibration", help="calibration.json: the temperature and thresholds (default: none, T=1)")
    parser.add_argument("--output-xml", required=True, help="model.xml (model.bin is written beside it)")
    parser.add_argument("--output-json", required=True, help="ir.json")
    args = parser.parse_args(argv)
    paths = {key: getattr(args, key) for key in ("backbone_xml", "head", "backbone_json", "labels",
                                                 "test_tfrecords", "test_features", "test_view_features",
                                                 "calibration", "frozen_check")}
    settings = {key: getattr(args, key) for key in ("precision", "views", "central_fraction", "resize",
                                                    "check_images", "tolerance")}
    description = export(paths, {"xml": args.output_xml, "json": args.output_json}, settings, args.threads)
    check = description["check"]
    print(f"wrote {args.precision} IR {args.output_xml}; check on {check['images']} test images: max probability "
          f"difference {check['max_abs_probability_difference']:.2e}{note_suffix(description['note'])}")


if __name__ == "__main__":
    run_cli(main)
