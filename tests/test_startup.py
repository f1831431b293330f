"""Stages that need no TensorFlow never import it (3.8 s per process): they run with it blocked.

A folder holding a `tensorflow` package that raises on import is put first on the path of
each command; the stage must still do its whole job. `bench/bench_startup.py` measures
the start-up of every stage's process.
"""
import json
import os
import subprocess
import sys

import mobilenet
import pytest
from conftest import REPO
from test_model import LINEAR

from scripts.core import atomic


@pytest.fixture(scope="module")
def blocked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("no-tensorflow")
    for name in ("tensorflow", "tf_slim", "tf_keras"):
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    return folder


def run_blocked(blocked, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocked), REPO]))
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return mobilenet.build(tmp_path_factory.mktemp("startup"))


def test_the_blocking_works(blocked):
    env = dict(os.environ, PYTHONPATH=str(blocked))
    result = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "blocked" in result.stderr


def test_openvino_and_numpy_stages_run_without_tensorflow(blocked, setup, tmp_path):
    xml = str(tmp_path / "ir" / "FP32" / "backbone.xml")
    run_blocked(blocked, "scripts.model.backbone_ir", "--backbone-pb", setup["pb"], "--backbone-json",
                setup["json"], "--precision", "FP32", "--output-xml", xml, "--threads", "1")
    features = {}
    for split in ("train", "validation", "test"):
        features[split] = str(tmp_path / f"{split}.npz")
        run_blocked(blocked, "scripts.model.bottlenecks", "shard", "--backbone-json", setup["json"], "--model", xml,
                    "--tfrecord", setup[split], "--output", features[split], "--kind", "plain",
                    "--central-fraction", "1.0", "--resize", "bilinear", "--batch-size", "8", "--threads", "1")
    run_blocked(blocked, "scripts.model.bottlenecks", "gather", "--output", str(tmp_path / "all.npz"),
                features["validation"], features["test"])
    model = tmp_path / "model"
    settings = json.dumps({"train": LINEAR, "selection": {"folds": 3}})
    run_blocked(blocked, "scripts.model.retrain", "train", "--train", features["train"], "--validation",
                features["validation"], "--test", features["test"], "--labels", setup["labels"], "--backbone-json",
                setup["json"], "--settings", settings, "--experiment", "x", "--output-head", str(model / "head.npz"),
                "--output-history", str(model / "history.csv"), "--output-tensorboard", str(model / "tb"),
                "--output-metrics", str(model / "metrics.json"), "--output-predictions",
                str(model / "test_predictions.npz"), "--output-oof", str(model / "oof_predictions.npz"),
                "--evaluation", json.dumps({"bootstrap_samples": 20, "seed": 0}))
    run_blocked(blocked, "scripts.model.select", "--metric", "cv_accuracy", "--output",
                str(tmp_path / "selected.json"), "--experiments", f"x={model / 'metrics.json'}")
    deployed = tmp_path / "deployed"
    run_blocked(blocked, "scripts.deploy.ir", "--backbone-xml", xml, "--head", str(model / "head.npz"),
                "--backbone-json", setup["json"], "--labels", setup["labels"], "--views", "0",
                "--central-fraction", "1.0", "--resize", "bilinear", "--precision", "FP32", "--test-tfrecords", setup["test"],
                "--test-features", features["test"], "--check-images", "4", "--tolerance", "0.001", "--threads", "1",
                "--output-xml", str(deployed / "model.xml"), "--output-json", str(deployed / "ir.json"))
    run_blocked(blocked, "scripts.deploy.evaluate_ir", "--ir-json", str(deployed / "ir.json"), "--head",
                str(model / "head.npz"), "--test-features", features["test"], "--reference",
                str(model / "test_predictions.npz"), "--output", str(deployed / "evaluation.json"))
    assert atomic.read_json(deployed / "evaluation.json")["metrics"]["n"] == 15
