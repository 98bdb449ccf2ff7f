rule toolset:
    """Create (once, by uv) or reuse a toolset env; its versions.txt is an input of every
    stage of that toolset, so a changed pin reruns exactly that toolset's cells."""
    output:
        status=P("toolset", "status.json"),
        versions=P("toolset", "versions.txt"),
        env=P("toolset", "env.json"),
    params:
        spec=lambda w: spec(config["toolsets"][w.toolset]),
        envs=config["envs_dir"],
    resources:
        slurm_partition=lambda w: partition(""),
        mem_mb=4000,
    log:
        "logs/toolset/{toolset}.log",
    shell:
        "{PY} {SCRIPTS}/toolset.py {wildcards.toolset} {params.spec:q} "
        "$(dirname {output.status}) {params.envs} > {log} 2>&1 || (cat {log} >&2; exit 1)"
