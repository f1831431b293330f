"""Shared test fixtures: the repository root on sys.path and the real data beside it."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
sys.path.insert(0, REPO)


@pytest.fixture(scope="session")
def shared_data():
    """``../shared/data`` (real images and weights); required, never copied into the repo."""
    if not os.path.isdir(SHARED_DATA):
        pytest.fail(f"{SHARED_DATA} is missing: the tests need the shared real data beside the repo")
    return SHARED_DATA


def snakemake(workdir, *args, configfiles=(), check=True, timeout=1800):
    """Run the real Snakemake on this repository's Snakefile in ``workdir``."""
    import subprocess
    command = [sys.executable, "-m", "snakemake", "-s", os.path.join(REPO, "Snakefile"),
               "--directory", str(workdir), "--cores", "2", *args]
    if configfiles:  # last: --configfile takes every word after it
        command += ["--configfile", *map(str, configfiles)]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def test_config(name, folder):
    """A config from tests/configs with ../shared/data made absolute, written into ``folder``."""
    import yaml
    with open(os.path.join(REPO, "tests", "configs", name), encoding="utf-8") as handle:
        text = handle.read().replace("../shared/data", SHARED_DATA)
    path = os.path.join(str(folder), name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path, yaml.safe_load(text)


test_config.__test__ = False  # a helper, not a test


OFFLINE = os.path.join(REPO, "configs", "offline.yaml")


@pytest.fixture(scope="session")
def offline_run(tmp_path_factory):
    """The offline default run once, end to end, shared by the tests that read its outputs."""
    workdir = tmp_path_factory.mktemp("offline")
    snakemake(workdir, configfiles=[OFFLINE])
    return workdir


def planned_jobs(workdir, *configfiles):
    """{rule: count} of the jobs a dry-run plans, read from Snakemake's job table."""
    import re
    result = snakemake(workdir, "-n", configfiles=configfiles)
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)}


def write_yaml(path, data):
    import yaml
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle)
    return str(path)
