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
                             **({"simulate": config["simulate"]} if w.backend == "tensorrt_sim" else {}),
                             **({"tensorrt": config["tensorrt"]}
                                if w.backend in ("tensorrt_api", "trtexec", "paddle_tensorrt") else {})}),
    log:
        f"logs/build/{paths.CELL}.log",
    shell:
        STAGE_CMD
