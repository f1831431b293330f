"""The pipeline's defaults against a plain logistic regression on the same features.

For each data set (a folder per class), runs the real Snakemake with config.yaml's
defaults and only `dataset` and `backbone` set (the real MobileNet V1 0.25 frozen graph
from ../shared/data/weights), then fits scikit-learn's LogisticRegression (lbfgs, C=1,
standardised features) on the pipeline's own training features, with and without the
87.5% central crop, and scores it on the same test split. Prints per data set the test
accuracy of the model the pipeline selected on validation and of both baselines, with
the test-set size. Needs scikit-learn (`pip install scikit-learn`; not a pipeline
dependency).

    python bench/bench_accuracy.py [--data ../shared/data/ants-bees ../shared/data/all-taleqani]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
sys.path.insert(0, REPO)
from scripts.core import formats  # noqa: E402

BACKBONE = {"kind": "frozen_graph", "source": os.path.join(SHARED, "weights", "mobilenet_v1_0.25_224_frozen.tgz"),
            "graph_member": "mobilenet_v1_0.25_224/frozen_graph.pb", "input_tensor": "input",
            "bottleneck_tensor": "MobilenetV1/Logits/AvgPool_1a/AvgPool", "input_size": 224,
            "input_range": [-1.0, 1.0]}


def run_pipeline(workdir, data):
    os.makedirs(workdir, exist_ok=True)
    config = os.path.join(workdir, "config.yaml")
    with open(config, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"dataset": {"source": data}, "backbone": BACKBONE}, handle)
    command = [sys.executable, "-m", "snakemake", "-s", os.path.join(REPO, "Snakefile"), "--directory", workdir,
               "--cores", "2", "evaluated", "--configfile", config]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"snakemake failed for {data}:\n{result.stderr[-3000:]}")


def logistic_regression(features_dir):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    train = formats.read_bottlenecks(os.path.join(features_dir, "train.npz"))
    test = formats.read_bottlenecks(os.path.join(features_dir, "test.npz"))
    scaler = StandardScaler().fit(train["features"])
    model = LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(train["features"]), train["labels"])
    predicted = model.predict(scaler.transform(test["features"]))
    return float(np.mean(predicted == test["labels"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=[os.path.join(SHARED, name)
                                                      for name in ("ants-bees", "all-taleqani")])
    args = parser.parse_args()
    print(f"{'data set':16} {'test images':>11} {'pipeline (selected)':>20} {'LR whole image':>15} "
          f"{'LR 87.5% crop':>14}  selected experiment")
    with tempfile.TemporaryDirectory() as folder:
        for data in args.data:
            workdir = os.path.join(folder, os.path.basename(data))
            run_pipeline(workdir, data)
            results = os.path.join(workdir, "results")
            with open(os.path.join(results, "selected.json"), encoding="utf-8") as handle:
                selected = json.load(handle)["experiment"]
            with open(os.path.join(results, selected, "model", "metrics.json"), encoding="utf-8") as handle:
                test = json.load(handle)["splits"]["test"]
            features = os.path.join(results, "backbone", "features")
            baselines = [logistic_regression(os.path.join(features, variant, "FP32", "plain"))
                         for variant in ("crop1-bilinear", "crop0.875-bilinear")]
            print(f"{os.path.basename(data):16} {test['n']:11d} {test['accuracy']:20.4f} {baselines[0]:15.4f} "
                  f"{baselines[1]:14.4f}  {selected}", flush=True)


if __name__ == "__main__":
    main()
