rule data:
    """The synthetic demo dataset, or a validated COCO dataset, described by its manifest."""
    output:
        manifest=f"{RESOURCES}/datasets/{{dataset}}/manifest.json",
    params:
        spec=lambda w: spec(config["dataset"]),
    # first: the demo's training waits for it, and the toolset envs can be built beside it
    priority: 10
    log:
        "logs/data/{dataset}.log",
    shell:
        "{PY} {SCRIPTS}/data.py {params.spec:q} $(dirname {output.manifest}) "
        "> {log} 2>&1 || (cat {log} >&2; exit 1)"
