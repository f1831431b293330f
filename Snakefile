# Transfer-learning pipeline: data -> TFRecords -> bottlenecks -> retrained head ->
# frozen GraphDef -> OpenVINO IR -> benchmarks -> report.  See README.md.
import os
import shlex

from snakemake.utils import min_version

min_version("9.0")


# The defaults always come from this checkout's config.yaml; --configfile and --config
# layer on top of it, so a working directory elsewhere (--directory) needs no copy.
configfile: os.path.join(workflow.basedir, "config.yaml")


# Rules run `python -m scripts.<stage>`; make this checkout's scripts/ importable from
# any working directory (and inside cluster jobs, which re-read this file).
# (Braces are doubled twice: once for the f-string, once for Snakemake's formatting.)
shell.prefix(f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/deploy.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_targets,
        report_targets,
    default_target: True


# Up to the evaluated IRs of the deployed experiment(s), without benchmarks and report:
#   snakemake --cores 2 evaluated
rule evaluated:
    input:
        evaluated_targets,
