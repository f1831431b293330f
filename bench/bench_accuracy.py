"""The pipeline's defaults against a plain logistic regression on the same features.

For each data set (a folder per class), runs the real Snakemake with config.yaml's
defaults and only `dataset` and `backbone` set (the real MobileNet V1 0.25 frozen graph
from ../shared/data/weights) up to the selection (every experiment's cross-validation and
refit head), then fits scikit-learn's LogisticRegression (lbfgs, C=1, max_iter 10000,
standardised features) on the same training + validation features of the selected
experiment's preprocessing, the data the selected head was refit on, and scores both on
the test split. Prints per data set the test-set size, the selected model's test accuracy
with its 95% Wilson interval, the baseline's, and the paired comparison: images only one
of the two gets right, with an exact two-sided binomial (McNemar) p-value.

    python bench/bench_accuracy.py [--data ../shared/data/ants-bees ...] [--workdir FOLDER]

With --workdir, each data set's run is kept in FOLDER/<name> (and reused when run again).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
sys.path.insert(0, REPO)
from scripts.core import formats  # noqa: E402

BACKBONE = {"kind": "frozen_graph", "source": os.path.join(SHARED, "weights", "mobilenet_v1_0.25_224_frozen.tgz"),
            "sha256": "1cddeede49eb35af36061aaa66bf643b81f7ea89abc85f6ffef8f0bf00891756",
            "graph_member": "mobilenet_v1_0.25_224/frozen_graph.pb", "input_tensor": "input",
            "bottleneck_tensor": "MobilenetV1/Logits/AvgPool_1a/AvgPool", "input_size": 224,
            "input_range": [-1.0, 1.0]}


SWEEP_EXPERIMENTS = ("crop1.0-linear", "crop1.0-mlp", "crop0.875-linear", "crop0.875-mlp")  # config.yaml's sweep


def run_pipeline(workdir, data):
    os.makedirs(workdir, exist_ok=True)
    config = os.path.join(workdir, "config.yaml")
    with open(config, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"dataset": {"source": data}, "backbone": BACKBONE}, handle)
    targets = ["results/selected.json", *(f"results/{name}/model/metrics.json" for name in SWEEP_EXPERIMENTS)]
    command = [sys.executable, "-m", "snakemake", "-s", os.path.join(REPO, "Snakefile"), "--directory", workdir,
               "--cores", "2", *targets, "--configfile", config]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"snakemake failed for {data}:\n{result.stderr[-3000:]}")


def logistic_regression(features_dir):
    """Test predictions of LogisticRegression(C=1) fit on the standardised training + validation features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    fit = formats.concatenate_bottlenecks([formats.read_bottlenecks(os.path.join(features_dir, f"{split}.npz"))
                                           for split in ("train", "validation")])
    test = formats.read_bottlenecks(os.path.join(features_dir, "test.npz"))
    scaler = StandardScaler().fit(fit["features"])
    model = LogisticRegression(C=1.0, max_iter=10000).fit(scaler.transform(fit["features"]), fit["labels"])
    return model.predict(scaler.transform(test["features"])), test


def compare(results):
    """(selected name, n, selected correct [n] bools, baseline correct [n] bools)."""
    with open(os.path.join(results, "selected.json"), encoding="utf-8") as handle:
        selected = json.load(handle)["experiment"]
    with open(os.path.join(results, selected, "model", "metrics.json"), encoding="utf-8") as handle:
        preprocess = json.load(handle)["settings"]["preprocess"]
    variant = f"crop{preprocess['central_fraction']:g}-{preprocess['resize']}"
    predicted, test = logistic_regression(os.path.join(results, "backbone", "features", variant, "FP32", "plain"))
    ours = formats.read_predictions(os.path.join(results, selected, "model", "test_predictions.npz"))
    assert list(ours["sha256"]) == list(test["sha256"])
    return selected, len(test["labels"]), ours["probabilities"].argmax(axis=1) == test["labels"], \
        predicted == test["labels"]


def main():
    from scipy.stats import binomtest
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=[os.path.join(SHARED, name)
                                                      for name in ("ants-bees", "all-taleqani")])
    parser.add_argument("--workdir", help="keep (and reuse) each data set's run in WORKDIR/<name>")
    args = parser.parse_args()
    print(f"{'data set':14} {'test n':>6} {'selected':>9} {'95% Wilson':>15} {'LR train+val':>12} "
          f"{'only ours':>9} {'only LR':>7} {'p':>6}  selected experiment")
    with tempfile.TemporaryDirectory() as scratch:
        for data in args.data:
            workdir = os.path.join(args.workdir or scratch, os.path.basename(data))
            run_pipeline(workdir, data)
            selected, n, ours, baseline = compare(os.path.join(workdir, "results"))
            interval = binomtest(int(ours.sum()), n).proportion_ci(method="wilson")
            only_ours, only_baseline = int((ours & ~baseline).sum()), int((baseline & ~ours).sum())
            p = binomtest(only_ours, only_ours + only_baseline).pvalue if only_ours + only_baseline else 1.0
            print(f"{os.path.basename(data):14} {n:6d} {ours.mean():9.4f} [{interval.low:.3f}, {interval.high:.3f}] "
                  f"{baseline.mean():12.4f} {only_ours:9d} {only_baseline:7d} {p:6.3f}  {selected}", flush=True)


if __name__ == "__main__":
    main()
