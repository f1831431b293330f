# Audit stages (docs/audit.md): near-duplicates across splits (leakage) and suspected
# label errors, from the base preprocessing's cached features of the shared backbone.
rule audit_copies:
    """Features of re-encoded, resized, cropped and recoloured copies of sampled training images."""
    input:
        tfrecords=tfrecord_shards("train"),
        info=LAYOUT.backbone_json(),
        model=audit_model(),
        code=code("audit.copies"),
    output:
        LAYOUT.audit("copies.npz"),
    log:
        f"{LOGS}/audit_copies.log",
    benchmark:
        f"{RUNTIME}/audit_copies.tsv"
    conda:
        env("tensorflow")
    threads: config["inference"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        sample=config["audit"]["copies_sample"],
        seed=config["audit"]["seed"],
        central_fraction=config["preprocess"]["central_fraction"],
        resize=config["preprocess"]["resize"],
        batch_size=config["inference"]["batch_size"],
    shell:
        "python -m scripts.audit.copies --backbone-json {input.info:q} --model {input.model[0]:q}"
        " --tfrecords {input.tfrecords:q} --output {output:q} --sample {params.sample} --seed {params.seed}"
        " --central-fraction {params.central_fraction} --resize {params.resize}"
        " --batch-size {params.batch_size} --threads {threads} > {log} 2>&1"


rule audit_near_duplicates:
    """Validation and test images whose nearest training image is a near-duplicate."""
    input:
        train=audit_features("train"),
        validation=audit_features("validation"),
        test=audit_features("test"),
        copies=LAYOUT.audit("copies.npz"),
        tfrecords=all_tfrecords(),
        manifest=LAYOUT.manifest(),
        labels=LAYOUT.labels(),
        code=code("audit.near_duplicates"),
    output:
        table=report(
            LAYOUT.audit("near_duplicates.csv"),
            caption="../report/near_duplicates.rst",
            category="Audit",
        ),
        summary=LAYOUT.audit("near_duplicates.json"),
    log:
        f"{LOGS}/audit_near_duplicates.log",
    benchmark:
        f"{RUNTIME}/audit_near_duplicates.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        quantile=config["audit"]["threshold_quantile"],
        distinct_quantile=config["audit"]["distinct_quantile"],
    shell:
        "export OPENBLAS_NUM_THREADS={threads} OMP_NUM_THREADS={threads};"
        " python -m scripts.audit.near_duplicates --train {input.train:q} --validation {input.validation:q}"
        " --test {input.test:q} --copies {input.copies:q} --tfrecords {input.tfrecords:q}"
        " --manifest {input.manifest:q} --labels {input.labels:q} --quantile {params.quantile}"
        " --distinct-quantile {params.distinct_quantile} --output-table {output.table:q}"
        " --output-summary {output.summary:q} > {log} 2>&1"


rule audit_label_issues:
    """Train and validation images ranked by how unlikely their given label is, out of fold."""
    input:
        train=audit_features("train"),
        validation=audit_features("validation"),
        manifest=LAYOUT.manifest(),
        labels=LAYOUT.labels(),
        code=code("audit.label_issues"),
    output:
        table=report(
            LAYOUT.audit("label_issues.csv"),
            caption="../report/label_issues.rst",
            category="Audit",
        ),
        summary=LAYOUT.audit("label_issues.json"),
    log:
        f"{LOGS}/audit_label_issues.log",
    benchmark:
        f"{RUNTIME}/audit_label_issues.tsv"
    conda:
        env("base")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        folds=config["audit"]["folds"],
        seed=config["audit"]["seed"],
    shell:
        "export OPENBLAS_NUM_THREADS={threads} OMP_NUM_THREADS={threads};"
        " python -m scripts.audit.label_issues --train {input.train:q} --validation {input.validation:q}"
        " --manifest {input.manifest:q} --labels {input.labels:q} --folds {params.folds}"
        " --seed {params.seed} --output-table {output.table:q} --output-summary {output.summary:q}"
        " > {log} 2>&1"


rule report_near_duplicates:
    """The similarity distributions with their thresholds, and the closest flagged pairs."""
    input:
        table=LAYOUT.audit("near_duplicates.csv"),
        summary=LAYOUT.audit("near_duplicates.json"),
        tfrecords=all_tfrecords(),
        code=code("report"),
    output:
        report(
            LAYOUT.report("near_duplicates.png"),
            caption="../report/near_duplicates.rst",
            category="Audit",
        ),
    log:
        f"{LOGS}/report_near_duplicates.log",
    benchmark:
        f"{RUNTIME}/report_near_duplicates.tsv"
    conda:
        env("report")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m scripts.report near-duplicates --table {input.table:q} --summary {input.summary:q}"
        " --tfrecords {input.tfrecords:q} --output {output:q} > {log} 2>&1"


rule report_label_issues:
    """The top suspected label errors with their given and likely labels."""
    input:
        table=LAYOUT.audit("label_issues.csv"),
        tfrecords=tfrecord_shards("train") + tfrecord_shards("validation"),
        code=code("report"),
    output:
        report(
            LAYOUT.report("label_issues.png"),
            caption="../report/label_issues.rst",
            category="Audit",
        ),
    log:
        f"{LOGS}/report_label_issues.log",
    benchmark:
        f"{RUNTIME}/report_label_issues.tsv"
    conda:
        env("report")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        shown=config["audit"]["label_issues_shown"],
    shell:
        "python -m scripts.report label-issues --table {input.table:q} --tfrecords {input.tfrecords:q}"
        " --shown {params.shown} --output {output:q} > {log} 2>&1"
