rule quantize:
    input:
        unpack(toolset_inputs),
        export=P("export", "status.json"),
        manifest=MANIFEST,
    output:
        status=P("quantize", "status.json"),
    params:
        args=lambda w, input, output: stage_args(
            "quantize", f"{w.model}/{w.toolset}/opset{w.opset}/{w.quantizer}", output,
            {"toolset": input.toolset, "export": input.export}),
        spec=lambda w: spec(quantize_params(w)),
    log:
        "logs/quantize/{model}/{toolset}/opset{opset}/{quantizer}.log",
    shell:
        STAGE_CMD
