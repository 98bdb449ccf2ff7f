import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # this clone's code, installed or not

from quantsweep import config as qcfg  # noqa: E402
from quantsweep import codedigest, matrix, paths, tree  # noqa: E402
from quantsweep.export import FRAMEWORK_BACKEND, FRAMEWORK_EVAL_OPTIONS  # noqa: E402  each framework source's backend
from quantsweep.export.parity import score_ref  # noqa: E402  where parity finds the scores
from quantsweep.quantize import FRAMEWORK_QUANTIZERS, recipe_parent  # noqa: E402

# Duplicate YAML keys are lost by the time Snakemake hands us `config`: re-read the files.
for _cf in workflow.configfiles:
    qcfg.read_yaml(_cf)
# quantsweep's checks first (messages name key, value and what is allowed), then
# Snakemake's own validation against the same schema (fills defaults).
qcfg.validate_config(config, source=", ".join(map(str, workflow.configfiles)) or "config")


validate(config, "../schemas/config.schema.yaml")


# Jobs import quantsweep from this workflow's own src/, whatever clone pip last installed
# (the Snakefile itself does the same above, through sys.path).
SRC = str(Path(workflow.basedir) / "src")
PY = f"PYTHONPATH={shlex.quote(SRC)}${{PYTHONPATH:+:$PYTHONPATH}} {shlex.quote(sys.executable)}"
SCRIPTS = str(Path(workflow.basedir) / "scripts")
RESULTS = config["results_dir"]
RESOURCES = "resources"
DEMO_DIR = f"{RESOURCES}/demo"
DATASET = config["dataset"]["name"]
MANIFEST = f"{RESOURCES}/datasets/{DATASET}/manifest.json"
CELLS = matrix.expand(config)
PLANNED = [pc.cell for pc in CELLS if pc.status == "planned"]
ANALYZED = matrix.analyzed(config)  # the quantized graphs of blocks with analyze: true
# Every per-cell file of the plan: targets of `all`, so that one a killed run left missing is
# remade (Snakemake does not remake a missing file whose downstream files are up to date)
TREE = [e.path for e in tree.expected_files(config, RESULTS, RESOURCES)]
from quantsweep.latency import timed_backends  # noqa: E402

LATENCY_BACKENDS = timed_backends(config)  # timed here, alone
try:  # the latency stage takes every core: no other job runs beside it (on a cluster, where
    # cores count jobs, at most this machine's CPUs per job)
    ALL_CORES = max(1, min(int(workflow.cores), os.cpu_count() or 1))
except Exception:  # noqa: BLE001 - --report, --lint: no core count, no job runs
    ALL_CORES = 1
DEMO_TOOLSET = config["demo"].get("toolset")
TIMEOUT = config["stage_timeout_s"]


wildcard_constraints:
    **paths.WILDCARD_CONSTRAINTS,


def P(stage, filename=""):
    """Path pattern of a stage (wildcards kept)."""
    return paths.pattern(RESULTS, stage, filename)


def toolset_inputs(w):
    return {
        "toolset": P("toolset", "status.json").format(toolset=w.toolset),
        "versions": P("toolset", "versions.txt").format(toolset=w.toolset),
    }


def model_spec(name):
    return {"name": name, **config["models"][name]}


def dataset_params():
    return {"manifest": MANIFEST}


def code(stage, **select):
    """The digest of the quantsweep code the stage executes for this selection (a quantizer, a
    backend, a model source): in the params, so that editing that code reruns the stage."""
    if os.environ.get("QUANTSWEEP_NO_CODE_DIGEST"):  # benchmarks/dryrun_scaling.py only
        return ""
    return codedigest.digest(stage, **select)


def source_of(w):
    return config["models"][w.model]["source"]


def spec(params):
    """Parameters as one canonical JSON string (sorted keys: the same config written in another
    key order reruns nothing). A stage's are kept apart from the paths in `stage_args`:
    Snakemake's params rerun trigger ignores params derived from input/output files."""
    return json.dumps(params, sort_keys=True)


# The shell command of every stage rule: the supervisor, with the rule's `args` and `spec`.
STAGE_CMD = ("{PY} -m quantsweep.stage {params.args} --params {params.spec:q} "
             "--threads {threads} --log {log:q}")


def stage_args(stage, cell, output, upstream, declare=()):
    """The command-line arguments of `python -m quantsweep.stage` for one job (paths only)."""
    args = [stage, "--cell", cell, "--out", str(Path(output[0]).parent),
            "--timeout", str(TIMEOUT)]
    if "toolset" in upstream:
        args += ["--toolset-dir", str(Path(upstream["toolset"]).parent)]
    for name, path in upstream.items():
        args += ["--upstream", f"{name}={path}"]
    for d in declare:
        args += ["--declare", d]
    return " ".join(shlex.quote(a) for a in args)


def export_inputs(w):
    spec = config["models"][w.model]
    inp = toolset_inputs(w)
    inp["manifest"] = MANIFEST  # parity runs on calib images
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
    # the contract, the source, the exporter options and the preprocessing (parity feeds
    # calib images through it); not the decoding, which does not change the exported graph
    keep = {k: spec[k] for k in ("name", "source", "path", "from", "paddle_format", "inputs",
                                 "outputs", "preprocess", "export") if k in spec}
    parity = {**config["export"]["parity"], **spec["export"].get("parity", {})}
    return {"model_spec": keep, "opset": int(w.opset), "parity": parity,
            # where parity finds the detections' scores: near-tied boxes may swap at a top-k cut
            "parity_score": score_ref(spec.get("decode")), "dataset": dataset_params()}


def framework_inputs(w):
    """A demo model is built from the trained weights; a user's Paddle model is a directory."""
    inp = toolset_inputs(w)
    spec = config["models"][w.model]
    if spec["source"] == "paddle" and "from" in spec:
        inp["source_framework"] = P("framework", "status.json").format(**spec["from"])
    elif spec["source"] == "paddle":
        # its files (a changed file reruns the cells); the directory itself when missing
        d = Path(spec["path"])
        inp["model_files"] = sorted(map(str, d.iterdir())) if d.is_dir() else [spec["path"]]
    elif spec["source"] == "torch":
        if spec.get("weights"):  # new weights rerun the model's cells
            inp["model_files"] = [spec["weights"]]
    elif spec["source"] == "ultralytics":
        if Path(spec["path"]).is_file():  # a .pt, or a local .yaml (not one Ultralytics ships)
            inp["model_files"] = [spec["path"]]
        if spec.get("train"):  # trained on the sweep's train split
            inp["manifest"] = MANIFEST
    else:
        inp["train"] = f"{DEMO_DIR}/train/status.json"
    return inp


def quantize_inputs(w):
    inp = {**toolset_inputs(w), "export": P("export", "status.json").format(**dict(w.items())),
           "manifest": MANIFEST}
    if w.quantizer in FRAMEWORK_QUANTIZERS and config["models"][w.model]["source"] != "onnx":
        inp["framework"] = P("framework", "status.json").format(model=w.model, toolset=w.toolset)
    parent = recipe_parent(w.quantizer)
    if parent:  # a recipe cell: its parent's analysis names the layers kept in float
        inp["analyze"] = P("analyze", "status.json").format(**{**dict(w.items()), "quantizer": parent})
    return inp


def quantize_params(w):
    if w.quantizer == "none":  # a pass-through: no option changes it
        return {"quantizer": "none"}
    spec = model_spec(w.model)
    q = config["quantize"]
    base = recipe_parent(w.quantizer) or w.quantizer
    return {"quantizer": w.quantizer, "calib_images": q["calib_images"], "opset": int(w.opset),
            "cache_tensorrt_version": q["cache_tensorrt_version"],
            # the two torch-qat variants differ only in amax (static or dynamic): one options key
            "options": q.get("torch-qat" if base.startswith("torch-qat") else base, {}),
            "dataset": dataset_params(),
            "model_spec": {k: spec[k] for k in ("name", "source", "inputs", "preprocess")}}


def eval_params(w, backend):
    # how the model was exported is not an evaluation parameter (its output is an input)
    spec = {k: v for k, v in model_spec(w.model).items() if k != "export"}
    return {"model_spec": spec, "backend": backend, "evaluate": config["evaluate"],
            "dataset": dataset_params()}


def framework_pairs():
    """(model, toolset) pairs of framework models: they are also evaluated in their framework."""
    return sorted({(c.model, c.toolset) for c in PLANNED
                   if config["models"][c.model]["source"] != "onnx"})


# Where jobs run on a cluster (the slurm profile): TensorRT cells need a GPU node
GPU_BACKENDS = ("tensorrt_api", "trtexec", "paddle_tensorrt")


def partition(backend):
    """The Slurm partition of a job: config cluster.gpu_partition for GPU backends, else
    cluster.cpu_partition ("" = the cluster's default partition)."""
    key = "gpu_partition" if backend in GPU_BACKENDS else "cpu_partition"
    return config.get("cluster", {}).get(key, "")

