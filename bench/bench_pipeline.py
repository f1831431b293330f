"""Wall time and job count of a full run and of a rerun after a learning-rate change.

Runs the real Snakemake in a fresh folder for each config, side by side in one run:
  - the offline default (configs/offline.yaml: synthetic images, untrained Inception V3),
  - the real data config (tests/configs/all_taleqani_mobilenet.yaml: 3,256 ALL images,
    MobileNet V1), unless --offline-only,
then changes train.learning_rate and times the rerun. Prints one table.

    python bench/bench_pipeline.py [--offline-only] [--cores 2] [--target TARGET]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")


def snakemake(workdir, configfiles, cores, target):
    command = [sys.executable, "-m", "snakemake", "-s", os.path.join(REPO, "Snakefile"), "--directory", workdir,
               "--cores", str(cores), *([target] if target else []), "--configfile", *configfiles]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"snakemake failed in {workdir}:\n{result.stderr[-3000:]}")
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", result.stderr + result.stdout)
    jobs = int(done[-1][1]) if done else 0
    return seconds, jobs


def config_copy(name, folder):
    with open(os.path.join(REPO, name), encoding="utf-8") as handle:
        text = handle.read().replace("../shared/data", SHARED)
    path = os.path.join(folder, os.path.basename(name))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def measure(title, config_name, folder, cores, target):
    workdir = os.path.join(folder, title.split()[0])
    base = config_copy(config_name, folder)
    full_seconds, full_jobs = snakemake(workdir, [base], cores, target)
    with open(base, encoding="utf-8") as handle:
        learning_rate = yaml.safe_load(handle).get("train", {}).get("learning_rate", 0.001)
    edit = os.path.join(folder, f"{title.split()[0]}-lr.yaml")
    with open(edit, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"train": {"learning_rate": learning_rate * 3}}, handle)
    rerun_seconds, rerun_jobs = snakemake(workdir, [base, edit], cores, target)
    return full_seconds, full_jobs, rerun_seconds, rerun_jobs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline-only", action="store_true", help="skip the real-data config")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--target", default="", help="run up to this target (default: everything)")
    args = parser.parse_args()
    configs = {"offline default (untrained backbone)": "configs/offline.yaml"}
    if not args.offline_only:
        configs["all-taleqani MobileNet"] = "tests/configs/all_taleqani_mobilenet.yaml"
    print(f"{'config':38} {'full run':>14} {'rerun after learning-rate change':>36} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as folder:
        for title, name in configs.items():
            full_s, full_j, rerun_s, rerun_j = measure(title, name, folder, args.cores, args.target)
            print(f"{title:38} {full_s:7.1f} s {full_j:3d} jobs {rerun_s:20.1f} s {rerun_j:3d} jobs "
                  f"{rerun_s / full_s:7.1%}", flush=True)


if __name__ == "__main__":
    main()
