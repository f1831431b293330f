"""Split the indexed images into train, validation and test by a hash of their content.

An image's split depends only on its sha256 (and the salt), never on the other images,
so it keeps its split when images are added; copies share a sha256, so they cannot
straddle splits. labels.json lists the sorted class names (a JSON list; index = label id).

Entry point:
    python -m scripts.data.split --index index.tsv --manifest manifest.tsv --labels labels.json
        --summary split_summary.json --validation 0.1 --test 0.2 [--salt TEXT]
"""
import argparse
import hashlib
import os

from scripts.core import atomic, formats
from scripts.core.errors import PipelineError, run_cli

SPLITS = ("train", "validation", "test")
MANIFEST_HEADER = ("path", "label", "label_index", "split", "sha256", "width", "height")
INDEX_COLUMNS = ("path", "label", "sha256", "width", "height")


def unit_hash(sha256, salt=""):
    """A number in [0, 1) fixed by the image's content hash and the salt."""
    return int(hashlib.sha256((salt + sha256).encode()).hexdigest()[:16], 16) / 2**64


def split_of(sha256, validation, test, salt=""):
    u = unit_hash(sha256, salt)
    if u < test:
        return "test"
    if u < test + validation:
        return "validation"
    return "train"


def check_fractions(validation, test):
    for key, value in (("split.validation", validation), ("split.test", test)):
        if not 0 <= value < 1:
            raise PipelineError(f"config key {key}: {value} must be at least 0 and below 1")
    if validation + test >= 1:
        raise PipelineError(f"config key split: validation + test must be below 1, leaving images to train on "
                            f"(got {validation} + {test})")


def read_index(index_path):
    if not os.path.isfile(index_path):
        raise PipelineError(f"{index_path}: the index does not exist (run the structure stage first)")
    rows = atomic.read_table(index_path)
    if not rows:
        raise PipelineError(f"{index_path}: the index lists no images")
    missing = [column for column in INDEX_COLUMNS if column not in rows[0]]
    if missing:
        raise PipelineError(f"{index_path}: missing column(s) {', '.join(missing)}")
    return rows


def split_counts(manifest, labels):
    """{split: {label: count}}, with every label under every split."""
    counts = {split_name: dict.fromkeys(labels, 0) for split_name in SPLITS}
    for row in manifest:
        record = dict(zip(MANIFEST_HEADER, row))
        counts[record["split"]][record["label"]] += 1
    return counts


def shown(label):
    """A class name for an error line, cut short if long."""
    text = repr(label)
    return text if len(text) <= 80 else f"{text[:80]}... ({len(label)} characters)"


def check_training_images(counts, index_path, validation, test):
    for label, train_count in counts["train"].items():
        if train_count == 0:
            total = sum(counts[split_name][label] for split_name in SPLITS)
            raise PipelineError(f"class {shown(label)} in {index_path} has no training images (all {total} went to "
                                f"validation/test): add images or lower split.validation ({validation}) "
                                f"and split.test ({test})")


def split(index_path, manifest_path, labels_path, summary_path, validation, test, salt=""):
    """Write the manifest, labels and summary; return the summary ({split: {label: count}})."""
    check_fractions(validation, test)
    rows = read_index(index_path)
    labels = sorted({row["label"] for row in rows})
    label_index = {label: number for number, label in enumerate(labels)}
    manifest = [(row["path"], row["label"], label_index[row["label"]],
                 split_of(row["sha256"], validation, test, salt), row["sha256"], row["width"], row["height"])
                for row in rows]
    counts = split_counts(manifest, labels)
    check_training_images(counts, index_path, validation, test)
    atomic.write_table(manifest_path, MANIFEST_HEADER, manifest)
    formats.write_labels(labels_path, labels)
    atomic.write_json(summary_path, counts)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, help="index.tsv from the structure stage")
    parser.add_argument("--manifest", required=True, help="manifest.tsv to write: the index with label_index "
                                                          "and split")
    parser.add_argument("--labels", required=True, help="labels.json to write: the sorted class names")
    parser.add_argument("--summary", required=True, help="JSON to write: images per split per class")
    parser.add_argument("--validation", type=float, required=True, help="fraction of images for validation")
    parser.add_argument("--test", type=float, required=True, help="fraction of images for test")
    parser.add_argument("--salt", default="", help="text mixed into the hash; change it to draw a new split")
    args = parser.parse_args(argv)
    counts = split(args.index, args.manifest, args.labels, args.summary, args.validation, args.test, args.salt)
    totals = ", ".join(f"{name} {sum(counts[name].values())}" for name in SPLITS)
    print(f"{totals} images -> {args.manifest}")


if __name__ == "__main__":
    run_cli(main)
