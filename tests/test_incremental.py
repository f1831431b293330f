"""Incremental rebuilds, experiments, reproducibility and resumability, with real Snakemake.

Scoped reruns are asserted by listing the jobs a dry-run plans after an edit of the
config, on top of a finished offline run (the session's `offline_run`). Jobs behind the
`select` checkpoint are planned once it has run, so a dry-run after a head change lists
the jobs up to the selection.
"""
import filecmp
import glob
import os
import re
import signal
import time

import numpy as np
import pytest
from conftest import OFFLINE, REPO, job_counts, planned_jobs, selected, snakemake, start, write_yaml

pytestmark = pytest.mark.slow

DATA_RULES = {"synthetic_images", "download", "extract", "structure", "split", "tfrecord_shard"}
BACKBONE_RULES = {"untrained_backbone", "backbone", "backbone_ir"}
FEATURE_RULES = {"bottleneck_shard", "gather_bottlenecks"}
UPSTREAM_OF_TRAINING = DATA_RULES | BACKBONE_RULES | FEATURE_RULES
SWEEP_SIZE = 4  # config.yaml's default sweep: 2 crops x 2 heads (linear, mlp)
MLP_EXPERIMENTS = 2  # one per crop


def test_changing_the_mlp_learning_rate_replans_only_the_mlp_experiments(offline_run, tmp_path):
    edit = {"train": {"mlp": {"learning_rate": 0.01}}}
    result = snakemake(offline_run, "-n", configfiles=[OFFLINE, write_yaml(tmp_path / "lr.yaml", edit)])
    jobs = job_counts(result.stdout + result.stderr)
    assert jobs["retrain"] == MLP_EXPERIMENTS and jobs["select"] == 1
    retrained = set(re.findall(r"results/([^/\s]+)/model/head\.npz", result.stdout))
    assert retrained == {"crop1.0-mlp", "crop0.875-mlp"}  # the linear heads do not read a learning rate
    assert not UPSTREAM_OF_TRAINING & set(jobs)
    assert "report_data" not in jobs


def test_changing_augment_flip_without_copies_replans_no_training_job(offline_run, tmp_path):
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "flip.yaml", {"augment": {"flip": False}}))
    assert not {"retrain", "select", "finetune"} & set(jobs)
    assert not UPSTREAM_OF_TRAINING & set(jobs)


def test_changing_the_folds_reruns_every_head_and_nothing_upstream(offline_run, tmp_path):
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "folds.yaml", {"selection": {"folds": 3}}))
    assert jobs["retrain"] == SWEEP_SIZE and not UPSTREAM_OF_TRAINING & set(jobs)


def test_changing_the_preprocessing_reruns_the_features_never_the_data(offline_run, tmp_path):
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "pre.yaml", {"preprocess": {"resize": "bicubic"}}))
    # 2 crops x (6 shards + the test shard at FP16 and INT8, cached for any later selection)
    assert jobs["bottleneck_shard"] == 2 * (6 + 2) and jobs["retrain"] == SWEEP_SIZE
    assert not (DATA_RULES | {"backbone", "untrained_backbone"}) & set(jobs)


def test_changing_the_shard_count_reruns_from_the_tfrecords(offline_run, tmp_path):
    edit = {"tfrecords": {"shards": {"train": 3, "validation": 1, "test": 1}}}
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "shards.yaml", edit))
    # The train shards of each crop, and the test shard at INT8 (its backbone is calibrated on training images).
    assert jobs["tfrecord_shard"] == 3 and jobs["bottleneck_shard"] == 2 * 3 + 2
    assert jobs["gather_bottlenecks"] == 2 + 2  # the train split of each crop, and its INT8 test features
    assert jobs["retrain"] == SWEEP_SIZE
    assert not ({"backbone", "untrained_backbone", "structure", "split", "synthetic_images"}) & set(jobs)


def test_changing_the_split_fractions_reruns_from_the_split(offline_run, tmp_path):
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "split.yaml", {"split": {"test": 0.25}}))
    assert jobs["split"] == 1 and jobs["tfrecord_shard"] == 6 and jobs["bottleneck_shard"] == 2 * (6 + 2)
    assert not ({"backbone", "untrained_backbone", "structure", "synthetic_images"}) & set(jobs)


def test_new_experiments_share_data_and_features(offline_run):
    jobs = planned_jobs(offline_run, OFFLINE, os.path.join(REPO, "configs", "experiments.yaml"))
    assert jobs["retrain"] == 3 * SWEEP_SIZE  # new names for every experiment of the sweep
    assert not UPSTREAM_OF_TRAINING & set(jobs)


def test_test_time_views_add_only_their_view_features(offline_run, tmp_path):
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "tta.yaml", {"augment": {"test_time": "flip"}}))
    # View 4 of every shard (train too: cross-validation scores held-out folds as deployed), and of the
    # test shard at FP16 and INT8, for each crop.
    assert jobs["bottleneck_shard"] == 2 * (6 + 2)
    assert not (DATA_RULES | BACKBONE_RULES) & set(jobs)


def test_the_same_config_gives_identical_features_and_metrics(offline_run, tmp_path):
    chosen = selected(offline_run)
    metrics = f"results/{chosen}/model/metrics.json"
    snakemake(tmp_path, metrics, configfiles=[OFFLINE])
    assert_same_results(offline_run, tmp_path, [metrics, f"results/{chosen}/model/head.npz",
                                                "results/data/manifest.tsv"])


def feature_files(workdir):
    return sorted(glob.glob(str(workdir / "results" / "backbone" / "features" / "*" / "FP32" / "plain" / "*.npz")))


def assert_same_results(first, second, files):
    for name in files:
        assert filecmp.cmp(first / name, second / name, shallow=False), name
    shards = [path for path in feature_files(first) if os.path.exists(second / os.path.relpath(path, first))]
    assert len(shards) >= 9  # 6 shards + 3 gathered splits of the selected crop
    for shard in shards:
        other = second / os.path.relpath(shard, first)
        with np.load(shard) as one, np.load(other) as two:
            assert np.array_equal(one["features"], two["features"]), shard
            assert np.array_equal(one["sha256"], two["sha256"]), shard


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


def test_a_run_killed_during_features_and_ir_export_resumes_to_identical_outputs(offline_run, tmp_path):
    chosen = selected(offline_run)
    metrics = f"results/{chosen}/model/metrics.json"
    pattern = str(tmp_path / "results" / "backbone" / "features" / "*" / "FP32" / "plain" / "*-of-*.npz")
    kill_when(start(tmp_path, metrics), pattern, "features")
    finished = glob.glob(pattern)
    assert 1 <= len(finished) < 6, "the kill came too late to interrupt the feature stage"
    resume(tmp_path, metrics)
    assert_same_results(offline_run, tmp_path, [metrics, f"results/{chosen}/model/head.npz"])

    irs = [f"results/{chosen}/ir/{precision}/model.xml" for precision in ("FP32", "INT8")]
    kill_when(start(tmp_path, *irs), str(tmp_path / "results" / "logs" / "backbone" / "backbone_ir_*.log"),
              "IR conversion")
    assert not all((tmp_path / path).exists() for path in irs)
    resume(tmp_path, *irs)
    fp32 = f"results/{chosen}/ir/FP32/model.bin"
    assert filecmp.cmp(offline_run / fp32, tmp_path / fp32, shallow=False)
    assert (tmp_path / f"results/{chosen}/ir/INT8/model.bin").stat().st_size > 0


def test_changing_a_benchmark_setting_reruns_only_benchmarks_and_the_report(offline_run, tmp_path):
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "bench.yaml", {"benchmark": {"seconds": 1}}))
    assert set(jobs) == {"benchmark", "gather_benchmarks", "report_deployment", "all"}
    assert jobs["benchmark"] == 3  # one per precision on the one device


def test_adding_a_device_adds_only_its_benchmark_jobs(offline_run, tmp_path):
    edit = {"benchmark": {"devices": ["CPU", "NPU"], "skip_absent_devices": False}}
    jobs = planned_jobs(offline_run, OFFLINE, write_yaml(tmp_path / "device.yaml", edit))
    assert set(jobs) == {"benchmark", "gather_benchmarks", "report_deployment", "all"}
    assert jobs["benchmark"] == 3  # NPU x 3 precisions; CPU's results are kept


@pytest.mark.parametrize("target, modules", [
    ("model/head.npz", ["model/retrain.py", "core/head.py", "core/metrics.py", "core/records.py", "core/crossval.py"]),
    ("model/frozen_model.pb", ["model/freeze.py", "core/head.py", "core/images.py", "core/inference.py"]),
])
def test_code_inputs_include_the_project_modules_a_stage_imports(offline_run, target, modules):
    """Editing a shared module reruns every stage that imports it: each is one of the job's inputs."""
    path = f"results/{selected(offline_run)}/{target}"
    result = snakemake(offline_run, "-n", "--forcerun", path, "--until", path, configfiles=[OFFLINE])
    inputs = next(line for line in (result.stdout + result.stderr).splitlines() if line.strip().startswith("input:"))
    for module in modules:
        assert os.path.join(REPO, "scripts", module) in inputs, module
    assert os.path.join(REPO, "scripts", "deploy", "ir.py") not in inputs


def planned_after_editing(workdir, module):
    """The jobs a dry-run plans once ``scripts/<module>`` has a comment appended (restored afterwards).

    A real edit, not a touch: Snakemake compares input checksums, not only times.
    """
    path = os.path.join(REPO, "scripts", module)
    before = os.stat(path)
    with open(path, encoding="utf-8") as handle:
        original = handle.read()
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("# an edit made by tests/test_incremental.py\n")
        return planned_jobs(workdir, OFFLINE)
    finally:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(original)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.parametrize("module", ["core/errors.py", "core/progress.py", "core/quiet.py"])
def test_editing_a_message_module_reruns_nothing(offline_run, module):
    assert planned_after_editing(offline_run, module) == {}


def test_editing_the_preprocessing_reruns_the_model_stages_never_the_data(offline_run):
    jobs = planned_after_editing(offline_run, "core/images.py")
    assert jobs["bottleneck_shard"] and jobs["backbone_ir"]
    assert not {"synthetic_images", "structure", "split", "tfrecord_shard"} & set(jobs)


def test_editing_the_decode_reruns_from_the_structure(offline_run):
    jobs = planned_after_editing(offline_run, "core/decode.py")
    assert jobs["structure"] == 1 and jobs["bottleneck_shard"]
