"""Shared test helpers: the real data beside the repository, real Snakemake runs.

Tests marked ``slow`` run whole pipelines; ``pytest -m "not slow"`` is the fast tier.
"""
import os
import re
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
OFFLINE = os.path.join(REPO, "configs", "offline.yaml")


@pytest.fixture(scope="session")
def shared_data():
    """``../shared/data`` (real images and weights); required, never copied into the repo."""
    if not os.path.isdir(SHARED_DATA):
        pytest.fail(f"{SHARED_DATA} is missing: the tests need the shared real data beside the repo")
    return SHARED_DATA


def tool_env():
    """The environment of a Snakemake run: this interpreter's tools first on the PATH."""
    return dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])


def snakemake_command(workdir, *args, configfiles=(), cores=2):
    command = [sys.executable, "-m", "snakemake", "-s", os.path.join(REPO, "Snakefile"),
               "--directory", str(workdir), *args]
    if cores:
        command += ["--cores", str(cores)]
    if configfiles:  # last: --configfile takes every word after it
        command += ["--configfile", *map(str, configfiles)]
    return command


def snakemake(workdir, *args, configfiles=(), check=True, timeout=1800):
    """Run the real Snakemake on this repository's Snakefile in ``workdir``."""
    result = subprocess.run(snakemake_command(workdir, *args, configfiles=configfiles), capture_output=True,
                            text=True, env=tool_env(), timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def start(workdir, *args, configfiles=(OFFLINE,), output=subprocess.DEVNULL):
    """Snakemake in the background, in its own process group (so a test can kill it and its jobs)."""
    return subprocess.Popen(snakemake_command(workdir, *args, configfiles=configfiles), stdout=output,
                            stderr=output, text=True, env=tool_env(), start_new_session=True)


def job_counts(text):
    """{rule: count} from the first "Job stats:" table Snakemake printed ({} when nothing is to be done)."""
    if "Nothing to be done" in text or "Job stats:" not in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)}


def planned_jobs(workdir, *configfiles):
    """{rule: count} of the jobs a dry-run plans."""
    result = snakemake(workdir, "-n", configfiles=configfiles)
    return job_counts(result.stdout + result.stderr)


def write_yaml(path, data):
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle)
    return str(path)


def layered_config(*paths):
    """config.yaml with the given config files merged over it, as Snakemake merges them."""
    from scripts.core.config_check import deep_merge
    merged = {}
    for path in (os.path.join(REPO, "config.yaml"), *paths):
        with open(path, encoding="utf-8") as handle:
            merged = deep_merge(merged, yaml.safe_load(handle))
    return merged


def test_config(name, folder):
    """A config from tests/configs (else configs/) with ../shared/data made absolute, written into ``folder``."""
    source = os.path.join(REPO, "tests", "configs", name)
    if not os.path.exists(source):
        source = os.path.join(REPO, "configs", name)
    with open(source, encoding="utf-8") as handle:
        text = handle.read().replace("../shared/data", SHARED_DATA)
    path = os.path.join(str(folder), name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path, yaml.safe_load(text)


test_config.__test__ = False  # a helper, not a test


@pytest.fixture(scope="session")
def offline_run(tmp_path_factory):
    """The offline default run once, end to end, shared by the tests that read its outputs."""
    workdir = tmp_path_factory.mktemp("offline")
    snakemake(workdir, configfiles=[OFFLINE])
    return workdir


def selected(workdir):
    """The experiment `select` chose in a finished run."""
    from scripts.core import atomic
    return atomic.read_json(os.path.join(str(workdir), "results", "selected.json"))["experiment"]


