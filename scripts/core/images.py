"""The one preprocessing definition (the one decode is ``scripts/core/decode.py``).

``preprocess_image`` turns an image into the network's input following a model's
preprocessing contract (``preprocessing_contract``): crop the central fraction, resize
to the input size, scale [0, 255] to the backbone's value range. The contract is
recorded in backbone.json, model.json and the IR's rt_info.
"""
import numpy as np
from PIL import Image

from scripts.core.decode import decode_rgb

DEFINITION = "scripts/core/images.py:preprocess_image"
RESIZE_METHODS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "area": Image.BOX,
                  "nearest": Image.NEAREST}


def central_crop_box(width, height, fraction):
    """The (left, top, right, bottom) box of the central ``fraction`` of each side."""
    crop_w = max(1, round(width * fraction))
    crop_h = max(1, round(height * fraction))
    left = (width - crop_w) // 2
    top = (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def preprocessing_contract(size, value_range, central_fraction=1.0, resize="bilinear"):
    """What a model's input expects; written next to every exported model."""
    return {
        "input_shape": [None, size, size, 3],
        "input_size": size,
        "input_layout": "NHWC",
        "input_dtype": "float32",
        "input_range": [float(value) for value in value_range],
        "color_order": "RGB",
        "central_fraction": float(central_fraction),
        "resize": resize,
        "definition": DEFINITION,
    }


def resize_rgb(image, contract):
    """The central crop of ``image`` resized to the contract's input size (a PIL image)."""
    size = contract["input_size"]
    box = central_crop_box(image.width, image.height, contract["central_fraction"])
    return image.resize((size, size), RESIZE_METHODS[contract["resize"]], box=box)


def scale_pixels(pixels, contract):
    """uint8-valued pixels [..., 3] as float32 in the contract's value range."""
    low, high = contract["input_range"]
    return (np.asarray(pixels, dtype=np.float32) / 255.0) * (high - low) + low


def preprocess_image(source, contract):
    """float32 [size, size, 3] in the contract's value range, from a path, bytes or RGB image."""
    image = source if isinstance(source, Image.Image) else decode_rgb(source)
    return scale_pixels(resize_rgb(image, contract), contract)
