# The model repository for OpenVINO Model Server and KServe (docs/serving.md):
#   snakemake --cores 2 serving
# results/serving/models/<experiment>/<version>/ holds the deployed IR of serving.precision with
# ir.json, labels.json and the model card; <experiment>_pixels/ the same IR with the
# preprocessing built in; results/serving/config.json is OVMS's configuration.


rule serving_model:
    """One deployed experiment's version folder and its pixel-input twin."""
    input:
        xml=LAYOUT.ir_xml("{experiment}", config["serving"]["precision"]),
        bin=LAYOUT.ir_bin("{experiment}", config["serving"]["precision"]),
        info=LAYOUT.ir_json("{experiment}", config["serving"]["precision"]),
        card=model_card,
        code=code("serve.repository"),
    output:
        [
            LAYOUT.serving_model("{experiment}", SERVING_VERSION, name)
            for name in SERVING_FILES
        ],
        [
            LAYOUT.serving_model("{experiment}_pixels", SERVING_VERSION, name)
            for name in SERVING_FILES
        ],
    log:
        f"{LOGS}/{{experiment}}/serving_model.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/serving_model.tsv"
    conda:
        env("openvino")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        card=lambda wildcards, input: (
            f"--model-card {shlex.quote(input.card)}" if input.card else ""
        ),
        output_dir=lambda wildcards: serving_dir(wildcards.experiment),
        pixels_dir=lambda wildcards: serving_dir(wildcards.experiment, pixels=True),
    shell:
        "python -m scripts.serve.repository model --name {wildcards.experiment} --ir-xml {input.xml:q}"
        " --ir-json {input.info:q} {params.card} --output-dir {params.output_dir:q}"
        " --pixels-output-dir {params.pixels_dir:q} > {log} 2>&1"


rule serving_config:
    """OVMS's config.json listing every served model."""
    input:
        lambda wildcards: [
            LAYOUT.serving_model(experiment, SERVING_VERSION, "model.xml")
            for experiment in serving_experiments()
        ],
        code=code("serve.repository"),
    output:
        LAYOUT.serving_config(),
    log:
        f"{LOGS}/serving_config.log",
    conda:
        env("openvino")
    threads: 1
    resources:
        mem_mb=200,
        runtime=5,
    params:
        names=lambda wildcards: serving_experiments(),
    shell:
        "python -m scripts.serve.repository config --names {params.names:q} --output {output:q} > {log} 2>&1"
