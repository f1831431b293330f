"""One TFRecord shard of one split, with TF-Slim's standard feature keys.

Each image of a split goes to exactly one shard, chosen from its content hash, so a
shard's contents do not depend on the order of the manifest. The images' bytes are
stored as they are (scripts/core/records.py); TensorFlow is not needed.

    python -m scripts.data.tfrecord_shard --manifest M --split train --shard 0 --num-shards 4 --output OUT
"""
import argparse
import os

from scripts.core import atomic, records
from scripts.core.errors import run_cli
from scripts.core.progress import Progress


def shard_of(sha256, num_shards):
    """The shard index of an image, from its content hash (stable across runs)."""
    return int(sha256[-12:], 16) % num_shards


def shard_rows(manifest_rows, split, shard, num_shards):
    """The manifest rows that belong to one shard of one split, in manifest order."""
    return [row for row in manifest_rows
            if row["split"] == split and shard_of(row["sha256"], num_shards) == shard]


def examples(rows, base_dir=".", progress=None):
    for row in rows:
        path = os.path.join(base_dir, row["path"])
        with open(path, "rb") as handle:
            encoded = handle.read()
        yield records.make_example(encoded, records.image_format(path), row["label_index"], row["height"],
                                   row["width"], os.path.basename(row["path"]), row["sha256"])
        if progress:
            progress.update()


def write_shard(rows, output, base_dir=".", label=None):
    """Write the manifest ``rows`` to one TFRecord file, atomically; return their number."""
    progress = Progress(label, len(rows)) if label else None
    return records.write_records(output, examples(rows, base_dir, progress))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="manifest.tsv from the split stage")
    parser.add_argument("--split", required=True, help="train, validation or test")
    parser.add_argument("--shard", type=int, required=True, help="shard index, from 0")
    parser.add_argument("--num-shards", type=int, required=True, help="shards in this split")
    parser.add_argument("--output", required=True, help="the .tfrecord file to write")
    args = parser.parse_args(argv)
    rows = shard_rows(atomic.read_table(args.manifest), args.split, args.shard, args.num_shards)
    count = write_shard(rows, args.output, label=os.path.basename(args.output))
    print(f"wrote {count} images to {args.output}")


if __name__ == "__main__":
    run_cli(main)
