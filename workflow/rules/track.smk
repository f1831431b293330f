# MLflow tracking (scripts/track.py): with tracking.mlflow_uri set, every experiment is a run
# with its settings, metrics (intervals as .low/.high) and the deployed files; the selected
# one is tagged selected=true. Part of every full run when set; alone: snakemake track


rule track:
    """Every experiment as an MLflow run; the selected one tagged."""
    input:
        unpack(tracked_files),
        selected=LAYOUT.selected(),
        code=code("track"),
    output:
        LAYOUT.tracking_runs(),
    log:
        f"{LOGS}/track.log",
    conda:
        env("track")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        uri=config["tracking"]["mlflow_uri"] or "",
        name=config["tracking"]["experiment_name"],
        settings=json.dumps(
            {experiment: settings(experiment) for experiment in EXPERIMENTS},
            sort_keys=True,
        ),
        files=lambda wildcards, input: tracking_arguments(input),
    shell:
        "python -m scripts.track --uri {params.uri:q} --experiment-name {params.name:q}"
        " --settings {params.settings:q} --selected {input.selected:q} {params.files}"
        " --output {output:q} > {log} 2>&1"
