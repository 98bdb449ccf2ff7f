rule evaluate:
    input:
        unpack(toolset_inputs),
        build=P("build", "status.json"),
        manifest=MANIFEST,
    output:
        status=P("evaluate", "status.json"),
        metrics=P("evaluate", "metrics.json"),
    params:
        args=lambda w, input, output: stage_args(
            "evaluate", paths.cell_id(**dict(w.items())), output,
            {"toolset": input.toolset, "build": input.build}, declare=["metrics.json"]),
        spec=lambda w: spec({**eval_params(w, w.backend), "code": code("evaluate", backend=w.backend)}),
    threads: config["evaluate"]["threads"]
    resources:
        gpu=lambda w: 1 if w.backend in GPU_BACKENDS else 0,
        slurm_partition=lambda w: partition(w.backend),
        mem_mb=4000,
    log:
        f"logs/evaluate/{paths.CELL}.log",
    shell:
        STAGE_CMD
