"""The report: its tables and figures from fabricated results, its introduction, and the
generated HTML opened in a real headless Chromium (Debian's `chromium` package).

The browser tests inject a small probe script into a copy of the report: once the page
has loaded, it shows every image result the way a click in the report's menu does and
records whether each <img> loaded (a data: URL with a non-zero natural size), then
Chromium's --dump-dom hands the record back.
"""
import html
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import docutils.core
import fabricated
import jinja2
import numpy as np
import pytest
from conftest import OFFLINE, REPO, snakemake
from PIL import Image

from scripts import report
from scripts.core import atomic

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run(tmp_path):
    """A whole run's results, fabricated: two experiments, "default" selected and deployed."""
    results = tmp_path / "results"
    tfrecords = fabricated.write_run(str(results), experiments=("default", "lr_big"))
    return results, tfrecords


# ------------------------------------------------------------------ tables
def gallery_outputs(folder):
    return {"figure": str(folder / "misclassified.png"), "table": str(folder / "misclassified.csv")}


def test_per_class_table_carries_the_note(tmp_path):
    metrics = tmp_path / "metrics.json"
    atomic.write_json(metrics, fabricated.metrics("default", untrained=True))
    fabricated.write_history(tmp_path / "history.csv")
    out = tmp_path / "out"
    report.training(str(tmp_path / "history.csv"), str(metrics), {
        "curves": str(out / "training_curves.png"), "confusion_validation": str(out / "confusion_validation.png"),
        "confusion_test": str(out / "confusion_test.png"), "per_class": str(out / "per_class.csv")})
    rows = atomic.read_table(tmp_path / "out" / "per_class.csv")
    assert len(rows) == 2 * (3 + 1) and {row["note"] for row in rows} == {"untrained backbone"}
    for name in ("training_curves.png", "confusion_validation.png", "confusion_test.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG


def test_per_class_note_is_empty_for_a_real_backbone(tmp_path):
    atomic.write_json(tmp_path / "metrics.json", fabricated.metrics("default"))
    report.per_class_table(fabricated.metrics("default"), str(tmp_path / "per_class.csv"))
    assert {row["note"] for row in atomic.read_table(tmp_path / "per_class.csv")} == {""}


def test_experiments_table_has_one_column_per_setting_that_differs(tmp_path):
    """Settings as metrics.json records them (the retrain job's params: preprocess, augment, train)."""
    train = {"hidden_units": 0, "dropout": 0.0, "optimizer": "adam", "learning_rate": 0.001, "epochs": 200}
    augment = {"copies": 0, "flip": False, "test_time": "none"}
    base = {"preprocess": {"central_fraction": 1.0, "resize": "bilinear"}, "augment": augment, "train": train}
    variants = {"default": base, "lr_small": base | {"train": train | {"learning_rate": 0.0003}},
                "hidden": base | {"train": train | {"hidden_units": 128, "dropout": 0.3},
                                  "augment": augment | {"flip": True}}}
    paths = []
    for name, settings in variants.items():
        paths.append(str(tmp_path / f"{name}.json"))
        atomic.write_json(paths[-1], fabricated.metrics(name, settings=settings))
    selected = tmp_path / "selected.json"
    atomic.write_json(selected, {"experiment": "lr_small", "metric": "cv_accuracy", "value": 0.9,
                                 "candidates": {}})
    report.experiments(list(variants), paths, str(tmp_path / "experiments.csv"), str(selected))
    rows = atomic.read_table(tmp_path / "experiments.csv")
    columns = list(rows[0])
    assert columns[:3] == ["experiment", "selected", "mode"]
    assert columns[3:7] == ["augment.flip", "train.dropout", "train.hidden_units", "train.learning_rate"]
    assert not any(column.startswith("preprocess") or column.endswith(("optimizer", "epochs")) for column in columns)
    by_name = {row["experiment"]: row for row in rows}
    assert by_name["hidden"]["train.hidden_units"] == "128" and by_name["default"]["train.hidden_units"] == "0"
    assert by_name["lr_small"]["train.learning_rate"] == "0.0003" and by_name["hidden"]["augment.flip"] == "true"
    assert [row["selected"] for row in rows] == ["", "yes", ""] and by_name["default"]["mode"] == "head"
    assert by_name["default"]["cv_accuracy_mean"] == "0.9000" and by_name["default"]["cv_folds"] == "5"


def test_a_single_experiment_has_no_setting_columns(tmp_path):
    atomic.write_json(tmp_path / "m.json", fabricated.metrics("default"))
    report.experiments(["default"], [str(tmp_path / "m.json")], str(tmp_path / "e.csv"))
    row = atomic.read_table(tmp_path / "e.csv")[0]
    assert list(row)[3] == "best_epoch" and row["selected"] == ""


# ------------------------------------------------------------------ the gallery
def test_gallery_shows_the_misclassified_test_images_most_confident_first(run, tmp_path):
    results, tfrecords = run
    model = results / "default" / "model"
    report.gallery(str(model / "test_predictions.npz"), tfrecords, str(model / "model.json"),
                   gallery_outputs(tmp_path), "default")
    rows = atomic.read_table(tmp_path / "misclassified.csv")
    # Images 1 and 5 were fabricated wrong (predicted class = true + 1); image 1 is the more confident.
    assert [row["filename"] for row in rows] == ["square/001.jpg", "triangle/005.jpg"]
    assert [(row["true"], row["predicted"]) for row in rows] == [("square", "triangle"), ("triangle", "circle")]
    assert float(rows[0]["confidence"]) > float(rows[1]["confidence"]) > 0.5
    with Image.open(tmp_path / "misclassified.png") as figure:
        width, height = figure.size
        pixels = np.asarray(figure.convert("RGB"))
    assert width > 300 and height > 200
    # The thumbnails are really drawn: the green square and the blue triangle fill the grid.
    red, green, blue = (pixels[..., channel].astype(int) for channel in range(3))
    assert ((green > 130) & (red < 90) & (blue < 90)).sum() > 5000
    assert ((blue > 150) & (red < 90) & (green < 90)).sum() > 5000


def test_gallery_without_mistakes_says_so(tmp_path):
    paths, labels, hashes, names = fabricated.write_test_split(str(tmp_path / "results"))
    folder = fabricated.write_model(str(tmp_path / "results"), "default", labels, hashes, names, wrong=())
    report.gallery(os.path.join(folder, "test_predictions.npz"), paths, os.path.join(folder, "model.json"),
                   gallery_outputs(tmp_path / "out"))
    assert atomic.read_table(tmp_path / "out" / "misclassified.csv") == []
    assert (tmp_path / "out" / "misclassified.png").read_bytes()[:8] == PNG


def test_gallery_command_line(run, tmp_path):
    results, tfrecords = run
    model = results / "default" / "model"
    result = subprocess.run([sys.executable, "-m", "scripts.report", "gallery", "--predictions",
                             str(model / "test_predictions.npz"), "--tfrecords", *tfrecords, "--description",
                             str(model / "model.json"), "--output-figure", str(tmp_path / "out" / "misclassified.png"),
                             "--output-table", str(tmp_path / "out" / "misclassified.csv")],
                            capture_output=True, text=True, check=False, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert len(atomic.read_table(tmp_path / "out" / "misclassified.csv")) == 2


# ------------------------------------------------------------------ the introduction
def render_introduction(config):
    """workflow/report/workflow.rst as Snakemake renders it: Jinja with snakemake.config, then docutils."""
    with open(os.path.join(REPO, "workflow", "report", "workflow.rst"), encoding="utf-8") as handle:
        text = handle.read()
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as snakemake.report does

    class Snakemake:
        pass

    Snakemake.config = config
    rst = environment.from_string(text).render(snakemake=Snakemake, categories={}, files=[])
    return docutils.core.publish_parts(rst, writer="html")["html_body"]


@pytest.mark.parametrize("source, untrained", [("untrained", True), ("https://example.org/inception.tar.gz", False)])
def test_introduction_explains_untrained_only_for_an_untrained_backbone(source, untrained):
    config = {"dataset": {"source": "synthetic"}, "backbone": {"kind": "inception_v3", "source": source}}
    body = render_introduction(config)
    assert ("<strong>Untrained backbone</strong>" in body) is untrained
    assert ("untrained" in body.lower()) is untrained  # not a word of it otherwise
    assert "system-message" not in body  # no reStructuredText error


# ------------------------------------------------------------------ in a real browser
def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_chromium():
    """Outside CI a missing browser skips its tests, saying what to install; in CI (CI=true) it fails them."""
    if os.path.exists(CHROMIUM):
        return
    reason = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def browser():
    """First in a browser test's arguments, so a missing Chromium skips it before its fixtures run."""
    require_chromium()


def chromium(*args, user_data_dir, timeout=120):
    require_chromium()
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", *args],
                          capture_output=True, text=True, check=False, timeout=timeout)


def test_a_missing_chromium_skips_outside_ci_and_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        require_chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-chromium is missing"):
        require_chromium()


PROBE = textwrap.dedent("""
    <script>
    window.addEventListener("load", function () {
      var record = {images: []};
      var paths = Object.keys(results).filter(function (path) {
        return results[path].mime_type.indexOf("image/") === 0;
      });
      var next = 0;
      function finish() {
        record.loading_hidden = document.querySelector("#loading-screen").style.display === "none";
        record.categories = Object.keys(categories);
        app.setView({content: "metadata"});
        setTimeout(function () {
          record.text = document.body.innerText;
          var out = document.createElement("pre");
          out.id = "render-probe";
          out.textContent = JSON.stringify(record);
          document.body.appendChild(out);
        }, 300);
      }
      function show() {
        if (next >= paths.length) { finish(); return; }
        var path = paths[next++], entry = results[path];
        app.setView({content: "img", contentPath: entry.data_uri, resultPath: path});
        setTimeout(function () {
          var img = Array.prototype.find.call(document.querySelectorAll("img"), function (element) {
            return element.getAttribute("src") === entry.data_uri;
          });
          record.images.push({path: path, shown: !!img, complete: !!(img && img.complete),
                              data_url: !!(img && img.src.indexOf("data:image/") === 0),
                              width: img ? img.naturalWidth : 0, height: img ? img.naturalHeight : 0});
          show();
        }, 300);
      }
      setTimeout(show, 300);
    });
    </script>
    """)


def probe_report(report_html, tmp_path, edit=None):
    """Open a copy of the report (with the probe) in headless Chromium; the probe's record."""
    text = report_html.read_text(encoding="utf-8")
    if edit:
        text = edit(text)
    end = text.rfind("</body>")
    probed = tmp_path / f"probed-{report_html.name}"
    probed.write_text(text[:end] + PROBE + text[end:], encoding="utf-8")
    result = chromium("--virtual-time-budget=30000", "--dump-dom", probed.as_uri(),
                      user_data_dir=tmp_path / "chromium-profile")
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'<pre id="render-probe">(.*?)</pre>', result.stdout, re.DOTALL)
    assert match, f"the report did not finish rendering in Chromium:\n{result.stdout[:2000]}"
    return json.loads(html.unescape(match.group(1)))


def screenshot(report_html, tmp_path, result_path, name):
    """A PNG of the report showing one image result (to look at; checked for size only)."""
    text = report_html.read_text(encoding="utf-8")
    end = text.rfind("</body>")
    show = ('<script>window.addEventListener("load", function () { setTimeout(function () {'
            f'app.setView({{content: "img", contentPath: results[{json.dumps(result_path)}].data_uri,'
            f' resultPath: {json.dumps(result_path)}}}); }}, 300); }});</script>')
    page = tmp_path / f"show-{name}.html"
    page.write_text(text[:end] + show + text[end:], encoding="utf-8")
    picture = tmp_path / f"{name}.png"
    result = chromium("--virtual-time-budget=30000", "--window-size=1400,1000", f"--screenshot={picture}",
                      page.as_uri(), user_data_dir=tmp_path / "chromium-profile")
    assert result.returncode == 0 and picture.exists(), result.stderr[-2000:]
    return picture


REPORT_WORKFLOW = """
import os
import sys

sys.path.insert(0, {repo!r})
configfile: "config.yaml"
report: {rst!r}

rule all:
    input:
        "results/default/report/misclassified.png",
        "results/default/report/confusion_test.png",
        "results/report/experiments.csv",

rule training:
    input:
        history="results/default/model/history.csv",
        metrics="results/default/model/metrics.json",
    output:
        report("results/default/report/confusion_test.png", caption={confusion!r}, category="Training",
               subcategory="default"),
        report("results/default/report/training_curves.png", caption={curves!r}, category="Training",
               subcategory="default"),
    shell:
        "python -m scripts.report training --history {{input.history}} --metrics {{input.metrics}}"
        " --output-curves results/default/report/training_curves.png"
        " --output-confusion-validation results/default/report/confusion_validation.png"
        " --output-confusion-test results/default/report/confusion_test.png"
        " --output-per-class results/default/report/per_class.csv"

rule gallery:
    input:
        predictions="results/default/model/test_predictions.npz",
        model="results/default/model/model.json",
        tfrecords="results/data/tfrecords/test-00000-of-00001.tfrecord",
    output:
        report("results/default/report/misclassified.png", caption={gallery!r}, category="Training",
               subcategory="default"),
        "results/default/report/misclassified.csv",
    shell:
        "python -m scripts.report gallery --predictions {{input.predictions}} --tfrecords {{input.tfrecords}}"
        " --description {{input.model}} --experiment default"
        " --output-figure results/default/report/misclassified.png"
        " --output-table results/default/report/misclassified.csv"

rule experiments:
    input:
        metrics=["results/default/model/metrics.json", "results/lr_big/model/metrics.json"],
    output:
        report("results/report/experiments.csv", caption={experiments!r}, category="Experiments"),
    shell:
        "python -m scripts.report experiments --names default lr_big --metrics {{input.metrics}}"
        " --output {{output}}"
"""


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    """A Snakemake report made by a small workflow of the report rules' commands on fabricated results."""
    workdir = tmp_path_factory.mktemp("report")
    fabricated.write_run(str(workdir / "results"), experiments=("default", "lr_big"))
    captions = os.path.join(REPO, "workflow", "report")
    (workdir / "Snakefile").write_text(REPORT_WORKFLOW.format(
        repo=REPO, rst=os.path.join(captions, "workflow.rst"), confusion=os.path.join(captions, "confusion.rst"),
        curves=os.path.join(captions, "training_curves.rst"), gallery=os.path.join(captions, "misclassified.rst"),
        experiments=os.path.join(captions, "experiments.rst")))
    (workdir / "config.yaml").write_text("dataset: {source: synthetic}\n"
                                         "backbone: {kind: inception_v3, source: untrained}\n")
    env = dict(os.environ, PYTHONPATH=REPO, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    base = [sys.executable, "-m", "snakemake", "--directory", str(workdir), "-s", str(workdir / "Snakefile"),
            "--workflow-profile", "none"]
    for extra in (["--cores", "1"], ["--report", str(workdir / "report.html")]):
        result = subprocess.run(base + extra, capture_output=True, text=True, check=False, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    return workdir / "report.html"


def test_report_renders_in_chromium_and_its_figures_load(browser, small_report, tmp_path):
    record = probe_report(small_report, tmp_path)
    assert record["loading_hidden"] and set(record["categories"]) == {"Training", "Experiments"}
    assert "Transfer learning of an image classifier" in record["text"]
    assert "Untrained backbone" in record["text"]  # this config's backbone is untrained
    shown = {os.path.basename(image["path"]): image for image in record["images"]}
    assert set(shown) == {"misclassified.png", "confusion_test.png", "training_curves.png"}
    for name, image in shown.items():
        assert image["shown"] and image["complete"] and image["data_url"], (name, image)
        assert image["width"] > 200 and image["height"] > 150, (name, image)
    picture = screenshot(small_report, tmp_path, "results/default/report/misclassified.png", "gallery")
    with Image.open(picture) as page:
        colours = np.asarray(page.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(colours[::7], axis=0)) > 50  # a picture, not a blank page


def test_the_probe_notices_a_figure_that_does_not_load(browser, small_report, tmp_path):
    """The browser check can fail: a PNG with corrupt bytes is reported with no size."""
    def corrupt(text):
        start = text.index("base64,", text.index('"results/default/report/misclassified.png"')) + len("base64,")
        return text[:start] + "AAAA" + text[start + 4:]

    shown = {os.path.basename(image["path"]): image for image in probe_report(small_report, tmp_path, corrupt)["images"]}
    assert shown["misclassified.png"]["width"] == 0 and shown["confusion_test.png"]["width"] > 0


@pytest.mark.slow
def test_offline_run_report_renders_in_chromium(browser, offline_run, tmp_path):
    """The whole offline default's report (needs the full pipeline: the `offline_run` fixture)."""
    report_html = tmp_path / "report.html"
    snakemake(offline_run, "--report", str(report_html), configfiles=[OFFLINE])
    record = probe_report(report_html, tmp_path)
    assert record["loading_hidden"] and "Untrained backbone" in record["text"]
    names = {os.path.basename(image["path"]) for image in record["images"]}
    assert {"misclassified.png", "confusion_test.png", "confusion_validation.png", "training_curves.png",
            "benchmarks.png"} <= names
    for image in record["images"]:
        assert image["shown"] and image["complete"] and image["data_url"] and image["width"] > 100, image
