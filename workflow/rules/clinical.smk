# Calibration and the model card of each deployed experiment (docs/clinical.md): the
# temperature, operating point and low-confidence threshold are fitted on held-out
# predictions only (never the test split) and travel with the frozen model and every IR.


rule calibrate:
    """Temperature, operating point and low-confidence threshold on the held-out predictions."""
    input:
        held_out=lambda wildcards: f"{model_dir(wildcards.experiment)}/oof_predictions.npz",
        labels=f"{DATA}/labels.json",
        code=code("model.calibrate"),
    output:
        f"{RESULTS}/{{experiment}}/model/calibration.json",
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
        split=f"{DATA}/split_summary.json",
        structure=f"{DATA}/structure_summary.json",
        manifest=f"{DATA}/manifest.tsv",
        backbone=lambda wildcards: f"{RESULTS}/{backbone_root(wildcards.experiment)}/backbone.json",
        metrics=lambda wildcards: final_metrics(wildcards.experiment),
        calibration=f"{RESULTS}/{{experiment}}/model/calibration.json",
        evaluations=lambda wildcards: evaluations(wildcards.experiment),
        irs=lambda wildcards: [
            f"{RESULTS}/{wildcards.experiment}/ir/{precision}/ir.json"
            for precision in precisions(wildcards.experiment)
        ],
        selected=selected_json(),
        code=code("model_card"),
    output:
        report(
            f"{RESULTS}/{{experiment}}/model_card.md",
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
        selected=lambda wildcards, input: (
            f"--selected {shlex.quote(input.selected[0])}" if input.selected else ""
        ),
    shell:
        "python -m scripts.model_card --experiment {wildcards.experiment:q} --split-summary {input.split:q}"
        " --structure-summary {input.structure:q} --manifest {input.manifest:q}"
        " --backbone-json {input.backbone:q} --metrics {input.metrics:q} --calibration {input.calibration:q}"
        " --evaluations {input.evaluations:q} --ir-json {input.irs:q} {params.selected}"
        " --dataset {params.dataset:q} --backbone {params.backbone:q} --selection {params.selection:q}"
        " --split {params.split:q} --output {output:q} > {log} 2>&1"
