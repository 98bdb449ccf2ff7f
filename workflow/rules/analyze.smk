rule analyze:
    """Per-layer INT8 sensitivity of a quantized graph and the recipe that wins the accuracy back
    (quantsweep.analyze): for the int8 cells of matrix blocks with analyze: true. Runs in
    quantsweep's own interpreter (ONNX Runtime + pycocotools)."""
    input:
        quantize=P("quantize", "status.json"),
        manifest=MANIFEST,
    output:
        status=P("analyze", "status.json"),
    params:
        args=lambda w, input, output: stage_args(
            "analyze", f"{w.model}/{w.toolset}/opset{w.opset}/{w.quantizer}", output,
            {"quantize": input.quantize}),
        spec=lambda w: spec({**eval_params(w, "onnxruntime"), "quantizer": w.quantizer,
                             "code": code("analyze"),
                             "analyze": config["analyze"],
                             "threads": config["evaluate"]["threads"]}),
    threads: config["evaluate"]["threads"]
    resources:
        slurm_partition=lambda w: partition(""),
        mem_mb=6000,
    log:
        "logs/analyze/{model}/{toolset}/opset{opset}/{quantizer}.log",
    shell:
        STAGE_CMD
