rule train_demo:
    """Train the demo detector once (fixed steps, fixed seed) in the demo toolset."""
    input:
        toolset=P("toolset", "status.json").format(toolset=DEMO_TOOLSET or "none"),
        versions=P("toolset", "versions.txt").format(toolset=DEMO_TOOLSET or "none"),
        manifest=MANIFEST,
    output:
        status=f"{DEMO_DIR}/train/status.json",
    params:
        args=lambda w, input, output: stage_args(
            "train", "demo/train", output, {"toolset": input.toolset}),
        spec=spec({"code": code("train"),
                   "demo": {k: v for k, v in config["demo"].items() if k != "preprocess"},
                   "preprocess": config["demo"]["preprocess"], "dataset": dataset_params()}),
    threads: config["demo"]["threads"]
    resources:
        slurm_partition=lambda w: partition(""),
        mem_mb=6000,
    log:
        "logs/train/demo.log",
    shell:
        STAGE_CMD


# what the framework stage reads of a model block: how the source builds it and its contract
FRAMEWORK_SPEC_KEYS = ("name", "source", "paddle_format", "path", "from", "factory", "kwargs",
                       "weights", "weights_key", "python_path", "seed", "qat", "train", "inputs",
                       "outputs", "preprocess")


rule framework:
    """The model in the cell's framework, as its source builds it (quantsweep.sources): the demo
    detector rebuilt from its weights (Paddle inference model, or torch), a user's Paddle model
    directory checked in place, a user's torch module, an Ultralytics model."""
    input:
        unpack(framework_inputs),
    output:
        status=P("framework", "status.json"),
    params:
        args=lambda w, input, output: stage_args(
            "framework", f"{w.model}/{w.toolset}/framework", output,
            {k: input[k] for k in ("toolset", "train", "source_framework") if k in input.keys()}),
        spec=lambda w: spec({"model_spec": {k: v for k, v in model_spec(w.model).items()
                                            if k in FRAMEWORK_SPEC_KEYS},
                             "parity_tol": 1e-4, "code": code("framework", source=source_of(w)),
                             # a model trained by its source trains on the sweep's dataset
                             **({"dataset": dataset_params()}
                                if config["models"][w.model].get("train") else {})}),
    resources:
        slurm_partition=lambda w: partition(""),
        mem_mb=6000,
    log:
        "logs/framework/{model}/{toolset}.log",
    shell:
        STAGE_CMD


rule framework_eval:
    """The demo detector evaluated in its own framework: the reference for ONNX parity."""
    input:
        unpack(toolset_inputs),
        framework=P("framework", "status.json"),
        manifest=MANIFEST,
    output:
        status=P("framework_eval", "status.json"),
        metrics=P("framework_eval", "metrics.json"),
    params:
        args=lambda w, input, output: stage_args(
            "framework_eval", f"{w.model}/{w.toolset}/framework", output,
            {"toolset": input.toolset, "framework": input.framework}, declare=["metrics.json"]),
        spec=lambda w: spec({**eval_params(w, FRAMEWORK_BACKEND[source_of(w)]),
                             "backend_options": FRAMEWORK_EVAL_OPTIONS.get(FRAMEWORK_BACKEND[source_of(w)], {}),
                             "code": code("framework_eval", source=source_of(w))}),
    threads: config["evaluate"]["threads"]
    resources:
        slurm_partition=lambda w: partition(""),
        mem_mb=6000,
    log:
        "logs/framework_eval/{model}/{toolset}.log",
    shell:
        STAGE_CMD
