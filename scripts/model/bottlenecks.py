"""Bottleneck features: one job per TFRecord shard, then one gather per split.

The backbone runs in TensorFlow (backbone.pb) or OpenVINO (its IR at FP32, FP16 or
INT8, rule `backbone_ir`). What each shard file holds is its ``kind``:

    plain     each image preprocessed by the contract (scripts/core/images.py)
    view<k>   test-time view k (1-7) of each preprocessed image (scripts/core/augment.py)
    aug-...   ``copies`` augmented variants of each image (training images only), seeded
              by the augment seed, the image's content hash and the copy number

Entry points:
    python -m scripts.model.bottlenecks shard --backbone-json J --model backbone.xml --tfrecord T \
        --output O --kind plain --central-fraction 1.0 --resize bilinear --batch-size 32 --threads 2
    python -m scripts.model.bottlenecks gather --output O SHARD.npz ...
"""
import argparse
import json
import os
import re

import numpy as np

from scripts.core import atomic, augment, formats, images, records
from scripts.core.errors import PipelineError, run_cli
from scripts.core.inference import count_records, load_backbone, run_over_examples, run_over_tfrecords


def expanded_examples(examples, copies):
    """Each example ``copies`` times, with its copy number."""
    for example in examples:
        for copy in range(copies):
            yield {**example, "copy": copy}


def preparer(kind, contract, augment_settings):
    """The function that turns one example into pixels for this kind of shard."""
    if kind == "plain":
        return None  # the contract's preprocessing
    if match := re.fullmatch(r"view([1-7])", kind):
        view = int(match.group(1))
        return lambda example: augment.dihedral_view(images.preprocess_image(example["encoded"], contract), view)
    if kind.startswith("aug-"):
        def prepare(example):
            seed = [augment_settings["seed"], int(example["sha256"][:12], 16), example["copy"]]
            return augment.augmented_pixels(example["encoded"], contract, np.random.default_rng(seed),
                                            augment_settings)
        return prepare
    raise PipelineError(f"unknown kind of bottlenecks {kind!r}")


def compute_shard(model_path, backbone_json, tfrecord, output, kind, central_fraction, resize,
                  batch_size, threads, augment_settings=None):
    """Features of every image (or view, or augmented copy) of one shard -> .npz; return the count."""
    info = atomic.read_json(backbone_json)
    contract = images.preprocessing_contract(info["input_size"], info["input_range"], central_fraction, resize)
    model = load_backbone(model_path, info, threads)
    prepare = preparer(kind, contract, augment_settings)
    label = f"{kind} {os.path.basename(tfrecord)}"
    if kind.startswith("aug-"):
        copies = augment_settings["copies"]
        examples = expanded_examples(records.read_examples([tfrecord]), copies)
        features, labels, hashes, names = run_over_examples(model, contract, examples, batch_size, threads, label,
                                                            prepare, copies * count_records([tfrecord]))
    else:
        features, labels, hashes, names = run_over_tfrecords(model, contract, [tfrecord], batch_size, threads,
                                                             label, prepare)
    if features is None:
        formats.write_npz(output, **formats.empty_bottlenecks(info["bottleneck_size"]))
        return 0
    formats.write_bottlenecks(output, features, labels, hashes, names)
    return len(labels)


def gather(shard_paths, output):
    """Concatenate shard files (in the given order) into one split file; return the count."""
    merged = formats.concatenate_bottlenecks([formats.read_bottlenecks(path) for path in shard_paths])
    formats.write_bottlenecks(output, merged["features"], merged["labels"], merged["sha256"], merged["filenames"])
    return len(merged["labels"])


def main(argv=None):
    parser = argparse.ArgumentParser(description="Compute or gather bottleneck features.")
    commands = parser.add_subparsers(dest="command", required=True)
    shard = commands.add_parser("shard", help="bottlenecks of one TFRecord shard")
    shard.add_argument("--backbone-json", required=True)
    shard.add_argument("--model", required=True, help="backbone.pb (TensorFlow) or a backbone .xml (OpenVINO)")
    shard.add_argument("--tfrecord", required=True)
    shard.add_argument("--output", required=True, help=".npz to write")
    shard.add_argument("--kind", required=True, help="plain, view1..view7 or aug-<id>")
    shard.add_argument("--augment", default="{}", help="aug-*: the augment settings as JSON")
    shard.add_argument("--central-fraction", type=float, required=True)
    shard.add_argument("--resize", choices=sorted(images.RESIZE_METHODS), required=True)
    shard.add_argument("--batch-size", type=int, required=True)
    shard.add_argument("--threads", type=int, required=True)
    collect = commands.add_parser("gather", help="concatenate shard .npz files")
    collect.add_argument("--output", required=True)
    collect.add_argument("shards", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "shard":
        count = compute_shard(args.model, args.backbone_json, args.tfrecord, args.output, args.kind,
                              args.central_fraction, args.resize, args.batch_size, args.threads,
                              json.loads(args.augment))
    else:
        count = gather(args.shards, args.output)
    print(f"wrote {count} bottlenecks to {args.output}")


if __name__ == "__main__":
    run_cli(main)
