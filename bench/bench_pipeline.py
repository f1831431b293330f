"""Whole runs, and the rerun after a learning-rate change, up to the evaluated IRs.

Runs the real Snakemake in a fresh folder for each config, side by side in one run:
  - the offline default (configs/offline.yaml: synthetic images, untrained Inception V3),
  - the ALL data config (configs/all_taleqani_mobilenet.yaml: 3,256 real images,
    MobileNet V1, a sweep of 8 experiments), unless --offline-only,
each to the `evaluated` target (every experiment trained and scored, the selected one
frozen, exported and evaluated; the benchmarks, whose length is configured, and the
report are left out), then changes train.mlp.learning_rate and times the rerun to the same
target. A head-only change sends no image through a backbone: the rerun lists its jobs.
Ends with one line per config:

    <config>: learning-rate rerun to evaluated IRs: N.NN of the full run

    python bench/bench_pipeline.py [--offline-only] [--cores 2]
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
CONFIGS = {"offline default (untrained backbone)": "configs/offline.yaml",
           "all-taleqani MobileNet": "configs/all_taleqani_mobilenet.yaml"}


def snakemake(workdir, configfiles, cores):
    command = [sys.executable, "-m", "snakemake", "-s", os.path.join(REPO, "Snakefile"), "--directory", workdir,
               "--cores", str(cores), "evaluated", "--configfile", *configfiles]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"snakemake failed in {workdir}:\n{result.stderr[-3000:]}")
    rules = collections.Counter(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", result.stderr + result.stdout,
                                           re.MULTILINE))
    rules.pop("evaluated", None)
    return seconds, rules


def config_copy(name, folder):
    with open(os.path.join(REPO, name), encoding="utf-8") as handle:
        text = handle.read().replace("../shared/data", SHARED)
    path = os.path.join(folder, os.path.basename(name))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def measure(title, config_name, folder, cores):
    workdir = os.path.join(folder, title.split()[0])
    base = config_copy(config_name, folder)
    full_seconds, full_jobs = snakemake(workdir, [base], cores)
    with open(os.path.join(REPO, "config.yaml"), encoding="utf-8") as handle:
        learning_rate = yaml.safe_load(handle)["train"]["mlp"]["learning_rate"]
    with open(base, encoding="utf-8") as handle:
        learning_rate = ((yaml.safe_load(handle).get("train") or {}).get("mlp") or {}).get("learning_rate", learning_rate)
    edit = os.path.join(folder, f"{title.split()[0]}-lr.yaml")
    with open(edit, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"train": {"mlp": {"learning_rate": learning_rate * 3}}}, handle)
    rerun_seconds, rerun_jobs = snakemake(workdir, [base, edit], cores)
    return full_seconds, full_jobs, rerun_seconds, rerun_jobs


def describe(jobs):
    return ", ".join(f"{rule} {count}" for rule, count in sorted(jobs.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline-only", action="store_true", help="skip the real-data config")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    configs = dict(list(CONFIGS.items())[:1]) if args.offline_only else CONFIGS
    ratios = {}
    with tempfile.TemporaryDirectory() as folder:
        for title, name in configs.items():
            full_s, full_jobs, rerun_s, rerun_jobs = measure(title, name, folder, args.cores)
            ratios[title] = rerun_s / full_s
            print(f"{title}: full run {full_s:.1f} s, {sum(full_jobs.values())} jobs; learning-rate rerun "
                  f"{rerun_s:.1f} s, {sum(rerun_jobs.values())} jobs ({describe(rerun_jobs)})", flush=True)
    for title, ratio in ratios.items():
        print(f"{title}: learning-rate rerun to evaluated IRs: {ratio:.2f} of the full run")


if __name__ == "__main__":
    main()
