# Transfer-learning pipeline: data -> TFRecords -> bottlenecks -> retrained head ->
# frozen GraphDef -> OpenVINO IR -> benchmarks -> report.  See README.md.
# Console defaults (failed jobs' logs shown, incomplete jobs redone) are in
# profiles/default/config.yaml, which Snakemake loads without a flag.
import os
import shlex
import sys

from snakemake.utils import min_version

min_version("9.0")


# The defaults always come from this checkout's config.yaml; --configfile and --config
# layer on top of it, so a working directory elsewhere (--directory) needs no copy.
configfile: os.path.join(workflow.basedir, "config.yaml")


# This checkout's scripts/ importable here and in every job, from any working directory
# (and inside cluster jobs, which re-read this file).
sys.path.insert(0, workflow.basedir)
from scripts import run_identity, summary
from scripts.core import quiet
from scripts.core.errors import PipelineError

# Rules run `python -m scripts.<stage>` with TensorFlow's C++ logging quieted before
# Python starts (scripts/core/quiet.py).
# (Braces are doubled twice: once for the f-string, once for Snakemake's formatting.)
shell.prefix(
    f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    f"{quiet.shell_exports()}"
)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/deploy.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/explain.smk"
include: "workflow/rules/serve.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/clinical.smk"


# One results folder, one data set and backbone (scripts/run_identity.py): a run, dry-run
# or --report with another is refused here, before any job; --lint and --unlock touch no result.
if not {"--lint", "--unlock"} & set(sys.argv):
    try:
        run_identity.check(config, RESULTS)
    except PipelineError as error:
        sys.exit(f"error: {error}")


rule all:
    default_target: True
    input:
        experiment_targets(),
        experiment_report_targets(),
        console_report_targets(),
        explain_targets(),
        deployed_targets,
        report_targets,
        audit_targets(),
        tracking_targets(),


# Up to the evaluated IRs of the deployed experiment(s), without benchmarks and report:
#   snakemake --cores 2 evaluated
rule evaluated:
    input:
        experiment_targets(),
        evaluated_targets,


# The model repository for OVMS and KServe (workflow/rules/serve.smk, docs/serving.md):
#   snakemake --cores 2 serving
rule serving:
    input:
        serving_targets,


# ------------------------------------------------------------------ the console
# What the user sees at the end of a run (scripts/summary.py); not for dry-runs.
onstart:
    run_identity.record(config, RESULTS)


onsuccess:
    try:
        command = summary.run_report_command(
            workflow.main_snakefile,
            workflow.overwrite_configfiles,
            sys.argv[1:],
            all_cores(),
        )
        text = summary.summary_text(
            EXPERIMENTS,
            RESULTS,
            current=current_outputs(),
            report_command=command,
            display=summary.display_paths(),
        )
    # A summary that cannot be made must not turn a good run into a failure.
    except Exception as error:
        text = f"(no summary: {type(error).__name__}: {error}; python -m scripts.summary prints it)"
    if text:
        print(f"\n{text}\n", file=sys.stderr, flush=True)


onerror:
    try:
        text = summary.failure_text(log, summary.display_paths())
    except Exception as error:
        text = f"(no error lines: {type(error).__name__}: {error}; see the logs in {LOGS}/)"
    if text:
        print(f"\n{text}\n", file=sys.stderr, flush=True)
