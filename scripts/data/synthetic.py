"""The offline default data set: one drawn shape per image on a noisy textured background.

Classes are shapes (circle, square, triangle, cross, ring, bar), and each class also has
its own hue (jittered) on a greyish background: a trained backbone can use the shape,
and even an untrained backbone's random features can use the colour, so the offline
default shows real learning either way. Size, position and rotation are random and the
background is noisy. The same arguments give byte-identical files.

Entry point:
    python -m scripts.data.synthetic --output DIR --classes 3 --images-per-class 40 --size 128 --seed 0
"""
import argparse
import colorsys
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from scripts.core import atomic
from scripts.core.errors import PipelineError, run_cli

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")
JPEG_QUALITY = 90
MIN_SIZE = 16
MIN_CONTRAST = 60  # mean difference per channel, out of 255

# Outlines of the polygon shapes, centred on 0 with a radius of about 1.
_CROSS_ARM = 0.3
OUTLINES = {
    "square": [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)],
    "triangle": [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)],
    "cross": [(-_CROSS_ARM, -1), (_CROSS_ARM, -1), (_CROSS_ARM, -_CROSS_ARM), (1, -_CROSS_ARM),
              (1, _CROSS_ARM), (_CROSS_ARM, _CROSS_ARM), (_CROSS_ARM, 1), (-_CROSS_ARM, 1),
              (-_CROSS_ARM, _CROSS_ARM), (-1, _CROSS_ARM), (-1, -_CROSS_ARM), (-_CROSS_ARM, -_CROSS_ARM)],
    "bar": [(-1, -0.22), (1, -0.22), (1, 0.22), (-1, 0.22)],
}


def class_hue(rng, class_index, classes):
    """The class's hue, jittered a little."""
    return (class_index / classes + rng.uniform(-0.04, 0.04)) % 1.0


def background(rng, size, class_index=0, classes=1):
    """A pale tint of the class's hue with a smooth texture (upscaled coarse noise) and grain."""
    tint = colorsys.hsv_to_rgb(class_hue(rng, class_index, classes), 0.3, 1.0)
    base = rng.uniform(60, 200) * np.array(tint)
    coarse = rng.normal(0, 25, size=(6, 6, 3))
    texture = np.stack([np.asarray(Image.fromarray(coarse[:, :, channel].astype(np.float32))
                                   .resize((size, size), Image.BICUBIC)) for channel in range(3)], axis=-1)
    grain = rng.normal(0, 12, size=(size, size, 3))
    return base + texture + grain


def shape_colour(rng, background_mean, class_index, classes):
    """A saturated colour near the class's hue, far enough from the background to be seen."""
    hue, saturation = class_hue(rng, class_index, classes), rng.uniform(0.6, 1.0)
    colour = 255 * np.array(colorsys.hsv_to_rgb(hue, saturation, rng.uniform(0.55, 1.0)))
    if np.abs(colour - background_mean).mean() < MIN_CONTRAST:
        # Keep the hue; make the shape as bright or as dark as gives the most contrast.
        options = [255 * np.array(colorsys.hsv_to_rgb(hue, saturation, value)) for value in (1.0, 0.2)]
        colour = max(options, key=lambda option: np.abs(option - background_mean).mean())
    return colour


def shape_mask(rng, shape, size):
    """A float mask in [0, 1] of one filled shape at a random size, place and rotation."""
    radius = rng.uniform(0.18, 0.38) * size
    centre_x, centre_y = rng.uniform(radius, size - radius, size=2)
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if shape in ("circle", "ring"):
        draw.ellipse([centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius], fill=255)
        if shape == "ring":
            inner = radius * rng.uniform(0.45, 0.65)
            draw.ellipse([centre_x - inner, centre_y - inner, centre_x + inner, centre_y + inner], fill=0)
    else:
        angle = rng.uniform(0, 2 * math.pi)
        cos, sin = math.cos(angle), math.sin(angle)
        points = [(centre_x + radius * (x * cos - y * sin), centre_y + radius * (x * sin + y * cos))
                  for x, y in OUTLINES[shape]]
        draw.polygon(points, fill=255)
    # A slight blur softens the edges like a photograph's.
    mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return np.asarray(mask, dtype=np.float64)[:, :, None] / 255.0


def draw_image(rng, shape, size, class_index=0, classes=1):
    """One RGB image of ``shape`` on a noisy background."""
    pixels = background(rng, size, class_index, classes)
    colour = shape_colour(rng, pixels.mean(axis=(0, 1)), class_index, classes)
    mask = shape_mask(rng, shape, size)
    # The shape gets its own grain so that it is not a flat colour.
    shape_pixels = colour + rng.normal(0, 10, size=pixels.shape)
    pixels = pixels * (1 - mask) + shape_pixels * mask
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def check_arguments(classes, images_per_class, size, seed):
    if not 2 <= classes <= len(SHAPES):
        raise PipelineError(f"config key synthetic.classes: {classes} must be 2 to {len(SHAPES)}")
    if images_per_class < 1:
        raise PipelineError(f"config key synthetic.images_per_class: {images_per_class} must be at least 1")
    if size < MIN_SIZE:
        raise PipelineError(f"config key synthetic.image_size: {size} must be at least {MIN_SIZE}")
    if seed < 0:
        raise PipelineError(f"config key synthetic.seed: {seed} must not be negative")


def generate(output_dir, classes, images_per_class, size, seed):
    """Write ``output_dir/<shape>/<shape>_<NNN>.jpg``; return the number of images."""
    check_arguments(classes, images_per_class, size, seed)
    digits = max(3, len(str(images_per_class - 1)))
    with atomic.atomic_dir(output_dir) as temp:
        for class_index, shape in enumerate(SHAPES[:classes]):
            os.makedirs(os.path.join(temp, shape))
            for image_index in range(images_per_class):
                # Each image has its own seed, so it does not depend on the others.
                rng = np.random.default_rng([seed, class_index, image_index])
                image = draw_image(rng, shape, size, class_index, classes)
                name = f"{shape}_{image_index:0{digits}d}.jpg"
                image.save(os.path.join(temp, shape, name), "JPEG", quality=JPEG_QUALITY)
    return classes * images_per_class


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder to write (replaced if it exists)")
    parser.add_argument("--classes", type=int, required=True,
                        help=f"number of shape classes, 2 to {len(SHAPES)}: the first of {', '.join(SHAPES)}")
    parser.add_argument("--images-per-class", type=int, required=True, help="images of each class")
    parser.add_argument("--size", type=int, required=True, help="width and height in pixels")
    parser.add_argument("--seed", type=int, required=True, help="random seed; same seed, same files")
    args = parser.parse_args(argv)
    count = generate(args.output, args.classes, args.images_per_class, args.size, args.seed)
    print(f"wrote {count} images of {args.classes} classes to {args.output}")


if __name__ == "__main__":
    run_cli(main)
