"""A small real deployed IR made in seconds: a random convolutional "backbone" IR with a random
head joined by the project's own code (scripts/deploy/ir.py), ir.json and rt_info as the `ir` rule
writes them. For the serving tests, where what matters is that the server and ``predict`` run the
same IR, not what it has learnt."""
import os

import numpy as np

from scripts.core import atomic, formats
from scripts.core.model_contract import model_contract
from scripts.deploy import ir

LABELS = ["circle", "square", "triangle"]


def backbone(path, size, channels=8, seed=0):
    import openvino as ov
    import openvino.opset13 as ops
    rng = np.random.default_rng(seed)
    image = ops.parameter([1, size, size, 3], np.float32, name="input")
    nchw = ops.transpose(image, np.array([0, 3, 1, 2], np.int64))
    weights = ops.constant(rng.normal(0, 0.5, (channels, 3, 3, 3)).astype(np.float32))
    conv = ops.relu(ops.convolution(nchw, weights, [2, 2], [0, 0], [0, 0], [1, 1]))
    features = ops.reduce_mean(conv, np.array([2, 3], np.int64), keep_dims=False)
    formats.write_ir(ov.Model([ops.result(features)], [image], "tiny_backbone"), path)
    return channels


def build(folder, size=64, central_fraction=1.0, resize="bilinear", seed=0, extra=None):
    """model.xml, model.bin and ir.json of a deployed IR under ``folder``; returns the xml path."""
    os.makedirs(folder, exist_ok=True)
    width = backbone(os.path.join(folder, "backbone.xml"), size, seed=seed)
    rng = np.random.default_rng(seed + 1)
    head = {"mean": np.zeros(width, np.float32), "scale": np.ones(width, np.float32),
            "logits_w": rng.normal(0, 1, (width, len(LABELS))).astype(np.float32),
            "logits_b": np.zeros(len(LABELS), np.float32)}
    info = {"input_size": size, "input_range": [-1.0, 1.0], "untrained": True, "note": "untrained backbone"}
    contract = model_contract(info, LABELS, central_fraction, resize, [0], 0)
    model = ir.join(os.path.join(folder, "backbone.xml"), head, size, [0])
    ir.set_rt_info(model, contract)
    xml = os.path.join(folder, "model.xml")
    formats.write_ir(model, xml)
    description = ir.ir_description(model, contract, "FP32", {"images": 0})
    description.update(extra or {})
    atomic.write_json(os.path.join(folder, "ir.json"), description)
    formats.write_labels(os.path.join(folder, "labels.json"), LABELS)
    return xml
