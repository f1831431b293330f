"""Time `snakemake -n` (DAG planning) for data sets of 1k, 10k and 100k images.

For each size this writes a folder-per-class tree of empty files and the data stage's
outputs (images folder, index, manifest with one row per image), as a finished
`structure` + `split` would leave them, with the shard counts scaled to ~1,000 images a
shard; then it times a dry-run of the whole pipeline from there. No image is decoded:
planning never reads images, only file names and times.

    python bench/bench_dag.py [--sizes 1000 10000 100000]
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("Benign", "Early", "Pre", "Pro")
FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
IMAGES_PER_SHARD = 1000


def touch_tree(root, count):
    for index in range(count):
        folder = os.path.join(root, CLASSES[index % len(CLASSES)])
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, f"img_{index:06d}.jpg"), "wb").close()


def write_data_outputs(workdir, count):
    data = os.path.join(workdir, "results", "data")
    touch_tree(os.path.join(data, "images"), count)
    splits = [split for split, fraction in FRACTIONS.items() for _ in range(round(fraction * 100))]
    rows = ["path\tlabel\tlabel_index\tsplit\tsha256\twidth\theight"]
    for index in range(count):
        label = CLASSES[index % len(CLASSES)]
        rows.append(f"results/data/images/{label}/img_{index:06d}.jpg\t{label}\t{index % len(CLASSES)}\t"
                    f"{splits[index % 100]}\t{index:064x}\t224\t224")
    for name in ("index.tsv", "rejects.tsv", "duplicates.tsv", "structure_summary.json"):
        with open(os.path.join(data, name), "w") as handle:
            handle.write("\n".join(rows) + "\n" if name == "index.tsv" else "{}\n")
    for name, text in (("manifest.tsv", "\n".join(rows) + "\n"), ("labels.json", json.dumps(CLASSES) + "\n"),
                       ("split_summary.json", "{}\n")):
        with open(os.path.join(data, name), "w") as handle:
            handle.write(text)


def write_config(workdir, count):
    shards = {split: max(1, math.ceil(count * fraction / IMAGES_PER_SHARD)) for split, fraction in FRACTIONS.items()}
    config = {"dataset": {"source": os.path.join(workdir, "raw")}, "tfrecords": {"shards": shards},
              "backbone": {"source": "untrained"}}
    path = os.path.join(workdir, "config.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    return path, sum(shards.values())


def plan(workdir, configfile):
    command = [sys.executable, "-m", "snakemake", "-s", os.path.join(REPO, "Snakefile"), "--directory", workdir,
               "-n", "--quiet", "rules", "--configfile", configfile]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    total = re.search(r"^total\s+(\d+)", result.stdout + result.stderr, re.MULTILINE)
    return seconds, int(total.group(1)) if total else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    args = parser.parse_args()
    print(f"{'images':>8} {'shards':>7} {'planned jobs':>13} {'snakemake -n':>13}")
    with tempfile.TemporaryDirectory() as folder:
        for count in args.sizes:
            workdir = os.path.join(folder, str(count))
            touch_tree(os.path.join(workdir, "raw"), count)
            write_data_outputs(workdir, count)
            configfile, shards = write_config(workdir, count)
            seconds, jobs = plan(workdir, configfile)
            print(f"{count:8d} {shards:7d} {jobs:13d} {seconds:11.2f} s", flush=True)


if __name__ == "__main__":
    main()
