"""Incremental rebuilds, experiments, reproducibility and resumability, with real Snakemake.

Scoped reruns are asserted by listing the jobs a dry-run plans after an edit of the
config, on top of a finished offline run (the session's `offline_run`).
"""
import filecmp
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np

from conftest import OFFLINE, REPO, planned_jobs, snakemake, write_yaml

DATA_RULES = {"synthetic_images", "download_dataset", "extract_dataset", "structure", "split", "tfrecord_shard"}
BACKBONE_RULES = {"untrained_backbone", "download_backbone", "extract_backbone", "backbone", "backbone_ir"}
BOTTLENECK_RULES = {"bottleneck_shard", "gather_bottlenecks"}
UPSTREAM_OF_TRAINING = DATA_RULES | BACKBONE_RULES | BOTTLENECK_RULES


def test_changing_the_learning_rate_reruns_training_and_below_only(offline_run, tmp_path):
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "lr.yaml", {"train": {"learning_rate": 0.01}}))
    assert jobs["retrain"] == 1 and jobs["freeze"] == 1 and jobs["ir"] == 3 and jobs["benchmark"] == 3
    assert not UPSTREAM_OF_TRAINING & set(jobs)
    assert "report_data" not in jobs


def test_changing_the_shard_count_reruns_from_the_tfrecords(offline_run, tmp_path):
    edit = {"tfrecords": {"shards": {"train": 3, "validation": 1, "test": 1}}}
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "shards.yaml", edit))
    assert jobs["tfrecord_shard"] == 3 and jobs["bottleneck_shard"] == 3
    assert jobs["gather_bottlenecks"] == 1  # only the train split changed
    assert jobs["retrain"] == 1
    assert not (BACKBONE_RULES | {"structure", "split", "synthetic_images"}) & set(jobs)


def test_changing_the_split_fractions_reruns_from_the_split(offline_run, tmp_path):
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "split.yaml", {"split": {"test": 0.25}}))
    assert jobs["split"] == 1 and jobs["tfrecord_shard"] == 6 and jobs["bottleneck_shard"] == 6
    assert not (BACKBONE_RULES | {"structure", "synthetic_images"}) & set(jobs)


def test_new_experiments_share_data_and_bottlenecks(offline_run):
    jobs = planned_jobs(offline_run, OFFLINE, os.path.join(REPO, "configs", "experiments.yaml"))
    assert jobs["retrain"] == 2 and jobs["freeze"] == 2  # lr_small and hidden; default is done
    assert not UPSTREAM_OF_TRAINING & set(jobs)


def test_the_same_config_gives_identical_bottlenecks_and_metrics(offline_run, tmp_path):
    snakemake(tmp_path, "results/default/model/metrics.json", configfiles=[OFFLINE])
    assert_same_results(offline_run, tmp_path, ["results/default/model/metrics.json",
                                                "results/default/model/head.npz",
                                                "results/data/manifest.tsv"])


def assert_same_results(first, second, files):
    for name in files:
        assert filecmp.cmp(first / name, second / name, shallow=False), name
    shards = sorted(glob.glob(str(first / "results" / "bottlenecks" / "*.npz")))
    assert len(shards) == 9  # 6 shards + 3 gathered splits
    for shard in shards:
        other = second / os.path.relpath(shard, first)
        with np.load(shard) as one, np.load(other) as two:
            assert np.array_equal(one["features"], two["features"]), shard
            assert np.array_equal(one["sha256"], two["sha256"]), shard


def start(workdir, *targets):
    command = [sys.executable, "-m", "snakemake", "-s", os.path.join(REPO, "Snakefile"), "--directory",
               str(workdir), "--cores", "2", *targets, "--configfile", OFFLINE]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)


def kill_when(process, pattern, what):
    """SIGKILL Snakemake and every job it started, as a power cut would, once ``pattern`` exists."""
    deadline = time.monotonic() + 600
    while not glob.glob(pattern):
        assert process.poll() is None and time.monotonic() < deadline, f"the run ended before {what}"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def resume(workdir, *targets):
    snakemake(workdir, "--unlock", configfiles=[OFFLINE])
    snakemake(workdir, "--rerun-incomplete", *targets, configfiles=[OFFLINE])
    assert not glob.glob(str(workdir / "results" / "**" / ".*.tmp-*"), recursive=True)


def test_a_run_killed_during_bottlenecks_and_ir_conversion_resumes_to_identical_outputs(offline_run, tmp_path):
    metrics = "results/default/model/metrics.json"
    bottleneck_dir = tmp_path / "results" / "bottlenecks"
    kill_when(start(tmp_path, metrics), str(bottleneck_dir / "*-of-*.npz"), "bottlenecks")
    finished = glob.glob(str(bottleneck_dir / "*-of-*.npz"))
    assert 1 <= len(finished) < 6, "the kill came too late to interrupt the bottleneck stage"
    resume(tmp_path, metrics)
    assert_same_results(offline_run, tmp_path, [metrics, "results/default/model/head.npz"])

    irs = [f"results/default/ir/{precision}/model.xml" for precision in ("FP32", "INT8")]
    kill_when(start(tmp_path, *irs), str(tmp_path / "results" / "logs" / "default" / "ir_*.log"), "IR conversion")
    assert not all((tmp_path / path).exists() for path in irs)
    resume(tmp_path, *irs)
    fp32 = "results/default/ir/FP32/model.bin"
    assert filecmp.cmp(offline_run / fp32, tmp_path / fp32, shallow=False)
    assert (tmp_path / "results/default/ir/INT8/model.bin").stat().st_size > 0


def test_changing_a_benchmark_setting_reruns_only_benchmarks_and_the_report(offline_run, tmp_path):
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "bench.yaml", {"benchmark": {"seconds": 1}}))
    assert set(jobs) == {"benchmark", "gather_benchmarks", "report_deployment", "all"}
    assert jobs["benchmark"] == 3  # one per precision on the one device


def test_adding_a_device_adds_only_its_benchmark_jobs(offline_run, tmp_path):
    edit = {"benchmark": {"devices": ["CPU", "NPU"], "skip_absent_devices": False}}
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "device.yaml", edit))
    assert set(jobs) == {"benchmark", "gather_benchmarks", "report_deployment", "all"}
    assert jobs["benchmark"] == 3  # NPU x 3 precisions; CPU's results are kept
