"""Faults mid-run, with the real Snakemake: killed runs, a full disk, a concurrent run."""
import glob
import os
import signal
import subprocess
import time

import pytest
from conftest import OFFLINE, snakemake, start

pytestmark = pytest.mark.slow


def wait_for(process, predicate, what, seconds=600):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def temporaries(workdir):
    return glob.glob(str(workdir / "results" / "**" / ".*.tmp-*"), recursive=True)


def test_a_run_killed_while_writing_tfrecords_resumes_cleanly(tmp_path):
    process = start(tmp_path, "results/data/tfrecords/test-00000-of-00001.tfrecord",
                    "results/data/tfrecords/train-00000-of-00004.tfrecord", output=subprocess.PIPE)
    logs = tmp_path / "results" / "logs" / "tfrecords"
    wait_for(process, lambda: glob.glob(str(logs / "*.log")), "a TFRecord job started")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # Whatever the kill interrupted, no file stands under a final name half-written:
    # Snakemake marks the job incomplete and the next run redoes it.
    snakemake(tmp_path, "--unlock", configfiles=[OFFLINE])
    snakemake(tmp_path, "--rerun-incomplete", "results/data/manifest.tsv",
              "results/data/tfrecords/test-00000-of-00001.tfrecord", configfiles=[OFFLINE])
    from scripts.core import atomic, records
    manifest = atomic.read_table(str(tmp_path / "results" / "data" / "manifest.tsv"))
    examples = list(records.read_examples([str(tmp_path / "results/data/tfrecords/test-00000-of-00001.tfrecord")]))
    assert sorted(example["sha256"] for example in examples) == sorted(
        row["sha256"] for row in manifest if row["split"] == "test")
    assert temporaries(tmp_path) == []


def test_a_second_run_in_the_same_folder_is_refused_by_the_lock(tmp_path):
    first = start(tmp_path, "results/backbone/backbone.pb", output=subprocess.PIPE)  # long enough to hold the lock
    wait_for(first, lambda: glob.glob(str(tmp_path / ".snakemake" / "locks" / "*")), "the lock was taken")
    # Snakemake locks the files a run reads and writes: a second run wanting them is refused.
    second = snakemake(tmp_path, "results/backbone/backbone.pb", configfiles=[OFFLINE], check=False)
    first.send_signal(signal.SIGTERM)  # a graceful stop releases the lock
    first.wait(timeout=120)
    assert second.returncode != 0
    assert "cannot be locked" in second.stdout + second.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 12 MB tmpfs: room for the data stages, not for the 100 MB backbone checkpoint."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_cleanly_without_outputs_that_look_complete(small_disk):
    result = snakemake(small_disk, "--keep-going", "results/backbone/backbone.pb", "results/data/manifest.tsv",
                       configfiles=[OFFLINE], check=False)
    assert result.returncode != 0
    results = small_disk / "results"
    assert (results / "data" / "manifest.tsv").exists()  # the data stages fit and are complete
    assert not (results / "backbone" / "untrained" / "inception_v3_untrained.tar.gz").exists()
    with open(results / "logs" / "untrained_backbone.log") as handle:
        assert "error: no space left on the device" in handle.read()
    assert temporaries(small_disk) == []


def test_after_ctrl_c_to_snakemake_alone_the_plain_rerun_finishes(tmp_path):
    """Ctrl-C lets the running job finish but marks it incomplete; the workflow profile's
    rerun-incomplete makes the README's plain command redo it instead of stopping."""
    target = "results/backbone/backbone.json"
    process = start(tmp_path, target, output=subprocess.PIPE)
    log = tmp_path / "results" / "logs" / "backbone.log"
    wait_for(process, log.exists, "the backbone job started")
    process.send_signal(signal.SIGINT)  # to Snakemake only, as a terminal's Ctrl-C to the foreground process
    process.wait(timeout=600)
    result = snakemake(tmp_path, target, configfiles=[OFFLINE])  # no --unlock, no --rerun-incomplete
    assert (tmp_path / target).exists() and temporaries(tmp_path) == []
    assert "IncompleteFilesException" not in result.stderr
