"""Export stage: a framework model (or a user's ONNX file) -> a checked ONNX model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from quantsweep.job import Job, Result, ToolFailure, tool_call

ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64",
               9: "bool", 10: "float16", 11: "float64"}


def _dims(t: Any) -> list[Any]:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
            for d in t.type.tensor_type.shape.dim]


def describe(model: Any) -> dict[str, Any]:
    """Opset actually written, I/O names/shapes/dtypes and the op histogram of a model."""
    init = {i.name for i in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    hist: dict[str, int] = {}
    for n in model.graph.node:
        key = f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        hist[key] = hist.get(key, 0) + 1
    return {
        "opset": opset,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [{"name": i.name, "shape": _dims(i),
                    "dtype": ONNX_DTYPES.get(i.type.tensor_type.elem_type, "?")}
                   for i in model.graph.input if i.name not in init],
        "outputs": [{"name": o.name, "shape": _dims(o),
                     "dtype": ONNX_DTYPES.get(o.type.tensor_type.elem_type, "?")}
                    for o in model.graph.output],
        "op_histogram": dict(sorted(hist.items())),
        "nodes": len(model.graph.node),
    }


def _compare(kind: str, declared: list[dict[str, Any]], real: dict[str, dict[str, Any]]) -> list[str]:
    """Problems of one side (inputs or outputs) of the declared contract against the graph."""
    problems = []
    for spec in declared:
        if spec["name"] not in real:
            problems.append(f"declared {kind} {spec['name']!r} is not an {kind} of the graph; "
                            f"the graph's {kind}s are {sorted(real)}")
        elif spec.get("dtype") and spec["dtype"] != real[spec["name"]]["dtype"]:
            problems.append(f"{kind} {spec['name']!r}: declared dtype {spec['dtype']}, graph has "
                            f"{real[spec['name']]['dtype']}")
    return problems


def check_contract(desc: dict[str, Any], inputs: list[dict[str, Any]],
                   outputs: list[dict[str, Any]], where: str) -> None:
    """The declared contract must match the graph; errors list the real names."""
    real_in = {i["name"]: i for i in desc["inputs"]}
    problems = _compare("input", inputs, real_in)
    undeclared = sorted(set(real_in) - {s["name"] for s in inputs})
    if undeclared and inputs:
        problems.append(f"graph inputs {undeclared} are not in the declared contract")
    problems += _compare("output", outputs, {o["name"]: o for o in desc["outputs"]})
    if problems:
        raise ToolFailure("contract_mismatch", f"{where}: " + "; ".join(problems))


def finalize_onnx(src: str | Path, dst: Path, opset: int, model_spec: dict[str, Any],
                  convert: bool) -> dict[str, Any]:
    """Load, (convert opset), check, infer shapes, check the contract, save atomically."""
    import onnx

    from quantsweep.status import write_bytes_atomic

    src = Path(src)
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # noqa: BLE001
        raise ToolFailure("invalid_model", f"{src}: not a loadable ONNX model: "
                                           f"{type(exc).__name__}: {exc}") from None
    if not model.graph.node:
        raise ToolFailure("invalid_model", f"{src}: the ONNX graph has no nodes")
    desc = describe(model)
    if convert and desc["opset"] != opset:
        with tool_call("opset_conversion", f"converting {src} from opset {desc['opset']} to {opset}"):
            from onnx import version_converter

            model = version_converter.convert_version(model, opset)
    with tool_call("onnx_checker", f"{src}"):
        onnx.checker.check_model(model)
    with tool_call("shape_inference", f"{src}"):
        model = onnx.shape_inference.infer_shapes(model)
    desc = describe(model)
    if desc["opset"] != opset:
        raise ToolFailure("opset_mismatch", f"{src}: the exporter wrote opset {desc['opset']}, "
                                            f"the cell asked for {opset}")
    where = f"{src} vs config models.{model_spec['name']}" if "name" in model_spec else str(src)
    check_contract(desc, model_spec.get("inputs", []), model_spec.get("outputs", []), where)
    write_bytes_atomic(dst, model.SerializeToString())
    return desc


# the exporter module (in this package) of each framework source, and the backend that runs its
# framework model (the export parity reference and the framework evaluation)
EXPORTERS = {"demo-torch": "torch_export", "torch": "torch_export",
             "ultralytics": "ultralytics_export", "demo-paddle": "paddle_export",
             "paddle": "paddle_export"}
FRAMEWORK_BACKEND = {"demo-torch": "torch", "torch": "torch", "ultralytics": "torch",
                     "demo-paddle": "paddle_inference", "paddle": "paddle_inference"}
# the options of a framework evaluation (the accuracy reference over the val split; parity and
# the quantized cells on these backends keep the backends' plain settings). Paddle Inference with
# oneDNN: the demo at 320 px 14 ms/image instead of 62 on one core, outputs within 3e-5 px; where
# oneDNN cannot run the program, the plain kernels (backends/paddle_inference.py)
FRAMEWORK_EVAL_OPTIONS = {"paddle_inference": {"onednn": True}}


def _reference(job: Job, spec: dict[str, Any], src: Path | None, threads: int) -> Any:
    """What the exported graph must reproduce: the framework model, or the source ONNX."""
    from quantsweep.backends import make_runner

    if spec["source"] == "onnx":
        backend, model = "onnxruntime", str(src)
    else:
        backend = FRAMEWORK_BACKEND[spec["source"]]
        model = str(job.artifact("framework", "model"))
    with tool_call("runner_create", f"{backend} could not load the reference {model}"):
        return make_runner(backend, model, {"threads": threads})


def check_parity(job: Job, spec: dict[str, Any], onnx_path: Path, src: Path | None) -> dict[str, Any]:
    """Parity of the export, written to ``parity.json``; over tolerance -> ``export_parity``."""
    from quantsweep.backends import make_runner
    from quantsweep.export.parity import compare
    from quantsweep.status import write_json_atomic

    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    manifest = json.loads(Path(job.params["dataset"]["manifest"]).read_text())
    reference = _reference(job, spec, src, threads)
    with tool_call("runner_create", f"ONNX Runtime could not load the exported {onnx_path}"):
        candidate = make_runner("onnxruntime", str(onnx_path), {"threads": threads})
    t0 = time.monotonic()
    rec = compare(reference, candidate, spec, manifest, job.params["parity"], job.params.get("parity_score"))
    rec["parity_s"] = round(time.monotonic() - t0, 3)
    write_json_atomic(job.out_dir / "parity.json", rec)
    return rec


def run(job: Job) -> Result:
    """The export stage for every model source: export, check, parity."""
    p = job.params
    spec = p["model_spec"]
    opset = int(p["opset"])
    dst = job.out_dir / "model.onnx"
    (job.out_dir / "parity.json").unlink(missing_ok=True)
    t0 = time.monotonic()
    extra: dict[str, Any] = {}
    src: Path | None = None
    if spec["source"] == "onnx":
        import onnx

        src = job.artifact("source_export", "model") if "from" in spec else Path(spec["path"])
        desc = finalize_onnx(src, dst, opset, spec, convert=True)
        exporter = {"name": "onnx file" if "path" in spec else
                    f"export of {spec['from']['model']}/{spec['from']['toolset']}",
                    "version": f"onnx {onnx.__version__}"}
    else:
        import importlib

        exporter_module = importlib.import_module(f"quantsweep.export.{EXPORTERS[spec['source']]}")
        exporter, extra = exporter_module.export(job, dst, opset)
        desc = finalize_onnx(dst, dst, opset, spec, convert=False)
    export_s = round(time.monotonic() - t0, 3)
    parity = check_parity(job, spec, dst, src)
    data = {"exporter": exporter, "export_s": export_s, **desc, **extra,
            "parity": {k: parity[k] for k in ("ok", "images", "parity_s", "problems", "matched")}
            | {"worst_cosine": min((o["cosine"] for o in parity["outputs"] if o["cosine"] is not None),
                                   default=None),
               "worst_max_abs": max((o["max_abs"] for o in parity["outputs"] if o["max_abs"] is not None),
                                    default=None)}}
    artifacts = {"model": str(dst), "parity": str(job.out_dir / "parity.json")}
    if extra.get("calibration_file"):
        artifacts["calibration_cache"] = extra["calibration_file"]
    if spec["source"] in ("paddle", "demo-paddle"):  # what the paddle_inference backend runs
        artifacts["paddle_model"] = str(job.artifact("framework", "model"))
    if not parity["ok"]:
        return Result(status="failed", reason_class="export_parity", mode="skipped",
                      message=f"the exported model differs from {_ref_name(spec)} on "
                              f"{parity['images']} calib images: " + "; ".join(parity["problems"]),
                      artifacts=artifacts, data=data)
    return Result(artifacts=artifacts, data=data)


def _ref_name(spec: dict[str, Any]) -> str:
    return "the source ONNX model" if spec["source"] == "onnx" else "the framework model"
