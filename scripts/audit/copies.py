"""Features of known near-copies of a sample of training images: what the leakage audit's
threshold is chosen from.

A fixed sample of training images (the lowest hashes of seed + content hash) is copied
by each of TRANSFORMS (re-encoded, resized, cropped, slightly recoloured), and every
original and copy goes through the one decode and preprocessing (scripts/core/images.py)
and the backbone that computed the cached features. The output is a bottlenecks file
(scripts/core/formats.py) whose ``filenames`` name the transform ("original" for the
image itself) and whose ``sha256`` is the original's, with one more array, ``pixels``:
each image's tiny-image descriptor (scripts/audit/pixels.py).

    python -m scripts.audit.copies --backbone-json J --model backbone.xml --tfrecords T... \
        --output copies.npz --sample 100 --seed 0 --central-fraction 1.0 --resize bilinear \
        --batch-size 32 --threads 2
"""
import argparse
import hashlib
import heapq
import io

import numpy as np
from PIL import Image, ImageEnhance

from scripts.audit import pixels
from scripts.core import atomic, formats, images, records
from scripts.core.errors import PipelineError, run_cli
from scripts.core.inference import load_backbone, run_over_examples

ORIGINAL = "original"


def jpeg(image, quality):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png(image):
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def scaled(image, factor):
    return image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))), Image.BICUBIC)


def cropped(image, left, top, right, bottom):
    """The image without the given fractions of each side."""
    width, height = image.size
    return image.crop((round(width * left), round(height * top), round(width * (1 - right)),
                       round(height * (1 - bottom))))


# Each: RGB image -> encoded bytes of a near-copy. Lossless PNG unless the change is the encoding.
# The copies that keep the pixels where they were (no crop) calibrate the pixel descriptor too.
TRANSFORMS = {
    "jpeg_q75": lambda image: jpeg(image, 75),
    "jpeg_q40": lambda image: jpeg(image, 40),
    "resized_0.5": lambda image: png(scaled(image, 0.5)),
    "resized_0.7_jpeg_q85": lambda image: jpeg(scaled(image, 0.7), 85),
    "cropped_central_0.9": lambda image: png(cropped(image, 0.05, 0.05, 0.05, 0.05)),
    "cropped_corner_0.85": lambda image: png(cropped(image, 0.15, 0.15, 0.0, 0.0)),
    "brighter_1.1": lambda image: png(ImageEnhance.Brightness(image).enhance(1.1)),
    "recoloured_saturation_0.85": lambda image: png(ImageEnhance.Color(image).enhance(0.85)),
    "combined": lambda image: jpeg(ImageEnhance.Brightness(scaled(cropped(image, 0.04, 0.04, 0.04, 0.04), 0.8))
                                   .enhance(0.95), 75),
}


def sample_key(seed, sha256):
    return hashlib.sha256(f"{seed}:{sha256}".encode()).hexdigest()


def sampled_examples(tfrecord_paths, count, seed):
    """The ``count`` training examples with the lowest seeded hashes (independent of shard order)."""
    return heapq.nsmallest(count, records.read_examples(tfrecord_paths),
                           key=lambda example: sample_key(seed, example["sha256"]))


def copy_examples(examples, descriptors):
    """Each example itself, then each of its copies, as examples the model loop reads;
    their pixel descriptors are appended to ``descriptors`` in the same order."""
    for example in examples:
        image = images.decode_rgb(example["encoded"])
        descriptors.append(pixels.descriptor(image))
        yield {**example, "label": 0, "filename": ORIGINAL}
        for number, (name, transform) in enumerate(TRANSFORMS.items(), 1):
            encoded = transform(image)
            descriptors.append(pixels.descriptor(encoded))
            yield {"encoded": encoded, "label": number, "sha256": example["sha256"], "filename": name}


def compute_copies(model_path, backbone_json, tfrecord_paths, output, sample, seed, central_fraction, resize,
                   batch_size, threads):
    """Write the features of the sampled originals and their copies; return the number of originals."""
    if sample < 1:
        raise PipelineError(f"config key audit.copies_sample: {sample} must be at least 1")
    info = atomic.read_json(backbone_json)
    contract = images.preprocessing_contract(info["input_size"], info["input_range"], central_fraction, resize)
    examples = sampled_examples(tfrecord_paths, sample, seed)
    if not examples:
        raise PipelineError(f"{tfrecord_paths[0]}: the training split has no images to copy")
    model = load_backbone(model_path, info, threads)
    descriptors = []
    features, labels, hashes, names = run_over_examples(model, contract, copy_examples(examples, descriptors),
                                                        batch_size, threads, "copies",
                                                        total=len(examples) * (1 + len(TRANSFORMS)))
    formats.write_npz(output, features=np.asarray(features, np.float32), labels=np.asarray(labels, np.int64),
                      sha256=np.asarray(hashes, dtype=str), filenames=np.asarray(names, dtype=str),
                      pixels=np.stack(descriptors))
    return len(examples)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone-json", required=True)
    parser.add_argument("--model", required=True, help="backbone.pb (TensorFlow) or a backbone .xml (OpenVINO): "
                                                       "the one that computed the cached features")
    parser.add_argument("--tfrecords", nargs="+", required=True, help="the training split's TFRecord shards")
    parser.add_argument("--output", required=True, help=".npz to write (bottlenecks format)")
    parser.add_argument("--sample", type=int, required=True, help="training images to copy (audit.copies_sample)")
    parser.add_argument("--seed", type=int, required=True, help="draws the sample (audit.seed)")
    parser.add_argument("--central-fraction", type=float, required=True)
    parser.add_argument("--resize", choices=sorted(images.RESIZE_METHODS), required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    count = compute_copies(args.model, args.backbone_json, args.tfrecords, args.output, args.sample, args.seed,
                           args.central_fraction, args.resize, args.batch_size, args.threads)
    print(f"{count} training images and {count * len(TRANSFORMS)} copies -> {args.output}")


if __name__ == "__main__":
    run_cli(main)
