"""Where every artefact of a run lives: the one map of the results folder.

The rules (workflow/rules/*.smk), the end-of-run summary, the report and the test
fixtures all build paths here, so a file moves by editing one method. Every method
returns a path under ``root``; its arguments may be values ("crop1.0-hidden0") or
Snakemake wildcards ("{experiment}"), so the same method names a rule's output pattern
and one concrete file:

    layout = Layout("results")
    layout.head("{experiment}")          # results/{experiment}/model/head.npz
    layout.ir_xml("default", "INT8")     # results/default/ir/INT8/model.xml

A *backbone root* is where a backbone and its features live: "backbone" (shared by
every head-only experiment) or "<experiment>/finetune" (a fine-tuned experiment's own).
"""
import posixpath

SPLITS = ("train", "validation", "test")
SHARED_BACKBONE = "backbone"


def shard_name(split, shard, count):
    """e.g. train-00001-of-00004; ``shard`` and ``count`` may be wildcard strings."""
    def number(value):
        return value if isinstance(value, str) else f"{value:05d}"
    return f"{split}-{number(shard)}-of-{number(count)}"


def finetune_root(experiment):
    return f"{experiment}/finetune"


class Layout:
    def __init__(self, root="results"):
        self.root = root

    def path(self, *parts):
        return posixpath.join(self.root, *parts)

    # ------------------------------------------------------------ run-wide
    def logs(self, *parts):
        return self.path("logs", *parts)

    def runtime(self, *parts):
        """Snakemake `benchmark:` files (time and memory per job)."""
        return self.path("runtime", *parts)

    def selected(self):
        return self.path("selected.json")

    # ------------------------------------------------------------ downloads ("data" or "backbone")
    def download(self, source, name):
        return self.path(source, "download", name)

    def unpacked(self, source):
        return self.path(source, "unpacked")

    # ------------------------------------------------------------ data
    def data(self, *parts):
        return self.path("data", *parts)

    def synthetic(self):
        return self.data("synthetic")

    def images(self):
        return self.data("images")

    def index(self):
        return self.data("index.tsv")

    def rejects(self):
        return self.data("rejects.tsv")

    def duplicates(self):
        return self.data("duplicates.tsv")

    def structure_summary(self):
        return self.data("structure_summary.json")

    def manifest(self):
        return self.data("manifest.tsv")

    def labels(self):
        return self.data("labels.json")

    def split_summary(self):
        return self.data("split_summary.json")

    def tfrecord(self, split, shard, count):
        return self.data("tfrecords", f"{shard_name(split, shard, count)}.tfrecord")

    # ------------------------------------------------------------ backbones
    def untrained_checkpoint(self, name):
        """A randomly initialised network in its checkpoint format (``name``: the registry's file name)."""
        return self.path(SHARED_BACKBONE, "untrained", name)

    def backbone_pb(self, root=SHARED_BACKBONE):
        return self.path(root, "backbone.pb")

    def backbone_json(self, root=SHARED_BACKBONE):
        return self.path(root, "backbone.json")

    def backbone_ir(self, root, precision, extension="xml"):
        return self.path(root, "ir", precision, f"backbone.{extension}")

    def features_dir(self, root, variant, engine, kind):
        return self.path(root, "features", variant, engine, kind)

    def features(self, root, variant, engine, kind, split):
        """A split's gathered features."""
        return posixpath.join(self.features_dir(root, variant, engine, kind), f"{split}.npz")

    def feature_shard(self, root, variant, engine, kind, name):
        """One shard's features; ``name`` as shard_name() gives it."""
        return posixpath.join(self.features_dir(root, variant, engine, kind), f"{name}.npz")

    # ------------------------------------------------------------ an experiment's head (head-only or fine-tuned)
    def model_dir(self, experiment):
        return self.path(experiment, "model")

    def finetune_dir(self, experiment):
        return self.path(finetune_root(experiment))

    def head(self, experiment):
        return posixpath.join(self.model_dir(experiment), "head.npz")

    def history(self, experiment):
        return posixpath.join(self.model_dir(experiment), "history.csv")

    def tensorboard(self, experiment):
        return posixpath.join(self.model_dir(experiment), "tensorboard")

    def metrics(self, experiment):
        return posixpath.join(self.model_dir(experiment), "metrics.json")

    def calibration(self, experiment):
        """The deployed model's temperature and thresholds, fitted on held-out predictions."""
        return posixpath.join(self.model_dir(experiment), "calibration.json")

    def test_predictions(self, experiment):
        return posixpath.join(self.model_dir(experiment), "test_predictions.npz")

    def oof_predictions(self, experiment):
        """Out-of-fold logits over training + validation, from the head's cross-validation."""
        return posixpath.join(self.model_dir(experiment), "oof_predictions.npz")

    def finetuned(self, experiment, name):
        """A fine-tuned experiment's file: backbone.pb, backbone.json, head.npz, history.csv, metrics.json, ..."""
        return posixpath.join(self.finetune_dir(experiment), name)

    # ------------------------------------------------------------ the frozen model
    def frozen_model(self, experiment):
        return posixpath.join(self.model_dir(experiment), "frozen_model.pb")

    def model_json(self, experiment):
        return posixpath.join(self.model_dir(experiment), "model.json")

    def model_labels(self, experiment):
        return posixpath.join(self.model_dir(experiment), "labels.json")

    def freeze_check(self, experiment):
        return posixpath.join(self.model_dir(experiment), "freeze_check.json")

    # ------------------------------------------------------------ deployed IRs and their benchmarks
    def ir_dir(self, experiment, precision):
        return self.path(experiment, "ir", precision)

    def ir_xml(self, experiment, precision):
        return posixpath.join(self.ir_dir(experiment, precision), "model.xml")

    def ir_bin(self, experiment, precision):
        return posixpath.join(self.ir_dir(experiment, precision), "model.bin")

    def ir_json(self, experiment, precision):
        return posixpath.join(self.ir_dir(experiment, precision), "ir.json")

    def ir_test_predictions(self, experiment, precision):
        return posixpath.join(self.ir_dir(experiment, precision), "test_predictions.npz")

    def evaluation(self, experiment, precision):
        return posixpath.join(self.ir_dir(experiment, precision), "evaluation.json")

    def benchmarks_dir(self, experiment):
        return self.path(experiment, "benchmarks")

    def benchmark(self, experiment, device, precision):
        return posixpath.join(self.benchmarks_dir(experiment), f"{device}-{precision}.json")

    def benchmarks(self, experiment, extension="json"):
        return posixpath.join(self.benchmarks_dir(experiment), f"benchmarks.{extension}")

    def model_card(self, experiment):
        return self.path(experiment, "model_card.md")

    # ------------------------------------------------------------ hand-off: model repository, tracking
    def serving_config(self):
        """OpenVINO Model Server's config.json."""
        return self.path("serving", "config.json")

    def serving_model(self, name, version, file=""):
        """A served model's version folder (``file`` empty) or a file in it."""
        return posixpath.join(self.path("serving", "models", name, str(version)), file) if file else \
            self.path("serving", "models", name, str(version))

    def tracking_runs(self):
        return self.path("tracking", "mlflow_runs.json")

    # ------------------------------------------------------------ audits of the data (leakage, labels)
    def audit(self, name):
        return self.path("audit", name)

    # ------------------------------------------------------------ report
    def report(self, name):
        """A run-wide report table, e.g. data_summary.csv."""
        return self.path("report", name)

    def experiment_report(self, experiment, name):
        """One experiment's report figure or table, e.g. training_curves.png."""
        return self.path(experiment, "report", name)
