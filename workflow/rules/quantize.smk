rule quantize:
    input:
        unpack(quantize_inputs),
    output:
        status=P("quantize", "status.json"),
    params:
        args=lambda w, input, output: stage_args(
            "quantize", f"{w.model}/{w.toolset}/opset{w.opset}/{w.quantizer}", output,
            {k: input[k] for k in ("toolset", "export", "framework", "analyze") if k in input.keys()}),
        spec=lambda w: spec({**quantize_params(w), "code": code("quantize", quantizer=w.quantizer,
                                                                   source=source_of(w))}),
    resources:
        slurm_partition=lambda w: partition(""),
        mem_mb=8000,
    log:
        "logs/quantize/{model}/{toolset}/opset{opset}/{quantizer}.log",
    shell:
        STAGE_CMD
