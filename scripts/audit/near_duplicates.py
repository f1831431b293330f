"""Leakage audit: validation and test images whose nearest training image is a near-duplicate.

Two similarities, each a cosine, each with a threshold chosen from data:

    features  the cached backbone features minus the training mean (pooled ReLU features
              are all positive, so their raw cosine is near 1 for any two cell images)
    pixels    the tiny-image descriptor (scripts/audit/pixels.py): near 1 for re-encoded,
              resized, recoloured and centrally cropped copies, blind to off-centre crops

A validation or test image is a near-duplicate when its nearest training image by either
similarity reaches that similarity's threshold. Thresholds come from known copies of a
sample of training images (scripts/audit/copies.py): the ``quantile`` (e.g. 0.05: 95% of
the copies would be caught) of their similarity to their originals (for pixels, of the
copies other than the off-centre crop), but never below the ``distinct_quantile`` of the
similarities of distinct images, so that the audit does not flag the ordinary closeness
of one cell image to another. Distinct images are, for the features, each training
image and its nearest other training image (the features of two cells of one class are
close, and that closeness must not count); for the pixels, each training image and its
nearest training image of another class (pairs known to be different pictures: the
data's own near-copies within a class would otherwise raise the floor to 1). near_duplicates.json records both distributions, which bound
decided, and how many copies the threshold catches.

    python -m scripts.audit.near_duplicates --train T --validation V --test T --copies C \
        --tfrecords SHARD... --manifest M --labels L --quantile 0.05 --distinct-quantile 0.95 \
        --output-table near_duplicates.csv --output-summary near_duplicates.json
"""
import argparse

import numpy as np

from scripts.audit import pixels
from scripts.core import atomic, formats, records
from scripts.core.errors import PipelineError, run_cli

TABLE_HEADER = ("split", "path", "label", "train_path", "train_label", "feature_similarity", "pixel_similarity",
                "found_by", "sha256", "train_sha256")
SIGNALS = ("features", "pixels")
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
CHUNK = 1024  # query rows per similarity block (memory: CHUNK x training images)
ORIGINAL = "original"  # as scripts/audit/copies.py names the originals
# scripts/audit/copies.py's copies the pixel descriptor is meant to catch: all but the off-centre crop.
ALIGNED = ("jpeg_q75", "jpeg_q40", "resized_0.5", "resized_0.7_jpeg_q85", "cropped_central_0.9", "brighter_1.1",
           "recoloured_saturation_0.85", "combined")


def unit_rows(vectors, mean=None):
    """Rows (minus ``mean``) scaled to unit length (zero rows stay zero)."""
    rows = np.asarray(vectors, np.float64)
    if mean is not None:
        rows = rows - mean
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def cosine(query, reference):
    """[Q, R] cosines of unit rows."""
    return query @ reference.T


def nearest(query, reference, exclude_self=False, similarity=cosine):
    """(index, similarity) of each query row's nearest reference row."""
    indices = np.zeros(len(query), np.int64)
    similarities = np.full(len(query), -np.inf)
    for start in range(0, len(query), CHUNK):
        block = similarity(query[start:start + CHUNK], reference)
        if exclude_self:
            rows = np.arange(len(block))
            block[rows, start + rows] = -np.inf
        indices[start:start + CHUNK] = block.argmax(axis=1)
        similarities[start:start + CHUNK] = block.max(axis=1)
    return indices, similarities


def nearest_other_class(unit, labels, similarity=cosine):
    """Each row's similarity to its nearest row of another class: pairs known to be distinct images."""
    labels = np.asarray(labels)
    similarities = np.full(len(unit), -np.inf)
    for start in range(0, len(unit), CHUNK):
        block = similarity(unit[start:start + CHUNK], unit)
        block[labels[start:start + CHUNK, None] == labels[None, :]] = -np.inf
        similarities[start:start + CHUNK] = block.max(axis=1)
    return similarities[np.isfinite(similarities)]


def copy_similarities(names, hashes, unit, similarity=cosine):
    """{transform: similarity of each copy to its original}."""
    originals = {hashes[row]: unit[row] for row in np.flatnonzero(names == ORIGINAL)}
    if not originals:
        raise PipelineError("the copies file holds no originals")
    found = {}
    for row in np.flatnonzero(names != ORIGINAL):
        found.setdefault(str(names[row]), []).append(float(similarity(unit[row:row + 1],
                                                                         originals[hashes[row]][None])[0, 0]))
    return {name: np.asarray(values) for name, values in found.items()}


def distribution(values):
    values = np.asarray(values, np.float64)
    if not len(values):
        return {"n": 0}
    return {"n": int(len(values)), "mean": float(values.mean()),
            **{f"q{quantile:g}": float(np.quantile(values, quantile)) for quantile in QUANTILES}}


def choose_threshold(copy_values, distinct_values, quantile, distinct_quantile,
                     distinct_name="train_to_train_of_another_class"):
    """max(the copies' ``quantile``, the distinct neighbours' ``distinct_quantile``), and which decided."""
    for key, value in (("audit.threshold_quantile", quantile), ("audit.distinct_quantile", distinct_quantile)):
        if not 0 <= value <= 1:
            raise PipelineError(f"config key {key}: {value} must be between 0 and 1")
    from_copies = float(np.quantile(copy_values, quantile))
    floor = float(np.quantile(distinct_values, distinct_quantile))
    if from_copies >= floor:
        return from_copies, f"quantile {quantile:g} of the copies' similarity to their originals"
    return floor, (f"quantile {distinct_quantile:g} of the distinct pairs' similarity ({distinct_name}), above "
                   f"the copies' quantile {quantile:g} ({from_copies:.4f})")


def pixel_descriptors(tfrecord_paths, wanted):
    """{sha256: pixel descriptor} of the wanted images of TFRecord files."""
    found = {}
    for example in records.read_examples(tfrecord_paths):
        if example["sha256"] in wanted and example["sha256"] not in found:
            found[example["sha256"]] = pixels.descriptor(example["encoded"])
    missing = wanted - set(found)
    if missing:
        raise PipelineError(f"{len(missing)} image(s) of the features are in none of the TFRecords, "
                            f"e.g. sha256 {sorted(missing)[0]}")
    return found


class Signal:
    """One similarity: unit rows per split, the copies' similarities, distinct neighbours, threshold."""

    def __init__(self, name, splits, train_labels, copies_unit, copy_names, copy_hashes, transforms, distinct,
                 similarity=cosine):
        self.name, self.similarity = name, similarity
        self.splits = splits  # {split: unit rows}
        copies = copy_similarities(copy_names, copy_hashes, copies_unit, similarity)
        self.copies = {transform: values for transform, values in copies.items() if transform in transforms}
        self.all_copies = np.concatenate(list(self.copies.values()))
        self.other_class = nearest_other_class(splits["train"], train_labels, similarity)
        _, self.other_train = nearest(splits["train"], splits["train"], exclude_self=True, similarity=similarity)
        self.distinct_reference = distinct
        self.distinct = self.other_class if distinct == "train_to_train_of_another_class" else self.other_train

    def set_threshold(self, quantile, distinct_quantile):
        self.threshold, self.method = choose_threshold(self.all_copies, self.distinct, quantile, distinct_quantile,
                                                       self.distinct_reference)

    def summary(self, nearest_by_split):
        return {"threshold": self.threshold, "threshold_method": self.method,
                "distinct_reference": self.distinct_reference,
                "copies": {"all_used": distribution(self.all_copies),
                           **{name: distribution(values) for name, values in self.copies.items()},
                           "caught_at_threshold": float((self.all_copies >= self.threshold).mean())},
                "distinct_nearest_neighbours": {
                    "train_to_train_of_another_class": distribution(self.other_class),
                    "train_to_other_train": distribution(self.other_train),
                    **{f"{split_name}_to_train": distribution(values) for split_name, values in nearest_by_split.items()}}}


def build_signals(data, copies, descriptors):
    mean = np.asarray(data["train"]["features"], np.float64).mean(axis=0)
    names, hashes = np.asarray(copies["filenames"]).astype(str), np.asarray(copies["sha256"]).astype(str)
    feature_splits = {name: unit_rows(split["features"], mean) for name, split in data.items()}
    width = (len(pixels.CROPS), pixels.SIZE * pixels.SIZE)
    pixel_splits = {name: pixels.unit(np.asarray([descriptors[str(sha)] for sha in split["sha256"]],
                                                 np.float64).reshape(len(split["sha256"]), *width))
                    for name, split in data.items()}
    all_transforms = set(names) - {ORIGINAL}
    labels = data["train"]["labels"]
    return {"features": Signal("features", feature_splits, labels, unit_rows(copies["features"], mean), names,
                               hashes, all_transforms, "train_to_other_train"),
            "pixels": Signal("pixels", pixel_splits, labels, pixels.unit(copies["pixels"]), names, hashes,
                             set(ALIGNED), "train_to_train_of_another_class", pixels.similarity)}


def find(data, signals, paths, labels):
    """Table rows of the flagged (image, training image) pairs, most alike first; {signal: {split: nearest}}."""
    pairs, nearest_by_signal = {}, {name: {} for name in signals}
    for split_name in ("validation", "test"):
        for name, signal in signals.items():
            if not len(data[split_name]["labels"]):
                nearest_by_signal[name][split_name] = np.zeros(0)
                continue
            indices, similarities = nearest(signal.splits[split_name], signal.splits["train"],
                                            similarity=signal.similarity)
            nearest_by_signal[name][split_name] = similarities
            for row in np.flatnonzero(similarities >= signal.threshold):
                pairs.setdefault((split_name, int(row), int(indices[row])), []).append(name)
    rows = []
    for (split_name, row, train_row), found_by in pairs.items():
        image, train = data[split_name], data["train"]
        feature, pixel = (float(signal.similarity(signal.splits[split_name][row:row + 1],
                                                  signal.splits["train"][train_row:train_row + 1])[0, 0])
                          for signal in (signals["features"], signals["pixels"]))
        sha, train_sha = str(image["sha256"][row]), str(train["sha256"][train_row])
        rows.append((split_name, paths.get(sha, str(image["filenames"][row])), labels[image["labels"][row]],
                     paths.get(train_sha, str(train["filenames"][train_row])), labels[train["labels"][train_row]],
                     f"{feature:.4f}", f"{pixel:.4f}", "+".join(found_by), sha, train_sha))
    rows.sort(key=lambda row: (-max(float(row[5]), float(row[6])), row[1]))
    return rows, nearest_by_signal


def audit(split_paths, copies_path, tfrecord_paths, manifest_path, labels_path, table_path, summary_path,
          quantile=0.05, distinct_quantile=0.95):
    """Write the near-duplicates table and the summary; return the summary."""
    data = {name: formats.read_bottlenecks(path) for name, path in split_paths.items()}
    if len(data["train"]["labels"]) < 2:
        raise PipelineError(f"{split_paths['train']}: the audit needs at least two training images")
    copies = formats.read_npz(copies_path)
    if "pixels" not in copies:
        raise PipelineError(f"{copies_path}: has no 'pixels' array (made by scripts/audit/copies.py?)")
    wanted = {str(sha) for split in data.values() for sha in split["sha256"]}
    signals = build_signals(data, copies, pixel_descriptors(tfrecord_paths, wanted))
    for signal in signals.values():
        signal.set_threshold(quantile, distinct_quantile)
    paths = {row["sha256"]: row["path"] for row in atomic.read_table(manifest_path)}
    rows, nearest_by_signal = find(data, signals, paths, formats.read_labels(labels_path))
    summary = {
        "near_duplicates": {split_name: sum(row[0] == split_name for row in rows) for split_name in ("validation", "test")},
        "near_duplicate_images": len({(row[0], row[8]) for row in rows}),
        "found_by": {name: sum(name in row[7].split("+") for row in rows) for name in signals},
        "images": {name: int(len(split["labels"])) for name, split in data.items()},
        "quantile": quantile, "distinct_quantile": distinct_quantile,
        "signals": {name: signal.summary(nearest_by_signal[name]) for name, signal in signals.items()},
    }
    atomic.write_table(table_path, TABLE_HEADER, rows)
    atomic.write_json(summary_path, summary)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for split_name in ("train", "validation", "test"):
        parser.add_argument(f"--{split_name}", required=True, help=f"the {split_name} split's plain features (.npz)")
    parser.add_argument("--copies", required=True, help="copies of training images (scripts/audit/copies.py)")
    parser.add_argument("--tfrecords", nargs="+", required=True, help="every split's TFRecord shards (the images)")
    parser.add_argument("--manifest", required=True, help="manifest.tsv: the images' paths by content hash")
    parser.add_argument("--labels", required=True, help="labels.json")
    parser.add_argument("--quantile", type=float, required=True, help="of the copies' similarities "
                                                                      "(audit.threshold_quantile)")
    parser.add_argument("--distinct-quantile", type=float, required=True,
                        help="of distinct images' nearest-neighbour similarities: the lowest threshold "
                             "(audit.distinct_quantile)")
    parser.add_argument("--output-table", required=True, help="near_duplicates.csv to write")
    parser.add_argument("--output-summary", required=True, help="JSON to write: thresholds and distributions")
    args = parser.parse_args(argv)
    summary = audit({"train": args.train, "validation": args.validation, "test": args.test}, args.copies,
                    args.tfrecords, args.manifest, args.labels, args.output_table, args.output_summary,
                    args.quantile, args.distinct_quantile)
    counts = summary["near_duplicates"]
    thresholds = ", ".join(f"{name} >= {signal['threshold']:.4f}" for name, signal in summary["signals"].items())
    print(f"{summary['near_duplicate_images']} validation/test images are near-duplicates of training images "
          f"(validation {counts['validation']}, test {counts['test']} pairs; {thresholds}) -> {args.output_table}")


if __name__ == "__main__":
    run_cli(main)
