"""Config validation with one-line errors that name the key.

The defaults are config.yaml's (always loaded first); this module checks the merged
config against workflow/schemas/config.schema.yaml and turns the first violation into
one line such as
``config key split.validation: 1.5 is greater than or equal to the maximum of 1``,
then checks what a schema cannot express (fractions that add up, tensors a layout
needs, local paths that must exist).
"""
import copy
import os
import re

import jsonschema
import yaml

from scripts.core import backbones
from scripts.core.errors import PipelineError


def load_schema(path):
    """The schema, with the choices the backbone registry owns (kinds, presets, precisions) set as enums."""
    with open(path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    for dotted, choices in backbones.schema_choices().items():
        node = schema
        for part in dotted.split("."):
            node = node[part]
        node["enum"] = list(choices)
    return schema


def _key_path(error):
    """The dotted key of a violation; for an unknown key, its parent (the message names the key)."""
    return ".".join(str(part) for part in error.absolute_path) or "(top level)"


def _describe(error):
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown key")
    if error.validator == "enum":
        allowed = ", ".join(str(value) for value in error.validator_value)
        return f"{error.instance!r} is not one of: {allowed}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    return error.message


def schema_errors(instance, schema, prefix=""):
    """One line per violation, most specific first."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (-len(e.absolute_path), str(e.absolute_path)))
    lines = []
    for error in errors:
        key = _key_path(error)
        key = f"{prefix}.{key}" if prefix and key != "(top level)" else (prefix or key)
        lines.append(f"config key {key}: {_describe(error)}")
    return lines


def deep_merge(base, override):
    """A copy of ``base`` with ``override``'s keys replaced recursively."""
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# The sections an experiment (and the sweep) may override.
EXPERIMENT_SECTIONS = ("preprocess", "augment", "train", "finetune", "export")
# Short names of swept keys in experiment names, e.g. "crop0.875-hidden512".
# The head kind stands alone: "crop1-linear", "crop0.875-mlp".
SHORT_NAMES = {"central_fraction": "crop", "hidden_units": "hidden", "learning_rate": "lr",
               "test_time": "tta", "copies": "aug", "enabled": "finetune", "class_weighting": "weights",
               "head": "", "feature_blocks": "blocks"}


def sweep_points(sweep):
    """Every combination of the sweep's values: [{"section.key": value, ...}, ...] ([{}] for no sweep)."""
    points = [{}]
    for key, values in (sweep or {}).items():
        points = [{**point, key: value} for point in points for value in values]
    return points


def point_name(point):
    parts = []
    for key, value in point.items():
        leaf = key.rsplit(".", 1)[1]
        text = {True: "yes", False: "no", None: "none"}.get(value, value) if isinstance(value, (bool, type(None))) \
            else value
        if isinstance(value, list):  # e.g. feature blocks: "mixed_7.mixed_8", safe in a path
            text = ".".join(re.sub(r"[^A-Za-z0-9_.]", "_", str(item)) for item in value) or "all"
        parts.append(f"{SHORT_NAMES.get(leaf, leaf)}{text}")
    return "-".join(parts)


def apply_point(override, point):
    """An experiment's override with one sweep point's values set ("train.mlp.dropout" sets a nested key)."""
    merged = copy.deepcopy(override or {})
    for key, value in point.items():
        *parents, leaf = key.split(".")
        node = merged
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return merged


def expand_experiments(config):
    """{experiment name: override} for every named experiment times every sweep point.

    Without a sweep the names are the configured ones; with one, "<name>-<point>", or
    just "<point>" for the lone default experiment.
    """
    points = sweep_points(config.get("sweep"))
    expanded = {}
    for name, override in config["experiments"].items():
        for point in points:
            if not point:
                full_name = name
            elif name == "default" and len(config["experiments"]) == 1:
                full_name = point_name(point)
            else:
                full_name = f"{name}-{point_name(point)}"
            expanded[full_name] = apply_point(override, point)
    return expanded


def experiment_settings(config, name, expanded=None):
    """Every overridable section of one experiment, its override merged over the base config."""
    override = (expanded or expand_experiments(config))[name] or {}
    return {section: deep_merge(config[section], override.get(section, {})) for section in EXPERIMENT_SECTIONS}


def _is_local(source):
    return "://" not in source and source not in ("synthetic", "untrained")


def semantic_errors(config, schema):
    lines = []
    split = config["split"]
    if split["validation"] + split["test"] >= 1:
        lines.append("config key split: validation + test must be below 1, leaving images to train on "
                     f"(got {split['validation']} + {split['test']})")
    if split.get("predefined") and split.get("stratify"):
        lines.append("config key split.stratify: the data's own folders decide with split.predefined; "
                     "set one of them to false")
    dataset = config["dataset"]
    if dataset["layout"] == "filename" and not dataset.get("filename_regex"):
        lines.append("config key dataset.filename_regex: required when dataset.layout is 'filename'")
    if dataset["source"] == "untrained":
        lines.append("config key dataset.source: 'untrained' is a backbone source, not a data set")
    try:
        backbone = backbones.resolve(config["backbone"])
    except PipelineError as error:
        return [str(error)]
    low, high = backbone["input_range"]
    if not low < high:
        lines.append(f"config key backbone.input_range: the low end must be below the high end (got {low}, {high})")
    for key, source in (("dataset.source", dataset["source"]), ("backbone.source", backbone["source"])):
        if _is_local(source) and not os.path.exists(source):
            lines.append(f"config key {key}: {source} does not exist")
    lines += experiment_errors(config, schema)
    return lines


def experiment_errors(config, schema):
    """Each expanded experiment's merged sections checked against the schema, and their combinations."""
    lines = []
    definitions = schema["definitions"]
    expanded = expand_experiments(config)
    for name in expanded:
        settings = experiment_settings(config, name, expanded)
        for section in EXPERIMENT_SECTIONS:
            section_schema = {**definitions[section], "definitions": definitions}  # for its $refs
            lines += schema_errors(settings[section], section_schema, prefix=f"experiments.{name}.{section}")
        finetune = settings["finetune"]
        if finetune["enabled"] and not finetune["trainable"]:
            lines.append(f"config key experiments.{name}.finetune.trainable: required when finetune.enabled is true "
                         "(a regex over the backbone's weight names)")
    if config["bottlenecks"]["backend"] == "tensorflow" and config["bottlenecks"]["precision"] != "FP32":
        lines.append("config key bottlenecks.precision: the tensorflow backend computes FP32 only "
                     "(use backend openvino for FP16 or INT8)")
    return lines


def check_config(config, schema_path):
    """Raise PipelineError naming the first bad key; return the schema."""
    schema = load_schema(schema_path)
    lines = schema_errors(config, schema)
    if not lines:
        lines = semantic_errors(config, schema)
    if lines:
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise PipelineError(lines[0] + more)
    return schema
