"""Record every experiment as an MLflow run: its settings, its metrics and the deployed files.

    python -m scripts.track --uri results/mlruns --experiment-name transfer-learning \
        --settings '{"default": {"train": {...}}}' --selected results/selected.json \
        --metrics default=results/default/model/metrics.json \
        --artifact default=results/default/ir/INT8/model.xml ... --output results/tracking/mlflow_runs.json

``--uri`` is a local folder (an SQLite database mlflow.db and the artifacts/ in it: view it
with ``mlflow ui --backend-store-uri sqlite:///FOLDER/mlflow.db``) or a tracking server's
http(s):// URL (or any MLflow tracking URI).
Each experiment is one run named after it: the settings are its parameters (dotted keys,
e.g. ``train.learning_rate``); every number in its metrics files is a metric (dotted keys,
e.g. ``splits.test.accuracy``), and a confidence interval ([low, high], under a key named
``*interval*`` or ``ci``/``ci95``) becomes ``<key>.low`` and ``<key>.high``; each
``--artifact`` is logged under the run's ``deployed/`` folder. The selected experiment is
tagged ``selected=true`` (the others ``false``). The run ids are written to ``--output``.
"""
import argparse
import json
import math
import os
import re
import time

from scripts.core import atomic
from scripts.core.errors import PipelineError, run_cli

INTERVAL_KEY = re.compile(r"(^|_)(ci|ci95|interval|confidence_interval)(_|$)", re.IGNORECASE)
MLFLOW_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def flat_settings(settings, prefix=""):
    """{"train.learning_rate": "0.001", ...} of nested settings."""
    flat = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
    return flat


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def flat_metrics(record, prefix=""):
    """Every finite number of a metrics record under its dotted key; [low, high] intervals as .low/.high."""
    flat = {}
    for key, value in record.items():
        name = MLFLOW_KEY.sub("_", f"{prefix}{key}")
        if isinstance(value, dict):
            flat.update(flat_metrics(value, f"{name}."))
        elif is_number(value):
            flat[name] = float(value)
        elif (isinstance(value, (list, tuple)) and len(value) == 2 and all(map(is_number, value))
              and INTERVAL_KEY.search(str(key))):
            flat[f"{name}.low"], flat[f"{name}.high"] = float(value[0]), float(value[1])
    return flat


def pairs(items, option):
    """[(experiment, path)] of NAME=PATH arguments."""
    found = []
    for item in items or []:
        name, separator, path = item.partition("=")
        if not separator or not name or not path:
            raise PipelineError(f"{option} {item}: give EXPERIMENT=PATH")
        found.append((name, path))
    return found


def tracking_uri(uri):
    """A URL as it is; a local folder as the SQLite database mlflow.db in it (MLflow 3 refuses its
    old folder store), with the artifacts in its artifacts/ folder."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", uri):
        return uri
    os.makedirs(uri, exist_ok=True)
    return "sqlite:///" + os.path.join(os.path.abspath(uri), "mlflow.db")


def artifact_location(uri):
    """A local folder's artifacts/ folder; None (the server's own) for a URL."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", uri):
        return None
    return "file://" + os.path.join(os.path.abspath(uri), "artifacts")


def track(uri, experiment_name, settings, metrics_files, artifacts, selected):
    """Log one run per experiment; returns {experiment: run id}."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri(uri))
    found = client.get_experiment_by_name(experiment_name)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment_name,
                                                                               artifact_location(uri))
    runs, now = {}, int(time.time() * 1000)
    for name in settings:
        run = client.create_run(experiment_id, run_name=name, tags={"pipeline.experiment": name})
        values = {}
        for path in [path for owner, path in metrics_files if owner == name]:
            values.update(flat_metrics(atomic.read_json(path), f"{os.path.basename(os.path.dirname(path))}."
                                       if len([p for o, p in metrics_files if o == name]) > 1 else ""))
        params = [Param(key[:250], value[:6000]) for key, value in flat_settings(settings[name]).items()]
        metrics = [Metric(key, value, now, 0) for key, value in values.items()]
        tags = [RunTag("selected", "true" if name == selected else "false")]
        for start in range(0, max(len(params), len(metrics), 1), 100):  # MLflow's batch limits
            client.log_batch(run.info.run_id, metrics=metrics[start:start + 100], params=params[start:start + 100],
                             tags=tags if start == 0 else [])
        for path in [path for owner, path in artifacts if owner == name]:
            client.log_artifact(run.info.run_id, path, artifact_path=artifact_folder(path))
        client.set_terminated(run.info.run_id)
        runs[name] = run.info.run_id
    return runs


def artifact_folder(path):
    """deployed/<precision or folder>/: model.xml of results/x/ir/INT8/ goes to deployed/INT8."""
    return f"deployed/{os.path.basename(os.path.dirname(os.path.abspath(path)))}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--uri", required=True, help="MLflow tracking URI: a local folder or http(s)://host:port")
    parser.add_argument("--experiment-name", required=True, help="the MLflow experiment the runs go to")
    parser.add_argument("--settings", required=True, help="JSON text: {experiment: its settings}")
    parser.add_argument("--selected", help="selected.json of the selection (its experiment is tagged)")
    parser.add_argument("--metrics", nargs="+", required=True, help="EXPERIMENT=metrics.json (repeatable)")
    parser.add_argument("--artifact", nargs="*", default=[], help="EXPERIMENT=file to log under deployed/")
    parser.add_argument("--output", required=True, help="JSON of the run ids")
    args = parser.parse_args(argv)
    try:
        settings = json.loads(args.settings)
    except ValueError as error:
        raise PipelineError(f"--settings: not JSON ({error})") from None
    selected = atomic.read_json(args.selected)["experiment"] if args.selected else None
    metrics_files, artifacts = pairs(args.metrics, "--metrics"), pairs(args.artifact, "--artifact")
    for name, path in metrics_files + artifacts:
        if name not in settings:
            raise PipelineError(f"{path}: experiment {name} has no settings in --settings")
    runs = track(args.uri, args.experiment_name, settings, metrics_files, artifacts, selected)
    atomic.write_json(args.output, {"tracking_uri": tracking_uri(args.uri), "experiment_name": args.experiment_name,
                                    "selected": selected, "runs": runs})
    print(f"logged {len(runs)} runs to {args.uri} (experiment {args.experiment_name}); selected: {selected}")


if __name__ == "__main__":
    run_cli(main)
