"""A small real model setup shared by the model and deployment tests.

The real ImageNet-pretrained MobileNet V1 0.25 graph from ../shared/data/weights, cut to
its bottleneck by the backbone stage, and a few synthetic images of three classes per
split in TFRecord shards, with labels.json: the inputs every model stage reads.
"""
import hashlib
import os
import tarfile

from conftest import SHARED_DATA

from scripts.core import formats
from scripts.data import synthetic, tfrecord_shard
from scripts.model import backbone

MOBILENET = os.path.join(SHARED_DATA, "weights", "mobilenet_v1_0.25_224_frozen.tgz")
MOBILENET_MEMBER = "mobilenet_v1_0.25_224/frozen_graph.pb"
MOBILENET_BOTTLENECK = "MobilenetV1/Logits/AvgPool_1a/AvgPool"
LABELS = list(synthetic.SHAPES[:3])
# Images per class of each split, and the seed that draws them.
SPLITS = {"train": (12, 0), "validation": (4, 1), "test": (5, 2)}


def manifest_rows(image_dir, labels):
    rows = []
    for index, label in enumerate(labels):
        for name in sorted(os.listdir(os.path.join(image_dir, label))):
            path = os.path.join(image_dir, label, name)
            with open(path, "rb") as handle:
                sha = hashlib.sha256(handle.read()).hexdigest()
            rows.append({"path": path, "label": label, "label_index": index, "sha256": sha,
                         "height": 64, "width": 64})
    return rows


def unpack_mobilenet(folder):
    with tarfile.open(MOBILENET) as archive:
        archive.extractall(folder, filter="data")
    return str(folder)


def build(root, extra_endpoints=()):
    """backbone.pb/.json, <split>.tfrecord and labels.json under ``root``; returns their paths."""
    paths = {"pb": str(root / "backbone.pb"), "json": str(root / "backbone.json"),
             "labels": str(root / "labels.json")}
    backbone.prepare("frozen_graph", unpack_mobilenet(root / "mobilenet"), paths["pb"], paths["json"], 224,
                     (-1.0, 1.0), False, MOBILENET_MEMBER, "input", MOBILENET_BOTTLENECK, list(extra_endpoints))
    for split, (count, seed) in SPLITS.items():
        synthetic.generate(str(root / split), len(LABELS), count, 64, seed)
        paths[split] = str(root / f"{split}.tfrecord")
        tfrecord_shard.write_shard(manifest_rows(str(root / split), LABELS), paths[split])
    formats.write_labels(paths["labels"], LABELS)
    return paths
