"""The user's console: the workflow profile, the error lines and the summary at the end,
quiet TensorFlow processes, `predict` from anywhere, and one results folder per data set
and backbone. Real Snakemake runs use only the data stages (seconds each)."""
import json
import os
import re
import subprocess
import sys

import fabricated
import numpy as np
import pytest
import yaml
from conftest import OFFLINE, REPO, selected, snakemake, write_yaml
from PIL import Image

from scripts import run_identity, summary
from scripts.core import atomic, backbones, quiet

PROFILES = os.path.join(REPO, "profiles")
MANIFEST = "results/data/manifest.tsv"


def clean_environment():
    """os.environ without the quieting variables and without this checkout on PYTHONPATH."""
    env = {name: value for name, value in os.environ.items() if name not in quiet.ENVIRONMENT}
    env.pop("PYTHONPATH", None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    return env


def noise(stderr):
    """The lines of TensorFlow start-up noise and deprecation warnings in a process's stderr."""
    return [line for line in stderr.splitlines()
            if quiet.NOISE.match(line) or "deprecat" in line.lower() or line.startswith("WARNING:tensorflow")]


# ------------------------------------------------------------------ a tiny model, as .pb and as IR
SIZE = 8
LABELS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A frozen graph input -> mean colour -> x10 -> softmax "final_result", its IR, and images."""
    root = tmp_path_factory.mktemp("predict")
    script = f"""
import sys
sys.path.insert(0, {REPO!r})
import numpy as np
import openvino as ov
from scripts.core import atomic, images, tfcompat
tf = tfcompat.tf_v1()
graph = tf.Graph()
with graph.as_default():
    pixels = tf.placeholder(tf.float32, [None, {SIZE}, {SIZE}, 3], name="input")
    logits = tf.matmul(tf.reduce_mean(pixels, axis=[1, 2]), tf.constant(np.eye(3, dtype=np.float32) * 10))
    tf.nn.softmax(logits, name="final_result")
atomic.write_bytes("model/frozen_model.pb", graph.as_graph_def().SerializeToString())
description = {{"input_node": "input", "output_node": "final_result", "labels": {LABELS!r},
               "preprocessing": images.preprocessing_contract({SIZE}, (-1.0, 1.0), 0.875),
               "untrained_backbone": False, "note": ""}}
atomic.write_json("model/model.json", description)
ov.save_model(ov.convert_model("model/frozen_model.pb", input=[1, {SIZE}, {SIZE}, 3]), "ir/FP32/model.xml")
atomic.write_json("ir/FP32/ir.json", {{**description, "precision": "FP32"}})
"""
    (root / "model").mkdir()
    (root / "ir" / "FP32").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    folder = root / "images" / "more"
    folder.mkdir(parents=True)
    Image.new("RGB", (20, 30), (230, 20, 20)).save(root / "images" / "red.png")
    Image.new("RGB", (31, 17), (10, 240, 10)).save(root / "images" / "green.jpg", quality=95)
    Image.new("RGB", (16, 16), (5, 5, 250)).save(folder / "blue.bmp")
    (root / "images" / "broken.jpg").write_text("not an image")
    (root / "images" / "notes.txt").write_text("not an image either, and not looked at")
    return root


def predict(*args, cwd, env=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False, cwd=cwd,
                          env=env or clean_environment(), timeout=300)


def expected_rows(root):
    """Each image's expected label (None: unreadable), in the order predict finds them: a
    folder's own files, then its subfolders'."""
    return {str(root / "images" / "broken.jpg"): None, str(root / "images" / "green.jpg"): "green",
            str(root / "images" / "red.png"): "red", str(root / "images" / "more" / "blue.bmp"): "blue"}


def test_predict_runs_a_frozen_graph_as_a_file_from_any_directory(models, tmp_path):
    result = predict(os.path.join(REPO, "scripts", "predict.py"), "--model", str(models / "model" / "frozen_model.pb"),
                     "--top-k", "2", "--csv", "out.csv", "--json", "out.json", str(models / "images"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = dict(line.split("\t", 1) for line in result.stdout.splitlines())
    assert list(printed) == list(expected_rows(models))  # folders searched recursively, in order
    for path, label in expected_rows(models).items():
        if label:
            top, probability = printed[path].split()[:2]
            assert top == label and float(probability) > 0.9, printed[path]
        else:
            assert printed[path].startswith("error: cannot read the image ("), printed[path]
    rows = atomic.read_table(tmp_path / "out.csv")
    assert len(rows) == 3 * 2 + 1 and [row["error"] != "" for row in rows].count(True) == 1
    assert {row["rank"] for row in rows if not row["error"]} == {"1", "2"}
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["model_kind"] == "frozen_graph" and report["images"] == 4 and report["unreadable"] == 1
    assert [entry["label"] for entry in report["predictions"]] == list(expected_rows(models).values())
    assert "3 of 4 images classified; 1 unreadable" in result.stderr
    assert noise(result.stderr) == []  # TensorFlow was imported and run: quiet all the same


def test_predict_runs_an_openvino_ir_as_a_module_and_agrees_with_the_graph(models, tmp_path):
    env = dict(clean_environment(), PYTHONPATH=REPO)
    for model, name in ((models / "ir" / "FP32" / "model.xml", "ir"), (models / "model" / "frozen_model.pb", "pb")):
        result = predict("-m", "scripts.predict", "--model", str(model), "--device", "CPU", "--json",
                         f"{name}.json", str(models / "images"), cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
    ir, pb = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("ir", "pb"))
    assert ir["model_kind"] == "openvino_ir" and ir["device"] == "CPU" and ir["precision"] == "FP32"
    assert [entry["label"] for entry in ir["predictions"]] == [entry["label"] for entry in pb["predictions"]]
    for one, two in zip(ir["predictions"], pb["predictions"]):
        assert [top["label"] for top in one["top"]] == [top["label"] for top in two["top"]]
        np.testing.assert_allclose([top["probability"] for top in one["top"]],
                                   [top["probability"] for top in two["top"]], atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--model", "{root}/ir/FP32/model.xml", "--device", "NPU"], "error: --device NPU: not present on this machine"),
    (["--model", "{root}/model/frozen_model.pb", "--device", "GPU"], "error: --device GPU: a frozen .pb runs on"),
    (["--model", "{root}/model/model.json"], "error: --model {root}/model/model.json: give a frozen TensorFlow"),
    (["--model", "{root}/model/missing.pb"], "error: --model {root}/model/missing.pb: no such file"),
])
def test_predict_refuses_with_one_line(models, tmp_path, args, message):
    result = predict(os.path.join(REPO, "scripts", "predict.py"), *[arg.format(root=models) for arg in args],
                     str(models / "images"), cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(message.format(root=models)), lines


def test_predict_fails_when_no_image_can_be_read(models, tmp_path):
    result = predict(os.path.join(REPO, "scripts", "predict.py"), "--model", str(models / "model" / "frozen_model.pb"),
                     str(models / "images" / "broken.jpg"), cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip().endswith("error: none of the 1 images could be read")
    assert "broken.jpg\terror: cannot read the image" in result.stdout


# ------------------------------------------------------------------ quiet TensorFlow
TENSORFLOW_RUN = ("import tensorflow.compat.v1 as tf; tf.disable_eager_execution(); "
                  "tf.Session().run(tf.constant(1.0))")


def test_without_quieting_tensorflow_is_noisy():
    """The control: a plain TensorFlow process prints the start-up noise the next test must not see."""
    result = subprocess.run([sys.executable, "-c", TENSORFLOW_RUN], capture_output=True, text=True, check=False,
                            env=clean_environment(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert noise(result.stderr), "TensorFlow printed no start-up noise here: the quiet tests prove nothing"


def test_a_tensorflow_cli_in_the_rules_environment_prints_no_noise(models, tmp_path):
    """A CLI that imports and runs TensorFlow, started as the rules start theirs (shell prefix)."""
    command = (f"{quiet.shell_exports()} python -m scripts.predict --model "
               f"{models / 'model' / 'frozen_model.pb'} {models / 'images' / 'red.png'}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False, timeout=300, cwd=tmp_path,
                            env=dict(clean_environment(), PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("red 1.0000  green 0.0000  blue 0.0000")
    assert noise(result.stderr) == [] and result.stderr.strip() == "1 of 1 images classified"


SLIM_LAYER = f"""
import sys, warnings
sys.path.insert(0, {REPO!r})
from scripts.core import tfcompat
tf, slim = tfcompat.tf_v1(), tfcompat.tf_slim()
if sys.argv[1:] == ["control"]:
    warnings.resetwarnings()
with tf.Graph().as_default():
    slim.conv2d(tf.placeholder(tf.float32, [None, 8, 8, 3]), 4, [3, 3])
"""


@pytest.mark.parametrize("control", [False, True])
def test_building_tf_slim_layers_prints_no_deprecation_warning(control):
    """TF-Slim's layers call the deprecated `layer.apply`; without the filter (control) it warns."""
    result = subprocess.run([sys.executable, "-c", SLIM_LAYER, *(["control"] * control)], capture_output=True,
                            text=True, check=False, env=clean_environment(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert bool(noise(result.stderr)) is control, result.stderr


def test_importing_tensorflow_quietly_keeps_other_output():
    script = (f"import sys; sys.path.insert(0, {REPO!r}); from scripts.core import quiet; "
              "print('before', file=sys.stderr); quiet.import_tensorflow(); print('after', file=sys.stderr); "
              "import tensorflow as tf; print(tf.__version__)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, env=clean_environment(),
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().startswith("2.")
    assert result.stderr.split() == ["before", "after"]


# ------------------------------------------------------------------ the summary at the end
def test_summary_of_a_whole_run(tmp_path):
    results = tmp_path / "results"
    fabricated.write_run(str(results), experiments=("default", "lr_big"))
    text = summary.summary_text(["default", "lr_big"], str(results), report_command="snakemake --report report.html")
    lines = text.splitlines()
    assert lines[0] == "Data: 120 images in 3 classes (train 81, validation 9, test 30); 2 rejected, 1 duplicates dropped"
    assert re.search(r"^  \* default +head +0\.9000 ± 0\.0\d+ +0\.8000$", text, re.MULTILINE)  # CV mean ± std
    assert re.search(r"^    lr_big +head +0\.8\d+ ± 0\.0\d+ +0\.7\d+$", text, re.MULTILINE)
    assert "* selected by cross-validation (cv_accuracy" in text and "Deployment of default" in text
    assert "Deployment of lr_big" not in text  # deployed: the selected experiment only
    for precision, accuracy, latency, throughput in (("FP32", "0.8000", "30.0", "33.0"), ("INT8", "0.7800", "10.0", "99.0")):
        xml = f"{results}/default/ir/{precision}/model.xml"
        assert re.search(rf"^  {precision} +CPU +{accuracy} +\S+ +{latency} +{throughput} +{re.escape(xml)}$", text, re.MULTILINE)
    assert f"frozen model (default): {results}/default/model/frozen_model.pb" in text
    assert f"predict.py --model {results}/default/ir/FP32/model.xml IMAGES_OR_FOLDERS" in text
    assert "report: snakemake --report report.html" in text and "untrained" not in text


def test_summary_says_untrained_backbone(tmp_path):
    fabricated.write_run(str(tmp_path / "results"), untrained=True)
    text = summary.summary_text(["default"], str(tmp_path / "results"))
    assert text.splitlines()[0].startswith("Note: untrained backbone:")


def test_summary_of_a_partial_run_shows_what_exists(tmp_path):
    _, labels, hashes, names = fabricated.write_test_split(str(tmp_path / "results"))
    fabricated.write_model(str(tmp_path / "results"), "default", labels, hashes, names)
    text = summary.summary_text(["default", "absent"], str(tmp_path / "results"), report_command="R")
    assert "Accuracy of the retrained model" in text and "default" in text and "absent" not in text
    assert "Deployment" not in text and "selected" not in text and "Data:" not in text


def test_summary_leaves_out_results_the_run_did_not_make_or_check(tmp_path):
    results = tmp_path / "results"
    fabricated.write_run(str(results))
    metrics = os.path.join(str(results), "default", "model", "metrics.json")
    text = summary.summary_text(["default"], str(results), current={metrics}, report_command="R")
    assert "0.9000" in text and "Deployment" not in text and "frozen model" not in text and "Data:" not in text
    assert summary.summary_text(["default"], str(results), current=set()) == ""
    assert summary.summary_text(["default"], str(tmp_path / "nothing")) == ""


def test_summary_marks_absent_devices(tmp_path):
    results = tmp_path / "results"
    fabricated.write_run(str(results), deployed=())
    fabricated.write_deployment(str(results), "default", precisions=("FP16",), absent=("NPU",))
    text = summary.summary_text(["default"], str(results))
    assert re.search(r"^  FP16 +CPU +0\.8000 .* 30\.0 +33\.0 ", text, re.MULTILINE)
    assert re.search(r"^  FP16 +NPU +0\.8000 +\S+ +absent +absent ", text, re.MULTILINE)


def test_report_command_and_paths_for_the_user(tmp_path, monkeypatch):
    assert summary.config_arguments(["--cores", "2", "--config", "a=1", "b=x y", "-n", "-C", "c=2"]) == \
        ["a=1", "b=x y", "c=2"]
    assert summary.report_command(["configs/offline.yaml", "my file.yaml"], ["a=1"], "/data/run", 2) == \
        ("snakemake --cores 2 --report report.html --report-after-run --directory /data/run "
         "--configfile configs/offline.yaml 'my file.yaml' --config a=1")
    monkeypatch.chdir(tmp_path)
    assert summary.display_paths(str(tmp_path))("results/x") == "results/x"
    assert summary.display_paths(str(tmp_path))(str(tmp_path / "results")) == "results"
    assert summary.display_paths("/")("results/x") == os.path.join(os.path.realpath(tmp_path), "results", "x")


# ------------------------------------------------------------------ the error lines
SNAKEMAKE_LOG = """\
[Fri Nov 27 05:01:20 2026]
localrule structure:
    log: results/logs/structure.log
RuleException:
CalledProcessError in file "Snakefile", line 7:
Command 'set -euo pipefail;  python -m scripts.data.structure > results/logs/structure.log 2>&1' returned non-zero exit status 1.
[Fri Nov 27 05:01:20 2026]
Error in rule structure:
    message: None
    jobid: 1
    output: results/data/index.tsv
    log: results/logs/structure.log (check log file(s) for error details)
    shell:
        python -m scripts.data.structure --raw x > results/logs/structure.log 2>&1
        (command exited with non-zero exit code)
Error in rule bottleneck_shard:
    message: SLURM-job '17' failed, SLURM status is: 'FAILED'. For further error details see the cluster log.
    jobid: 4
    wildcards: split=train, shard=00001, num_shards=00004
    log: results/logs/bottlenecks/train-00001-of-00004.log, .snakemake/slurm_logs/rule_bottleneck_shard/17.log (check log file(s) for error details)
    external_jobid: 17
Error in rule freeze:
    message: None
    jobid: 7
    wildcards: experiment=default
    log: results/logs/default/freeze.log (check log file(s) for error details)
Error in rule retrain:
    jobid: 8
    log: results/logs/missing.log (check log file(s) for error details)
Shutting down, this might take some time.
Exiting because a job execution failed. Look above for error messages
"""


def test_failure_text_gives_each_failed_jobs_error_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "results" / "logs"
    (logs / "bottlenecks").mkdir(parents=True)
    (logs / "default").mkdir()
    (logs / "structure.log").write_text("structure: 10/20 images\nerror: found 1 class (circle) in data; need at least two\n")
    (logs / "bottlenecks" / "train-00001-of-00004.log").write_text("bottlenecks: 32/100 images (32%)\n")
    (tmp_path / ".snakemake" / "slurm_logs" / "rule_bottleneck_shard").mkdir(parents=True)
    (tmp_path / ".snakemake" / "slurm_logs" / "rule_bottleneck_shard" / "17.log").write_text(
        "slurmstepd: error: Detected 1 oom_kill event\nerror: no space left on the device while writing x\n")
    (logs / "default" / "freeze.log").write_text("Traceback (most recent call last):\n  File x\nValueError: bad shape\n")
    (tmp_path / "snakemake.log").write_text(SNAKEMAKE_LOG)
    text = summary.failure_text([str(tmp_path / "snakemake.log")])
    assert text.splitlines() == [
        "4 jobs failed:",
        "  structure: error: found 1 class (circle) in data; need at least two",
        "  bottleneck_shard (split=train, shard=00001, num_shards=00004): error: no space left on the device while writing x",
        "  freeze (experiment=default): ValueError: bad shape  (last line of results/logs/default/freeze.log)",
        "  retrain: failed; its log (results/logs/missing.log) is empty or missing",
    ]
    assert summary.failure_text([str(tmp_path / "no-such.log")]) == ""


# ------------------------------------------------------------------ real runs: profile, handlers, identity
def one_class_folder(tmp_path):
    folder = tmp_path / "images" / "only"
    folder.mkdir(parents=True)
    for index in range(3):
        Image.new("RGB", (16, 16), (40 * index, 90, 200)).save(folder / f"{index}.png")
    return write_yaml(tmp_path / "one_class.yaml", {"dataset": {"source": str(tmp_path / "images")}})


def test_a_failed_run_ends_with_the_jobs_error_line(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # not the checkout: the workflow profile is found beside the Snakefile
    result = snakemake(workdir, MANIFEST, configfiles=[OFFLINE, one_class_folder(tmp_path)], check=False)
    assert result.returncode != 0
    console = result.stdout + result.stderr
    # The workflow profile is loaded without a flag, and shows the failed job's log.
    assert f"Using workflow specific profile {os.path.join(PROFILES, 'default')} for" in console
    assert "Logfile results/logs/structure.log:" in console
    # The rules' shell prefix quiets TensorFlow (the command is in Snakemake's error message).
    assert quiet.shell_exports().strip() in console
    end = console[console.rindex("Exiting because a job execution failed"):]
    error = f"  structure: error: found 1 class (only) in {tmp_path / 'images'}; need at least two"
    assert "1 job failed:\n" + error + "\n" in end


def test_a_successful_run_ends_with_a_summary_and_records_its_identity(tmp_path):
    result = snakemake(tmp_path, MANIFEST, configfiles=[OFFLINE])
    assert "Data: 120 images in 3 classes (train " in result.stderr
    assert "Accuracy of" not in result.stderr  # nothing trained in this run
    # Snakemake ran elsewhere (--directory): the command to write the report says where and how.
    assert (f"  report: snakemake --cores 2 --report report.html --report-after-run --snakefile {REPO}/Snakefile "
            f"--directory {os.path.realpath(tmp_path)} --configfile {OFFLINE}\n") in result.stderr
    recorded = atomic.read_json(tmp_path / "results" / "run_identity.json")
    assert recorded["dataset.source"] == "synthetic" and recorded["backbone.source"] == "untrained"


def test_a_dry_run_writes_no_identity(tmp_path):
    snakemake(tmp_path, "-n", MANIFEST, configfiles=[OFFLINE])
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A folder where the offline default's first job has run (so its identity is recorded)."""
    workdir = tmp_path_factory.mktemp("identity")
    snakemake(workdir, "results/data/synthetic", configfiles=[OFFLINE])
    return workdir


@pytest.mark.parametrize("edit, key", [
    ({"dataset": {"source": "{images}"}}, "dataset.source: synthetic there, {images} now"),
    ({"synthetic": {"classes": 4}}, "synthetic.classes: 3 there, 4 now"),
    ({"backbone": {"input_size": 224}}, "backbone.input_size: 299 there, 224 now"),
    ({"dataset": {"class_map": {"circle": "round"}}}, 'dataset.class_map: {} there, {"circle": "round"} now'),
])
def test_another_data_set_or_backbone_in_the_same_folder_is_refused(synthetic_run, tmp_path, edit, key):
    (tmp_path / "images").mkdir()
    edit = json.loads(json.dumps(edit).replace("{images}", str(tmp_path / "images")))
    config = write_yaml(tmp_path / "other.yaml", edit)
    for args in (["-n"], ["-n", MANIFEST], ["--report", str(tmp_path / "report.html")]):
        result = snakemake(synthetic_run, *args, configfiles=[OFFLINE, config], check=False)
        assert result.returncode != 0
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and lines[0].startswith("error: results/ holds the results of another data set or "
                                                       "backbone (" + key.replace("{images}", str(tmp_path / "images")))
        assert "snakemake --directory OTHER_FOLDER" in lines[0] and "delete results/" in lines[0]
    assert not (tmp_path / "report.html").exists()


def test_training_settings_are_not_part_of_the_identity(synthetic_run, tmp_path):
    config = write_yaml(tmp_path / "lr.yaml", {"train": {"mlp": {"learning_rate": 0.01}}, "split": {"test": 0.25},
                                               "benchmark": {"seconds": 1}})
    snakemake(synthetic_run, "-n", configfiles=[OFFLINE, config])


def test_identity_keys():
    with open(os.path.join(REPO, "config.yaml"), encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    config["backbone"] = backbones.resolve(config["backbone"])  # as common.smk gives it to the run
    real = run_identity.identity(config)
    assert real["dataset.source"].startswith("https://") and real["backbone.source"].startswith("https://")
    assert not any(key.startswith("synthetic.") for key in real) and "backbone.untrained_seed" not in real
    config["dataset"]["source"], config["backbone"]["source"] = "synthetic", "untrained"
    offline = run_identity.identity(config)
    assert offline["synthetic.seed"] == 0 and offline["backbone.untrained_seed"] == 0
    assert not any(key.startswith(("train.", "export.", "benchmark.", "split.")) for key in offline)


# ------------------------------------------------------------------ the whole offline run (needs every stage)
@pytest.mark.slow
def test_offline_run_logs_hold_no_tensorflow_noise(offline_run):
    logs = sorted((offline_run / "results" / "logs").rglob("*.log"))
    assert len(logs) >= 20
    for log in logs:
        assert noise(log.read_text(encoding="utf-8", errors="replace")) == [], log


@pytest.mark.slow
def test_offline_run_summary(offline_run):
    result = subprocess.run([sys.executable, "-m", "scripts.summary", "--results", str(offline_run / "results")],
                            capture_output=True, text=True, check=False, cwd=REPO)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("Note: untrained backbone") and "Data: 120 images in 3 classes" in text
    chosen = selected(offline_run)
    interval = r"\[\d\.\d{4}, \d\.\d{4}\]"  # a 95% bootstrap interval
    assert re.search(rf"^  \* {re.escape(chosen)} +(head|finetune) +\d\.\d{{4}} ± \d\.\d{{4}} +\d\.\d{{4}} {interval}$",
                     text, re.MULTILINE), text
    for precision in ("FP32", "FP16", "INT8"):
        assert re.search(rf"^  {precision} +CPU +\d\.\d{{4}} {interval} +\S+ +[\d.]+ +[\d.]+ +\S+/model.xml$", text,
                         re.MULTILINE), text
    assert f"frozen model ({chosen}): " in text


# ------------------------------------------------------------------ profiles
def profile(name):
    with open(os.path.join(PROFILES, name, "config.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_the_workflow_profile_overrides_no_setting_of_the_machine_profiles():
    """Snakemake lets the workflow profile win per key: it must not silently change local/slurm."""
    default = profile("default")
    assert default["show-failed-logs"] is True and default["rerun-incomplete"] is True
    for name in ("local", "slurm"):
        machine = profile(name)
        assert {key: machine[key] for key in default if key in machine} == \
            {key: default[key] for key in default if key in machine}, name
    assert not {"cores", "jobs", "executor", "keep-going", "default-resources", "set-resources"} & set(default)


def test_a_machine_profile_combines_with_the_workflow_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = snakemake(tmp_path, "-n", "--profile", os.path.join(PROFILES, "local"), MANIFEST, configfiles=[OFFLINE])
    console = result.stdout + result.stderr
    assert (f"Using profiles {os.path.join(PROFILES, 'local')} and workflow specific profile "
            f"{os.path.join(PROFILES, 'default')} for") in console
    assert "synthetic_images" in console and "This was a dry-run" in console

