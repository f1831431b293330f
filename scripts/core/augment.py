"""Training-time augmentation and test-time views, on top of the one preprocessing.

``augmented_pixels`` makes a random variant of a decoded RGB image (random crop, flips,
90-degree rotations, colour jitter; each optional) and then applies the model's
preprocessing contract (scripts/core/images.py), so an augmented image is fed exactly as
a plain one. ``views`` makes the test-time views of already preprocessed pixels: the
dihedral group's flips and rotations, which the frozen graph computes in the same order.

Augmentation settings (config ``augment``; every key optional):
    flip: bool          left-right and up-down flips, each with probability 1/2
    rotate90: bool      a rotation by a random multiple of 90 degrees
    crop: float         keep a random box of this fraction of each side or more (1.0: none)
    color_jitter: float brightness, contrast and saturation factors in [1 - s, 1 + s]
    zoom_out: float     put the image at a random place on a plain canvas of up to this many
                        times its width and height (1.0: none); the canvas white, black or a
                        random colour. A head trained so learns that blank surroundings carry
                        no class, so an object pasted into a larger blank image is still
                        classified by, and its saliency map found on, the object.
"""
import numpy as np
from PIL import Image, ImageEnhance

from scripts.core import images

NO_AUGMENTATION = {"flip": False, "rotate90": False, "crop": 1.0, "color_jitter": 0.0, "zoom_out": 1.0}
# The dihedral views of a square image: rotations by k * 90 degrees, then the same mirrored.
DIHEDRAL_VIEWS = 8


def random_crop(image, rng, fraction):
    side = rng.uniform(fraction, 1.0)
    width, height = max(1, round(image.width * side)), max(1, round(image.height * side))
    left = int(rng.integers(0, image.width - width + 1))
    top = int(rng.integers(0, image.height - height + 1))
    return image.crop((left, top, left + width, top + height))


def jitter_colours(image, rng, strength):
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(1 - strength, 1 + strength))
    return image


def zoom_out(image, rng, scale):
    """The image at a random place on a canvas of 1 to ``scale`` times its sides, of one plain colour."""
    width = round(image.width * rng.uniform(1.0, scale))
    height = round(image.height * rng.uniform(1.0, scale))
    kind = int(rng.integers(0, 3))
    fill = ((255, 255, 255), (0, 0, 0), tuple(int(value) for value in rng.integers(0, 256, 3)))[kind]
    canvas = Image.new("RGB", (width, height), fill)
    canvas.paste(image, (int(rng.integers(0, width - image.width + 1)), int(rng.integers(0, height - image.height + 1))))
    return canvas


def augmented_image(image, rng, settings):
    """A random variant of a PIL RGB image (before preprocessing)."""
    settings = {**NO_AUGMENTATION, **(settings or {})}
    if settings["crop"] < 1.0:
        image = random_crop(image, rng, settings["crop"])
    if settings["flip"]:
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_TOP_BOTTOM)
    if settings["rotate90"]:
        turns = int(rng.integers(0, 4))
        if turns:
            image = image.transpose((Image.ROTATE_90, Image.ROTATE_180, Image.ROTATE_270)[turns - 1])
    if settings["color_jitter"] > 0:
        image = jitter_colours(image, rng, settings["color_jitter"])
    if settings["zoom_out"] > 1.0:  # last: a crop or a jitter would not see the canvas
        image = zoom_out(image, rng, settings["zoom_out"])
    return image


def augmented_pixels(encoded, contract, rng, settings):
    """Preprocessed pixels [S, S, 3] of a random variant of an encoded image."""
    image = images.decode_rgb(encoded)
    return images.preprocess_image(augmented_image(image, rng, settings), contract)


def dihedral_view(pixels, view):
    """View ``view`` (0..7) of pixels [..., H, W, C]: rotate by (view % 4) * 90 degrees, mirror if view >= 4."""
    rotated = np.rot90(pixels, k=view % 4, axes=(-3, -2))
    return rotated[..., ::-1, :] if view >= 4 else rotated


def views(pixels, count):
    """The first ``count`` dihedral views of a batch [N, H, W, C], as [count * N, H, W, C], view-major."""
    return np.concatenate([dihedral_view(pixels, view) for view in range(count)])
