# Model stages: backbone -> backbone IRs -> features (one job per shard) -> head per
# experiment (-> fine-tuning) -> selection on validation -> frozen model.


rule untrained_backbone:
    """A randomly initialised Inception V3 in the official checkpoint format (offline, tests)."""
    input:
        code=code("model.backbone"),
    output:
        f"{BACKBONE}/untrained/{UNTRAINED_FILE}",
    log:
        f"{LOGS}/untrained_backbone.log",
    benchmark:
        f"{RUNTIME}/untrained_backbone.tsv"
    conda:
        env("tensorflow")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        seed=config["backbone"]["untrained_seed"],
        size=config["backbone"]["input_size"],
    shell:
        "python -m scripts.model.backbone untrained --output {output:q} --seed {params.seed}"
        " --size {params.size} > {log} 2>&1"


rule backbone:
    """Restore (or cut) the backbone and freeze it up to the features: backbone.pb."""
    input:
        source=backbone_unpacked(),
        code=code("model.backbone"),
    output:
        pb=f"{BACKBONE}/backbone.pb",
        info=f"{BACKBONE}/backbone.json",
    log:
        f"{LOGS}/backbone.log",
    benchmark:
        f"{RUNTIME}/backbone.tsv"
    conda:
        env("tensorflow")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        kind=config["backbone"]["kind"],
        size=config["backbone"]["input_size"],
        low=config["backbone"]["input_range"][0],
        high=config["backbone"]["input_range"][1],
        member=config["backbone"]["graph_member"] or "",
        input_tensor=config["backbone"]["input_tensor"] or "",
        bottleneck_tensor=config["backbone"]["bottleneck_tensor"] or "",
        extra_endpoints=config["backbone"]["extra_endpoints"],
        untrained="--untrained" if UNTRAINED else "",
    shell:
        "python -m scripts.model.backbone prepare --kind {params.kind} --source {input.source:q}"
        " --output-pb {output.pb:q} --output-json {output.info:q} --input-size {params.size}"
        " --input-range {params.low} {params.high} {params.untrained}"
        " --graph-member={params.member:q} --input-tensor={params.input_tensor:q}"
        " --bottleneck-tensor={params.bottleneck_tensor:q} --extra-endpoints {params.extra_endpoints:q}"
        " > {log} 2>&1"


rule backbone_ir:
    """A backbone as OpenVINO IR at one precision (INT8: NNCF, calibrated on training images)."""
    input:
        pb=f"{RESULTS}/{{root}}/backbone.pb",
        info=f"{RESULTS}/{{root}}/backbone.json",
        train_tfrecords=lambda wildcards: (
            tfrecord_shards("train") if wildcards.precision == "INT8" else []
        ),
        code=code("model.backbone_ir"),
    output:
        xml=f"{RESULTS}/{{root}}/ir/{{precision}}/backbone.xml",
        bin=f"{RESULTS}/{{root}}/ir/{{precision}}/backbone.bin",
    log:
        f"{LOGS}/{{root}}/backbone_ir_{{precision}}.log",
    benchmark:
        f"{RUNTIME}/{{root}}/backbone_ir_{{precision}}.tsv"
    conda:
        env("openvino")
    threads: config["inference"]["threads"]
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        calibration=calibration_options,
    shell:
        "python -m scripts.model.backbone_ir --backbone-pb {input.pb:q} --backbone-json {input.info:q}"
        " --precision {wildcards.precision} --output-xml {output.xml:q}"
        " --train-tfrecords {input.train_tfrecords:q} {params.calibration} --threads {threads} > {log} 2>&1"


rule bottleneck_shard:
    """Features of one TFRecord shard: plain, one test-time view, or augmented copies."""
    input:
        tfrecord=f"{DATA}/tfrecords/{{split}}-{{shard}}-of-{{num_shards}}.tfrecord",
        info=f"{RESULTS}/{{root}}/backbone.json",
        model=engine_files,
        code=code("model.bottlenecks"),
    output:
        f"{RESULTS}/{{root}}/features/{{variant}}/{{engine}}/{{kind}}/{{split}}-{{shard}}-of-{{num_shards}}.npz",
    log:
        f"{LOGS}/{{root}}/features/{{variant}}/{{engine}}/{{kind}}/{{split}}-{{shard}}-of-{{num_shards}}.log",
    benchmark:
        f"{RUNTIME}/{{root}}/features/{{variant}}/{{engine}}/{{kind}}/{{split}}-{{shard}}-of-{{num_shards}}.tsv"
    conda:
        env("tensorflow")
    threads: config["inference"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        central_fraction=lambda wildcards: VARIANTS[wildcards.variant][
            "central_fraction"
        ],
        resize=lambda wildcards: VARIANTS[wildcards.variant]["resize"],
        augment=lambda wildcards: json.dumps(
            AUGMENTS.get(wildcards.kind, {}), sort_keys=True
        ),
        batch_size=config["inference"]["batch_size"],
    shell:
        "python -m scripts.model.bottlenecks shard --backbone-json {input.info:q} --model {input.model[0]:q}"
        " --tfrecord {input.tfrecord:q} --output {output:q} --kind {wildcards.kind} --augment {params.augment:q}"
        " --central-fraction {params.central_fraction} --resize {params.resize}"
        " --batch-size {params.batch_size} --threads {threads} > {log} 2>&1"


rule gather_bottlenecks:
    """All features of one split in one file, in shard order."""
    input:
        shards=lambda wildcards: [
            f"{RESULTS}/{wildcards.root}/features/{wildcards.variant}/{wildcards.engine}/{wildcards.kind}/"
            f"{shard_name(wildcards.split, shard)}.npz"
            for shard in range(shard_count(wildcards.split))
        ],
        code=code("model.bottlenecks"),
    output:
        f"{RESULTS}/{{root}}/features/{{variant}}/{{engine}}/{{kind}}/{{split}}.npz",
    log:
        f"{LOGS}/{{root}}/features/{{variant}}/{{engine}}/{{kind}}/gather_{{split}}.log",
    benchmark:
        f"{RUNTIME}/{{root}}/features/{{variant}}/{{engine}}/{{kind}}/gather_{{split}}.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m scripts.model.bottlenecks gather --output {output:q} {input.shards:q} > {log} 2>&1"


rule retrain:
    """Train the new final layer of one experiment on the shared backbone's cached features."""
    input:
        train=lambda wildcards: features(wildcards.experiment, "train", root="backbone"),
        augmented=lambda wildcards: augmented_features(
            wildcards.experiment, root="backbone"
        ),
        validation=lambda wildcards: features(
            wildcards.experiment, "validation", root="backbone"
        ),
        validation_views=lambda wildcards: view_features(
            wildcards.experiment, "validation", root="backbone"
        ),
        test=lambda wildcards: features(wildcards.experiment, "test", root="backbone"),
        test_views=lambda wildcards: view_features(
            wildcards.experiment, "test", root="backbone"
        ),
        labels=f"{DATA}/labels.json",
        info=f"{BACKBONE}/backbone.json",
        code=code("model.retrain"),
    output:
        head=f"{RESULTS}/{{experiment}}/model/head.npz",
        history=f"{RESULTS}/{{experiment}}/model/history.csv",
        tensorboard=directory(f"{RESULTS}/{{experiment}}/model/tensorboard"),
        metrics=f"{RESULTS}/{{experiment}}/model/metrics.json",
        predictions=f"{RESULTS}/{{experiment}}/model/test_predictions.npz",
    log:
        f"{LOGS}/{{experiment}}/retrain.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/retrain.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=lambda wildcards: head_settings(wildcards.experiment),
    shell:
        # One BLAS thread per job: as fast here, and results do not depend on the core count.
        "export OPENBLAS_NUM_THREADS={threads} OMP_NUM_THREADS={threads};"
        " python -m scripts.model.retrain train --train {input.train:q} --augmented {input.augmented:q}"
        " --validation {input.validation:q} --validation-views {input.validation_views:q}"
        " --test {input.test:q} --test-views {input.test_views:q} --labels {input.labels:q}"
        " --backbone-json {input.info:q} --settings {params.settings:q} --experiment {wildcards.experiment}"
        " --output-head {output.head:q} --output-history {output.history:q}"
        " --output-tensorboard {output.tensorboard:q} --output-metrics {output.metrics:q}"
        " --output-predictions {output.predictions:q} > {log} 2>&1"


rule finetune:
    """Train the top of the backbone with the head on augmented images (TF-Slim trainable scopes)."""
    input:
        pb=f"{BACKBONE}/backbone.pb",
        info=f"{BACKBONE}/backbone.json",
        head=f"{RESULTS}/{{experiment}}/model/head.npz",
        train_tfrecords=tfrecord_shards("train"),
        validation_tfrecords=tfrecord_shards("validation"),
        code=code("model.finetune"),
    output:
        pb=f"{RESULTS}/{{experiment}}/finetune/backbone.pb",
        info=f"{RESULTS}/{{experiment}}/finetune/backbone.json",
        head=f"{RESULTS}/{{experiment}}/finetune/head.npz",
        history=f"{RESULTS}/{{experiment}}/finetune/history.csv",
    log:
        f"{LOGS}/{{experiment}}/finetune.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/finetune.tsv"
    conda:
        env("tensorflow")
    threads: config["inference"]["threads"]
    resources:
        mem_mb=8000,
        runtime=600,
    params:
        settings=lambda wildcards: finetune_settings(wildcards.experiment),
        central_fraction=lambda wildcards: settings(wildcards.experiment)[
            "preprocess"
        ]["central_fraction"],
        resize=lambda wildcards: settings(wildcards.experiment)["preprocess"]["resize"],
    shell:
        "python -m scripts.model.finetune --backbone-pb {input.pb:q} --backbone-json {input.info:q}"
        " --head {input.head:q} --central-fraction {params.central_fraction} --resize {params.resize}"
        " --train-tfrecords {input.train_tfrecords:q} --validation-tfrecords {input.validation_tfrecords:q}"
        " --settings {params.settings:q} --output-backbone-pb {output.pb:q}"
        " --output-backbone-json {output.info:q} --output-head {output.head:q}"
        " --history {output.history:q} --threads {threads} > {log} 2>&1"


rule score_finetune:
    """Validation and test metrics of a fine-tuned model, on its own backbone's cached features."""
    input:
        head=f"{RESULTS}/{{experiment}}/finetune/head.npz",
        history=f"{RESULTS}/{{experiment}}/finetune/history.csv",
        info=f"{RESULTS}/{{experiment}}/finetune/backbone.json",
        train=lambda wildcards: features(wildcards.experiment, "train"),
        validation=lambda wildcards: features(wildcards.experiment, "validation"),
        validation_views=lambda wildcards: view_features(
            wildcards.experiment, "validation"
        ),
        test=lambda wildcards: features(wildcards.experiment, "test"),
        test_views=lambda wildcards: view_features(wildcards.experiment, "test"),
        labels=f"{DATA}/labels.json",
        code=code("model.retrain"),
    output:
        metrics=f"{RESULTS}/{{experiment}}/finetune/metrics.json",
        predictions=f"{RESULTS}/{{experiment}}/finetune/test_predictions.npz",
    log:
        f"{LOGS}/{{experiment}}/score_finetune.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/score_finetune.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=lambda wildcards: head_settings(wildcards.experiment),
    shell:
        "export OPENBLAS_NUM_THREADS={threads} OMP_NUM_THREADS={threads};"
        " python -m scripts.model.retrain score --head {input.head:q} --history {input.history:q} --mode finetune"
        " --train {input.train:q} --validation {input.validation:q}"
        " --validation-views {input.validation_views:q} --test {input.test:q} --test-views {input.test_views:q}"
        " --labels {input.labels:q} --backbone-json {input.info:q} --settings {params.settings:q}"
        " --experiment {wildcards.experiment} --output-metrics {output.metrics:q}"
        " --output-predictions {output.predictions:q} > {log} 2>&1"


checkpoint select:
    """The best experiment on the validation split (never the test split): selected.json."""
    input:
        metrics=[final_metrics(experiment) for experiment in EXPERIMENTS],
        code=code("model.select"),
    output:
        selected=f"{RESULTS}/selected.json",
    log:
        f"{LOGS}/select.log",
    benchmark:
        f"{RUNTIME}/select.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        metric=config["selection"]["metric"],
        experiments=[
            f"{experiment}={final_metrics(experiment)}" for experiment in EXPERIMENTS
        ],
    shell:
        "python -m scripts.model.select --metric {params.metric} --output {output.selected:q}"
        " --experiments {params.experiments:q} > {log} 2>&1"


rule freeze:
    """One frozen .pb (image -> views -> backbone -> head -> softmax), checked on real test images."""
    input:
        pb=lambda wildcards: f"{RESULTS}/{backbone_root(wildcards.experiment)}/backbone.pb",
        info=lambda wildcards: f"{RESULTS}/{backbone_root(wildcards.experiment)}/backbone.json",
        head=lambda wildcards: f"{model_dir(wildcards.experiment)}/head.npz",
        labels=f"{DATA}/labels.json",
        test_tfrecords=tfrecord_shards("test"),
        # The frozen graph computes float32 features: its check compares with those.
        test_features=lambda wildcards: features(
            wildcards.experiment, "test", float32_engine()
        ),
        test_view_features=lambda wildcards: view_features(
            wildcards.experiment, "test", float32_engine()
        ),
        code=code("model.freeze"),
    output:
        pb=f"{RESULTS}/{{experiment}}/model/frozen_model.pb",
        info=f"{RESULTS}/{{experiment}}/model/model.json",
        labels=f"{RESULTS}/{{experiment}}/model/labels.json",
        check=f"{RESULTS}/{{experiment}}/model/freeze_check.json",
    log:
        f"{LOGS}/{{experiment}}/freeze.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/freeze.tsv"
    conda:
        env("tensorflow")
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
        "python -m scripts.model.freeze --backbone-pb {input.pb:q} --backbone-json {input.info:q}"
        " --head {input.head:q} --labels {input.labels:q} --test-tfrecords {input.test_tfrecords:q}"
        " --test-features {input.test_features:q} --test-view-features {input.test_view_features:q}"
        " --views {params.views} --central-fraction {params.central_fraction} --resize {params.resize}"
        " --check-images {params.check_images} --tolerance {params.tolerance} --threads {threads}"
        " --output-pb {output.pb:q} --output-json {output.info:q} --output-labels {output.labels:q}"
        " --output-check {output.check:q} > {log} 2>&1"
