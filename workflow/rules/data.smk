# Data stages: download -> extract -> structure -> split -> TFRecord shards.


rule synthetic_images:
    """Draw the offline image set (shape classes); no download needed."""
    input:
        code=code("data.synthetic"),
    output:
        directory(LAYOUT.synthetic()),
    log:
        f"{LOGS}/synthetic_images.log",
    benchmark:
        f"{RUNTIME}/synthetic_images.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        synthetic=config["synthetic"],
    shell:
        "python -m scripts.data.synthetic --output {output} --classes {params.synthetic[classes]}"
        " --images-per-class {params.synthetic[images_per_class]}"
        " --size {params.synthetic[image_size]} --seed {params.synthetic[seed]} > {log} 2>&1"


rule download:
    """Fetch the data set's or the backbone's file (http(s), file:// or local path), verifying its sha256."""
    input:
        code=code("data.fetch"),
    output:
        LAYOUT.download("{source}", "{name}"),
    log:
        f"{LOGS}/download_{{source}}_{{name}}.log",
    benchmark:
        f"{RUNTIME}/download_{{source}}_{{name}}.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=200,
        runtime=120,
    params:
        url=lambda wildcards: source_setting(wildcards.source, "source"),
        sha256=lambda wildcards: source_setting(wildcards.source, "sha256") or "",
        retries=config["download"]["retries"],
        timeout=config["download"]["timeout_seconds"],
    shell:
        "python -m scripts.data.fetch --source {params.url:q} --output {output:q}"
        " --sha256={params.sha256:q} --retries {params.retries} --timeout {params.timeout}"
        " > {log} 2>&1"


rule extract:
    """Unpack an archive safely: no path may escape the target; size, member count and depth are capped."""
    input:
        archive=lambda wildcards: archive_of(wildcards.source),
        code=code("data.archive"),
    output:
        directory(LAYOUT.unpacked("{source}")),
    log:
        f"{LOGS}/extract_{{source}}.log",
    benchmark:
        f"{RUNTIME}/extract_{{source}}.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=500,
        runtime=60,
    params:
        max_bytes=config["download"]["max_extract_bytes"],
        max_members=config["download"]["max_members"],
        max_depth=config["download"]["max_depth"],
    shell:
        "python -m scripts.data.archive --archive {input.archive:q} --output {output:q}"
        " --max-bytes {params.max_bytes} --max-members {params.max_members} --max-depth {params.max_depth}"
        " > {log} 2>&1"


rule structure:
    """Every image decoded; index of the kept ones per class (plain RGB JPEGs used in place,
    others converted to PNG under images/); rejects and duplicates listed."""
    input:
        raw=raw_tree(),
        code=code("data.structure"),
    output:
        images=directory(LAYOUT.images()),
        index=LAYOUT.index(),
        rejects=report(
            LAYOUT.rejects(), caption="../report/rejects.rst", category="Data"
        ),
        duplicates=report(
            LAYOUT.duplicates(),
            caption="../report/duplicates.rst",
            category="Data",
        ),
        summary=LAYOUT.structure_summary(),
    log:
        # Copies of the tables that errors point to: Snakemake deletes a failed job's outputs, not its logs.
        messages=f"{LOGS}/structure.log",
        rejects=f"{LOGS}/structure_rejects.tsv",
        duplicates=f"{LOGS}/structure_duplicates.tsv",
    benchmark:
        f"{RUNTIME}/structure.tsv"
    conda:
        env("base")
    threads: 2
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        layout=config["dataset"]["layout"],
        filename_regex=config["dataset"]["filename_regex"] or "",
        class_map=json.dumps(config["dataset"]["class_map"]),  # key order matters: first match wins
        max_image_bytes=config["dataset"]["max_image_bytes"],
    shell:
        "python -m scripts.data.structure --raw {input.raw:q} --out {output.images:q}"
        " --index {output.index:q} --rejects {output.rejects:q} --duplicates {output.duplicates:q}"
        " --summary {output.summary:q} --layout {params.layout}"
        " --filename-regex={params.filename_regex:q} --class-map {params.class_map:q}"
        " --max-image-bytes {params.max_image_bytes} --rejects-copy {log.rejects:q}"
        " --duplicates-copy {log.duplicates:q} --threads {threads} > {log.messages:q} 2>&1"


rule split:
    """Train/validation/test by a hash of each image's group (its content, or split.group_regex); manifest and labels."""
    input:
        index=LAYOUT.index(),
        code=code("data.split"),
    output:
        manifest=LAYOUT.manifest(),
        labels=LAYOUT.labels(),
        summary=LAYOUT.split_summary(),
    log:
        f"{LOGS}/split.log",
    benchmark:
        f"{RUNTIME}/split.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        validation=config["split"]["validation"],
        test=config["split"]["test"],
        salt=config["split"]["salt"],
        raw=raw_tree(),
        group_regex=config["split"]["group_regex"] or "",
        stratify="--stratify" if config["split"]["stratify"] else "",
        predefined="--predefined" if config["split"]["predefined"] else "",
        layout=config["dataset"]["layout"],
    shell:
        "python -m scripts.data.split --index {input.index:q} --manifest {output.manifest:q}"
        " --labels {output.labels:q} --summary {output.summary:q}"
        " --validation {params.validation} --test {params.test} --salt={params.salt:q}"
        " --raw {params.raw:q} --group-regex={params.group_regex:q} {params.stratify} {params.predefined}"
        " --layout {params.layout} > {log} 2>&1"


rule tfrecord_shard:
    """One TFRecord shard of one split (TF-Slim feature keys)."""
    input:
        manifest=LAYOUT.manifest(),
        # The images the manifest names: in place in the raw tree, or converted under images/.
        raw=raw_tree(),
        images=LAYOUT.images(),
        code=code("data.tfrecord_shard"),
    output:
        LAYOUT.tfrecord("{split}", "{shard}", "{num_shards}"),
    log:
        f"{LOGS}/tfrecords/{{split}}-{{shard}}-of-{{num_shards}}.log",
    benchmark:
        f"{RUNTIME}/tfrecords/{{split}}-{{shard}}-of-{{num_shards}}.tsv"
    wildcard_constraints:
        shard=r"\d{5}",
        num_shards=r"\d{5}",
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=1500,
        runtime=30,
    shell:
        "python -m scripts.data.tfrecord_shard --manifest {input.manifest:q} --split {wildcards.split}"
        " --shard {wildcards.shard} --num-shards {wildcards.num_shards} --output {output:q}"
        " > {log} 2>&1"
