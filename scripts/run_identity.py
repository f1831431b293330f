"""One results folder holds the results of one data set and one backbone.

Every stage writes to fixed names under ``results/``; a run with another data set or
backbone in the same folder would replace the earlier results piece by piece, and a
report or summary could then mix the two. So the first run records what its results
are made from in ``results/run_identity.json`` (the ``IDENTITY`` keys of the config),
and any later run, dry-run or ``--report`` in that folder whose config differs in one of
them is refused with one line, before any job runs. Training, export and benchmark
settings are not part of the identity: changing them reruns the affected jobs (see the
README's "Incremental rebuilds"), and named experiments keep their results apart.
"""
import json
import os
import sys

from scripts.core import atomic
from scripts.core.errors import PipelineError

IDENTITY_FILE = "run_identity.json"
# What the results are made from: the images (and how they become classes) and the backbone.
IDENTITY = {
    "dataset": ("source", "layout", "filename_regex", "class_map"),
    "backbone": ("kind", "source", "graph_member", "input_tensor", "bottleneck_tensor", "input_size",
                 "input_range"),
}


def identity(config):
    """The config keys that make the results of a folder what they are, as a flat dict."""
    found = {f"{section}.{key}": config[section].get(key) for section, keys in IDENTITY.items() for key in keys}
    if config["dataset"]["source"] == "synthetic":  # the drawn images depend on these
        found.update({f"synthetic.{key}": value for key, value in config["synthetic"].items()})
    if config["backbone"]["source"] == "untrained":
        found["backbone.untrained_seed"] = config["backbone"].get("untrained_seed")
    return json.loads(json.dumps(found))  # as recorded: tuples become lists


SHOWN_DIFFERENCES = 2


def _short(value):
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def check(config, results="results"):
    """Raise PipelineError (one line) when ``results`` holds the results of another identity."""
    path = os.path.join(results, IDENTITY_FILE)
    if not os.path.isfile(path):
        return
    try:
        recorded = atomic.read_json(path)
    except (OSError, ValueError) as error:
        raise PipelineError(f"{path}: unreadable ({error}); delete it if {results}/ is yours") from None
    current = identity(config)
    keys = list(current) + [key for key in recorded if key not in current]  # IDENTITY's order first
    changed = [key for key in keys if recorded.get(key) != current.get(key)]
    if changed:
        differences = "; ".join(f"{key}: {_short(recorded.get(key))} there, {_short(current.get(key))} now"
                                for key in changed[:SHOWN_DIFFERENCES])
        if len(changed) > SHOWN_DIFFERENCES:
            differences += f"; {len(changed) - SHOWN_DIFFERENCES} more in {path}"
        raise PipelineError(
            f"{results}/ holds the results of another data set or backbone ({differences}): run this config "
            f"in another folder (snakemake --directory OTHER_FOLDER ...), or delete {results}/ to start over")


def record(config, results="results"):
    """Write the identity of this run's results unless the folder already has one."""
    path = os.path.join(results, IDENTITY_FILE)
    if not os.path.exists(path):
        try:
            atomic.write_json(path, identity(config))
        except OSError as error:  # e.g. a full disk: the jobs will say so; this is no reason to stop
            print(f"warning: cannot record {path} ({error.strerror or error})", file=sys.stderr)
