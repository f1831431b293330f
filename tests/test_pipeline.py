"""Whole-pipeline runs with the real Snakemake: the offline default and the real ALL data set."""
import glob
import os

import pytest

from conftest import OFFLINE, snakemake, test_config
from scripts import tfrecords
from scripts.core.atomic import read_json, read_table


def test_offline_default_runs_end_to_end_with_an_untrained_backbone(offline_run):
    results = offline_run / "results"
    metrics = read_json(results / "default" / "model" / "metrics.json")
    assert metrics["untrained_backbone"] is True and metrics["note"] == "untrained backbone"
    assert read_json(results / "default" / "model" / "model.json")["note"] == "untrained backbone"
    assert read_json(results / "backbone" / "backbone.json")["bottleneck_size"] == 2048
    # Three drawn classes that even random features can separate: far above chance (1/3).
    assert metrics["splits"]["validation"]["accuracy"] >= 0.8
    assert metrics["splits"]["test"]["accuracy"] >= 0.8
    assert read_json(results / "default" / "model" / "freeze_check.json")["top1_disagreements"] == 0


def test_every_job_has_a_log_and_a_benchmark(offline_run):
    results = offline_run / "results"
    logs = glob.glob(str(results / "logs" / "**" / "*.log"), recursive=True)
    runtimes = glob.glob(str(results / "runtime" / "**" / "*.tsv"), recursive=True)
    assert len(logs) >= 20 and len(runtimes) == len(logs)


def test_a_second_run_has_nothing_to_do(offline_run):
    result = snakemake(offline_run, "-n", configfiles=[os.path.join(os.path.dirname(__file__), "..",
                                                                    "configs", "offline.yaml")])
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def taleqani_run(tmp_path_factory, shared_data):
    workdir = tmp_path_factory.mktemp("taleqani")
    config_path, config = test_config("all_taleqani_mobilenet.yaml", workdir)
    snakemake(workdir, configfiles=[config_path])  # everything: data to report
    return workdir, config


def test_real_data_shards_hold_each_unique_image_exactly_once(taleqani_run):
    workdir, config = taleqani_run
    data = workdir / "results" / "data"
    manifest = read_table(data / "manifest.tsv")
    assert len(manifest) == 3216
    assert len({row["sha256"] for row in manifest}) == 3216
    shards = sorted(glob.glob(str(data / "tfrecords" / "*.tfrecord")))
    assert len(shards) == sum(config_shards(config).values())
    seen = {}
    for shard in shards:
        split = os.path.basename(shard).split("-")[0]
        for example in tfrecords.read_examples([shard]):
            assert example["sha256"] not in seen
            seen[example["sha256"]] = (split, example["label"])
    assert seen == {row["sha256"]: (row["split"], int(row["label_index"])) for row in manifest}


def config_shards(config):
    return {"train": 4, "validation": 1, "test": 1, **config.get("tfrecords", {}).get("shards", {})}


def test_real_data_duplicates_are_reported_and_never_straddle_splits(taleqani_run):
    workdir, _ = taleqani_run
    data = workdir / "results" / "data"
    duplicates = read_table(data / "duplicates.tsv")
    assert len(duplicates) == 40
    assert all("/Pro/" in row["source"] for row in duplicates)
    split_of = {row["sha256"]: row["split"] for row in read_table(data / "manifest.tsv")}
    assert all(row["sha256"] in split_of for row in duplicates)  # the kept copy is in one split only
    assert read_table(data / "rejects.tsv") == []


def test_real_data_mobilenet_reaches_the_baseline_accuracy(taleqani_run):
    workdir, _ = taleqani_run
    metrics = read_json(workdir / "results" / "default" / "model" / "metrics.json")
    print("test accuracy", metrics["splits"]["test"]["accuracy"])
    assert metrics["untrained_backbone"] is False and metrics["note"] == ""
    assert metrics["splits"]["test"]["accuracy"] >= 0.97


def test_offline_default_deploys_and_reports(offline_run, tmp_path):
    results = offline_run / "results"
    for precision in ("FP32", "FP16", "INT8"):
        evaluation = read_json(results / "default" / "ir" / precision / "evaluation.json")
        assert evaluation["note"] == "untrained backbone"
        if precision != "INT8":
            assert evaluation["agreement"]["top1_agreement"] >= 0.995
    benchmarks = read_json(results / "default" / "benchmarks" / "benchmarks.json")
    measured = [row for row in benchmarks["rows"] if not row["skipped"]]
    assert {(row["precision"], row["mode"]) for row in measured} >= {("FP16", "latency"), ("INT8", "throughput")}
    assert all(float(row["latency_median_ms"]) > 0 for row in measured)
    for name in ("training_curves.png", "confusion_test.png", "benchmarks.png"):
        with open(results / "default" / "report" / name, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n", name
    report = tmp_path / "report.html"
    snakemake(offline_run, "--report", str(report), configfiles=[OFFLINE])
    html = report.read_text(encoding="utf-8", errors="replace")
    assert "untrained backbone" in html and "experiments.csv" in html and "confusion_test.png" in html


def test_real_data_ir_accuracy_matches_tensorflow(taleqani_run):
    workdir, _ = taleqani_run
    ir = workdir / "results" / "default" / "ir"
    drops = {precision: read_json(ir / precision / "evaluation.json")["accuracy_drop_points"]
             for precision in ("FP32", "FP16", "INT8")}
    print("IR accuracy drop (points):", drops)
    assert abs(drops["FP16"]) <= 0.5 and abs(drops["FP32"]) <= 0.5
    assert drops["INT8"] <= 2.0
    benchmarks = read_json(workdir / "results" / "default" / "benchmarks" / "benchmarks.json")
    latency = {row["precision"]: row["latency_median_ms"] for row in benchmarks["rows"] if row["mode"] == "latency"}
    assert latency["FP16"] > 0 and latency["INT8"] > 0 and benchmarks["note"] == ""


def test_real_data_bottleneck_backends_give_the_same_accuracy(taleqani_run, tmp_path):
    """The openvino (default) and tensorflow backends: same retrained accuracy, up to noise."""
    workdir, _ = taleqani_run
    config_path, _ = test_config("all_taleqani_mobilenet.yaml", tmp_path)
    metrics = workdir / "results" / "default" / "model" / "metrics.json"
    openvino = read_json(metrics)["splits"]["test"]["accuracy"]
    backend = tmp_path / "backend.yaml"
    backend.write_text("bottlenecks: {backend: tensorflow}\n")
    snakemake(workdir, str(metrics.relative_to(workdir)), configfiles=[config_path, backend])
    tensorflow = read_json(metrics)["splits"]["test"]["accuracy"]
    print(f"test accuracy: openvino {openvino:.4f}, tensorflow {tensorflow:.4f}")
    assert abs(openvino - tensorflow) <= 0.005  # about 3 of 666 test images
