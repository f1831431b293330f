# Deployment stages: frozen model -> OpenVINO IR (one job per precision) -> evaluation
# against TensorFlow on the test split -> benchmarks (one job per device and precision).
#
# Each job's params hold only the settings it uses, so that changing a benchmark setting
# reruns the benchmarks alone, and adding a device adds only that device's jobs.

MODEL_DIR = f"{RESULTS}/{{experiment}}/model"
IR_DIR = f"{RESULTS}/{{experiment}}/ir/{{precision}}"
BENCHMARK_DIR = f"{RESULTS}/{{experiment}}/benchmarks"


wildcard_constraints:
    precision="FP32|FP16|INT8",
    device=r"[A-Z][A-Z0-9_.]*",


rule ir:
    """Convert the frozen model to OpenVINO IR at one precision (INT8: NNCF, calibrated)."""
    input:
        pb=f"{MODEL_DIR}/frozen_model.pb",
        info=f"{MODEL_DIR}/model.json",
        train_tfrecords=lambda wildcards: tfrecord_shards("train") if wildcards.precision == "INT8" else [],
        code=code("deploy/ir"),
    output:
        xml=f"{IR_DIR}/model.xml",
        bin=f"{IR_DIR}/model.bin",
        info=f"{IR_DIR}/model.json",
    params:
        calibration=lambda wildcards: export_option(wildcards, "int8_calibration_images", ["INT8"]),
        out_dir=lambda wildcards, output: os.path.dirname(output.xml),
    log:
        f"{LOGS}/{{experiment}}/ir_{{precision}}.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/ir_{{precision}}.tsv"
    threads: config["bottlenecks"]["threads"]
    resources:
        mem_mb=6000,
        runtime=30,
    conda:
        env("openvino")
    shell:
        "python -m scripts.ir --model-pb {input.pb:q} --precision {wildcards.precision}"
        " --out-dir {params.out_dir:q} --train-tfrecords {input.train_tfrecords:q}"
        " {params.calibration} --threads {threads} > {log} 2>&1"


rule evaluate_ir:
    """Test-split metrics of one IR and its agreement with TensorFlow, with the export thresholds."""
    input:
        xml=f"{IR_DIR}/model.xml",
        bin=f"{IR_DIR}/model.bin",
        info=f"{IR_DIR}/model.json",
        tensorflow=f"{MODEL_DIR}/test_predictions.npz",
        test_tfrecords=tfrecord_shards("test"),
        code=code("deploy/evaluate_ir"),
    output:
        f"{IR_DIR}/evaluation.json",
    params:
        min_fp_agreement=lambda wildcards: export_option(wildcards, "min_fp_agreement", ["FP32", "FP16"]),
        max_int8_drop=lambda wildcards: export_option(wildcards, "max_int8_accuracy_drop", ["INT8"]),
    log:
        f"{LOGS}/{{experiment}}/evaluate_ir_{{precision}}.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/evaluate_ir_{{precision}}.tsv"
    threads: config["bottlenecks"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        env("openvino")
    shell:
        "python -m scripts.evaluate_ir ir --ir-xml {input.xml:q} --tensorflow {input.tensorflow:q}"
        " --test-tfrecords {input.test_tfrecords:q} --output {output:q} {params.min_fp_agreement}"
        " {params.max_int8_drop} --threads {threads} > {log} 2>&1"


rule benchmark:
    """Latency and throughput of one IR on one OpenVINO device (or a skipped absent device)."""
    input:
        xml=f"{IR_DIR}/model.xml",
        bin=f"{IR_DIR}/model.bin",
        info=f"{IR_DIR}/model.json",
        code=code("deploy/benchmark"),
    output:
        f"{BENCHMARK_DIR}/{{device}}-{{precision}}.json",
    params:
        modes=config["benchmark"]["modes"],
        seconds=config["benchmark"]["seconds"],
        skip_absent="--skip-absent" if config["benchmark"]["skip_absent_devices"] else "",
    log:
        f"{LOGS}/{{experiment}}/benchmark_{{device}}-{{precision}}.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/benchmark_{{device}}-{{precision}}.tsv"
    # All the cores: a benchmark that shares the machine with other jobs measures them too.
    threads: all_cores()
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        env("openvino")
    shell:
        "python -m scripts.benchmark run --ir-xml {input.xml:q} --device {wildcards.device}"
        " --modes {params.modes} --seconds {params.seconds} {params.skip_absent}"
        " --threads {threads} --output {output:q} > {log} 2>&1"


rule gather_benchmarks:
    """One experiment's benchmarks as one table: a row per device, precision and mode."""
    input:
        results=lambda wildcards: expand(
            f"{BENCHMARK_DIR}/{{device}}-{{precision}}.json", experiment=wildcards.experiment,
            device=config["benchmark"]["devices"], precision=precisions(wildcards.experiment)),
        code=code("deploy/benchmark"),
    output:
        csv=f"{BENCHMARK_DIR}/benchmarks.csv",
        json=f"{BENCHMARK_DIR}/benchmarks.json",
    log:
        f"{LOGS}/{{experiment}}/gather_benchmarks.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/gather_benchmarks.tsv"
    threads: 1
    resources:
        mem_mb=200,
        runtime=5,
    conda:
        env("openvino")
    shell:
        "python -m scripts.benchmark gather --output-csv {output.csv:q} --output-json {output.json:q}"
        " {input.results:q} > {log} 2>&1"
