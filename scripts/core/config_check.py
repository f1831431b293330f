"""Config validation with one-line errors that name the key.

``snakemake.utils.validate`` fills in the schema's defaults; this module first checks
the config with the same schema and turns the first violation into one line such as
``config key split.validation: 1.5 is greater than or equal to the maximum of 1``,
then checks what a schema cannot express (fractions that add up, tensors a layout
needs, local paths that must exist).
"""
import copy
import os

import jsonschema
import yaml

from scripts.core.errors import PipelineError


def load_schema(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _key_path(error):
    parts = [str(part) for part in error.absolute_path]
    if error.validator == "additionalProperties":
        # The message names the unknown key; point at its parent.
        return ".".join(parts) or "(top level)"
    return ".".join(parts) or "(top level)"


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


def experiment_settings(config, name):
    """The `train` and `export` settings of one named experiment."""
    override = config["experiments"][name] or {}
    return {section: deep_merge(config[section], override.get(section, {}))
            for section in ("train", "export")}


def _is_local(source):
    return "://" not in source and source not in ("synthetic", "untrained")


def semantic_errors(config, schema):
    lines = []
    split = config["split"]
    if split["validation"] + split["test"] >= 1:
        lines.append("config key split: validation + test must be below 1, leaving images to train on "
                     f"(got {split['validation']} + {split['test']})")
    dataset = config["dataset"]
    if dataset["layout"] == "filename" and not dataset.get("filename_regex"):
        lines.append("config key dataset.filename_regex: required when dataset.layout is 'filename'")
    if dataset["source"] == "untrained":
        lines.append("config key dataset.source: 'untrained' is a backbone source, not a data set")
    backbone = config["backbone"]
    if backbone["kind"] == "frozen_graph":
        for key in ("input_tensor", "bottleneck_tensor"):
            if not backbone.get(key):
                lines.append(f"config key backbone.{key}: required when backbone.kind is 'frozen_graph'")
        if backbone["source"] == "untrained":
            lines.append("config key backbone.source: 'untrained' exists only for kind inception_v3")
    low, high = backbone["input_range"]
    if not low < high:
        lines.append(f"config key backbone.input_range: the low end must be below the high end (got {low}, {high})")
    for key, source in (("dataset.source", dataset["source"]), ("backbone.source", backbone["source"])):
        if _is_local(source) and not os.path.exists(source):
            lines.append(f"config key {key}: {source} does not exist")
    definitions = schema["definitions"]
    for name in config["experiments"]:
        settings = experiment_settings(config, name)
        for section in ("train", "export"):
            lines += schema_errors(settings[section], definitions[section],
                                   prefix=f"experiments.{name}.{section}")
    return lines


def check_config(config, schema_path):
    """Raise PipelineError naming the first bad key; return the schema."""
    schema = load_schema(schema_path)
    lines = schema_errors(config, schema)
    if not lines:
        from snakemake.utils import validate  # fills in the defaults
        validate(config, schema_path, set_default=True)
        lines = semantic_errors(config, schema)
    if lines:
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise PipelineError(lines[0] + more)
    return schema
