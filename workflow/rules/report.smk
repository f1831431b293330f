# Report stages: figures and tables for `snakemake --report report.html`, made from the
# run's own outputs. Each is its own rule so that, e.g., a new benchmark setting
# redraws only the benchmark chart.


rule report_data:
    """Images per class and split, rejects and duplicates."""
    input:
        structure=LAYOUT.structure_summary(),
        split=LAYOUT.split_summary(),
        code=code("report"),
    output:
        report(
            LAYOUT.report("data_summary.csv"),
            caption="../report/data_summary.rst",
            category="Data",
        ),
    log:
        f"{LOGS}/report_data.log",
    benchmark:
        f"{RUNTIME}/report_data.tsv"
    conda:
        env("report")
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "python -m scripts.report data --structure-summary {input.structure:q}"
        " --split-summary {input.split:q} --output {output:q} > {log} 2>&1"


rule report_training:
    """Training curves, confusion matrices and per-class metrics of one experiment."""
    input:
        history=lambda wildcards: final_model(wildcards.experiment, "history.csv"),
        metrics=lambda wildcards: final_metrics(wildcards.experiment),
        code=code("report"),
    output:
        curves=experiment_report(
            "training_curves.png", "training_curves.rst", "Training"
        ),
        validation=experiment_report(
            "confusion_validation.png", "confusion.rst", "Training"
        ),
        test=experiment_report("confusion_test.png", "confusion.rst", "Training"),
        per_class=experiment_report("per_class.csv", "per_class.rst", "Training"),
    log:
        f"{LOGS}/{{experiment}}/report_training.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/report_training.tsv"
    conda:
        env("report")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m scripts.report training --history {input.history:q} --metrics {input.metrics:q}"
        " --output-curves {output.curves:q} --output-confusion-validation {output.validation:q}"
        " --output-confusion-test {output.test:q} --output-per-class {output.per_class:q} > {log} 2>&1"


rule report_deployment:
    """IR accuracy and agreement per precision, and the benchmark table and chart."""
    input:
        evaluations=lambda wildcards: evaluations(wildcards.experiment),
        benchmarks=LAYOUT.benchmarks("{experiment}", "json"),
        benchmarks_csv=LAYOUT.benchmarks("{experiment}", "csv"),
        code=code("report"),
    output:
        ir=experiment_report("ir_accuracy.csv", "ir_accuracy.rst", "Deployment"),
        chart=experiment_report("benchmarks.png", "benchmarks.rst", "Deployment"),
        table=experiment_report("benchmarks.csv", "benchmarks.rst", "Deployment"),
    log:
        f"{LOGS}/{{experiment}}/report_deployment.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/report_deployment.tsv"
    conda:
        env("report")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m scripts.report deployment --evaluations {input.evaluations:q}"
        " --benchmarks {input.benchmarks:q} --benchmarks-csv {input.benchmarks_csv:q}"
        " --output-ir-table {output.ir:q} --output-chart {output.chart:q} --output-table {output.table:q}"
        " > {log} 2>&1"


rule report_experiments:
    """One table comparing every experiment."""
    input:
        metrics=[final_metrics(experiment) for experiment in EXPERIMENTS],
        selected=LAYOUT.selected(),
        code=code("report"),
    output:
        report(
            LAYOUT.report("experiments.csv"),
            caption="../report/experiments.rst",
            category="Experiments",
        ),
    log:
        f"{LOGS}/report_experiments.log",
    benchmark:
        f"{RUNTIME}/report_experiments.tsv"
    conda:
        env("report")
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        names=EXPERIMENTS,
        selected=lambda wildcards, input: f"--selected {shlex.quote(input.selected)}",
    shell:
        "python -m scripts.report experiments --names {params.names:q} --metrics {input.metrics:q}"
        " {params.selected} --output {output:q} > {log} 2>&1"


rule report_gallery:
    """The misclassified test images of one experiment, beside its confusion matrices."""
    input:
        predictions=lambda wildcards: final_model(
            wildcards.experiment, "test_predictions.npz"
        ),
        description=lambda wildcards: final_metrics(wildcards.experiment),
        tfrecords=tfrecord_shards("test"),
        code=code("report"),
    output:
        gallery=experiment_report("misclassified.png", "misclassified.rst", "Training"),
        table=experiment_report("misclassified.csv", "misclassified.rst", "Training"),
    log:
        f"{LOGS}/{{experiment}}/report_gallery.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/report_gallery.tsv"
    conda:
        env("report")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m scripts.report gallery --predictions {input.predictions:q} --tfrecords {input.tfrecords:q}"
        " --description {input.description:q} --experiment {wildcards.experiment:q}"
        " --output-figure {output.gallery:q} --output-table {output.table:q} > {log} 2>&1"


rule report_clinical:
    """ROC and precision-recall curves, reliability diagrams and the operating point of one deployed experiment."""
    input:
        predictions=lambda wildcards: final_model(
            wildcards.experiment, "test_predictions.npz"
        ),
        held_out=lambda wildcards: final_model(
            wildcards.experiment, "oof_predictions.npz"
        ),
        calibration=LAYOUT.calibration("{experiment}"),
        code=code("report"),
    output:
        roc=experiment_report("roc.png", "clinical.rst", "Clinical"),
        precision_recall=experiment_report(
            "precision_recall.png", "clinical.rst", "Clinical"
        ),
        reliability=experiment_report("reliability.png", "clinical.rst", "Clinical"),
        operating_point=experiment_report(
            "operating_point.png", "clinical.rst", "Clinical"
        ),
    log:
        f"{LOGS}/{{experiment}}/report_clinical.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/report_clinical.tsv"
    conda:
        env("report")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m scripts.report clinical --predictions {input.predictions:q} --held-out {input.held_out:q}"
        " --calibration {input.calibration:q} --experiment {wildcards.experiment:q}"
        " --output-roc {output.roc:q} --output-precision-recall {output.precision_recall:q}"
        " --output-reliability {output.reliability:q} --output-operating-point {output.operating_point:q}"
        " > {log} 2>&1"
