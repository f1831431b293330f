"""The one image decode: how every stage turns an image file into the RGB picture it is meant to be.

``to_rgb`` applies the EXIF orientation, scales 16-bit to 8-bit and lays alpha on white:
the structure stage uses it when it stores images, and ``decode_rgb`` (bytes or a path)
serves bottlenecks, checks, evaluation, the report and ``predict``. Preprocessing for a
network (crop, resize, scale) is ``scripts/core/images.py``: kept apart so that editing it
reruns the model stages, never the data stages.
"""
import io

import numpy as np
from PIL import Image, ImageOps

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
