rule latency:
    """The cell's graph timed against its FP32 graph with the machine to itself (every core:
    no other job runs beside it), on the cell's CPU backends (quantsweep.latency)."""
    input:
        unpack(toolset_inputs),
        build=P("build", "status.json"),
        export=P("export", "status.json"),
        manifest=MANIFEST,
    output:
        status=P("latency", "status.json"),
    params:
        args=lambda w, input, output: stage_args(
            "latency", paths.cell_id(**dict(w.items())), output,
            {"toolset": input.toolset, "build": input.build, "export": input.export}),
        spec=lambda w: spec({"model_spec": {k: v for k, v in model_spec(w.model).items()
                                            if k in ("name", "inputs", "preprocess")},
                             # which backends are timed decides which jobs exist, not what one does
                             "latency": {k: v for k, v in config["latency"].items() if k != "backends"},
                             "dataset": dataset_params(),
                             "code": code("latency")}),
    threads: ALL_CORES
    resources:
        slurm_partition=lambda w: partition(""),
        mem_mb=4000,
    log:
        f"logs/latency/{paths.CELL}.log",
    shell:
        STAGE_CMD
