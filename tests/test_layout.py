"""The one map of the results folder (scripts/core/layout.py), and that the rules use it."""
import glob
import os
import re

from conftest import REPO

from scripts.core.layout import Layout, shard_name


def test_paths_for_values_and_for_wildcards_are_the_same_pattern():
    layout = Layout("results")
    assert layout.head("{experiment}") == "results/{experiment}/model/head.npz"
    assert layout.head("crop1.0-hidden0") == "results/crop1.0-hidden0/model/head.npz"
    assert layout.ir_xml("default", "INT8") == "results/default/ir/INT8/model.xml"
    assert layout.evaluation("{experiment}", "{precision}") == "results/{experiment}/ir/{precision}/evaluation.json"
    assert layout.backbone_ir("e/finetune", "FP16", "bin") == "results/e/finetune/ir/FP16/backbone.bin"
    assert layout.features("backbone", "crop1-bilinear", "FP32", "plain", "test") == \
        "results/backbone/features/crop1-bilinear/FP32/plain/test.npz"


def test_shard_names_for_numbers_and_for_wildcards():
    assert shard_name("train", 1, 4) == "train-00001-of-00004"
    assert shard_name("{split}", "{shard}", "{num_shards}") == "{split}-{shard}-of-{num_shards}"
    assert Layout("out").tfrecord("test", 0, 1) == "out/data/tfrecords/test-00000-of-00001.tfrecord"


def test_another_root_moves_every_path():
    layout = Layout("elsewhere/run1")
    for path in (layout.manifest(), layout.selected(), layout.frozen_model("x"), layout.benchmarks("x", "csv"),
                 layout.report("experiments.csv"), layout.logs("select.log")):
        assert path.startswith("elsewhere/run1/")


def test_the_rules_build_no_results_path_of_their_own():
    """Rule files name artefacts through LAYOUT (logs and runtime files aside)."""
    for path in glob.glob(os.path.join(REPO, "workflow", "rules", "*.smk")):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        own = re.findall(r'f"\{(?:RESULTS|DATA|BACKBONE|REPORT)\}[^"]*"', text)
        assert not own, (os.path.basename(path), own)
