"""MLflow tracking (scripts/track.py) into a local folder and into a real `mlflow server` on 127.0.0.1."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import tiny_ir
from conftest import REPO

from scripts.core import atomic

SETTINGS = {"small": {"train": {"learning_rate": 0.001, "hidden_units": 0}, "preprocess": {"central_fraction": 1.0}},
            "hidden": {"train": {"learning_rate": 0.01, "hidden_units": 64}, "preprocess": {"central_fraction": 0.875}}}


def results(root):
    """Two experiments' metrics.json, one deployed IR with its evaluation.json (with an interval)."""
    files = {"metrics": [], "artifacts": []}
    for index, name in enumerate(SETTINGS):
        path = root / name / "model" / "metrics.json"
        os.makedirs(path.parent)
        atomic.write_json(path, {"experiment": name, "splits": {"validation": {"accuracy": 0.8 + index / 10,
                                                                               "loss": 0.5},
                                                                "test": {"accuracy": 0.75, "images": 40}},
                                 "note": "untrained backbone", "labels": ["a", "b"]})
        files["metrics"].append(f"{name}={path}")
    xml = tiny_ir.build(str(root / "hidden" / "ir" / "INT8"), size=32)
    evaluation = root / "hidden" / "ir" / "INT8" / "evaluation.json"
    atomic.write_json(evaluation, {"metrics": {"accuracy": 0.7, "accuracy_ci95": [0.6, 0.8]}, "precision": "INT8"})
    files["metrics"].append(f"hidden={evaluation}")
    files["artifacts"] = [f"hidden={xml}", f"hidden={evaluation}"]
    atomic.write_json(root / "selected.json", {"experiment": "hidden"})
    return files


def run_track(root, uri):
    files = results(root)
    output = root / "mlflow_runs.json"
    subprocess.run([sys.executable, "-m", "scripts.track", "--uri", uri, "--experiment-name", "tl-test",
                    "--settings", json.dumps(SETTINGS), "--selected", str(root / "selected.json"),
                    "--metrics", *files["metrics"], "--artifact", *files["artifacts"], "--output", str(output)],
                   cwd=REPO, check=True, capture_output=True, text=True, timeout=300)
    return atomic.read_json(output)


def check_runs(uri, record):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tl-test")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(SETTINGS) and {name: run.info.run_id for name, run in runs.items()} == record["runs"]
    hidden, small = runs["hidden"].data, runs["small"].data
    assert hidden.params["train.hidden_units"] == "64" and small.params["preprocess.central_fraction"] == "1.0"
    assert hidden.tags["selected"] == "true" and small.tags["selected"] == "false"
    assert small.metrics["splits.validation.accuracy"] == pytest.approx(0.8)
    assert hidden.metrics["model.splits.validation.accuracy"] == pytest.approx(0.9)
    assert hidden.metrics["INT8.metrics.accuracy_ci95.low"] == 0.6
    assert hidden.metrics["INT8.metrics.accuracy_ci95.high"] == 0.8
    logged = [item.path for item in client.list_artifacts(runs["hidden"].info.run_id, "deployed/INT8")]
    assert sorted(logged) == ["deployed/INT8/evaluation.json", "deployed/INT8/model.xml"]
    assert client.list_artifacts(runs["small"].info.run_id) == []


def test_runs_in_a_local_folder(tmp_path):
    record = run_track(tmp_path, str(tmp_path / "mlruns"))
    assert record["tracking_uri"] == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    check_runs(record["tracking_uri"], record)
    assert os.path.isfile(tmp_path / "mlruns" / "artifacts" / record["runs"]["hidden"] / "artifacts" / "deployed" / "INT8"
                          / "model.xml")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # an MLflow server starts in ~30 s on a loaded 2-core machine
def test_runs_on_a_real_mlflow_server_on_loopback(tmp_path):
    port = free_port()
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    server = subprocess.Popen([mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
                               "--artifacts-destination", str(tmp_path / "artifacts")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        os.makedirs(tmp_path / "results")
        record = run_track(tmp_path / "results", uri)
        assert record["tracking_uri"] == uri
        check_runs(uri, record)
        assert os.listdir(tmp_path / "artifacts")  # the artifacts went through the server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
