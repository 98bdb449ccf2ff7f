rule build:
    input:
        unpack(toolset_inputs),
        quantize=P("quantize", "status.json"),
    output:
        status=P("build", "status.json"),
    params:
        args=lambda w, input, output: stage_args(
            "build", paths.cell_id(**dict(w.items())), output,
            {"toolset": input.toolset, "quantize": input.quantize}),
        spec=lambda w: spec({"backend": w.backend, "precision": w.precision,
                             "code": code("build", backend=w.backend),
                             **({"simulate": config["simulate"]} if w.backend == "tensorrt_sim" else {}),
                             **({"tensorrt": config["tensorrt"]}
                                if w.backend in ("tensorrt_api", "trtexec", "paddle_tensorrt") else {})}),
    resources:
        # TensorRT engines are built on a GPU node; everything else is a CPU job
        gpu=lambda w: 1 if w.backend in GPU_BACKENDS else 0,
        slurm_partition=lambda w: partition(w.backend),
        mem_mb=4000,
    log:
        f"logs/build/{paths.CELL}.log",
    shell:
        STAGE_CMD
