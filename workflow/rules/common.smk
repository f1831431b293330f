# Config validation, paths and input functions shared by every rule file.
import ast
import functools
import json
import os
import posixpath
import sys
import urllib.parse

sys.path.insert(0, workflow.basedir)
from scripts.core.config_check import check_config, experiment_settings
from scripts.core.errors import PipelineError
from snakemake.exceptions import WorkflowError

try:
    check_config(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))
except PipelineError as error:
    sys.exit(f"error: {error}")

RESULTS = "results"
DATA = f"{RESULTS}/data"
BACKBONE = f"{RESULTS}/backbone"
BOTTLENECKS = f"{RESULTS}/bottlenecks"
LOGS = f"{RESULTS}/logs"
RUNTIME = f"{RESULTS}/runtime"  # Snakemake `benchmark:` files (time and memory per job)
SPLITS = ("train", "validation", "test")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz")
UNTRAINED = config["backbone"]["source"] == "untrained"
EXPERIMENTS = list(config["experiments"])


def env(name):
    """The conda environment file of a rule group (used with --sdm conda)."""
    return os.path.join(workflow.basedir, "envs", f"{name}.yaml")


def all_cores():
    """The cores given with --cores; 1 where none are given (--report, --lint)."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def module_file(name):
    """The file of a dotted project module name, e.g. scripts.core.atomic."""
    path = os.path.join(workflow.basedir, *name.split("."))
    return path + ".py" if os.path.isfile(path + ".py") else os.path.join(path, "__init__.py")


def imported_modules(path):
    """The project modules (scripts.*) a file imports, anywhere in it."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] == "scripts" and
            (os.path.isfile(module_file(name)))}


@functools.cache
def code(module):
    """A stage's module and every project module it imports, as inputs.

    Editing any of them reruns the stage. ``module`` is a path under scripts/ without
    .py, e.g. "data/structure".
    """
    start = "scripts." + module.replace("/", ".")
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += imported_modules(module_file(name))
    return sorted(module_file(name)
                  for name in seen)


def is_remote(source):
    return "://" in source


def is_archive(path):
    return path.lower().endswith(ARCHIVE_SUFFIXES)


def source_name(source):
    """The file name a source is stored under in results/."""
    path = urllib.parse.urlparse(source).path if is_remote(source) else source
    return posixpath.basename(path.rstrip(posixpath.sep)) or "download"


# ------------------------------------------------------------------ data set
def dataset_download():
    return f"{DATA}/download/{source_name(config['dataset']['source'])}"


def raw_tree():
    """The folder `structure` reads: generated, extracted, or the user's own folder."""
    source = config["dataset"]["source"]
    if source == "synthetic":
        return f"{DATA}/synthetic"
    if not is_remote(source) and os.path.isdir(source):
        return source
    return f"{DATA}/raw"


def shard_count(split):
    return config["tfrecords"]["shards"][split]


def shard_name(split, shard):
    return f"{split}-{shard:05d}-of-{shard_count(split):05d}"


def tfrecord_shards(split):
    return [f"{DATA}/tfrecords/{shard_name(split, shard)}.tfrecord" for shard in range(shard_count(split))]


def all_tfrecords():
    return [path for split in SPLITS for path in tfrecord_shards(split)]


# ------------------------------------------------------------------ backbone
def backbone_download():
    if UNTRAINED:
        return f"{BACKBONE}/download/inception_v3_untrained.tar.gz"
    return f"{BACKBONE}/download/{source_name(config['backbone']['source'])}"


def backbone_unpacked():
    """What `backbone` reads: the unpacked archive, or the downloaded .pb/.ckpt file."""
    download = backbone_download()
    return f"{BACKBONE}/unpacked" if is_archive(download) else download


def backbone_ir():
    """The backbone IR, needed only by the `openvino` bottleneck backend."""
    if config["bottlenecks"]["backend"] == "openvino":
        return [f"{BACKBONE}/backbone.xml"]
    return []


def bottleneck_shards(split):
    return [f"{BOTTLENECKS}/{shard_name(split, shard)}.npz" for shard in range(shard_count(split))]


# ------------------------------------------------------------------ experiments
def settings(experiment, section):
    return experiment_settings(config, experiment)[section]


def precisions(experiment):
    return settings(experiment, "export")["precisions"]


def export_option(wildcards, key, used_by):
    """``--key value`` of an export setting for jobs of the precisions ``used_by``, else "".

    Jobs that do not use a setting do not carry it, so changing it does not rerun them.
    """
    value = settings(wildcards.experiment, "export")[key]
    if wildcards.precision not in used_by or value is None:
        return ""
    return f"--{key.replace('_', '-')} {value}"


def final_targets():
    targets = [f"{DATA}/manifest.tsv"] + all_tfrecords()
    for experiment in EXPERIMENTS:
        targets += [f"{RESULTS}/{experiment}/model/frozen_model.pb"]
        for precision in precisions(experiment):
            targets += [f"{RESULTS}/{experiment}/ir/{precision}/{name}" for name in ("model.xml", "evaluation.json")]
        targets += [f"{RESULTS}/{experiment}/benchmarks/benchmarks.{ext}" for ext in ("csv", "json")]
    return targets


# ------------------------------------------------------------------ report
REPORT = f"{RESULTS}/report"
EXPERIMENT_REPORT = f"{RESULTS}/{{experiment}}/report"


def experiment_report(name, caption, category):
    return report(f"{EXPERIMENT_REPORT}/{name}", caption=f"../report/{caption}", category=category,
                  subcategory="{experiment}")


def evaluations(experiment):
    return [f"{RESULTS}/{experiment}/ir/{precision}/evaluation.json" for precision in precisions(experiment)]


def report_targets():
    targets = [f"{REPORT}/data_summary.csv", f"{REPORT}/experiments.csv"]
    for experiment in EXPERIMENTS:
        targets += [f"{RESULTS}/{experiment}/report/{name}" for name in
                    ("training_curves.png", "ir_accuracy.csv", "benchmarks.png")]
    return targets


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    split="|".join(SPLITS),


# ------------------------------------------------------------------ console and report additions
# (branch `console`, issue 15: the misclassified-images gallery of each experiment)
def console_report_targets():
    return [f"{RESULTS}/{experiment}/report/misclassified.png" for experiment in EXPERIMENTS]


def selected_json():
    """results/selected.json where a rule makes it (selection on validation), else nothing."""
    path = f"{RESULTS}/selected.json"
    return [path] if any(path in map(str, rule.output) for rule in workflow.rules) else []


def current_outputs():
    """The outputs of this run's jobs, made now or found up to date (None: unknown).

    The end-of-run summary (onsuccess) shows only these as the run's results.
    """
    try:
        return {str(path) for job in workflow.dag.jobs for path in job.output}
    except AttributeError:  # Snakemake's DAG is not a public API
        return None
