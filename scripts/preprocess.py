"""The one image preprocessing definition.

Bottleneck computation, the frozen model's contract, OpenVINO evaluation and
``predict`` all call ``preprocess_image``: Inception's evaluation preprocessing, i.e.
decode to RGB, crop the central fraction, resize bilinearly to the network's input
size, and scale [0, 255] to the backbone's value range (by default [-1, 1]).
"""
import io

import numpy as np
from PIL import Image, ImageOps

DEFAULT_CENTRAL_FRACTION = 0.875


def load_rgb(source):
    """Open an image from a path or bytes as RGB with its EXIF orientation applied."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with Image.open(source) as image:
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")


def central_crop_box(width, height, fraction):
    """The (left, top, right, bottom) box of the central ``fraction`` of each side."""
    crop_w = max(1, round(width * fraction))
    crop_h = max(1, round(height * fraction))
    left = (width - crop_w) // 2
    top = (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def preprocess_image(source, size, value_range=(-1.0, 1.0),
                     central_fraction=DEFAULT_CENTRAL_FRACTION):
    """Return float32 [size, size, 3] scaled to ``value_range`` from a path or bytes."""
    image = load_rgb(source)
    box = central_crop_box(image.width, image.height, central_fraction)
    image = image.resize((size, size), Image.BILINEAR, box=box)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    low, high = value_range
    return pixels * (high - low) + low


def preprocessing_contract(size, value_range, central_fraction=DEFAULT_CENTRAL_FRACTION):
    """What a model's input expects, written next to every exported model."""
    return {
        "input_shape": [None, size, size, 3],
        "input_layout": "NHWC",
        "input_dtype": "float32",
        "input_range": list(value_range),
        "color_order": "RGB",
        "central_fraction": central_fraction,
        "resize": "bilinear",
        "definition": "scripts/preprocess.py:preprocess_image",
    }
