# Calibration and the model card of each deployed experiment (docs/clinical.md): the
# temperature, operating point and low-confidence threshold are fitted on held-out
# predictions only (never the test split) and travel with the frozen model and every IR.


rule calibrate:
    """Temperature, operating point and low-confidence threshold on the held-out predictions."""
    input:
        held_out=lambda wildcards: final_model(
            wildcards.experiment, "oof_predictions.npz"
        ),
        labels=LAYOUT.labels(),
        code=code("model.calibrate"),
    output:
        LAYOUT.calibration("{experiment}"),
    log:
        f"{LOGS}/{{experiment}}/calibrate.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/calibrate.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        evaluation=evaluation_json(
            "positive_classes", "target_sensitivity", "low_confidence_accuracy"
        ),
    shell:
        "python -m scripts.model.calibrate --held-out {input.held_out:q} --labels {input.labels:q}"
        " --evaluation {params.evaluation:q} --output {output:q} > {log} 2>&1"


rule model_card:
    """The model card of one deployed experiment (Markdown beside its model, and in the report)."""
    input:
        split=LAYOUT.split_summary(),
        structure=LAYOUT.structure_summary(),
        manifest=LAYOUT.manifest(),
        backbone=lambda wildcards: LAYOUT.backbone_json(
            backbone_root(wildcards.experiment)
        ),
        metrics=lambda wildcards: final_metrics(wildcards.experiment),
        calibration=LAYOUT.calibration("{experiment}"),
        evaluations=lambda wildcards: evaluations(wildcards.experiment),
        irs=lambda wildcards: [
            LAYOUT.ir_json(wildcards.experiment, precision)
            for precision in precisions(wildcards.experiment)
        ],
        selected=LAYOUT.selected(),
        code=code("model_card"),
    output:
        report(
            LAYOUT.model_card("{experiment}"),
            caption="../report/model_card.rst",
            category="Model card",
            subcategory="{experiment}",
        ),
    log:
        f"{LOGS}/{{experiment}}/model_card.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/model_card.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        dataset=json.dumps(
            {
                key: config["dataset"][key]
                for key in ("source", "sha256", "layout", "class_map")
            },
            sort_keys=True,
        ),
        backbone=json.dumps(
            {key: config["backbone"][key] for key in ("kind", "source", "sha256")},
            sort_keys=True,
        ),
        selection=json.dumps(config["selection"], sort_keys=True),
        split=json.dumps(config["split"], sort_keys=True),
    shell:
        "python -m scripts.model_card --experiment {wildcards.experiment:q} --split-summary {input.split:q}"
        " --structure-summary {input.structure:q} --manifest {input.manifest:q}"
        " --backbone-json {input.backbone:q} --metrics {input.metrics:q} --calibration {input.calibration:q}"
        " --evaluations {input.evaluations:q} --ir-json {input.irs:q} --selected {input.selected:q}"
        " --dataset {params.dataset:q} --backbone {params.backbone:q} --selection {params.selection:q}"
        " --split {params.split:q} --output {output:q} > {log} 2>&1"
