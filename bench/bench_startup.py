"""Start-up of every stage's process: the interpreter, the stage module and what it imports.

Runs each rule's module with --help (everything is imported, no work is done) a few
times and prints the median wall time, next to the time `import tensorflow` alone takes
and whether the stage's module can reach TensorFlow at all (it imports scripts/core/tfcompat
directly or through the library). Stages that cannot never pay TensorFlow's start-up;
tests/test_startup.py runs the OpenVINO and NumPy stages with TensorFlow blocked.

    python bench/bench_startup.py [--repeats 3]
"""
import argparse
import ast
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# rule -> module
STAGES = {
    "download": "scripts.data.fetch", "extract": "scripts.data.archive", "synthetic_images": "scripts.data.synthetic",
    "structure": "scripts.data.structure", "split": "scripts.data.split",
    "tfrecord_shard": "scripts.data.tfrecord_shard", "backbone": "scripts.model.backbone",
    "backbone_ir": "scripts.model.backbone_ir", "bottleneck_shard": "scripts.model.bottlenecks",
    "retrain": "scripts.model.retrain", "finetune": "scripts.model.finetune", "select": "scripts.model.select",
    "freeze": "scripts.model.freeze", "ir": "scripts.deploy.ir", "evaluate_ir": "scripts.deploy.evaluate_ir",
    "benchmark": "scripts.deploy.benchmark", "report_*": "scripts.report",
}
# Where a stage's job really needs TensorFlow.
NEEDS_TENSORFLOW = {"backbone", "finetune", "freeze", "untrained_backbone"}


def module_file(name):
    path = os.path.join(REPO, *name.split("."))
    return f"{path}.py" if os.path.isfile(f"{path}.py") else os.path.join(path, "__init__.py")


def reaches_tfcompat(name, seen=None):
    """Whether a module imports scripts.core.tfcompat, directly or through project modules."""
    seen = seen if seen is not None else set()
    if name in seen:
        return False
    seen.add(name)
    if name == "scripts.core.tfcompat":
        return True
    with open(module_file(name), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scripts"):
            imported |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return any(reaches_tfcompat(module, seen) for module in imported if os.path.exists(module_file(module)))


def seconds(command, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tensorflow = seconds([sys.executable, "-c", "import tensorflow"], args.repeats)
    print(f"import tensorflow alone: {tensorflow:.2f} s\n")
    print(f"{'rule':18} {'module':32} {'start-up':>9}  TensorFlow in its job")
    for rule, module in STAGES.items():
        startup = seconds([sys.executable, "-m", module, "--help"], args.repeats)
        if rule in NEEDS_TENSORFLOW:
            uses = f"yes (+{tensorflow:.1f} s)"
        elif rule == "bottleneck_shard":
            uses = "only with bottlenecks.backend: tensorflow"
        elif reaches_tfcompat(module):
            uses = "no (library imports it only on demand)"
        else:
            uses = "never (cannot reach it)"
        print(f"{rule:18} {module:32} {startup:8.2f}s  {uses}", flush=True)


if __name__ == "__main__":
    main()
