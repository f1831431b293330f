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
    assert jobs["retrain"] == 1 and jobs["freeze"] == 1
    assert not UPSTREAM_OF_TRAINING & set(jobs)


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


def test_a_run_killed_during_bottlenecks_resumes_to_identical_outputs(offline_run, tmp_path):
    command = [sys.executable, "-m", "snakemake", "-s", os.path.join(REPO, "Snakefile"), "--directory",
               str(tmp_path), "--cores", "2", "results/default/model/metrics.json", "--configfile", OFFLINE]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    bottleneck_dir = tmp_path / "results" / "bottlenecks"
    deadline = time.monotonic() + 600
    # Wait until at least one shard is finished and others are being computed, then kill
    # Snakemake and every job it started, as a power cut would.
    while not glob.glob(str(bottleneck_dir / "*-of-*.npz")):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before bottlenecks"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = glob.glob(str(bottleneck_dir / "*-of-*.npz"))
    assert 1 <= len(finished) < 6, "the kill came too late to interrupt the bottleneck stage"
    snakemake(tmp_path, "--unlock", configfiles=[OFFLINE])
    snakemake(tmp_path, "--rerun-incomplete", "results/default/model/metrics.json", configfiles=[OFFLINE])
    assert not glob.glob(str(bottleneck_dir / ".*tmp-*"))
    assert_same_results(offline_run, tmp_path, ["results/default/model/metrics.json",
                                                "results/default/model/head.npz"])
