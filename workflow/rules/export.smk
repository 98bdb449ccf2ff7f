def export_inputs(w):
    spec = config["models"][w.model]
    inp = toolset_inputs(w)
    if spec["source"] == "onnx" and "from" in spec:
        inp["source_export"] = P("export", "status.json").format(
            model=spec["from"]["model"], toolset=spec["from"]["toolset"], opset=w.opset)
    elif spec["source"] == "onnx":
        inp["model_file"] = spec["path"]
    else:
        inp["framework"] = P("framework", "status.json").format(**dict(w.items()))
    return inp


def export_upstream(inp):
    up = {"toolset": inp.toolset}
    for key in ("framework", "source_export"):
        if key in inp.keys():
            up[key] = getattr(inp, key)
    return up


def export_params(w):
    spec = model_spec(w.model)
    # the contract and source only: preprocessing does not change the exported graph
    keep = {k: spec[k] for k in ("name", "source", "path", "from", "paddle_format", "inputs",
                                       "outputs")
            if k in spec}
    return {"model_spec": keep, "opset": int(w.opset)}


rule export:
    input:
        unpack(export_inputs),
    output:
        status=P("export", "status.json"),
    params:
        args=lambda w, input, output: stage_args(
            "export", f"{w.model}/{w.toolset}/opset{w.opset}", output, export_upstream(input)),
        spec=lambda w: spec(export_params(w)),
    log:
        "logs/export/{model}/{toolset}/opset{opset}.log",
    shell:
        STAGE_CMD
