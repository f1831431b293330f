"""Config validation: every bad value fails before any job runs, with one line naming the key."""
import copy
import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from scripts.core.config_check import check_config, deep_merge, expand_experiments, experiment_settings
from scripts.core.errors import PipelineError

SCHEMA = os.path.join(REPO, "workflow", "schemas", "config.schema.yaml")


@pytest.fixture
def config():
    with open(os.path.join(REPO, "config.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def error_for(config, **overrides):
    bad = copy.deepcopy(config)
    for dotted, value in overrides.items():
        *parents, key = dotted.split("__")
        target = bad
        for parent in parents:
            target = target[parent]
        target[key] = value
    with pytest.raises(PipelineError) as caught:
        check_config(bad, SCHEMA)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_default_config_is_valid_and_its_defaults_are_written_once(config):
    check_config(config, SCHEMA)
    with open(SCHEMA, encoding="utf-8") as handle:
        assert "default:" not in handle.read()  # config.yaml alone holds the defaults


@pytest.mark.parametrize("overrides, key, words", [
    ({"split__validation": 1.5}, "split.validation", "maximum"),
    ({"dataset__layout": "tree"}, "dataset.layout", "folders, filename"),
    ({"train__mlp__optimizer": "rmsprop"}, "train.mlp.optimizer", "sgd, momentum, adam"),
    ({"train__mlp__learning_rate": -1}, "train.mlp.learning_rate", "minimum"),
    ({"train__head": "svm"}, "train.head", "linear, mlp"),
    ({"train__linear__learning_rate": 0.1}, "train.linear", "learning_rate"),  # a key the linear head never reads
    ({"train__mlp__max_iterations": 10}, "train.mlp", "max_iterations"),
    ({"train__linear__l2": "big"}, "train.linear.l2", "not valid"),
    ({"selection__folds": 1}, "selection.folds", "minimum"),
    ({"selection__metric": "validation_accuracy"}, "selection.metric", "cv_accuracy, cv_macro_f1"),
    ({"tfrecords__shards": {"train": 0, "validation": 1, "test": 1}}, "tfrecords.shards.train", "minimum"),
    ({"export__precisions": ["FP64"]}, "export.precisions.0", "FP32"),
    ({"preprocess__central_fraction": 0}, "preprocess.central_fraction", "minimum"),
    ({"augment__test_time": "all"}, "augment.test_time", "none, flip, dihedral"),
    ({"sweep": {"train.head": []}}, "sweep.train.head", "non-empty"),
    ({"sweep": {"backbone.kind": [1]}}, "sweep", "backbone.kind"),
    ({"dataset__sha256": "abc"}, "dataset.sha256", "match"),
    ({"train__mlp__learning_rat": 0.1}, "train.mlp", "learning_rat"),
    ({"colour": "red"}, "(top level)", "colour"),
])
def test_schema_violations_name_the_key(config, overrides, key, words):
    message = error_for(config, **overrides)
    assert message.startswith(f"config key {key}:"), message
    assert words in message


def test_a_missing_source_is_named(config):
    bad = copy.deepcopy(config)
    del bad["dataset"]["source"]
    with pytest.raises(PipelineError, match=r"config key dataset: 'source' is required"):
        check_config(bad, SCHEMA)


def test_a_local_path_that_does_not_exist_is_named(config):
    message = error_for(config, dataset__source="no/such/folder")
    assert message == "config key dataset.source: no/such/folder does not exist"


def test_split_fractions_must_leave_training_images(config):
    message = error_for(config, split__validation=0.5, split__test=0.5)
    assert message.startswith("config key split:")


def test_filename_layout_needs_a_regex(config):
    assert "dataset.filename_regex" in error_for(config, dataset__layout="filename")


def test_frozen_graph_needs_its_tensors(config):
    message = error_for(config, backbone__kind="frozen_graph")
    assert "backbone.input_tensor" in message


def test_experiments_override_train_keys_and_are_checked(config):
    config["experiments"] = {"fast": {"train": {"head": "mlp", "mlp": {"learning_rate": 0.01}}}, "default": {}}
    config["sweep"] = None
    check_config(config, SCHEMA)
    assert experiment_settings(config, "fast")["train"]["mlp"]["learning_rate"] == 0.01
    assert experiment_settings(config, "fast")["train"]["mlp"]["epochs"] == config["train"]["mlp"]["epochs"]
    assert experiment_settings(config, "default")["train"] == config["train"]
    config["experiments"]["fast"]["train"]["mlp"]["optimiser"] = "adam"
    with pytest.raises(PipelineError, match=r"^config key experiments.fast.train.mlp: unknown key"):
        check_config(config, SCHEMA)


def test_reserved_experiment_names_are_refused(config):
    config["experiments"] = {"data": {}}
    with pytest.raises(PipelineError, match=r"config key experiments"):
        check_config(config, SCHEMA)


def test_deep_merge_does_not_change_its_inputs():
    base = {"a": {"b": 1, "c": 2}}
    merged = deep_merge(base, {"a": {"b": 5}})
    assert merged == {"a": {"b": 5, "c": 2}} and base == {"a": {"b": 1, "c": 2}}


def test_snakemake_stops_before_any_job_with_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("split: {validation: 1.5}\n")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", os.path.join(REPO, "Snakefile"), "-n",
         "--directory", str(tmp_path), "--configfile", str(tmp_path / "bad.yaml")],
        capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    assert "error: config key split.validation: 1.5 is greater than" in result.stderr
    assert not (tmp_path / "results").exists()


def test_the_sweep_multiplies_every_experiment_and_names_the_points(config):
    config["experiments"] = {"default": {}}
    assert list(expand_experiments(config)) == ["crop1.0-linear", "crop1.0-mlp", "crop0.875-linear", "crop0.875-mlp"]
    config["sweep"] = {"preprocess.central_fraction": [1.0, 0.875], "train.mlp.hidden_units": [64, 256]}
    names = list(expand_experiments(config))
    assert names == ["crop1.0-hidden64", "crop1.0-hidden256", "crop0.875-hidden64", "crop0.875-hidden256"]
    settings = experiment_settings(config, "crop0.875-hidden256")  # a nested key: the others keep their defaults
    assert settings["preprocess"]["central_fraction"] == 0.875 and settings["train"]["mlp"]["hidden_units"] == 256
    assert settings["train"]["mlp"]["epochs"] == config["train"]["mlp"]["epochs"]
    config["experiments"] = {"a": {"train": {"mlp": {"learning_rate": 0.01}}}, "b": {}}
    names = list(expand_experiments(config))
    assert names[0] == "a-crop1.0-hidden64" and len(names) == 8
    assert experiment_settings(config, "a-crop0.875-hidden64")["train"]["mlp"]["learning_rate"] == 0.01


def test_swept_values_are_checked_like_any_setting(config):
    config["sweep"] = {"train.mlp.hidden_units": [8, -1]}
    with pytest.raises(PipelineError, match=r"^config key experiments.hidden-1.train.mlp.hidden_units: -1 is less"):
        check_config(config, SCHEMA)


def test_fine_tuning_needs_its_trainable_scopes(config):
    config["sweep"] = {"finetune.enabled": [False, True]}
    with pytest.raises(PipelineError, match=r"experiments.finetuneyes.finetune.trainable: required"):
        check_config(config, SCHEMA)


def test_the_tensorflow_backend_computes_fp32_only(config):
    message = error_for(config, bottlenecks__backend="tensorflow", bottlenecks__precision="INT8")
    assert message.startswith("config key bottlenecks.precision: the tensorflow backend computes FP32 only")
