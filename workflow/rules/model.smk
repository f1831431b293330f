# Model stages: backbone -> backbone IRs -> features (one job per shard) -> head per
# experiment, cross-validated then refit (-> fine-tuning) -> selection -> frozen model.


rule untrained_backbone:
    """A randomly initialised Inception V3 in the official checkpoint format (offline, tests)."""
    input:
        code=code("model.backbone"),
    output:
        LAYOUT.untrained_checkpoint(UNTRAINED_FILE),
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
        pb=LAYOUT.backbone_pb(),
        info=LAYOUT.backbone_json(),
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
        spatial_tensor=config["backbone"]["spatial_tensor"] or "",
        extra_endpoints=config["backbone"]["extra_endpoints"],
        untrained="--untrained" if UNTRAINED else "",
    shell:
        "python -m scripts.model.backbone prepare --kind {params.kind} --source {input.source:q}"
        " --output-pb {output.pb:q} --output-json {output.info:q} --input-size {params.size}"
        " --input-range {params.low} {params.high} {params.untrained}"
        " --graph-member={params.member:q} --input-tensor={params.input_tensor:q}"
        " --bottleneck-tensor={params.bottleneck_tensor:q} --spatial-tensor={params.spatial_tensor:q}"
        " --extra-endpoints {params.extra_endpoints:q}"
        " > {log} 2>&1"


rule backbone_ir:
    """A backbone as OpenVINO IR at one precision (INT8: NNCF, calibrated on training images)."""
    input:
        pb=LAYOUT.backbone_pb("{root}"),
        info=LAYOUT.backbone_json("{root}"),
        train_tfrecords=lambda wildcards: (
            tfrecord_shards("train") if wildcards.precision == "INT8" else []
        ),
        code=code("model.backbone_ir"),
    output:
        xml=LAYOUT.backbone_ir("{root}", "{precision}", "xml"),
        bin=LAYOUT.backbone_ir("{root}", "{precision}", "bin"),
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
        tfrecord=LAYOUT.tfrecord("{split}", "{shard}", "{num_shards}"),
        info=LAYOUT.backbone_json("{root}"),
        model=engine_files,
        code=code("model.bottlenecks"),
    output:
        LAYOUT.feature_shard(
            "{root}",
            "{variant}",
            "{engine}",
            "{kind}",
            layout_shard_name("{split}", "{shard}", "{num_shards}"),
        ),
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
            LAYOUT.feature_shard(
                wildcards.root,
                wildcards.variant,
                wildcards.engine,
                wildcards.kind,
                shard_name(wildcards.split, shard),
            )
            for shard in range(shard_count(wildcards.split))
        ],
        code=code("model.bottlenecks"),
    output:
        LAYOUT.features("{root}", "{variant}", "{engine}", "{kind}", "{split}"),
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
    """Cross-validate one experiment's head over training + validation, then refit it on both."""
    input:
        train=lambda wildcards: features(wildcards.experiment, "train", root="backbone"),
        augmented=lambda wildcards: augmented_features(
            wildcards.experiment, root="backbone"
        ),
        # The training images' test-time views: held-out folds are scored as deployed.
        train_views=lambda wildcards: view_features(
            wildcards.experiment, "train", root="backbone"
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
        labels=LAYOUT.labels(),
        # Its optional `group` column keeps an image group in one cross-validation fold.
        manifest=LAYOUT.manifest(),
        info=LAYOUT.backbone_json(),
        code=code("model.retrain"),
    output:
        head=LAYOUT.head("{experiment}"),
        history=LAYOUT.history("{experiment}"),
        tensorboard=directory(LAYOUT.tensorboard("{experiment}")),
        metrics=LAYOUT.metrics("{experiment}"),
        predictions=LAYOUT.test_predictions("{experiment}"),
        oof=LAYOUT.oof_predictions("{experiment}"),
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
        evaluation=metrics_evaluation(),
    shell:
        # One BLAS thread per job: as fast here, and results do not depend on the core count.
        "export OPENBLAS_NUM_THREADS={threads} OMP_NUM_THREADS={threads};"
        " python -m scripts.model.retrain train --train {input.train:q} --augmented {input.augmented:q}"
        " --train-views {input.train_views:q} --manifest {input.manifest:q}"
        " --validation {input.validation:q} --validation-views {input.validation_views:q}"
        " --test {input.test:q} --test-views {input.test_views:q} --labels {input.labels:q}"
        " --backbone-json {input.info:q} --settings {params.settings:q} --experiment {wildcards.experiment}"
        " --output-head {output.head:q} --output-history {output.history:q}"
        " --output-tensorboard {output.tensorboard:q} --output-metrics {output.metrics:q}"
        " --output-predictions {output.predictions:q} --output-oof {output.oof:q}"
        " --evaluation {params.evaluation:q} > {log} 2>&1"


rule finetune:
    """Train the top of the backbone with the head on augmented images (TF-Slim trainable scopes)."""
    input:
        pb=LAYOUT.backbone_pb(),
        info=LAYOUT.backbone_json(),
        head=LAYOUT.head("{experiment}"),
        train_tfrecords=tfrecord_shards("train"),
        validation_tfrecords=tfrecord_shards("validation"),
        code=code("model.finetune"),
    output:
        pb=LAYOUT.finetuned("{experiment}", "backbone.pb"),
        info=LAYOUT.finetuned("{experiment}", "backbone.json"),
        head=LAYOUT.finetuned("{experiment}", "head.npz"),
        history=LAYOUT.finetuned("{experiment}", "history.csv"),
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
        head=LAYOUT.finetuned("{experiment}", "head.npz"),
        history=LAYOUT.finetuned("{experiment}", "history.csv"),
        info=LAYOUT.finetuned("{experiment}", "backbone.json"),
        train=lambda wildcards: features(wildcards.experiment, "train"),
        validation=lambda wildcards: features(wildcards.experiment, "validation"),
        validation_views=lambda wildcards: view_features(
            wildcards.experiment, "validation"
        ),
        test=lambda wildcards: features(wildcards.experiment, "test"),
        test_views=lambda wildcards: view_features(wildcards.experiment, "test"),
        labels=LAYOUT.labels(),
        code=code("model.retrain"),
    output:
        metrics=LAYOUT.finetuned("{experiment}", "metrics.json"),
        predictions=LAYOUT.finetuned("{experiment}", "test_predictions.npz"),
        oof=LAYOUT.finetuned("{experiment}", "oof_predictions.npz"),
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
        settings=lambda wildcards: head_settings(wildcards.experiment, folds=False),
        evaluation=metrics_evaluation(),
    shell:
        "export OPENBLAS_NUM_THREADS={threads} OMP_NUM_THREADS={threads};"
        " python -m scripts.model.retrain score --head {input.head:q} --history {input.history:q} --mode finetune"
        " --train {input.train:q} --validation {input.validation:q}"
        " --validation-views {input.validation_views:q} --test {input.test:q} --test-views {input.test_views:q}"
        " --labels {input.labels:q} --backbone-json {input.info:q} --settings {params.settings:q}"
        " --experiment {wildcards.experiment} --output-metrics {output.metrics:q}"
        " --output-predictions {output.predictions:q} --output-oof {output.oof:q}"
        " --evaluation {params.evaluation:q} > {log} 2>&1"


checkpoint select:
    """The best experiment by cross-validation (never the test split): selected.json."""
    input:
        metrics=[final_metrics(experiment) for experiment in EXPERIMENTS],
        code=code("model.select"),
    output:
        selected=LAYOUT.selected(),
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
        pb=lambda wildcards: LAYOUT.backbone_pb(backbone_root(wildcards.experiment)),
        info=lambda wildcards: LAYOUT.backbone_json(backbone_root(wildcards.experiment)),
        head=lambda wildcards: final_model(wildcards.experiment, "head.npz"),
        labels=LAYOUT.labels(),
        test_tfrecords=tfrecord_shards("test"),
        # The frozen graph computes float32 features: its check compares with those.
        test_features=lambda wildcards: features(
            wildcards.experiment, "test", float32_engine()
        ),
        test_view_features=lambda wildcards: view_features(
            wildcards.experiment, "test", float32_engine()
        ),
        calibration=LAYOUT.calibration("{experiment}"),
        code=code("model.freeze"),
    output:
        pb=LAYOUT.frozen_model("{experiment}"),
        info=LAYOUT.model_json("{experiment}"),
        labels=LAYOUT.model_labels("{experiment}"),
        check=LAYOUT.freeze_check("{experiment}"),
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
        " --calibration {input.calibration:q} --output-pb {output.pb:q} --output-json {output.info:q} --output-labels {output.labels:q}"
        " --output-check {output.check:q} > {log} 2>&1"
