# Saliency overlays (docs/explain.md): what each experiment's head looks at in its test
# images, from the float backbone graph and head.npz (scripts/explain.py).


rule report_explained:
    """Misclassified and correct test images of one experiment with the map of their predicted class."""
    input:
        predictions=lambda wildcards: final_model(
            wildcards.experiment, "test_predictions.npz"
        ),
        description=lambda wildcards: final_metrics(wildcards.experiment),
        head=lambda wildcards: final_model(wildcards.experiment, "head.npz"),
        graph=lambda wildcards: LAYOUT.backbone_pb(backbone_root(wildcards.experiment)),
        graph_json=lambda wildcards: LAYOUT.backbone_json(
            backbone_root(wildcards.experiment)
        ),
        tfrecords=tfrecord_shards("test"),
        code=code("explain"),
    output:
        figure=experiment_report("explained.png", "explained.rst", "Training"),
        table=experiment_report("explained.csv", "explained.rst", "Training"),
    log:
        f"{LOGS}/{{experiment}}/report_explained.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/report_explained.tsv"
    conda:
        env("tensorflow")
    threads: config["inference"]["threads"]
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        central_fraction=lambda wildcards: settings(wildcards.experiment)[
            "preprocess"
        ]["central_fraction"],
        resize=lambda wildcards: settings(wildcards.experiment)["preprocess"]["resize"],
        misclassified=config["explain"]["misclassified"],
        per_class=config["explain"]["per_class"],
    shell:
        "python -m scripts.explain gallery --predictions {input.predictions:q} --tfrecords {input.tfrecords:q}"
        " --description {input.description:q} --head {input.head:q} --graph {input.graph:q}"
        " --graph-json {input.graph_json:q} --central-fraction {params.central_fraction}"
        " --resize {params.resize} --misclassified {params.misclassified} --per-class {params.per_class}"
        " --experiment {wildcards.experiment:q} --threads {threads} --output-figure {output.figure:q}"
        " --output-table {output.table:q} > {log} 2>&1"
