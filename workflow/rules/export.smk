rule export:
    input:
        unpack(export_inputs),
    output:
        status=P("export", "status.json"),
    params:
        args=lambda w, input, output: stage_args(
            "export", f"{w.model}/{w.toolset}/opset{w.opset}", output, export_upstream(input)),
        spec=lambda w: spec({**export_params(w), "code": code("export", source=source_of(w))}),
    resources:
        slurm_partition=lambda w: partition(""),
        mem_mb=6000,
    log:
        "logs/export/{model}/{toolset}/opset{opset}.log",
    shell:
        STAGE_CMD
