"""Same inputs, same bytes: every model file the pipeline writes, made twice in fresh processes.

Protocol buffers serialize maps in any order unless told otherwise, and OpenVINO names
new layers from process-wide counters; both would make "same config, same files"
uncheckable by hash.
"""
import filecmp
import subprocess
import sys

import mobilenet
import pytest
from conftest import REPO

from scripts.model import bottlenecks


def run(*args):
    subprocess.run([sys.executable, "-m", *args], check=True, cwd=REPO, capture_output=True)


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
    """The MobileNet setup built twice, in two folders."""
    return [mobilenet.build(tmp_path_factory.mktemp(name)) for name in ("one", "two")]


def test_backbone_graphs_and_tfrecords_are_byte_identical(twice):
    first, second = twice
    for key in ("pb", "train", "test", "labels"):
        assert filecmp.cmp(first[key], second[key], shallow=False), key


def test_backbone_irs_and_deployed_irs_are_byte_identical_across_processes(twice, tmp_path):
    setup = twice[0]
    for name in ("a", "b"):
        run("scripts.model.backbone_ir", "--backbone-pb", setup["pb"], "--backbone-json", setup["json"],
            "--precision", "FP32", "--output-xml", str(tmp_path / name / "backbone.xml"), "--threads", "1")
    for suffix in (".xml", ".bin"):
        assert filecmp.cmp(tmp_path / "a" / f"backbone{suffix}", tmp_path / "b" / f"backbone{suffix}", shallow=False)
    # A deployed IR: the backbone IR with a head and two test-time views appended.
    from test_model import LINEAR

    from scripts.model import retrain
    xml = str(tmp_path / "a" / "backbone.xml")
    feature_paths = {}
    for split, kind in (("train", "plain"), ("validation", "plain"), ("test", "plain"), ("test", "view4")):
        feature_paths[(split, kind)] = str(tmp_path / f"{split}-{kind}.npz")
        bottlenecks.compute_shard(xml, setup["json"], setup[split], feature_paths[(split, kind)], kind, 1.0,
                                  "bilinear", 8, 1)
    outputs = {name: str(tmp_path / "model" / file) for name, file in (
        ("head", "head.npz"), ("history", "history.csv"), ("tensorboard", "tb"), ("metrics", "metrics.json"),
        ("predictions", "test_predictions.npz"), ("oof", "oof_predictions.npz"))}
    retrain.run({"train": feature_paths[("train", "plain")], "validation": feature_paths[("validation", "plain")],
                 "test": feature_paths[("test", "plain")], "augmented": [], "train_views": [], "validation_views": [],
                 "test_views": [feature_paths[("test", "view4")]]}, setup["labels"], setup["json"],
                {"train": LINEAR, "selection": {"folds": 3}}, outputs, "x")
    for name in ("a", "b"):
        run("scripts.deploy.ir", "--backbone-xml", xml, "--head", outputs["head"], "--backbone-json",
            setup["json"], "--labels", setup["labels"], "--views", "0", "4", "--central-fraction", "1.0",
            "--resize", "bilinear", "--precision", "FP32", "--test-tfrecords", setup["test"],
            "--test-features", feature_paths[("test", "plain")], "--test-view-features",
            feature_paths[("test", "view4")], "--check-images", "4", "--tolerance", "0.001", "--threads", "1",
            "--output-xml", str(tmp_path / f"ir-{name}" / "model.xml"), "--output-json",
            str(tmp_path / f"ir-{name}" / "ir.json"))
    for suffix in ("model.xml", "model.bin"):
        assert filecmp.cmp(tmp_path / "ir-a" / suffix, tmp_path / "ir-b" / suffix, shallow=False), suffix


def test_int8_backbone_irs_are_byte_identical_across_processes(twice, tmp_path):
    setup = twice[0]
    for name in ("a", "b"):
        run("scripts.model.backbone_ir", "--backbone-pb", setup["pb"], "--backbone-json", setup["json"],
            "--precision", "INT8", "--output-xml", str(tmp_path / name / "backbone.xml"), "--threads", "1",
            "--train-tfrecords", setup["train"], "--calibration-images", "6", "--central-fraction", "1.0",
            "--resize", "bilinear")
    for suffix in (".xml", ".bin"):
        assert filecmp.cmp(tmp_path / "a" / f"backbone{suffix}", tmp_path / "b" / f"backbone{suffix}", shallow=False)
