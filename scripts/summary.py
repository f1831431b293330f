"""What the console says at the end of a run (the Snakefile's onsuccess and onerror).

On success, ``summary_text`` gives a short table made from the run's results: per
experiment its validation and test accuracy (the one selected on validation marked),
for each deployed experiment the IR test accuracy, latency and throughput per precision
and device, and the paths of the frozen model, the IRs and the report command. Files
that are absent (a partial run, e.g. only metrics.json asked for) are left out, and
files the run did not make or check (``current``) are not shown as its results.

On failure, ``failure_text`` gives one line per failed job: the last ``error: ...`` line
of its log (every stage prints one as its last line when it fails), or else the log's
last line, so that the reason is the last thing on the console rather than a shell
command and a CalledProcessError.

    python -m scripts.summary [--results results] [--experiments A B ...]
    python -m scripts.summary --failed .snakemake/log/<run>.snakemake.log
"""
import argparse
import glob
import json
import os
import re
import shlex
import sys

from scripts.core.backbones import PRECISIONS as PRECISION_ORDER
from scripts.core.contract import UNTRAINED_NOTE
from scripts.core.layout import Layout

PREDICT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "predict.py")
NO_VALUE = "-"


# ------------------------------------------------------------------ reading results
def _read_json(path):
    """A JSON file's content, or None when it is absent or unreadable (a partial run)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


class Results:
    """The results folder, restricted to ``current`` paths when given."""

    def __init__(self, results="results", current=None):
        self.root = results
        self.layout = Layout(results)  # where each file is (scripts/core/layout.py)
        self.current = None if current is None else {os.path.normpath(path) for path in current}

    def has(self, path):
        return os.path.exists(path) and (self.current is None or os.path.normpath(path) in self.current)

    def json(self, path):
        return _read_json(path) if self.has(path) else None

    def precisions(self, experiment):
        pattern = Layout(glob.escape(self.root)).ir_xml(glob.escape(experiment), "*")
        found = {os.path.basename(os.path.dirname(path)) for path in glob.glob(pattern) if self.has(path)}
        return sorted(found, key=lambda name: (PRECISION_ORDER.index(name) if name in PRECISION_ORDER
                                               else len(PRECISION_ORDER), name))


def _accuracy(value):
    return NO_VALUE if value is None else f"{value:.4f}"


def _accuracy_ci(metrics):
    """Accuracy with its 95% bootstrap interval where metrics.json / evaluation.json has one."""
    value, interval = metrics.get("accuracy"), metrics.get("accuracy_ci95")
    if value is None or not interval:
        return _accuracy(value)
    return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"


def _number(value, digits=1):
    return NO_VALUE if value is None else f"{float(value):.{digits}f}"


def table(header, rows, indent="  "):
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return [indent + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in [header, *rows]]


# ------------------------------------------------------------------ the summary
def selected_experiment(results):
    selected = results.json(results.layout.selected())
    return selected.get("experiment") if selected else None


def untrained(results, metrics_by_experiment):
    backbone = results.json(results.layout.backbone_json())
    if backbone and (backbone.get("untrained") or backbone.get("note") == UNTRAINED_NOTE):
        return True
    return any(metrics.get("untrained_backbone") or metrics.get("note") == UNTRAINED_NOTE
               for metrics in metrics_by_experiment.values() if metrics)


def data_line(results):
    """Images per split and classes, rejects and duplicates, or None before the split."""
    splits = results.json(results.layout.split_summary())
    if not splits:
        return None
    names = ("train", "validation", "test")
    counts = {split: sum(splits.get(split, {}).values()) for split in names}
    classes = sorted({name for split in names for name in splits.get(split, {})})
    line = (f"Data: {sum(counts.values())} images in {len(classes)} classes (train {counts['train']}, "
            f"validation {counts['validation']}, test {counts['test']})")
    if splits.get("group_by") == "group_regex":
        groups = splits.get("groups", {})
        line += (f"; groups whole per split (train {groups.get('train', 0)}, validation {groups.get('validation', 0)}, "
                 f"test {groups.get('test', 0)})")
    structure = results.json(results.layout.structure_summary())
    if structure:
        line += f"; {structure.get('rejects', 0)} rejected, {structure.get('duplicates', 0)} duplicates dropped"
    return line


def audit_line(results, display):
    """Near-duplicates across splits and suspected label errors (results/audit/), or None."""
    duplicates = results.json(results.layout.audit("near_duplicates.json"))
    issues = results.json(results.layout.audit("label_issues.json"))
    parts = []
    if duplicates:
        counts = duplicates.get("near_duplicates", {})
        parts.append(f"{duplicates.get('near_duplicate_images', 0)} validation/test images near-duplicate a training "
                     f"image (validation {counts.get('validation', 0)}, test {counts.get('test', 0)}; "
                     f"{display(results.layout.audit('near_duplicates.csv'))})")
    if issues:
        parts.append(f"{issues.get('issues', 0)} of {issues.get('images', 0)} train/validation labels suspect "
                     f"({display(results.layout.audit('label_issues.csv'))})")
    return "Audit: " + "; ".join(parts) if parts else None


def selection_figure(metrics):
    """The figure the selection compares: the cross-validated accuracy "mean ± std", or a fine-tuned
    experiment's validation accuracy (it has no folds)."""
    cv = metrics.get("cv", {}).get("accuracy")
    if cv:
        return f"{_accuracy(cv['mean'])} ± {cv['std']:.4f}"
    validation = metrics.get("splits", {}).get("validation", {}).get("accuracy")
    return NO_VALUE if validation is None else f"{_accuracy(validation)} (validation)"


def experiment_rows(results, experiments, metrics_by_experiment, selected):
    rows = []
    for name in experiments:
        metrics = metrics_by_experiment.get(name)
        if metrics is None:
            continue
        splits = metrics.get("splits", {})
        rows.append([("* " if name == selected else "  ") + name, metrics.get("mode", NO_VALUE),
                     selection_figure(metrics), _accuracy_ci(splits.get("test", {}))])
    return rows


def benchmark_values(results, experiment):
    """{(device, precision): {"latency": ms, "throughput": images/s, "skipped": bool}}."""
    summary = results.json(results.layout.benchmarks(experiment)) or {}
    values = {}
    for row in summary.get("rows", []):
        entry = values.setdefault((row.get("device"), row.get("precision")), {})
        if row.get("skipped"):
            entry["skipped"] = True
        elif row.get("mode") == "latency":
            entry["latency"] = row.get("latency_median_ms")
        elif row.get("mode") == "throughput":
            entry["throughput"] = row.get("throughput_fps")
    return values


def deployment_lines(results, experiment, display):
    """IR accuracy, latency and throughput per precision (and device) of one experiment."""
    precisions = results.precisions(experiment)
    benchmarks = benchmark_values(results, experiment)
    if not precisions and not benchmarks:
        return []
    devices = sorted({device for device, _ in benchmarks}) or [None]
    rows = []
    for precision in precisions or sorted({precision for _, precision in benchmarks}):
        evaluation = results.json(results.layout.evaluation(experiment, precision)) or {}
        accuracy = _accuracy_ci(evaluation.get("metrics", {}))
        drop = evaluation.get("accuracy_drop_points")
        xml = results.layout.ir_xml(experiment, precision)
        for device in devices:
            entry = benchmarks.get((device, precision), {})
            skipped = entry.get("skipped") and "latency" not in entry and "throughput" not in entry
            rows.append([precision, device or NO_VALUE, accuracy,
                         NO_VALUE if drop is None else f"{drop:.2f}",
                         "absent" if skipped else _number(entry.get("latency")),
                         "absent" if skipped else _number(entry.get("throughput")),
                         display(xml) if results.has(xml) else NO_VALUE])
    return [f"Deployment of {experiment} (OpenVINO IR on the test split; benchmarks per device):",
            *table(["precision", "device", "test accuracy", "drop vs trained model (points)", "latency ms (median)",
                    "images/s", "IR"], rows)]


def summary_text(experiments, results="results", current=None, report_command=None, display=None):
    """The end-of-run summary (a few lines), or "" when the run produced no result to show."""
    display = display or (lambda path: path)
    results = Results(results, current)
    # A fine-tuned experiment's final metrics are its fine-tuning's; a head-only one's, its head's.
    metrics_by_experiment = {name: results.json(results.layout.finetuned(name, "metrics.json"))
                             or results.json(results.layout.metrics(name)) for name in experiments}
    selected = selected_experiment(results)
    lines = []
    data = data_line(results)
    if data:
        lines.append(data)
    audit = audit_line(results, display)
    if audit:
        lines.append(audit)
    rows = experiment_rows(results, experiments, metrics_by_experiment, selected)
    if rows:
        lines += [""] * bool(lines) + ["Accuracy of the retrained model per experiment (test: [95% bootstrap interval]):",
                  *table(["experiment", "mode", "cross-validated", "test"], rows)]
        if selected in experiments:
            metric = (results.json(results.layout.selected()) or {}).get("metric", "cv_accuracy")
            lines.append(f"  * selected by cross-validation ({metric}, the simplest within one standard error;"
                         f" {display(results.layout.selected())})")
    deployed = [selected] if selected in experiments else []
    deployed += [name for name in experiments if name not in deployed]
    for name in deployed:
        section = deployment_lines(results, name, display)
        if section:
            lines += [""] * bool(lines) + section
    files = []
    frozen = [name for name in deployed if results.has(results.layout.frozen_model(name))]
    if frozen:
        others = f" (the others': {display(results.layout.frozen_model('<experiment>'))})" \
            if len(frozen) > 1 else ""
        files.append(f"  frozen model ({frozen[0]}): {display(results.layout.frozen_model(frozen[0]))}"
                     + others)
    irs = [results.layout.ir_xml(name, precision) for name in deployed for precision in results.precisions(name)]
    if irs:
        files.append(f"  predict: python {display(PREDICT)} --model {display(irs[0])} IMAGES_OR_FOLDERS "
                     "[--csv out.csv] [--json out.json]")
    if files or lines:
        files.append(f"  all results: {display(results.root)}/")
    if lines and report_command:
        files.append(f"  report: {report_command}")
    if files:
        lines += [""] * bool(lines) + ["Files:", *files]
    if lines and untrained(results, metrics_by_experiment):
        note = f"Note: {UNTRAINED_NOTE}: made from a randomly initialised network; the accuracies say nothing " \
            "about the method."
        lines = [note, *lines]
    return "\n".join(lines)


def runs_where_started(started_in=None):
    """Whether Snakemake works in the folder it was started in (the shell's $PWD by default)."""
    started_in = started_in or os.environ.get("PWD")
    return bool(started_in) and os.path.realpath(started_in) == os.path.realpath(os.getcwd())


def display_paths(started_in=None):
    """A function showing a path (relative to the working folder) as the user can use it.

    Relative when Snakemake works in the folder it was started in, else absolute: with
    --directory elsewhere, or when $PWD is not the folder it was started in.
    """
    here = os.path.realpath(os.getcwd())
    relative = runs_where_started(started_in)

    def show(path):
        path = os.fspath(path)
        if relative and not os.path.isabs(path):
            return path
        absolute = os.path.realpath(path)
        if relative and (absolute + os.sep).startswith(here + os.sep):
            return os.path.relpath(absolute, here)
        return absolute
    return show


def report_command(configfiles=(), config_args=(), directory=None, cores="all", snakefile=None):
    """The command that writes the HTML report of this config's results.

    With --report-after-run, Snakemake first brings every result the report shows up to
    date for this config (a plain --report packs whatever is on disk), then writes it.
    """
    words = ["snakemake", "--cores", str(cores), "--report", "report.html", "--report-after-run"]
    if snakefile:
        words += ["--snakefile", snakefile]
    if directory:
        words += ["--directory", directory]
    if configfiles:
        words += ["--configfile", *configfiles]
    if config_args:
        words += ["--config", *config_args]
    return " ".join(shlex.quote(str(word)) for word in words)


def run_report_command(snakefile, configfiles, argv, cores, started_in=None):
    """``report_command`` for the run in progress (the Snakefile's onsuccess)."""
    show = display_paths(started_in)
    here = runs_where_started(started_in)
    usual = here and os.path.exists("Snakefile") and os.path.samefile(snakefile, "Snakefile")
    return report_command([show(path) for path in configfiles], config_arguments(argv), None if here else os.getcwd(),
                          cores, None if usual else show(snakefile))


def config_arguments(argv):
    """The words after --config/-C in a command line, up to the next option."""
    found, taking = [], False
    for word in argv:
        if word in ("--config", "-C"):
            taking = True
        elif word.startswith("-"):
            taking = False
        elif taking:
            found.append(word)
    return found


# ------------------------------------------------------------------ failures
ERROR_IN_RULE = re.compile(r"^Error in rule (?P<rule>\S+):\s*$")
FIELD = re.compile(r"^\s+(?P<key>[a-z_ ]+):\s?(?P<value>.*)$")


def failed_jobs(snakemake_log_text):
    """[{"rule", "wildcards", "logs", "message"}] of each "Error in rule" block of a Snakemake log."""
    jobs, job = [], None
    for line in snakemake_log_text.splitlines():
        match = ERROR_IN_RULE.match(line)
        if match:
            job = {"rule": match["rule"], "wildcards": "", "logs": [], "message": ""}
            jobs.append(job)
            continue
        field = FIELD.match(line) if job is not None else None
        if field is None:
            if job is not None and not line.startswith(" "):
                job = None
            continue
        key, value = field["key"].strip(), field["value"].strip()
        if key in ("shell", "code"):  # the command follows, indented: no more fields
            job = None
        elif key == "log":
            value = value.split(" (check log file(s)", 1)[0]
            job["logs"] = [path.strip() for path in value.split(",") if path.strip()]
        elif key == "wildcards":
            job["wildcards"] = value
        elif key == "message" and value != "None":
            job["message"] = value
    return jobs


def error_line(log_path):
    """The last ``error: ...`` line of a job's log, else its last non-empty line, else None."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return None
    errors = [line for line in lines if line.startswith("error:")]
    return errors[-1] if errors else (lines[-1] if lines else None)


def failure_text(snakemake_logs, display=None):
    """One line per failed job, from its log; "" when no job failed (e.g. a DAG error)."""
    display = display or (lambda path: path)
    text = ""
    for path in [snakemake_logs] if isinstance(snakemake_logs, str) else list(snakemake_logs or []):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text += handle.read() + "\n"
        except OSError:
            continue
    lines, seen = [], set()
    for job in failed_jobs(text):
        name = job["rule"] + (f" ({job['wildcards']})" if job["wildcards"] else "")
        reasons = [(line, log) for log in job["logs"] if (line := error_line(log))]
        errors = [(line, log) for line, log in reasons if line.startswith("error:")]
        if errors or reasons:
            line, log = (errors or reasons)[-1]
            entry = f"  {name}: {line}" + ("" if line.startswith("error:") else f"  (last line of {display(log)})")
        elif job["message"]:
            entry = f"  {name}: {job['message']}"
        else:
            logs = ", ".join(display(log) for log in job["logs"])
            entry = f"  {name}: failed" + (f"; its log ({logs}) is empty or missing" if logs else "")
        if entry not in seen:
            seen.add(entry)
            lines.append(entry)
    if not lines:
        return ""
    return "\n".join([f"{len(lines)} job{'s' * (len(lines) > 1)} failed:", *lines])


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print the end-of-run summary, or why a run failed.")
    parser.add_argument("--results", default="results", help="the results folder (default results)")
    parser.add_argument("--experiments", nargs="*", help="experiments to show (default: every folder with "
                        "model/metrics.json)")
    parser.add_argument("--failed", nargs="+", metavar="SNAKEMAKE_LOG",
                        help="print the error line of each failed job of these Snakemake logs instead")
    args = parser.parse_args(argv)
    if args.failed:
        text = failure_text(args.failed)
    else:
        experiments = args.experiments or sorted(
            os.path.basename(os.path.dirname(os.path.dirname(path)))
            for path in glob.glob(Layout(glob.escape(args.results)).metrics("*")))
        text = summary_text(experiments, args.results)
    print(text or "nothing to show", file=sys.stdout)


if __name__ == "__main__":
    main()
