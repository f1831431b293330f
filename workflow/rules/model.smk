# Model stages: backbone -> bottlenecks (one job per shard) -> retrain -> freeze.

if UNTRAINED:

    rule untrained_backbone:
        """A randomly initialised Inception V3 in the official checkpoint format (offline, tests)."""
        input:
            code=code("model/backbone"),
        output:
            backbone_download(),
        params:
            seed=config["backbone"]["untrained_seed"],
            size=config["backbone"]["input_size"],
        log:
            f"{LOGS}/untrained_backbone.log",
        benchmark:
            f"{RUNTIME}/untrained_backbone.tsv"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=10,
        conda:
            env("tensorflow")
        shell:
            "python -m scripts.backbone untrained --output {output:q} --seed {params.seed}"
            " --size {params.size} > {log} 2>&1"

else:

    rule download_backbone:
        """Fetch the checkpoint or frozen graph (URL or local path), verifying its sha256."""
        input:
            code=code("data/fetch"),
        output:
            backbone_download(),
        params:
            source=config["backbone"]["source"],
            sha256=config["backbone"]["sha256"] or "",
            retries=config["download"]["retries"],
            timeout=config["download"]["timeout_seconds"],
        log:
            f"{LOGS}/download_backbone.log",
        benchmark:
            f"{RUNTIME}/download_backbone.tsv"
        threads: 1
        resources:
            mem_mb=200,
            runtime=60,
        conda:
            env("data")
        shell:
            "python -m scripts.data.fetch --source {params.source:q} --output {output:q}"
            " --sha256={params.sha256:q} --retries {params.retries} --timeout {params.timeout}"
            " > {log} 2>&1"


rule extract_backbone:
    """Unpack the backbone archive with the same safe extraction as the data."""
    input:
        archive=backbone_download(),
        code=code("data/archive"),
    output:
        directory(f"{BACKBONE}/unpacked"),
    params:
        max_bytes=config["download"]["max_extract_bytes"],
    log:
        f"{LOGS}/extract_backbone.log",
    benchmark:
        f"{RUNTIME}/extract_backbone.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=30,
    conda:
        env("data")
    shell:
        "python -m scripts.data.archive --archive {input.archive:q} --output {output:q}"
        " --max-bytes {params.max_bytes} > {log} 2>&1"


rule backbone:
    """Restore (or cut) the backbone and freeze it up to the bottleneck: backbone.pb."""
    input:
        source=backbone_unpacked(),
        code=code("model/backbone"),
    output:
        pb=f"{BACKBONE}/backbone.pb",
        info=f"{BACKBONE}/backbone.json",
    params:
        kind=config["backbone"]["kind"],
        size=config["backbone"]["input_size"],
        low=config["backbone"]["input_range"][0],
        high=config["backbone"]["input_range"][1],
        member=config["backbone"]["graph_member"] or "",
        input_tensor=config["backbone"]["input_tensor"] or "",
        bottleneck_tensor=config["backbone"]["bottleneck_tensor"] or "",
        untrained="--untrained" if UNTRAINED else "",
    log:
        f"{LOGS}/backbone.log",
    benchmark:
        f"{RUNTIME}/backbone.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        env("tensorflow")
    shell:
        "python -m scripts.backbone prepare --kind {params.kind} --source {input.source:q}"
        " --output-pb {output.pb:q} --output-json {output.info:q} --input-size {params.size}"
        " --input-range {params.low} {params.high} {params.untrained}"
        " --graph-member={params.member:q} --input-tensor={params.input_tensor:q}"
        " --bottleneck-tensor={params.bottleneck_tensor:q} > {log} 2>&1"


rule backbone_ir:
    """The backbone as OpenVINO IR, converted once for the `openvino` bottleneck backend."""
    input:
        pb=f"{BACKBONE}/backbone.pb",
        info=f"{BACKBONE}/backbone.json",
        code=code("model/backbone"),
    output:
        xml=f"{BACKBONE}/backbone.xml",
        bin=f"{BACKBONE}/backbone.bin",
    log:
        f"{LOGS}/backbone_ir.log",
    benchmark:
        f"{RUNTIME}/backbone_ir.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        env("openvino")
    shell:
        "python -m scripts.backbone ir --backbone-pb {input.pb:q} --backbone-json {input.info:q}"
        " --output-xml {output.xml:q} > {log} 2>&1"


rule bottleneck_shard:
    """Bottleneck features of one TFRecord shard (a cluster runs shards in parallel)."""
    input:
        tfrecord=f"{DATA}/tfrecords/{{split}}-{{shard}}-of-{{num_shards}}.tfrecord",
        pb=f"{BACKBONE}/backbone.pb",
        info=f"{BACKBONE}/backbone.json",
        ir=backbone_ir(),
        code=code("model/bottlenecks"),
    output:
        f"{BOTTLENECKS}/{{split}}-{{shard}}-of-{{num_shards}}.npz",
    params:
        batch_size=config["bottlenecks"]["batch_size"],
        backend=config["bottlenecks"]["backend"],
        ir_xml=lambda wildcards, input: input.ir[0] if input.ir else "",
    log:
        f"{LOGS}/bottlenecks/{{split}}-{{shard}}-of-{{num_shards}}.log",
    benchmark:
        f"{RUNTIME}/bottlenecks/{{split}}-{{shard}}-of-{{num_shards}}.tsv"
    wildcard_constraints:
        shard=r"\d{5}",
        num_shards=r"\d{5}",
    threads: config["bottlenecks"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        env("tensorflow")
    shell:
        "python -m scripts.bottlenecks shard --backbone-pb {input.pb:q} --backbone-json {input.info:q}"
        " --tfrecord {input.tfrecord:q} --output {output:q} --batch-size {params.batch_size}"
        " --threads {threads} --backend {params.backend} --ir-xml={params.ir_xml:q} > {log} 2>&1"


rule gather_bottlenecks:
    """All bottlenecks of one split in one file, in shard order."""
    input:
        shards=lambda wildcards: bottleneck_shards(wildcards.split),
        code=code("model/bottlenecks"),
    output:
        f"{BOTTLENECKS}/{{split}}.npz",
    log:
        f"{LOGS}/bottlenecks/gather_{{split}}.log",
    benchmark:
        f"{RUNTIME}/bottlenecks/gather_{{split}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        env("tensorflow")
    shell:
        "python -m scripts.bottlenecks gather --output {output:q} {input.shards:q} > {log} 2>&1"


rule retrain:
    """Train the new final layer of one experiment on the cached bottlenecks."""
    input:
        bottlenecks=expand(f"{BOTTLENECKS}/{{split}}.npz", split=SPLITS),
        labels=f"{DATA}/labels.txt",
        code=code("model/retrain"),
    output:
        head=f"{RESULTS}/{{experiment}}/model/head.npz",
        history=f"{RESULTS}/{{experiment}}/model/history.csv",
        tensorboard=directory(f"{RESULTS}/{{experiment}}/model/tensorboard"),
        metrics=f"{RESULTS}/{{experiment}}/model/metrics.json",
    params:
        settings=lambda wildcards: json.dumps(settings(wildcards.experiment, "train"), sort_keys=True),
        untrained="--untrained" if UNTRAINED else "",
        bottlenecks_dir=lambda wildcards, input: os.path.dirname(input.bottlenecks[0]),
        out_dir=lambda wildcards, output: os.path.dirname(output.head),
    log:
        f"{LOGS}/{{experiment}}/retrain.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/retrain.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        env("tensorflow")
    shell:
        "python -m scripts.retrain --bottlenecks-dir {params.bottlenecks_dir:q} --labels {input.labels:q}"
        " --settings {params.settings:q} --out-dir {params.out_dir:q}"
        " --experiment {wildcards.experiment} {params.untrained} > {log} 2>&1"


rule freeze:
    """One frozen .pb (image -> backbone -> head -> softmax), checked against the head."""
    input:
        pb=f"{BACKBONE}/backbone.pb",
        info=f"{BACKBONE}/backbone.json",
        head=f"{RESULTS}/{{experiment}}/model/head.npz",
        labels=f"{DATA}/labels.txt",
        test_tfrecords=tfrecord_shards("test"),
        test_bottlenecks=f"{BOTTLENECKS}/test.npz",
        code=code("model/freeze"),
    output:
        pb=f"{RESULTS}/{{experiment}}/model/frozen_model.pb",
        info=f"{RESULTS}/{{experiment}}/model/model.json",
        labels=f"{RESULTS}/{{experiment}}/model/labels.txt",
        check=f"{RESULTS}/{{experiment}}/model/freeze_check.json",
        predictions=f"{RESULTS}/{{experiment}}/model/test_predictions.npz",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.pb),
    log:
        f"{LOGS}/{{experiment}}/freeze.log",
    benchmark:
        f"{RUNTIME}/{{experiment}}/freeze.tsv"
    threads: config["bottlenecks"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        env("tensorflow")
    shell:
        "python -m scripts.freeze --backbone-pb {input.pb:q} --backbone-json {input.info:q}"
        " --head {input.head:q} --labels {input.labels:q} --test-tfrecords {input.test_tfrecords:q}"
        " --test-bottlenecks {input.test_bottlenecks:q} --out-dir {params.out_dir:q}"
        " --threads {threads} > {log} 2>&1"
