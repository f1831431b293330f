"""The offline default run on SLURM through profiles/slurm, checked against a local run.

Needs a SLURM cluster that takes jobs from this machine (tests/slurm/setup_slurm.sh
starts a one-node one) and is skipped without one, unless SLURM_TEST_REQUIRED=1
(tests/slurm/run_ci.sh sets it), which turns the skip into a failure.

The local reference run (--cores 2, profiles/local) makes only what is compared (the
manifest, the bottlenecks, each experiment's metrics) and goes at the same time as the
SLURM run, which mostly waits for its status polls: little wall time is added.
"""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import OFFLINE, REPO, layered_config, selected, snakemake, tool_env

from scripts.core.config_check import expand_experiments

SLURM_PROFILE = os.path.join(REPO, "profiles", "slurm")
LOCAL_PROFILE = os.path.join(REPO, "profiles", "local")
REQUIRED = os.environ.get("SLURM_TEST_REQUIRED") == "1"
RUN_TIMEOUT = int(os.environ.get("SLURM_TEST_RUN_TIMEOUT", "900"))  # seconds, per run

# SLURM_TEST_SKIP=1: .ci/run's suite, which runs beside tests/slurm/run_ci.sh's own SLURM run.
pytestmark = [
    pytest.mark.skipif(os.environ.get("SLURM_TEST_SKIP") == "1" and not REQUIRED,
                       reason="SLURM_TEST_SKIP=1: tests/slurm/run_ci.sh runs these beside the suite"),
    pytest.mark.skipif(shutil.which("sinfo") is None and not REQUIRED,
                       reason="SLURM is not installed (no sinfo); tests/slurm/setup_slurm.sh starts a one-node cluster"),
]


EXPERIMENTS = sorted(expand_experiments(layered_config(OFFLINE)))
MANIFEST = "results/data/manifest.tsv"
METRICS = "results/{}/model/metrics.json"
# What the local run makes (the features come with the metrics) and is compared.
COMPARED = [MANIFEST] + [METRICS.format(experiment) for experiment in EXPERIMENTS]


def slurm_problem():
    """Why this machine cannot run SLURM jobs now, or None."""
    if shutil.which("sinfo") is None:
        return "SLURM is not installed (no sinfo); run tests/slurm/setup_slurm.sh"
    try:
        result = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo got no answer within 30 s: is slurmctld running? (tests/slurm/setup_slurm.sh)"
    if result.returncode:
        return f"the SLURM controller does not answer: {result.stderr.strip()}"
    states = [state.rstrip("*~#$@^-") for state in result.stdout.split()]
    if not {"idle", "mixed", "allocated", "completing"} & set(states):
        return f"no SLURM node takes jobs (node states: {states or 'none'})"
    return None


def slurm_config():
    """`scontrol show config` as a dict."""
    output = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return {key.strip(): value.strip() for key, _, value in
            (line.partition(" = ") for line in output.splitlines()) if value}


def cluster_state(config):
    """sinfo, squeue and the controller's log: what to look at when a SLURM run fails."""
    parts = [subprocess.run(command, capture_output=True, text=True).stdout
             for command in (["sinfo"], ["squeue", "--states=all"])]
    log = config.get("SlurmctldLogFile", "")
    if os.path.isfile(log):
        with open(log, encoding="utf-8", errors="replace") as handle:
            parts.append(f"{log}:\n" + "".join(handle.readlines()[-30:]))
    return "\n".join(parts)


def run_id_of(log):
    match = re.search(r"SLURM run ID: (\S+)", log)
    return match.group(1) if match else None


def run_on_slurm(workdir, config):
    """The offline default through profiles/slurm in ``workdir``; returns Snakemake's log."""
    command = [sys.executable, "-m", "snakemake", "-s", os.path.join(REPO, "Snakefile"), "--directory", str(workdir),
               "--profile", SLURM_PROFILE,
               # Poll SLURM every second or so, not every 40 s and more: the jobs are short.
               "--seconds-between-status-checks", "1", "--slurm-init-seconds-before-status-checks", "1",
               "--slurm-keep-successful-logs"]
    if config.get("AccountingStorageType") == "accounting_storage/none":
        command += ["--slurm-status-command", "squeue"]  # sacct needs slurmdbd
    command += ["--configfile", OFFLINE]
    env = tool_env()
    log_path = workdir / "snakemake-slurm.log"
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))
        try:
            returncode = process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)  # Snakemake cancels its SLURM jobs on Ctrl-C
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
            returncode = None
    text = log_path.read_text(encoding="utf-8")
    if returncode != 0:
        run_id = run_id_of(text)
        if run_id:
            subprocess.run(["scancel", "--name", run_id], capture_output=True)
        what = f"timed out after {RUN_TIMEOUT} s" if returncode is None else f"failed (exit {returncode})"
        pytest.fail(f"snakemake --profile profiles/slurm {what}:\n{text[-6000:]}\n{cluster_state(config)}")
    return text


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    problem = slurm_problem()
    if problem:
        (pytest.fail if REQUIRED else pytest.skip)(problem)
    config = slurm_config()
    slurm_dir = tmp_path_factory.mktemp("slurm")
    local_dir = tmp_path_factory.mktemp("local")
    local = {}

    def run_locally():
        started = time.monotonic()
        try:
            snakemake(local_dir, "--profile", LOCAL_PROFILE, *COMPARED, configfiles=[OFFLINE])
        except BaseException as error:  # re-raised in the test's thread
            local["error"] = error
        local["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run_locally, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        slurm_log = run_on_slurm(slurm_dir, config)
    finally:
        thread.join()  # leave no Snakemake running behind, even when the SLURM run failed
    slurm_seconds = time.monotonic() - started
    if "error" in local:
        raise local["error"]
    print(f"\nSLURM run {slurm_seconds:.0f} s, local run {local['seconds']:.0f} s (side by side)")
    return SimpleNamespace(slurm=slurm_dir, local=local_dir, log=slurm_log, config=config)


# ------------------------------------------------------------------ job records
def started_jobs_in(log):
    """{rule: count} of the jobs Snakemake started (before and after the `select` checkpoint)."""
    counts = {}
    for rule in re.findall(r"^(?:rule|checkpoint) (\w+):", log, re.MULTILINE):
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def squeue_jobs(run_id):
    """{slurm job id: (state, comment)} of the run's jobs, as the controller lists them.

    The plugin names every job of a run after the run ID and puts the rule and the
    wildcards in its comment: rule_<rule>[_wildcards_<values>].
    """
    output = subprocess.run(["squeue", "--noheader", "--states=all", "--name", run_id, "--format=%i|%T|%k"],
                            capture_output=True, text=True, check=True).stdout
    return {job_id: (state, comment) for job_id, state, comment in
            (line.split("|", 2) for line in output.splitlines() if line.strip())}


def jobcomp_records(config, run_id):
    """{slurm job id: {field: value}} from the controller's job completion file."""
    with open(config["JobCompLoc"], encoding="utf-8") as handle:
        records = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in handle]
    return {record["JobId"]: record for record in records if record.get("Name") == run_id}


def rule_and_wildcards(comment):
    match = re.fullmatch(r"rule_(.+?)(?:_wildcards_(.+))?", comment)
    assert match, f"a SLURM job comment not written by the Snakemake plugin: {comment!r}"
    return match.group(1), match.group(2)


def test_every_job_ran_as_its_own_slurm_job(runs):
    run_id = run_id_of(runs.log)
    assert run_id, "Snakemake did not use the SLURM executor (no 'SLURM run ID' in its log)"
    expected = started_jobs_in(runs.log)
    local_rules = set(re.findall(r"^localrule (\w+):", runs.log, re.MULTILINE))
    assert local_rules <= {"all"}, f"rules run on the submit host instead of SLURM: {local_rules - {'all'}}"

    jobs = squeue_jobs(run_id)
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", runs.log))
    assert set(jobs) == submitted, f"submitted {sorted(submitted)}, controller lists {sorted(jobs)}"
    assert {state for state, _ in jobs.values()} == {"COMPLETED"}, jobs
    by_rule = {}
    for _, comment in jobs.values():
        rule, wildcards = rule_and_wildcards(comment)
        by_rule.setdefault(rule, []).append(wildcards)
    assert {rule: len(wildcards) for rule, wildcards in by_rule.items()} == expected

    # One SLURM job per feature shard, per experiment for training, and the deployment of the selected one.
    shards = glob.glob(str(runs.slurm / "results" / "backbone" / "features" / "*" / "*" / "*" / "*-of-*.npz"))
    assert len(shards) > 1 and len(by_rule["bottleneck_shard"]) == len(shards)
    assert sorted(by_rule["retrain"]) == EXPERIMENTS
    assert len(by_rule["freeze"]) == 1 and selected(runs.slurm) in by_rule["freeze"][0]

    if runs.config.get("JobCompType") == "jobcomp/filetxt":
        records = jobcomp_records(runs.config, run_id)
        assert set(records) == submitted
        assert {record["JobState"] for record in records.values()} == {"COMPLETED"}
        assert {record["NodeList"] for record in records.values()} <= {socket.gethostname().split(".")[0]}
        # The rule's threads became --cpus-per-task, the profile's set-resources --mem.
        with open(os.path.join(SLURM_PROFILE, "config.yaml"), encoding="utf-8") as handle:
            profile_mem = yaml.safe_load(handle)["set-resources"]["bottleneck_shard"]["mem_mb"]
        threads = layered_config(OFFLINE)["inference"]["threads"]
        for job_id, (_, comment) in jobs.items():
            if rule_and_wildcards(comment)[0] == "bottleneck_shard":
                assert records[job_id]["ProcCnt"] == str(threads), records[job_id]
                assert f"mem={profile_mem}M" in records[job_id]["Tres"].split(","), records[job_id]


# ------------------------------------------------------------------ outputs
def test_the_manifest_matches_the_local_run(runs):
    assert (runs.slurm / MANIFEST).read_bytes() == (runs.local / MANIFEST).read_bytes()


def npz_differences(first, second):
    """What differs between two .npz files, array by array and bit by bit."""
    with np.load(first) as one, np.load(second) as two:
        if sorted(one.files) != sorted(two.files):
            return [f"arrays {sorted(one.files)} vs {sorted(two.files)}"]
        problems = []
        for key in one.files:
            a, b = one[key], two[key]
            if a.dtype != b.dtype or a.shape != b.shape:
                problems.append(f"{key}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
            elif a.tobytes() != b.tobytes():
                detail = ""
                if np.issubdtype(a.dtype, np.floating):
                    detail = f", largest difference {np.max(np.abs(a.astype(np.float64) - b)):.3g}"
                problems.append(f"{key}: {np.sum(a != b)} of {a.size} values differ{detail}")
        return problems


def test_the_features_are_bit_identical_to_the_local_run(runs):
    local = sorted(os.path.relpath(path, runs.local)
                   for path in glob.glob(str(runs.local / "results" / "backbone" / "features" / "**" / "*.npz"),
                                         recursive=True))
    assert local and all((runs.slurm / name).exists() for name in local)
    differences = {name: npz_differences(runs.local / name, runs.slurm / name) for name in local}
    assert not {name: problems for name, problems in differences.items() if problems}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_metrics_match_the_local_run(runs, experiment):
    name = METRICS.format(experiment)
    local, slurm = (json.loads((root / name).read_text()) for root in (runs.local, runs.slurm))
    assert sorted(slurm["splits"]) == sorted(local["splits"])
    for split, expected in local["splits"].items():
        got = slurm["splits"][split]
        assert got["accuracy"] == expected["accuracy"], split
        assert got["confusion_matrix"] == expected["confusion_matrix"], split
        assert got["labels"] == expected["labels"], split
