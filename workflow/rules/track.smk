# MLflow tracking (scripts/track.py): with tracking.mlflow_uri set, every experiment is a run
# with its settings, metrics (intervals as .low/.high) and the deployed files; the selected
# one is tagged selected=true. Part of every full run when set; alone: snakemake track


def tracking_targets():
    return (
        [f"{RESULTS}/tracking/mlflow_runs.json"]
        if config["tracking"]["mlflow_uri"]
        else []
    )


def tracked_deployed_files(experiment):
    """The deployed files logged as an experiment's artifacts: each precision's IR and its evaluation."""
    return [
        f"{RESULTS}/{experiment}/ir/{precision}/{name}"
        for precision in precisions(experiment)
        for name in ("model.xml", "model.bin", "ir.json", "evaluation.json")
    ]


def tracked_metrics(experiment):
    return [final_metrics(experiment)] + evaluations(experiment)


def tracked_files(wildcards):
    if not config["tracking"]["mlflow_uri"]:
        raise WorkflowError(
            "config key tracking.mlflow_uri: set it (a folder or http://host:port) to track runs"
        )
    selected = None if config["selection"]["deploy"] == "all" else selected_experiment()
    metrics = [final_metrics(experiment) for experiment in EXPERIMENTS]
    deployed = []
    for experiment in deployed_experiments(selected):
        metrics += evaluations(experiment)
        deployed += tracked_deployed_files(experiment)
    return {"metrics": metrics, "deployed": deployed}


def tracking_arguments(input):
    """--metrics and --artifact EXPERIMENT=PATH pairs, the experiment read from each path."""
    owner = lambda path: os.path.relpath(path, RESULTS).split(os.sep)[0]
    # (before the selection has run, a dry-run has no such inputs yet)
    metrics = " ".join(
        shlex.quote(f"{owner(path)}={path}") for path in getattr(input, "metrics", [])
    )
    artifacts = " ".join(
        shlex.quote(f"{owner(path)}={path}") for path in getattr(input, "deployed", [])
    )
    return f"--metrics {metrics}" + (f" --artifact {artifacts}" if artifacts else "")


rule track:
    """Every experiment as an MLflow run; the selected one tagged."""
    input:
        unpack(tracked_files),
        selected=f"{RESULTS}/selected.json",
        code=code("track"),
    output:
        f"{RESULTS}/tracking/mlflow_runs.json",
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
