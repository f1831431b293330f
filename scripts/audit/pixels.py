"""A tiny-image descriptor that re-encoding, resizing and recolouring barely change.

The image (decoded by scripts/core/images.py) in grey, averaged down to SIZE x SIZE,
minus its mean, at unit length: the cosine of two descriptors is the correlation of
the two thumbnails. A JPEG re-encode, a resize or a small brightness or colour change
keeps it near 1 where the backbone's features move a lot. A crop shifts the pixels, so
each image has one descriptor per central crop of CROPS, and two images' similarity is
the best over all pairs of their crops: a central crop of an image (or the image of a
central crop) matches the crop of the same extent. Off-centre crops are left to the
backbone's features.
"""
import numpy as np
from PIL import Image

from scripts.core import images

SIZE = 16
CROPS = (1.0, 0.92, 0.84)  # central fractions of each side


def descriptor(source):
    """float32 [len(CROPS), SIZE * SIZE] of an image given as bytes, a path or an RGB image."""
    image = (source if isinstance(source, Image.Image) else images.decode_rgb(source)).convert("L")
    rows = []
    for fraction in CROPS:
        box = images.central_crop_box(image.width, image.height, fraction)
        grey = np.asarray(image.resize((SIZE, SIZE), Image.BOX, box=box), np.float64).ravel()
        grey -= grey.mean()
        norm = np.linalg.norm(grey)
        rows.append(grey / norm if norm > 0 else grey)
    return np.asarray(rows, np.float32)


def unit(descriptors):
    """[N, crops, D] descriptors with every crop's row at unit length (zero rows stay zero)."""
    rows = np.asarray(descriptors, np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def similarity(query, reference):
    """[Q, R] best cosine over all crop pairs of unit descriptors [Q, crops, D] and [R, crops, D]."""
    crops = query.shape[1]
    best = np.full((len(query), len(reference)), -np.inf)
    for i in range(crops):
        for j in range(crops):
            np.maximum(best, query[:, i] @ reference[:, j].T, out=best)
    return best
