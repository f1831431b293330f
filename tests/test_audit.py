"""The leakage and label-error audits (scripts/audit/), on real files.

Near-duplicates: real all-taleqani cell images (well apart in the numbering, whose
neighbours are near-copies of each other), real MobileNet features; copies of training
images planted in validation and test must be found with their originals, the other
validation and test images must not. Label errors: planted wrong labels must rank at
the top of label_issues.csv, from the k-fold probabilities or the cross-validation's
out-of-fold logits alike, with folds that keep the manifest's groups whole.
"""
import hashlib
import io
import os

import mobilenet
import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image, ImageEnhance

from scripts.audit import copies, label_issues, near_duplicates
from scripts.core import atomic, formats
from scripts.data import tfrecord_shard
from scripts.model import backbone, bottlenecks

LABELS = ["Benign", "Early", "Pre", "Pro"]
NAMES = {"Benign": "WBC-Benign-{:03d}.jpg", "Early": "WBC-Malignant-Early-{:03d}.jpg",
         "Pre": "WBC-Malignant-Pre-{:03d}.jpg", "Pro": "WBC-Malignant-Pro-{:03d}.jpg"}
MIDDLE_LAYER = "MobilenetV1/MobilenetV1/Conv2d_11_pointwise/Relu6"


def real_image(label, number):
    return os.path.join(SHARED_DATA, "all-taleqani", label, NAMES[label].format(number))


def encoded(image, fmt="PNG", **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# The planted copies: (what was done, function of the original image -> file bytes).
PLANTED = [
    ("re-encoded JPEG q60", lambda image: encoded(image, "JPEG", quality=60)),
    ("resized to 60%", lambda image: encoded(image.resize((image.width * 3 // 5, image.height * 3 // 5)))),
    ("cropped 4% off each side", lambda image: encoded(image.crop(
        (image.width // 25, image.height // 25, image.width - image.width // 25, image.height - image.height // 25)))),
    ("brighter by 5%", lambda image: encoded(ImageEnhance.Brightness(image).enhance(1.05))),
]


def write_split(folder, split, items):
    """items: (label, file bytes, name) -> images in folder/split/, a TFRecord and manifest rows."""
    rows = []
    for label, data, name in items:
        path = os.path.join(folder, split, label, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        rows.append({"path": path, "label": label, "label_index": LABELS.index(label), "split": split,
                     "sha256": hashlib.sha256(data).hexdigest(), "width": 1, "height": 1,
                     "group": hashlib.sha256(data).hexdigest()})
    tfrecord = os.path.join(folder, f"{split}.tfrecord")
    tfrecord_shard.write_shard(rows, tfrecord)
    return tfrecord, rows


@pytest.fixture(scope="module")
def leakage(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("leakage")
    pb, info = str(folder / "backbone.pb"), str(folder / "backbone.json")
    backbone.prepare("frozen_graph", mobilenet.unpack_mobilenet(folder / "mobilenet"), pb, info, 224, (-1.0, 1.0),
                     False, mobilenet.MOBILENET_MEMBER, "input", mobilenet.MOBILENET_BOTTLENECK, [MIDDLE_LAYER])
    # Training: 24 images per class, 12 numbers apart (neighbours in the numbering can be
    # near-copies); others: unrelated images from beyond the training range.
    def original(label, number):
        with open(real_image(label, number), "rb") as handle:
            return handle.read()
    train = [(label, original(label, 20 + 12 * k), NAMES[label].format(20 + 12 * k))
             for label in LABELS for k in range(24)]
    distinct = [(label, original(label, 360 + 60 * k), NAMES[label].format(360 + 60 * k))
                for label in LABELS for k in range(2)]
    planted = []
    for number, (what, make) in enumerate(PLANTED):
        label, data, name = train[number * 24 + 5]  # one of each class
        image = Image.open(io.BytesIO(data)).convert("RGB")
        planted.append((label, make(image), f"copy-{number}-of-{name}.png", name, what))
    splits = {"train": train, "validation": planted[:2] + distinct[:4], "test": planted[2:] + distinct[4:]}
    paths, manifest = {}, []
    for split, items in splits.items():
        tfrecord, rows = write_split(str(folder), split, [item[:3] for item in items])
        manifest += rows
        paths[split] = str(folder / f"{split}.npz")
        bottlenecks.compute_shard(pb, info, tfrecord, paths[split], "plain", 1.0, "bilinear", 16, 2)
        paths[f"{split}_tfrecord"] = tfrecord
    atomic.write_table(folder / "manifest.tsv", list(manifest[0]), [list(row.values()) for row in manifest])
    formats.write_labels(folder / "labels.json", LABELS)
    copies.compute_copies(pb, info, [paths["train_tfrecord"]], str(folder / "copies.npz"), 12, 0, 1.0,
                          "bilinear", 16, 2)
    summary = near_duplicates.audit(
        {name: paths[name] for name in ("train", "validation", "test")}, str(folder / "copies.npz"),
        [paths[f"{name}_tfrecord"] for name in ("train", "validation", "test")], str(folder / "manifest.tsv"),
        str(folder / "labels.json"), str(folder / "near_duplicates.csv"), str(folder / "near_duplicates.json"),
        quantile=0.05, distinct_quantile=0.99)
    return summary, atomic.read_table(folder / "near_duplicates.csv"), planted, distinct


def test_planted_copies_across_splits_are_found_with_their_originals(leakage):
    summary, table, planted, _ = leakage
    found = {os.path.basename(row["path"]): os.path.basename(row["train_path"]) for row in table}
    for _, _, copy_name, original_name, what in planted:
        assert found.get(copy_name) == original_name, (what, summary["signals"])


def test_distinct_images_are_not_near_duplicates(leakage):
    summary, table, planted, distinct = leakage
    flagged = {os.path.basename(row["path"]) for row in table}
    assert not flagged & {name for _, _, name in distinct}
    assert summary["near_duplicate_images"] == len(planted)
    assert summary["near_duplicates"] == {"validation": 2, "test": 2}


def test_thresholds_come_from_the_copies_and_the_distinct_pairs(leakage):
    summary = leakage[0]
    for name, signal in summary["signals"].items():
        copies_used, distinct = signal["copies"]["all_used"], signal["distinct_nearest_neighbours"]
        assert copies_used["n"] == 12 * (9 if name == "features" else len(near_duplicates.ALIGNED))
        floor = distinct[signal["distinct_reference"]]["q0.99"]
        assert signal["threshold"] == pytest.approx(max(copies_used["q0.05"], floor))
    # Re-encoding barely moves the tiny-image descriptor: its threshold is the copies' own.
    assert summary["signals"]["pixels"]["threshold"] > 0.95
    assert summary["signals"]["pixels"]["threshold_method"].startswith("quantile 0.05 of the copies")


def test_choose_threshold_names_the_bound_that_decided():
    copies_values, distinct = np.linspace(0.5, 1.0, 101), np.linspace(0.0, 0.9, 101)
    assert near_duplicates.choose_threshold(copies_values, distinct, 0.05, 0.99)[0] == pytest.approx(0.891)
    assert "distinct pairs" in near_duplicates.choose_threshold(copies_values, distinct, 0.05, 0.99)[1]
    value, method = near_duplicates.choose_threshold(copies_values, distinct, 0.5, 0.5)
    assert value == pytest.approx(0.75) and "copies" in method
    with pytest.raises(Exception, match="audit.threshold_quantile"):
        near_duplicates.choose_threshold(copies_values, distinct, 1.5, 0.99)


# ---------------------------------------------------------------- label errors
def blobs(count=240, classes=4, width=24, seed=0):
    """Features of ``classes`` well-separated Gaussian clusters, labels, and groups of 3 images."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, width))
    labels = np.arange(count) % classes
    features = centres[labels] + rng.normal(0, 1, (count, width))
    return features.astype(np.float32), labels, np.arange(count) // 3


def write_label_audit_inputs(folder, features, labels, groups):
    hashes = [hashlib.sha256(str(number).encode()).hexdigest() for number in range(len(labels))]
    names = [f"img{number}.png" for number in range(len(labels))]
    cut = len(labels) * 4 // 5
    formats.write_bottlenecks(folder / "train.npz", features[:cut], labels[:cut], hashes[:cut], names[:cut])
    formats.write_bottlenecks(folder / "validation.npz", features[cut:], labels[cut:], hashes[cut:], names[cut:])
    atomic.write_table(folder / "manifest.tsv", ("path", "label", "sha256", "group"),
                       [(f"data/{name}", LABELS[label], sha, f"g{group}")
                        for name, label, sha, group in zip(names, labels, hashes, groups)])
    formats.write_labels(folder / "labels.json", LABELS)


def test_planted_wrong_labels_rank_at_the_top(tmp_path):
    features, labels, groups = blobs()
    rng = np.random.default_rng(1)
    planted = rng.choice(len(labels), 12, replace=False)
    given = labels.copy()
    given[planted] = (labels[planted] + rng.integers(1, 4, len(planted))) % 4
    write_label_audit_inputs(tmp_path, features, given, groups)
    summary = label_issues.audit(str(tmp_path / "train.npz"), str(tmp_path / "validation.npz"),
                                 str(tmp_path / "manifest.tsv"), str(tmp_path / "labels.json"),
                                 str(tmp_path / "label_issues.csv"), str(tmp_path / "label_issues.json"), folds=5)
    table = atomic.read_table(tmp_path / "label_issues.csv")
    top = {row["path"] for row in table[:len(planted)]}
    assert top == {f"data/img{number}.png" for number in planted}
    for row in table[:len(planted)]:
        number = int(row["path"][8:-4])
        assert row["likely_label"] == LABELS[labels[number]] and row["given_label"] == LABELS[given[number]]
    # Confident learning flags those whose likely class beats that class's mean confidence: most of them.
    assert sum(row["issue"] == "1" for row in table[:len(planted)]) >= len(planted) - 2
    assert summary["images"] == len(labels) and summary["issues"] >= len(planted) - 2
    assert [int(row["rank"]) for row in table] == list(range(1, len(labels) + 1))


def test_folds_keep_groups_whole(tmp_path):
    _, labels, groups = blobs(count=90)
    folds = label_issues.group_folds(labels, groups.astype(str), 5, 0)
    assert len(set(folds)) == 5
    for group in set(groups):
        assert len(set(folds[groups == group])) == 1


def test_the_cross_validation_contract_is_ranked_the_same_way(tmp_path):
    features, labels, groups = blobs(count=40)
    logits = np.full((40, 4), -3.0, np.float32)
    logits[np.arange(40), labels] = 3.0
    logits[7] = [3.0, -3.0, -3.0, -3.0]  # the model is sure image 7 is Benign
    given = labels.copy()
    given[7] = 2
    np.savez(tmp_path / "oof_predictions.npz", logits=logits, labels=given, paths=np.array([f"p{n}" for n in range(40)]),
             folds=np.arange(40) % 5, splits=np.array(["train"] * 32 + ["validation"] * 8))
    write_label_audit_inputs(tmp_path, features, given, groups)
    summary = label_issues.audit(None, None, None, str(tmp_path / "labels.json"), str(tmp_path / "issues.csv"),
                                 str(tmp_path / "issues.json"), oof_path=str(tmp_path / "oof_predictions.npz"))
    first = atomic.read_table(tmp_path / "issues.csv")[0]
    assert (first["path"], first["given_label"], first["likely_label"]) == ("p7", "Pre", "Benign")
    assert "oof_predictions.npz" in summary["source"]
    np.savez(tmp_path / "bad.npz", logits=logits[:, :3], labels=given, paths=np.array(["p"] * 40),
             folds=np.zeros(40), splits=np.array(["train"] * 40))
    with pytest.raises(Exception, match=r"logits of shape \(40, 3\)"):
        label_issues.audit(None, None, None, str(tmp_path / "labels.json"), str(tmp_path / "x.csv"),
                           str(tmp_path / "x.json"), oof_path=str(tmp_path / "bad.npz"))
