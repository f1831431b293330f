"""The one image decode and the one preprocessing definition.

``to_rgb`` is how every stage turns a decoded image into the RGB picture it is meant to
be (EXIF orientation applied, 16-bit scaled to 8-bit, alpha laid on white): the
structure stage when it stores images, and ``decode_rgb`` for bottlenecks, the freeze
check, IR evaluation and ``predict``.

``preprocess_image`` turns an image into the network's input following a model's
preprocessing contract (``preprocessing_contract``): crop the central fraction, resize
to the input size, scale [0, 255] to the backbone's value range. The contract is
recorded in backbone.json, model.json and the IR's rt_info.
"""
import io

import numpy as np
from PIL import Image, ImageOps

DEFINITION = "scripts/core/images.py:preprocess_image"
RESIZE_METHODS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "area": Image.BOX,
                  "nearest": Image.NEAREST}
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def sixteen_to_eight_bits(image):
    """Scale 0..65535 down to 0..255; Pillow's convert() would clip at 255 instead."""
    values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
    return Image.fromarray(np.rint(values / 257).astype(np.uint8), "L")


def to_rgb(image):
    """An RGB image as it is meant to be seen."""
    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:
        image = sixteen_to_eight_bits(image)
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB")
    # Drop metadata: the pipeline reads pixels only, and a CMYK colour profile
    # left on converted RGB pixels would mislead any viewer.
    image.info = {}
    return image


def decode_rgb(source):
    """An image from a path or bytes, decoded (first frame) and converted by ``to_rgb``."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with Image.open(source) as image:
        image.load()
        return to_rgb(image)


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
