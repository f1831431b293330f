"""Split the indexed images into train, validation and test, keeping groups whole.

Every image belongs to a group: by default the image alone (its content hash), with
``--group-regex`` the first group of that regex searched in the image's path relative
to the raw tree (a patient, a slide, a smear). A group's split comes from a hash of its
name (and the salt), never from the other images, so nothing moves when images are
added, and all images of a group fall in one split. Byte-identical copies are dropped
by the structure stage, so they cannot straddle splits either.

With ``--stratify`` each class's groups (a group's class is its most common label) are
ordered by the same hash and cut at the fractions, so every class gets its share to
within one group; then adding a group can move at most the groups at a class's two cut
points. With ``--predefined`` the data's own folders decide (docs/splits.md).

labels.json lists the sorted class names (a JSON list; index = label id); the manifest
gains a ``group`` column (the contract cross-validation reads to keep groups whole in
folds), and split_summary.json counts images per class and groups per split.

Entry point:
    python -m scripts.data.split --index index.tsv --manifest manifest.tsv --labels labels.json
        --summary split_summary.json --validation 0.1 --test 0.2 [--salt TEXT]
        [--raw RAW --group-regex REGEX] [--stratify] [--predefined --layout folders]
"""
import argparse
import collections
import hashlib
import math
import os
import re

from scripts.core import atomic, formats
from scripts.core.errors import PipelineError, run_cli, shown

SPLITS = ("train", "validation", "test")
MANIFEST_HEADER = ("path", "label", "label_index", "split", "sha256", "width", "height", "group")
INDEX_COLUMNS = ("path", "label", "sha256", "width", "height")
# Folder names --predefined reads as a split (compared in lower case).
SPLIT_FOLDERS = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                 "valid": "validation", "test": "test", "testing": "test"}
SUMMARY_EXAMPLES = 5  # straddling groups named in the summary


def unit_hash(key, salt=""):
    """A number in [0, 1) fixed by a key (an image's content hash, or a group name) and the salt."""
    return int(hashlib.sha256((salt + key).encode()).hexdigest()[:16], 16) / 2**64


def split_of(key, validation, test, salt=""):
    u = unit_hash(key, salt)
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


# ---------------------------------------------------------------- groups
def relative_source(row, raw_dir):
    """The image's path relative to the raw tree, with / between folders."""
    source = row.get("source") or row["path"]
    relative = os.path.relpath(source, raw_dir) if raw_dir else source
    return relative.replace(os.sep, "/")


def compile_group_regex(pattern):
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise PipelineError(f"config key split.group_regex: {pattern!r} is not a valid regex ({error})") from None
    if compiled.groups == 0:
        raise PipelineError(f"config key split.group_regex: {pattern!r} has no capturing group for the group")
    return compiled


def group_names(rows, raw_dir, group_regex):
    """Each row's group: the regex's first group in its relative path, or its content hash."""
    if not group_regex:
        return [row["sha256"] for row in rows]
    pattern = compile_group_regex(group_regex)
    groups, unmatched = [], []
    for row in rows:
        match = pattern.search(relative_source(row, raw_dir))
        if match is None or not match.group(1):
            unmatched.append(relative_source(row, raw_dir))
        else:
            groups.append(match.group(1))
    if unmatched:
        raise PipelineError(f"config key split.group_regex: {group_regex!r} finds no group in "
                            f"{len(unmatched)} image path(s), e.g. {shown(unmatched[0])}; every image needs one")
    return groups


def group_labels(rows, groups):
    """{group: its most common label (ties: the first in sorted order)}."""
    counts = collections.defaultdict(collections.Counter)
    for row, group in zip(rows, groups):
        counts[group][row["label"]] += 1
    return {group: min(counter, key=lambda label: (-counter[label], label)) for group, counter in counts.items()}


def half_up(value):
    return math.floor(value + 0.5)


def hashed_splits(groups, validation, test, salt):
    """{group: split} by each group's own hash."""
    return {group: split_of(group, validation, test, salt) for group in groups}


def stratified_splits(labels_of_group, validation, test, salt):
    """{group: split}: each class's groups in hash order, the first ones to test, then validation.

    Cut points are rounded to whole groups, and a class with at least one group keeps one
    for training.
    """
    by_label = collections.defaultdict(list)
    for group, label in labels_of_group.items():
        by_label[label].append(group)
    chosen = {}
    for members in by_label.values():
        members.sort(key=lambda group: (unit_hash(group, salt), group))
        count = len(members)
        test_end = min(half_up(test * count), count - 1)
        validation_end = max(test_end, min(half_up((test + validation) * count), count - 1))
        for rank, group in enumerate(members):
            chosen[group] = "test" if rank < test_end else "validation" if rank < validation_end else "train"
    return chosen


def predefined_split(relative_path, layout):
    """The split the data's folders give an image: the nearest folder above it (above its class
    folder with layout folders) named train, validation or test (or training, val, valid, testing)."""
    folders = relative_path.split("/")[:-1]
    if layout == "folders":
        folders = folders[:-1]
    for folder in reversed(folders):
        if folder.lower() in SPLIT_FOLDERS:
            return SPLIT_FOLDERS[folder.lower()]
    return None


def predefined_splits(rows, raw_dir, layout, groups, validation, salt):
    """Each row's split from its folders; without a validation folder, split.validation of the
    training groups (by their hash) become validation."""
    relative = [relative_source(row, raw_dir) for row in rows]
    found = [predefined_split(path, layout) for path in relative]
    missing = [path for path, split_name in zip(relative, found) if split_name is None]
    if missing:
        raise PipelineError(f"config key split.predefined: {len(missing)} image(s) are not under a train/, "
                            f"validation/ or test/ folder, e.g. {shown(missing[0])}")
    if "validation" not in found:
        found = ["validation" if split_name == "train" and unit_hash(group, salt) < validation else split_name
                 for split_name, group in zip(found, groups)]
    return found


def straddling_groups(groups, splits):
    """Groups whose images are in more than one split, sorted."""
    seen = collections.defaultdict(set)
    for group, split_name in zip(groups, splits):
        seen[group].add(split_name)
    return sorted(group for group, names in seen.items() if len(names) > 1)


# ---------------------------------------------------------------- summary and checks
def split_counts(manifest, labels):
    """{split: {label: count}}, with every label under every split."""
    counts = {split_name: dict.fromkeys(labels, 0) for split_name in SPLITS}
    for row in manifest:
        record = dict(zip(MANIFEST_HEADER, row))
        counts[record["split"]][record["label"]] += 1
    return counts


def group_counts(manifest):
    """{split: number of groups with an image in it}."""
    seen = {split_name: set() for split_name in SPLITS}
    for row in manifest:
        record = dict(zip(MANIFEST_HEADER, row))
        seen[record["split"]].add(record["group"])
    return {split_name: len(names) for split_name, names in seen.items()}


def check_training_images(counts, index_path, validation, test):
    for label, train_count in counts["train"].items():
        if train_count == 0:
            total = sum(counts[split_name][label] for split_name in SPLITS)
            raise PipelineError(f"class {shown(label)} in {index_path} has no training images (all {total} went to "
                                f"validation/test): add images or lower split.validation ({validation}) "
                                f"and split.test ({test})")


def choose_splits(rows, groups, validation, test, salt, stratify, predefined, raw_dir, layout):
    if predefined:
        return predefined_splits(rows, raw_dir, layout, groups, validation, salt)
    if stratify:
        by_group = stratified_splits(group_labels(rows, groups), validation, test, salt)
    else:
        by_group = hashed_splits(set(groups), validation, test, salt)
    return [by_group[group] for group in groups]


def split(index_path, manifest_path, labels_path, summary_path, validation, test, salt="", raw_dir=None,
          group_regex=None, stratify=False, predefined=False, layout="folders"):
    """Write the manifest, labels and summary; return the summary.

    The summary is {split: {label: count}} plus "groups" ({split: groups}), "group_by"
    (content, group_regex) and "straddling_groups" (groups in more than one split: only
    predefined splits can have them).
    """
    check_fractions(validation, test)
    rows = read_index(index_path)
    labels = sorted({row["label"] for row in rows})
    label_index = {label: number for number, label in enumerate(labels)}
    groups = group_names(rows, raw_dir, group_regex)
    splits = choose_splits(rows, groups, validation, test, salt, stratify, predefined, raw_dir, layout)
    manifest = [(row["path"], row["label"], label_index[row["label"]], split_name, row["sha256"], row["width"],
                 row["height"], group) for row, split_name, group in zip(rows, splits, groups)]
    counts = split_counts(manifest, labels)
    check_training_images(counts, index_path, validation, test)
    straddling = straddling_groups(groups, splits)
    summary = {**counts, "groups": group_counts(manifest), "group_by": "group_regex" if group_regex else "content",
               "straddling_groups": {"count": len(straddling), "examples": straddling[:SUMMARY_EXAMPLES]}}
    atomic.write_table(manifest_path, MANIFEST_HEADER, manifest)
    formats.write_labels(labels_path, labels)
    atomic.write_json(summary_path, summary)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, help="index.tsv from the structure stage")
    parser.add_argument("--manifest", required=True, help="manifest.tsv to write: the index with label_index, "
                                                          "split and group")
    parser.add_argument("--labels", required=True, help="labels.json to write: the sorted class names")
    parser.add_argument("--summary", required=True, help="JSON to write: images per split per class, groups per split")
    parser.add_argument("--validation", type=float, required=True, help="fraction of images (groups) for validation")
    parser.add_argument("--test", type=float, required=True, help="fraction of images (groups) for test")
    parser.add_argument("--salt", default="", help="text mixed into the hash; change it to draw a new split")
    parser.add_argument("--raw", default=None, help="the raw tree the index's sources are in (paths for the "
                                                    "group regex and predefined folders are relative to it)")
    parser.add_argument("--group-regex", default="", help="regex searched in each image's path relative to --raw; "
                                                          "its first group is the image's group")
    parser.add_argument("--stratify", action="store_true", help="cut each class's groups in hash order at the "
                                                                "fractions")
    parser.add_argument("--predefined", action="store_true", help="the split is the data's own train/, "
                                                                  "validation/ or test/ folder")
    parser.add_argument("--layout", default="folders", choices=("folders", "filename"),
                        help="dataset.layout: with folders, the class folder is skipped when looking for the split")
    args = parser.parse_args(argv)
    summary = split(args.index, args.manifest, args.labels, args.summary, args.validation, args.test, args.salt,
                    args.raw, args.group_regex or None, args.stratify, args.predefined, args.layout)
    totals = ", ".join(f"{name} {sum(summary[name].values())} ({summary['groups'][name]} groups)" for name in SPLITS)
    print(f"{totals} images -> {args.manifest}")
    if summary["straddling_groups"]["count"]:
        print(f"warning: {summary['straddling_groups']['count']} group(s) have images in more than one predefined "
              f"split, e.g. {shown(summary['straddling_groups']['examples'][0])}")


if __name__ == "__main__":
    run_cli(main)
