"""Quantize stage: ``none`` passes the exported model through; ``ort-qdq`` writes a QDQ model
with ONNX Runtime's static quantization. The other quantizers of the schema are not built yet
and end as ``skipped: not_implemented`` rows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from quantsweep.job import Job, Result, Skip

# A recipe cell (quantizer "<q>-recipe") quantizes again with the layers its parent cell's
# analysis keeps in float; these quantizers take such a list (nodes_to_exclude).
RECIPE_SUFFIX = "-recipe"
RECIPE_QUANTIZERS = ("ort-qdq", "modelopt-ptq")
# quantizers that work on the framework model rather than on the exported ONNX
FRAMEWORK_QUANTIZERS = ("paddleslim-ptq", "torch-qat", "torch-qat-dynamic")


def recipe_parent(quantizer: str) -> str | None:
    """The quantizer a recipe cell re-runs (None for any other quantizer)."""
    return quantizer[: -len(RECIPE_SUFFIX)] if quantizer.endswith(RECIPE_SUFFIX) else None


def recipe_layers(job: Job, float_model: Path) -> tuple[list[str], dict[str, Any]]:
    """The layers a recipe cell keeps in float (its parent's ``recipe.json``), each checked to be
    a node of the float graph it quantizes: ToolFailure ``recipe_mismatch`` listing the names
    the graph lacks (a recipe from another toolset's graph, an edited export)."""
    import json

    import onnx

    from quantsweep.job import ToolFailure

    path = Path(job.artifact("analyze", "recipe"))
    recipe = json.loads(path.read_text())
    names = {n.name for n in onnx.load(str(float_model), load_external_data=False).graph.node}
    missing = [n for n in recipe["float_layers"] if n not in names]
    if missing:
        raise ToolFailure("recipe_mismatch", f"{path} keeps {len(missing)} layer(s) in float that "
                                             f"{float_model} has no node of: {missing[:10]}",
                          detail=missing[0])
    info = {k: recipe.get(k) for k in ("float_layers", "target_met", "note", "AP_fp32", "AP_int8",
                                       "AP_recipe", "val_images")}
    return list(recipe["float_layers"]), {**info, "file": str(path)}


def keep_metadata(float_model: Path, quantized: Path) -> list[str]:
    """The float graph's metadata (Ultralytics' class names, stride, task...) on the quantized
    graph when the quantizer dropped it (ModelOpt 0.47 does): the evaluation reads the class
    names there. Returns the keys put back."""
    import onnx

    src = {p.key: p.value for p in onnx.load(str(float_model), load_external_data=False).metadata_props}
    q = onnx.load(str(quantized))
    have = {p.key for p in q.metadata_props}
    missing = [k for k in src if k not in have]
    if missing:
        onnx.helper.set_model_props(q, {**{p.key: p.value for p in q.metadata_props},
                                        **{k: src[k] for k in missing}})
        tmp = quantized.with_name(".meta-" + quantized.name)
        onnx.save(q, str(tmp))
        tmp.replace(quantized)
    return missing


def runtime_scale_findings(model: Any) -> list[dict[str, str]]:
    """Q/DQ scales computed at run time (field report 002: QAT with dynamic amax loses
    accuracy after export; TensorRT needs static scales): ``DynamicQuantizeLinear`` nodes, and
    Q/DQ whose scale input is not a constant of the graph."""
    from quantsweep.qdq_graph import constants

    consts = constants(model.graph)
    producer = {o: n for n in model.graph.node for o in n.output}
    out = []
    for n in model.graph.node:
        name = n.name or n.output[0]
        if n.op_type == "DynamicQuantizeLinear":
            out.append({"node": name, "tensor": n.input[0],
                        "message": f"DynamicQuantizeLinear {name!r} computes the scale of "
                                   f"{n.input[0]!r} from each input at run time"})
        elif n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1 \
                and n.input[1] not in consts:
            src = producer.get(n.input[1])
            out.append({"node": name, "tensor": n.input[0],
                        "message": f"{n.op_type} {name!r}: scale {n.input[1]!r} is computed at "
                                   f"run time" + (f" (by {src.op_type} {src.name!r})" if src else
                                                  " (a graph input)")})
    return out


def qdq_summary(path: Path) -> dict[str, Any]:
    """Counts of quantization nodes, and scales computed at run time."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops = [n.op_type for n in m.graph.node]
    runtime = runtime_scale_findings(m)
    dynamic = ops.count("DynamicQuantizeLinear")
    return {"quantize_nodes": ops.count("QuantizeLinear"),
            "dequantize_nodes": ops.count("DequantizeLinear"),
            "dynamic_quantize_nodes": dynamic, "runtime_scales": len(runtime) - dynamic,
            "runtime_scale_findings": runtime[:20],
            "int8": ops.count("QuantizeLinear") + dynamic > 0}


def run(job: Job) -> Result:
    q = job.params["quantizer"]
    model = job.artifact("export", "model")
    parent = recipe_parent(q)
    exclude: list[str] = []
    recipe: dict[str, Any] = {}
    if parent is not None:
        if parent not in RECIPE_QUANTIZERS:
            raise Skip("not_implemented", f"quantizer {parent!r} takes no recipe")
        exclude, recipe = recipe_layers(job, model)
        q = parent
    if q == "none":
        passed = {k: v for k, v in job.inputs["export"]["artifacts"].items() if k == "paddle_model"}
        return Result(artifacts={"model": str(model), **passed},
                      data={"quantizer": "none", "int8": False})
    if q in ("ort-qdq", "modelopt-ptq"):
        dst = job.out_dir / "model.onnx"
        t0 = time.monotonic()
        arts = {"model": str(dst), "float_model": str(model)}
        if q == "ort-qdq":
            from quantsweep.quantize import ort_qdq

            info = ort_qdq.quantize(job, model, dst, exclude)
            arts["calibration_cache"] = str(dst.with_name("calibration.cache"))
        else:
            from quantsweep.quantize import modelopt_ptq

            info = modelopt_ptq.quantize(job, model, dst, exclude)
        if recipe:
            info["recipe"] = recipe
        info["metadata_restored"] = keep_metadata(Path(model), dst)
        return Result(artifacts=arts,
                      data={"quantizer": job.params["quantizer"], **info, **qdq_summary(dst),
                            "quantize_s": round(time.monotonic() - t0, 3),
                            "model_bytes": dst.stat().st_size})
    if q == "paddleslim-ptq":
        return _paddle_ptq(job)
    if q in ("torch-qat", "torch-qat-dynamic"):
        from quantsweep.quantize import torch_qat

        dst = job.out_dir / "model.onnx"
        info = torch_qat.quantize(job, dst, int(job.params["opset"]))
        return Result(artifacts={"model": str(dst), "float_model": str(model)},
                      data={"quantizer": q, **info, **qdq_summary(dst),
                            "model_bytes": dst.stat().st_size})
    if q == "trt-calibrator":
        from quantsweep.quantize import trt_calibrator

        info = trt_calibrator.quantize(job, model, job.out_dir)
        # the graph stays float: TensorRT builds it in INT8 from the cache (implicit)
        return Result(artifacts={"model": str(model), "float_model": str(model),
                                 "calibration_cache": str(job.out_dir / "calibration.cache")},
                      data={"quantizer": q, "int8": False, **info})
    raise Skip("not_implemented", f"quantizer {q!r} is not implemented in this quantsweep version")


def _paddle_ptq(job: Job) -> Result:
    import json

    from quantsweep.quantize import paddle_ptq
    from quantsweep.quantize.calibdata import calib_feeds, contract_bindings

    spec = job.params["model_spec"]
    if spec["source"] not in ("paddle", "demo-paddle"):
        raise Skip("not_applicable", f"paddleslim-ptq quantizes Paddle models; {spec['name']} is "
                                     f"a {spec['source']} model")
    manifest = json.loads(Path(job.params["dataset"]["manifest"]).read_text())
    feeds = calib_feeds(contract_bindings(spec), spec, manifest, int(job.params["calib_images"]))
    t0 = time.monotonic()
    info = paddle_ptq.run(job, feeds)
    dst = job.out_dir / "model.onnx"
    return Result(artifacts={"model": str(dst), "float_model": str(job.out_dir / "float_model.onnx"),
                             "calibration_cache": str(job.out_dir / "calibration.cache"),
                             "paddle_model": str(job.out_dir / "paddle_model")},
                  data={"quantizer": "paddleslim-ptq", "calib_images": len(feeds), **info,
                        **qdq_summary(dst), "quantize_s": round(time.monotonic() - t0, 3),
                        "model_bytes": dst.stat().st_size})
