# Config validation, paths and input functions shared by every rule file.
import ast
import functools
import hashlib
import json
import os
import re
import posixpath
import sys
import urllib.parse

sys.path.insert(0, workflow.basedir)
from scripts.core import backbones
from scripts.core.config_check import (
    check_config,
    expand_experiments,
    experiment_settings,
)
from scripts.core.errors import PipelineError
from scripts.core.layout import Layout, finetune_root, shard_name as layout_shard_name
from snakemake.exceptions import WorkflowError

try:
    check_config(
        config,
        os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"),
    )
    # The backbone section completed from its preset and kind (scripts/core/backbones.py).
    config["backbone"] = backbones.resolve(config["backbone"])
except PipelineError as error:
    sys.exit(f"error: {error}")

RESULTS = "results"
# Every artefact's path comes from the one map of the results (scripts/core/layout.py).
LAYOUT = Layout(RESULTS)
LOGS = LAYOUT.logs()
RUNTIME = LAYOUT.runtime()  # Snakemake `benchmark:` files (time and memory per job)
SPLITS = ("train", "validation", "test")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz")
UNTRAINED = config["backbone"]["source"] == "untrained"
UNTRAINED_FILE = backbones.KINDS[config["backbone"]["kind"]].untrained_file or "none"


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
    return (
        f"{path}.py"
        if os.path.isfile(f"{path}.py")
        else os.path.join(path, "__init__.py")
    )


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
    return {
        name
        for name in names
        if name.split(".")[0] == "scripts" and (os.path.isfile(module_file(name)))
    }


# Modules that shape only what a job says (error lines, progress, log filtering), never
# what it writes: they are not code inputs, so editing a message reruns nothing.
MESSAGE_MODULES = {
    "scripts.core.errors",
    "scripts.core.progress",
    "scripts.core.quiet",
}


@functools.cache
def code(module):
    """A stage's module and every project module it imports that can change its outputs.

    Editing any of them reruns the stage (message-only modules excepted, MESSAGE_MODULES).
    ``module`` is a path under scripts/ without .py, as a dotted name, e.g. "data.structure".
    """
    start = f"scripts.{module}"
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name in MESSAGE_MODULES:
            continue
        seen.add(name)
        todo += imported_modules(module_file(name))
    return sorted(module_file(name) for name in seen)


def is_remote(source):
    return "://" in source


def is_archive(path):
    return path.lower().endswith(ARCHIVE_SUFFIXES)


def source_name(source):
    """The file name a source is stored under in results/."""
    path = urllib.parse.urlparse(source).path if is_remote(source) else source
    return posixpath.basename(path.rstrip(posixpath.sep)) or "download"


# ------------------------------------------------------------------ downloads
# The two things fetched from outside, by the `source` wildcard of `download` and `extract`.
SOURCE_SECTIONS = {"data": "dataset", "backbone": "backbone"}


def source_setting(source, key):
    return config[SOURCE_SECTIONS[source]][key]


def downloaded(source):
    """Where `download` stores the data set's or the backbone's file."""
    return LAYOUT.download(source, source_name(source_setting(source, "source")))


# ------------------------------------------------------------------ data set


def raw_tree():
    """The folder `structure` reads: generated, extracted, or the user's own folder."""
    source = config["dataset"]["source"]
    if source == "synthetic":
        return LAYOUT.synthetic()
    if not is_remote(source) and os.path.isdir(source):
        return source
    return LAYOUT.unpacked("data")


def shard_count(split):
    return config["tfrecords"]["shards"][split]


def shard_name(split, shard):
    return layout_shard_name(split, shard, shard_count(split))


def tfrecord_shards(split):
    return [
        LAYOUT.tfrecord(split, shard, shard_count(split))
        for shard in range(shard_count(split))
    ]


def all_tfrecords():
    return [path for split in SPLITS for path in tfrecord_shards(split)]


# ------------------------------------------------------------------ backbone
def backbone_download():
    """The backbone's checkpoint or graph as fetched (or made, for `untrained`)."""
    return (
        LAYOUT.untrained_checkpoint(UNTRAINED_FILE)
        if UNTRAINED
        else downloaded("backbone")
    )


def archive_of(source):
    """The archive `extract` unpacks: the downloaded data set, or the backbone's (or the untrained one)."""
    return backbone_download() if source == "backbone" else downloaded("data")


def backbone_unpacked():
    """What `backbone` reads: the unpacked archive, or the downloaded .pb/.ckpt file."""
    download = backbone_download()
    return LAYOUT.unpacked("backbone") if is_archive(download) else download


# ------------------------------------------------------------------ experiments
# Every experiment is a named override (config `experiments`) times a sweep point.
EXPANDED = expand_experiments(config)
EXPERIMENTS = list(EXPANDED)
ENGINES = backbones.ENGINES
# Test-time views (scripts/core/augment.py): view 0 is the image itself.
TEST_TIME_VIEWS = {"none": [0], "flip": [0, 4], "dihedral": list(range(8))}


@functools.cache
def settings(experiment):
    """The experiment's preprocess, augment, train, finetune and export sections."""
    return experiment_settings(config, experiment, EXPANDED)


def precisions(experiment):
    return settings(experiment)["export"]["precisions"]


def training_engine():
    """What computes the features heads train on: TensorFlow, or the backbone IR at a precision."""
    backbone = config["bottlenecks"]
    return (
        "tensorflow" if backbone["backend"] == "tensorflow" else backbone["precision"]
    )


def float32_engine():
    """The engine whose features a float32 model (the frozen .pb) reproduces."""
    return "tensorflow" if training_engine() == "tensorflow" else "FP32"


def variant_name(preprocess):
    """A readable name for a preprocessing setting, e.g. crop0.875-bilinear."""
    return f"crop{preprocess['central_fraction']:g}-{preprocess['resize']}"


VARIANTS = {
    variant_name(settings(name)["preprocess"]): settings(name)["preprocess"]
    for name in EXPERIMENTS
}


def augment_name(augment):
    """aug-<hash> of the settings that make the augmented training copies."""
    keys = ("copies", "flip", "rotate90", "crop", "color_jitter", "zoom_out", "seed")
    text = json.dumps({key: augment[key] for key in keys}, sort_keys=True)
    return f"aug-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


AUGMENTS = {
    augment_name(settings(name)["augment"]): settings(name)["augment"]
    for name in EXPERIMENTS
    if settings(name)["augment"]["copies"] > 0
}


def finetuned(experiment):
    return settings(experiment)["finetune"]["enabled"]


def backbone_root(experiment):
    """Where an experiment's backbone lives: the shared one, or its own fine-tuned one."""
    return finetune_root(experiment) if finetuned(experiment) else "backbone"


def final_model(experiment, name):
    """The experiment's final head (head.npz), history.csv, metrics.json or test_predictions.npz:
    the fine-tuned one, or the head-only one."""
    if finetuned(experiment):
        return LAYOUT.finetuned(experiment, name)
    return f"{LAYOUT.model_dir(experiment)}/{name}"


def features(experiment, split, engine=None, kind="plain", root=None):
    """A gathered feature file of one split, for the experiment's preprocessing.

    ``root`` is the backbone (default: the experiment's own, fine-tuned or shared),
    ``engine`` what computed them (default: the training engine).
    """
    variant = variant_name(settings(experiment)["preprocess"])
    root = root or backbone_root(experiment)
    return LAYOUT.features(root, variant, engine or training_engine(), kind, split)


def test_time_views(experiment):
    return TEST_TIME_VIEWS[settings(experiment)["augment"]["test_time"]]


def view_features(experiment, split, engine=None, root=None):
    """The split's features for every extra test-time view (view 0 is the plain file)."""
    return [
        features(experiment, split, engine, f"view{view}", root)
        for view in test_time_views(experiment)[1:]
    ]


def augmented_features(experiment, root=None):
    augment = settings(experiment)["augment"]
    return (
        [features(experiment, "train", kind=augment_name(augment), root=root)]
        if augment["copies"]
        else []
    )


def engine_files(wildcards):
    """The model that computes features for an engine: backbone.pb, or the backbone IR of a precision."""
    if wildcards.engine == "tensorflow":
        return [LAYOUT.backbone_pb(wildcards.root)]
    return [
        LAYOUT.backbone_ir(wildcards.root, wildcards.engine, ext)
        for ext in ("xml", "bin")
    ]


def root_preprocess(root):
    """The preprocessing that calibrates a backbone's INT8 IR: the base one, or the fine-tuned experiment's."""
    return (
        config["preprocess"]
        if root == "backbone"
        else settings(os.path.dirname(root))["preprocess"]
    )


def calibration_options(wildcards):
    """INT8 calibration options of a backbone IR job ("" for the other precisions, which do not use them)."""
    if wildcards.precision != "INT8":
        return ""
    preprocess = root_preprocess(wildcards.root)
    return (
        f"--calibration-images {config['bottlenecks']['int8_calibration_images']}"
        f" --central-fraction {preprocess['central_fraction']} --resize {preprocess['resize']}"
        f" --overflow-fix {config['bottlenecks']['int8_overflow_fix']}"
    )


def backbone_ir_files(wildcards):
    """The backbone IR (xml, bin) a deployed IR of this experiment and precision is built on."""
    root = backbone_root(wildcards.experiment)
    return [
        LAYOUT.backbone_ir(root, wildcards.precision, ext) for ext in ("xml", "bin")
    ]


def export_option(wildcards, key, used_by):
    """``--key value`` of an export setting for jobs of the precisions ``used_by``, else "".

    Jobs that do not use a setting do not carry it, so changing it does not rerun them.
    """
    value = settings(wildcards.experiment)["export"][key]
    if wildcards.precision not in used_by or value is None:
        return ""
    if key == "min_fp_agreement" and training_engine() == "INT8":
        return ""  # heads trained on INT8 features: a float IR is a change of precision, reported only
    return f"--{key.replace('_', '-')} {value}"


def head_settings(experiment, folds=True):
    """What a head's training reads, as JSON (the retrain job's params; recorded in metrics.json).

    Only the chosen head kind's own keys, the augment keys that make training copies only
    when there are copies, and (``folds``) the cross-validation's folds: a change to
    anything else reruns no head.
    """
    chosen = settings(experiment)
    kind = chosen["train"]["head"]
    augment = chosen["augment"]
    if not augment["copies"]:
        augment = {"copies": 0, "test_time": augment["test_time"]}
    blocks = chosen["train"]["feature_blocks"]
    return json.dumps(
        {
            "preprocess": chosen["preprocess"],
            "augment": augment,
            "train": {"head": kind, **chosen["train"][kind]}
            | ({"feature_blocks": blocks} if blocks else {}),
        }
        | ({"selection": {"folds": config["selection"]["folds"]}} if folds else {}),
        sort_keys=True,
    )


def finetune_settings(experiment):
    chosen = settings(experiment)
    finetune = {
        key: value for key, value in chosen["finetune"].items() if key != "enabled"
    }
    augment = {
        key: chosen["augment"][key]
        for key in ("flip", "rotate90", "crop", "color_jitter", "zoom_out")
    }
    return json.dumps({**finetune, "augment": augment}, sort_keys=True)


def final_metrics(experiment):
    return final_model(experiment, "metrics.json")


def deployed_experiments(selected=None):
    """Every experiment, or only the one `select` chose (selection.deploy)."""
    if config["selection"]["deploy"] == "all":
        return EXPERIMENTS
    return [selected] if selected else []


def selected_experiment():
    """The selected experiment's name, once the `select` checkpoint has run."""
    with open(checkpoints.select.get().output.selected, encoding="utf-8") as handle:
        return json.load(handle)["experiment"]


def deploy_targets(experiment, benchmarks=True):
    """The deployed IRs and their evaluation; with ``benchmarks``, the frozen model and benchmarks too."""
    targets = [LAYOUT.frozen_model(experiment)] if benchmarks else []
    for precision in precisions(experiment):
        targets += [
            LAYOUT.ir_xml(experiment, precision),
            LAYOUT.evaluation(experiment, precision),
        ]
    if benchmarks:
        targets += [LAYOUT.benchmarks(experiment, ext) for ext in ("csv", "json")]
    targets.append(LAYOUT.model_card(experiment))
    return targets


def deployment_features(experiment):
    """A head-only experiment's test features at every export precision (and view).

    Made with the experiments, before the selection: a later head change, even one that
    selects another experiment, then sends no image through a backbone. (A fine-tuned
    experiment's own backbone makes its features when it is deployed.)
    """
    if finetuned(experiment):
        return []
    return [
        path
        for precision in precisions(experiment)
        for path in [features(experiment, "test", precision)]
        + view_features(experiment, "test", precision)
    ]


def experiment_targets():
    """What every run makes before the selection: data, every experiment's metrics and test features."""
    targets = [LAYOUT.manifest(), LAYOUT.selected()] + all_tfrecords()
    targets += [final_metrics(experiment) for experiment in EXPERIMENTS]
    targets += [
        path for experiment in EXPERIMENTS for path in deployment_features(experiment)
    ]
    return targets


def deployed_targets(wildcards, benchmarks=True):
    """The deployed models (evaluated, and benchmarked unless told otherwise), once `select` has run."""
    selected = None if config["selection"]["deploy"] == "all" else selected_experiment()
    return [
        path
        for experiment in deployed_experiments(selected)
        for path in deploy_targets(experiment, benchmarks)
    ]


def evaluated_targets(wildcards):
    return deployed_targets(wildcards, benchmarks=False)


# ------------------------------------------------------------------ report
def experiment_report(name, caption, category):
    return report(
        LAYOUT.experiment_report("{experiment}", name),
        caption=f"../report/{caption}",
        category=category,
        subcategory="{experiment}",
    )


def evaluations(experiment):
    return [
        LAYOUT.evaluation(experiment, precision) for precision in precisions(experiment)
    ]


def experiment_report_targets():
    return [LAYOUT.report("data_summary.csv"), LAYOUT.report("experiments.csv")] + [
        LAYOUT.experiment_report(experiment, "training_curves.png")
        for experiment in EXPERIMENTS
    ]


def report_targets(wildcards):
    targets = []
    selected = None if config["selection"]["deploy"] == "all" else selected_experiment()
    for experiment in deployed_experiments(selected):
        targets += [
            LAYOUT.experiment_report(experiment, name)
            for name in ("ir_accuracy.csv", "benchmarks.png", *CLINICAL_FIGURES)
        ]
    return targets


wildcard_constraints:
    experiment="|".join(re.escape(name) for name in EXPERIMENTS),
    split="|".join(SPLITS),
    root=r"backbone|[A-Za-z0-9][A-Za-z0-9_.-]*/finetune",
    variant=r"crop[0-9.e-]+-[a-z]+",
    engine="|".join(ENGINES),
    precision="|".join(backbones.PRECISIONS),
    kind=r"plain|view[1-7]|aug-[0-9a-f]{8}",
    shard=r"\d{5}",
    source="data|backbone",
    num_shards=r"\d{5}",


# ------------------------------------------------------------------ console and report additions
# The misclassified-images gallery of each experiment
def console_report_targets():
    return [
        LAYOUT.experiment_report(experiment, "misclassified.png")
        for experiment in EXPERIMENTS
    ]


# Saliency overlays of each experiment's test images (workflow/rules/explain.smk)
def explain_targets():
    return [
        LAYOUT.experiment_report(experiment, "explained.png")
        for experiment in EXPERIMENTS
    ]


def current_outputs():
    """The outputs of this run's jobs, made now or found up to date (None: unknown).

    The end-of-run summary (onsuccess) shows only these as the run's results.
    """
    try:
        return {str(path) for job in workflow.dag.jobs for path in job.output}
    except AttributeError:  # Snakemake's DAG is not a public API
        return None


# ------------------------------------------------------------------ audit (workflow/rules/audit.smk)
AUDIT_VARIANT = variant_name(config["preprocess"])


def audit_features(split):
    return LAYOUT.features("backbone", AUDIT_VARIANT, training_engine(), "plain", split)


def audit_model():
    """The backbone that computed the audited features: backbone.pb, or its IR (xml, bin)."""
    engine = training_engine()
    if engine == "tensorflow":
        return [LAYOUT.backbone_pb()]
    return [LAYOUT.backbone_ir("backbone", engine, ext) for ext in ("xml", "bin")]


def audit_targets():
    if not config["audit"]["enabled"]:
        return []
    return [
        LAYOUT.audit("near_duplicates.csv"),
        LAYOUT.audit("label_issues.csv"),
        LAYOUT.report("near_duplicates.png"),
        LAYOUT.report("label_issues.png"),
    ]


# ------------------------------------------------------------------ serving and tracking
# (workflow/rules/serve.smk and track.smk)
import shlex

SERVING_VERSION = config["serving"]["version"]
SERVING_FILES = ("model.xml", "model.bin", "ir.json", "labels.json", "model_card.md")


def serving_dir(experiment, pixels=False):
    suffix = "_pixels" if pixels else ""
    return LAYOUT.serving_model(f"{experiment}{suffix}", SERVING_VERSION)


def model_card(wildcards):
    """Hook: the experiment's model card where a rule makes results/<experiment>/model_card.md, else nothing."""
    path = LAYOUT.model_card(wildcards.experiment)
    made = any(
        re.fullmatch(re.sub(r"\{[^}]*\}", ".+", str(pattern)), path)
        for rule in workflow.rules
        for pattern in rule.output
    )
    return [path] if made else []


def serving_experiments():
    selected = None if config["selection"]["deploy"] == "all" else selected_experiment()
    return deployed_experiments(selected)


def serving_targets(wildcards):
    targets = [LAYOUT.serving_config()]
    for experiment in serving_experiments():
        for pixels in (False, True):
            targets += [
                f"{serving_dir(experiment, pixels)}/{name}" for name in SERVING_FILES
            ]
    return targets


def tracking_targets():
    return [LAYOUT.tracking_runs()] if config["tracking"]["mlflow_uri"] else []


def tracked_deployed_files(experiment):
    """The deployed files logged as an experiment's artifacts: each precision's IR and its evaluation."""
    return [
        path
        for precision in precisions(experiment)
        for path in (
            LAYOUT.ir_xml(experiment, precision),
            LAYOUT.ir_bin(experiment, precision),
            LAYOUT.ir_json(experiment, precision),
            LAYOUT.evaluation(experiment, precision),
        )
    ]


def tracked_metrics(experiment):
    return [final_metrics(experiment)] + evaluations(experiment)


def tracked_files(wildcards):
    if not config["tracking"]["mlflow_uri"]:
        raise WorkflowError(
            "config key tracking.mlflow_uri: set it (a folder or http://host:port) to track runs"
        )
    selected = None if config["selection"]["deploy"] == "all" else selected_experiment()
    metrics = [final_metrics(experiment) for experiment in EXPERIMENTS]
    deployed = []
    for experiment in deployed_experiments(selected):
        metrics += evaluations(experiment)
        deployed += tracked_deployed_files(experiment)
    return {"metrics": metrics, "deployed": deployed}


def tracking_arguments(input):
    """--metrics and --artifact EXPERIMENT=PATH pairs, the experiment read from each path."""
    owner = lambda path: os.path.relpath(path, RESULTS).split(os.sep)[0]
    # (before the selection has run, a dry-run has no such inputs yet)
    metrics = " ".join(
        shlex.quote(f"{owner(path)}={path}") for path in getattr(input, "metrics", [])
    )
    artifacts = " ".join(
        shlex.quote(f"{owner(path)}={path}") for path in getattr(input, "deployed", [])
    )
    return f"--metrics {metrics}" + (f" --artifact {artifacts}" if artifacts else "")


# ------------------------------------------------------------------ clinical metrics and calibration
# (workflow/rules/clinical.smk, docs/clinical.md)
CLINICAL_FIGURES = (
    "roc.png",
    "precision_recall.png",
    "reliability.png",
    "operating_point.png",
)


def evaluation_json(*keys):
    """The config's `evaluation` keys a job reads, as JSON (its params: a change reruns exactly those jobs)."""
    return json.dumps({key: config["evaluation"][key] for key in keys}, sort_keys=True)


def metrics_evaluation():
    """What metrics (binary view and bootstrap intervals) read: retrain, score_finetune, evaluate_ir."""
    return evaluation_json("positive_classes", "bootstrap_samples", "seed")
