"""A tiny-image descriptor that re-encoding, resizing and recolouring barely change.

The image (decoded by scripts/core/images.py) in grey, averaged down to SIZE x SIZE,
minus its mean, at unit length: the cosine of two descriptors is the correlation of
the two thumbnails. A JPEG re-encode, a resize or a small brightness or colour change
keeps it near 1 where the backbone's features move a lot; a crop (which shifts the
pixels) does not, and is left to the features.
"""
import numpy as np
from PIL import Image

from scripts.core import images

SIZE = 16


def descriptor(source):
    """float32 [SIZE * SIZE] of an image given as bytes, a path or an RGB image."""
    image = source if isinstance(source, Image.Image) else images.decode_rgb(source)
    grey = np.asarray(image.convert("L").resize((SIZE, SIZE), Image.BOX), np.float64).ravel()
    grey -= grey.mean()
    norm = np.linalg.norm(grey)
    return (grey / norm if norm > 0 else grey).astype(np.float32)
