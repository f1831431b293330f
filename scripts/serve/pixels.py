"""The deployed IR with the project's preprocessing built in, for servers that take raw pixels.

OpenVINO's PrePostProcessor puts in front of the model what scripts/core/images.py does
in Python: input u8 [1, H, W, 3] RGB of any H and W -> the central crop
(``central_fraction``, the same rounding as ``central_crop_box``) -> resize to the input
size (Pillow's bilinear or bicubic, as OpenVINO reimplements them) -> rounded to whole
pixel values as Pillow's 8-bit resize leaves them -> scaled to the backbone's range.
Decoding stays outside: a client sends decoded pixels, or OVMS decodes JPEG/PNG bytes
(its binary input) into this u8 NHWC tensor. The remaining difference from
``preprocess_image`` (Pillow samples the pixels around the crop box, OpenVINO only
inside it, and the resize kernels' rounding) is measured by tests/test_serving_repository.py.
"""
import json

import numpy as np

RESIZE_ALGORITHMS = {"bilinear": "RESIZE_BILINEAR_PILLOW", "bicubic": "RESIZE_BICUBIC_PILLOW",
                     "nearest": "RESIZE_NEAREST", "area": "RESIZE_LINEAR"}
INPUT_NAME = "pixels"


def central_crop(ops, node, fraction):
    """scripts/core/images.central_crop_box on a [1, H, W, C] tensor of any H and W."""
    shape = ops.convert(ops.shape_of(node, "i64"), "f32")
    sides = ops.gather(shape, np.array([1, 2], np.int64), np.int64(0))  # [H, W]
    kept = ops.maximum(ops.round(ops.multiply(sides, np.float32(fraction)), "half_to_even"), np.float32(1))
    start = ops.floor(ops.divide(ops.subtract(sides, kept), np.float32(2)))
    start = ops.convert(start, "i64")
    stop = ops.add(start, ops.convert(kept, "i64"))
    return ops.slice(node, start, stop, np.array([1, 1], np.int64), np.array([1, 2], np.int64)).output(0)


def with_preprocessing(model, contract):
    """The model (input float [1, S, S, 3] in the contract's range) fed by u8 [1, H, W, 3] RGB pixels."""
    import openvino as ov
    import openvino.opset13 as ops
    from openvino.preprocess import PrePostProcessor, ResizeAlgorithm
    if contract["resize"] not in RESIZE_ALGORITHMS:
        raise ValueError(f"resize {contract['resize']!r}: no OpenVINO equivalent")
    low, high = contract["input_range"]
    ppp = PrePostProcessor(model)
    step = ppp.input()
    step.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_spatial_dynamic_shape()
    step.model().set_layout(ov.Layout("NHWC"))
    step.preprocess().convert_element_type(ov.Type.f32)
    if contract["central_fraction"] < 1.0:
        step.preprocess().custom(lambda node: central_crop(ops, node, contract["central_fraction"]))
    step.preprocess().resize(getattr(ResizeAlgorithm, RESIZE_ALGORITHMS[contract["resize"]]))
    step.preprocess().custom(lambda node: ops.clamp(ops.round(node, "half_to_even"), 0.0, 255.0).output(0))
    # x / 255 * (high - low) + low  ==  (x - mean) / scale
    scale = 255.0 / (high - low)
    step.preprocess().mean(-low * scale).scale(scale)
    model = ppp.build()
    model.input(0).get_tensor().set_names({INPUT_NAME})
    model.set_rt_info(json.dumps({"element_type": "u8", "layout": "NHWC", "shape": [1, -1, -1, 3],
                                  "color_order": "RGB", "steps": ["central_crop", contract["resize"], "round",
                                                                  "scale"]}),
                      ["deployment", "pixel_input"])
    return model


def save_pixel_ir(ir_xml, output_xml, contract):
    """Read a deployed IR, build its preprocessing in, save it beside (xml + bin)."""
    import openvino as ov

    from scripts.core import formats
    model = with_preprocessing(ov.Core().read_model(ir_xml), contract)
    formats.write_ir(model, output_xml)
    return model
