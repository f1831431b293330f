# Deployment stages: backbone IR + head -> deployed IR per precision (checked on real test
# images) -> accuracy from the cached features of that backbone IR -> benchmarks (one job
# per device and precision). By default for the experiment `select` chose.
#
# Each job's params hold only the settings it uses, so that changing a benchmark setting
# reruns the benchmarks alone, and adding a device adds only that device's jobs.


wildcard_constraints:
    device=r"[A-Z][A-Z0-9_.]*",


rule ir:
    """The deployed IR of one precision: that precision's backbone IR with the head appended."""
    input:
        backbone_xml=lambda wildcards: backbone_ir_files(wildcards)[0],
        backbone_bin=lambda wildcards: backbone_ir_files(wildcards)[1],
        head=lambda wildcards: final_model(wildcards.experiment, "head.npz"),
        info=lambda wildcards: LAYOUT.backbone_json(backbone_root(wildcards.experiment)),
        labels=LAYOUT.labels(),
        test_tfrecords=tfrecord_shards("test"),
        test_features=lambda wildcards: features(
            wildcards.experiment, "test", wildcards.precision
        ),
        test_view_features=lambda wildcards: view_features(
            wildcards.experiment, "test", wildcards.precision
        ),
        calibration=LAYOUT.calibration("{experiment}"),
        frozen_check=LAYOUT.freeze_check("{experiment}"),
        code=code("deploy.ir"),
    output:
        xml=LAYOUT.ir_xml("{experiment}", "{precision}"),
        bin=LAYOUT.ir_bin("{experiment}", "{precision}"),
        info=LAYOUT.ir_json("{experiment}", "{precision}"),
    log:
        f"{LOGS}/{{experiment}}/ir_{{precision}}.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/ir_{{precision}}.tsv"
    conda:
        env("openvino")
    threads: config["inference"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        views=lambda wildcards: test_time_views(wildcards.experiment),
        central_fraction=lambda wildcards: settings(wildcards.experiment)[
            "preprocess"
        ]["central_fraction"],
        resize=lambda wildcards: settings(wildcards.experiment)["preprocess"]["resize"],
        check_images=lambda wildcards: settings(wildcards.experiment)["export"][
            "check_images"
        ],
        tolerance=lambda wildcards: settings(wildcards.experiment)["export"][
            "check_tolerance"
        ],
    shell:
        "python -m scripts.deploy.ir --backbone-xml {input.backbone_xml:q} --head {input.head:q}"
        " --backbone-json {input.info:q} --labels {input.labels:q} --views {params.views}"
        " --central-fraction {params.central_fraction} --resize {params.resize} --precision {wildcards.precision}"
        " --test-tfrecords {input.test_tfrecords:q} --test-features {input.test_features:q}"
        " --test-view-features {input.test_view_features:q} --check-images {params.check_images}"
        " --tolerance {params.tolerance} --threads {threads} --calibration {input.calibration:q}"
        " --frozen-check {input.frozen_check:q} --output-xml {output.xml:q}"
        " --output-json {output.info:q} > {log} 2>&1"


rule evaluate_ir:
    """Test-split accuracy of one IR from its backbone's cached features, against the trained model."""
    input:
        info=LAYOUT.ir_json("{experiment}", "{precision}"),
        head=lambda wildcards: final_model(wildcards.experiment, "head.npz"),
        test_features=lambda wildcards: features(
            wildcards.experiment, "test", wildcards.precision
        ),
        test_view_features=lambda wildcards: view_features(
            wildcards.experiment, "test", wildcards.precision
        ),
        reference=lambda wildcards: final_model(
            wildcards.experiment, "test_predictions.npz"
        ),
        code=code("deploy.evaluate_ir"),
    output:
        evaluation=LAYOUT.evaluation("{experiment}", "{precision}"),
        predictions=LAYOUT.ir_test_predictions("{experiment}", "{precision}"),
    log:
        f"{LOGS}/{{experiment}}/evaluate_ir_{{precision}}.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/evaluate_ir_{{precision}}.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        min_fp_agreement=lambda wildcards: export_option(
            wildcards, "min_fp_agreement", ["FP32", "FP16"]
        ),
        max_int8_drop=lambda wildcards: export_option(
            wildcards, "max_int8_accuracy_drop", ["INT8"]
        ),
        evaluation=metrics_evaluation(),
        trained_features=training_engine(),
    shell:
        "python -m scripts.deploy.evaluate_ir --ir-json {input.info:q} --head {input.head:q}"
        " --test-features {input.test_features:q} --test-view-features {input.test_view_features:q}"
        " --reference {input.reference:q} --trained-features {params.trained_features}"
        " --output {output.evaluation:q} {params.min_fp_agreement}"
        " {params.max_int8_drop} --evaluation {params.evaluation:q}"
        " --output-predictions {output.predictions:q} > {log} 2>&1"


rule benchmark:
    """Latency and throughput of one IR on one OpenVINO device (or a skipped absent device)."""
    input:
        xml=LAYOUT.ir_xml("{experiment}", "{precision}"),
        bin=LAYOUT.ir_bin("{experiment}", "{precision}"),
        info=LAYOUT.ir_json("{experiment}", "{precision}"),
        code=code("deploy.benchmark"),
    output:
        LAYOUT.benchmark("{experiment}", "{device}", "{precision}"),
    log:
        f"{LOGS}/{{experiment}}/benchmark_{{device}}-{{precision}}.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/benchmark_{{device}}-{{precision}}.tsv"
    conda:
        env("openvino")
    # All the cores: a benchmark that shares the machine with other jobs measures them too.
    threads: all_cores()
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        modes=config["benchmark"]["modes"],
        seconds=config["benchmark"]["seconds"],
        skip_absent=(
            "--skip-absent" if config["benchmark"]["skip_absent_devices"] else ""
        ),
    shell:
        "python -m scripts.deploy.benchmark run --ir-xml {input.xml:q} --ir-json {input.info:q}"
        " --device {wildcards.device} --modes {params.modes} --seconds {params.seconds} {params.skip_absent}"
        " --threads {threads} --output {output:q} > {log} 2>&1"


rule gather_benchmarks:
    """One experiment's benchmarks as one table: a row per device, precision and mode."""
    input:
        results=lambda wildcards: expand(
            LAYOUT.benchmark("{experiment}", "{device}", "{precision}"),
            experiment=wildcards.experiment,
            device=config["benchmark"]["devices"],
            precision=precisions(wildcards.experiment),
        ),
        code=code("deploy.benchmark"),
    output:
        csv=LAYOUT.benchmarks("{experiment}", "csv"),
        json=LAYOUT.benchmarks("{experiment}", "json"),
    log:
        f"{LOGS}/{{experiment}}/gather_benchmarks.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/gather_benchmarks.tsv"
    conda:
        env("openvino")
    threads: 1
    resources:
        mem_mb=200,
        runtime=5,
    shell:
        "python -m scripts.deploy.benchmark gather --output-csv {output.csv:q} --output-json {output.json:q}"
        " {input.results:q} > {log} 2>&1"
