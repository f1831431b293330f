"""TFRecord shards with TF-Slim's standard feature keys, and a reader for them.

Each image of a split goes to exactly one shard, chosen from its content hash, so a
shard's contents do not depend on the order of the manifest.

Entry point (one Snakemake job per shard):
    python -m scripts.tfrecords --manifest M --split train --shard 0 --num-shards 4 --output OUT
"""
import argparse
import os

from scripts import atomic
from scripts.errors import PipelineError, run_cli

FORMATS = {".jpg": b"jpeg", ".jpeg": b"jpeg", ".png": b"png", ".gif": b"gif", ".bmp": b"bmp"}


def shard_of(sha256, num_shards):
    """The shard index of an image, from its content hash (stable across runs)."""
    return int(sha256[-12:], 16) % num_shards


def shard_rows(manifest_rows, split, shard, num_shards):
    """The manifest rows that belong to one shard of one split, in manifest order."""
    return [row for row in manifest_rows
            if row["split"] == split and shard_of(row["sha256"], num_shards) == shard]


def image_format(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise PipelineError(f"{path}: unsupported image extension {ext!r} for a TFRecord")
    return FORMATS[ext]


def make_example(tf, encoded, fmt, label, height, width, filename, sha256):
    def _bytes(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": _bytes(encoded),
        "image/format": _bytes(fmt),
        "image/class/label": _int(label),
        "image/height": _int(height),
        "image/width": _int(width),
        "image/filename": _bytes(filename.encode("utf-8")),
        "image/sha256": _bytes(sha256.encode("ascii")),
    }))


def write_shard(rows, output, base_dir="."):
    """Write the manifest ``rows`` to one TFRecord file, atomically."""
    import tensorflow as tf
    with atomic.atomic_path(output) as temp:
        with tf.io.TFRecordWriter(temp) as writer:
            for row in rows:
                path = os.path.join(base_dir, row["path"])
                with open(path, "rb") as handle:
                    encoded = handle.read()
                example = make_example(tf, encoded, image_format(path), row["label_index"],
                                       row["height"], row["width"],
                                       os.path.basename(row["path"]), row["sha256"])
                writer.write(example.SerializeToString())
    return len(rows)


def parse_example(serialized):
    """A dict of the features of one serialized ``tf.train.Example``."""
    from tensorflow.core.example import example_pb2
    example = example_pb2.Example.FromString(serialized)
    feature = example.features.feature
    return {
        "encoded": feature["image/encoded"].bytes_list.value[0],
        "format": feature["image/format"].bytes_list.value[0].decode(),
        "label": feature["image/class/label"].int64_list.value[0],
        "height": feature["image/height"].int64_list.value[0],
        "width": feature["image/width"].int64_list.value[0],
        "filename": feature["image/filename"].bytes_list.value[0].decode("utf-8"),
        "sha256": feature["image/sha256"].bytes_list.value[0].decode("ascii"),
    }


def read_examples(paths):
    """Yield the parsed examples of the given TFRecord files, in order."""
    import tensorflow as tf
    for path in paths:
        for serialized in tf.compat.v1.io.tf_record_iterator(path):
            yield parse_example(serialized)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="manifest.tsv from the split stage")
    parser.add_argument("--split", required=True, help="train, validation or test")
    parser.add_argument("--shard", type=int, required=True, help="shard index, from 0")
    parser.add_argument("--num-shards", type=int, required=True, help="shards in this split")
    parser.add_argument("--output", required=True, help="the .tfrecord file to write")
    args = parser.parse_args(argv)
    rows = shard_rows(atomic.read_tsv(args.manifest), args.split, args.shard, args.num_shards)
    count = write_shard(rows, args.output)
    print(f"wrote {count} images to {args.output}")


if __name__ == "__main__":
    run_cli(main)
