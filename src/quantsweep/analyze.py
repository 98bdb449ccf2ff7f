"""The ``analyze`` stage: where a Q/DQ graph loses accuracy, layer by layer, and the
mixed-precision recipe that wins it back.

For each quantized layer (``qdq_graph.quantized_layers``) the graph is changed with ``onnx``
surgery, never by re-running the quantizer: *only this layer in float* (its Q/DQ inputs take
the float tensors) and *only this layer quantized* (every other layer in float). Each variant
runs on ``analyze.images`` calib images and its outputs are compared with the FP32 graph's
(computed once): cosine and max-abs per output. The ``top_k`` layers whose float version
recovers the most are then scored by AP on the first ``val_images`` val images, and the recipe
is built greedily from those of them that win AP back alone in float: the layer that recovers
the most AP goes to float, then the next, kept when AP improves, until the drop vs FP32 is at
most ``max_ap_drop``, ``max_float_layers`` are float or the candidates are tried.
The recipe is written in each consumer's own terms (``recipe.json``).

Runs in quantsweep's own interpreter (ONNX Runtime + pycocotools): the analysis compares
graphs; the recipe cell it leads to is quantized, built and evaluated in the cell's toolset."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantsweep.job import Job, Result, Skip, tool_call
from quantsweep.status import write_json_atomic

# Quantizers whose own exclusion (nodes_to_exclude) of a node that is not a compute node
# (Sigmoid, Shape...) leaves the Q/DQ pair in front of it in place, because that pair quantizes
# the output of the compute node before it (ONNX Runtime's QDQ quantizer quantizes Conv
# outputs): their recipes are made of units with a compute node only, so that the recipe the
# quantizer applies is the graph the analysis measured. ModelOpt quantizes node inputs only.
COMPUTE_UNITS_ONLY = ("ort-qdq",)

DEFAULTS = {"images": 8, "val_images": 50, "top_k": 5, "max_ap_drop": 0.005, "max_float_layers": 8}


def recipe_terms(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The float layers in each consumer's vocabulary."""
    from quantsweep.quantize.modelopt_ptq import exclude_patterns

    names = [x["layer"] for x in layers]
    return {
        "onnxruntime.quantize_static": {"nodes_to_exclude": names},
        "modelopt.onnx.quantization": {"nodes_to_exclude": exclude_patterns(names)},
        # PaddleSlim skips by parameter name; paddle2onnx keeps Paddle's parameter names as the
        # ONNX initializer names of the weights
        "paddleslim": {"skip_tensor_list": [w for x in layers for w in x["weights"]]},
        # TensorRT's ONNX parser names a layer after its node; an explicit (Q/DQ) graph takes
        # the recipe graph (the pairs removed), an implicit one these precisions
        "trtexec": "--precisionConstraints=obey --layerPrecisions="
                   + ",".join(f"{n}:fp16" for n in names),
        "tensorrt_api": {"layer_precisions": {n: "fp16" for n in names}},
    }


def greedy_recipe(order: list[str], ap_of: Callable[[list[str]], float], ap_fp32: float,
                  ap_int8: float, max_ap_drop: float, max_float_layers: int
                  ) -> tuple[list[str], float, list[dict[str, Any]]]:
    """Layers to keep in float, taken in ``order``: each is tried on top of those kept so far and
    kept when the AP rises; stops when AP(FP32) - AP is at most ``max_ap_drop`` or
    ``max_float_layers`` are kept. Returns (kept layers, their AP, the steps tried)."""
    kept: list[str] = []
    steps: list[dict[str, Any]] = []
    ap_cur = ap_int8
    for layer in order:
        if ap_fp32 - ap_cur <= max_ap_drop or len(kept) >= max_float_layers:
            break
        trial = [*kept, layer]
        ap = ap_of(trial)
        steps.append({"float_layers": trial, "AP": ap, "kept": ap > ap_cur})
        if ap > ap_cur:
            kept, ap_cur = trial, ap
    return kept, ap_cur, steps


def recipe_candidates(scored: list[dict[str, Any]]) -> list[str]:
    """The layers the recipe tries, in order: of the candidates scored by AP (the ``top_k``),
    those that win AP back alone in float, the most first. Layers not scored are not tried:
    each try of two or more layers costs an evaluation of the subset, and walking every layer of
    a graph whose target is out of reach cost 16 of them on the demo (2026-12-07)."""
    return [r["layer"] for r in sorted(scored, key=lambda r: -r["ap_recovered"])
            if r["ap_recovered"] > 0]


class _Graphs:
    """ONNX Runtime sessions of graph variants (serialized in memory, never written)."""

    def __init__(self, threads: int):
        self.threads, self.n = threads, 0

    def runner(self, model: Any) -> Any:
        from quantsweep.backends import onnxruntime as ortb

        self.n += 1
        return ortb.runner(model.SerializeToString(), {"threads": self.threads, "spin": False})


class _TopK:
    """The sessions of the ``k`` best-ranked units so far (their AP is scored next): kept
    instead of being built again; the others are let go as soon as they drop out."""

    def __init__(self, k: int):
        self.k = k
        self.ranked: list[tuple[tuple[float, ...], int, str]] = []
        self.runners: dict[str, tuple[Any, Any]] = {}

    def offer(self, key: tuple[float, ...], label: str, runners: tuple[Any, Any]) -> None:
        self.ranked.append((key, len(self.ranked), label))
        self.ranked.sort()  # by key, then arrival: the order the final ranking sorts in
        if any(lbl == label for _, _, lbl in self.ranked[:self.k]):
            self.runners[label] = runners
        for _, _, lbl in self.ranked[self.k:]:
            self.runners.pop(lbl, None)


def _compare(runner: Any, feeds: list[dict[str, Any]], ref: list[dict[str, Any]]) -> dict[str, Any]:
    """Outputs of ``runner`` vs the FP32 outputs: per output cosine and max-abs, and one error
    (the mean of 1 - cosine over the outputs) that ranks layers."""
    from quantsweep.export.parity import OutputStats

    stats = {k: OutputStats(k, k) for k in ref[0]}
    for f, r in zip(feeds, ref, strict=True):
        out = runner.infer(f)
        for k, s in stats.items():
            s.add(r[k], out[k])
    recs = {k: s.record() for k, s in stats.items()}
    cos = [v["cosine"] for v in recs.values() if v["cosine"] is not None]
    return {"error": round(sum(1 - c for c in cos) / len(cos), 9) if cos else 1.0,
            "outputs": {k: {"cosine": v["cosine"], "max_abs": v["max_abs"]} for k, v in recs.items()}}


class _SubsetAP:
    """AP of a graph on the first ``n`` val images, with the evaluation's own decoding."""

    def __init__(self, job: Job, float_model: Path, n: int):
        from quantsweep.evaluate.loop import model_class_names

        p = job.params
        manifest = json.loads(Path(p["dataset"]["manifest"]).read_text())
        ann = json.loads(Path(manifest["splits"]["val"]["annotations"]).read_text())
        keep = {im["id"] for im in sorted(ann["images"], key=lambda im: im["id"])[:n]}
        sub = {**ann, "images": [im for im in ann["images"] if im["id"] in keep],
               "annotations": [a for a in ann["annotations"] if a["image_id"] in keep]}
        self.ann = job.out_dir / "val_subset.json"
        write_json_atomic(self.ann, sub)
        self.manifest = {**manifest, "splits": {**manifest["splits"], "val": {
            **manifest["splits"]["val"], "annotations": str(self.ann)}}}
        self.spec, self.ev = p["model_spec"], {**p["evaluate"], "max_images": n}
        self.engine = self.ev.get("coco_engine", "pycocotools")
        dec = self.spec["decode"]
        self.names = model_class_names(float_model, dec) if dec["label_map"] == "names" \
            else None
        self.images = len(keep)
        self.seconds = 0.0

    def __call__(self, runner: Any) -> float:
        return self.many({"": runner})[""]

    def many(self, runners: dict[str, Any]) -> dict[str, float]:
        """The AP of each runner, all of them run in one pass over the subset's images."""
        from quantsweep.evaluate.coco import score_detections
        from quantsweep.evaluate.loop import evaluate_runners

        t0 = time.monotonic()
        res = evaluate_runners(runners, self.spec, self.manifest, self.ev, self.names)
        aps = {k: float(score_detections(dets, self.ann, engine=self.engine, by_area=False)["AP"])
               for k, (dets, _) in res.items()}
        self.seconds += time.monotonic() - t0
        return aps


def run(job: Job) -> Result:
    import onnx

    from quantsweep import qdq_graph
    from quantsweep.quantize.calibdata import calib_feeds, onnx_bindings

    t0 = time.monotonic()
    p = job.params
    opts = {**DEFAULTS, **p.get("analyze", {})}
    q = job.inputs["quantize"]
    qpath, fpath = q["artifacts"].get("model"), q["artifacts"].get("float_model")
    if not qpath or not str(qpath).endswith(".onnx") or not fpath:
        raise Skip("no_qdq", f"quantizer {p['quantizer']!r} left no Q/DQ ONNX graph beside its float "
                             f"graph (artifacts: {sorted(q['artifacts'])}); nothing to analyse")
    with tool_call("model_load", f"loading {qpath} and {fpath}"):
        model, fp32 = onnx.load(str(qpath)), onnx.load(str(fpath))
    layers = qdq_graph.quantized_layers(model, fp32)
    if not layers:
        raise Skip("no_qdq", f"{qpath}: no node is fed by a DequantizeLinear: the graph has no "
                             f"quantized layer to analyse")
    manifest = json.loads(Path(p["dataset"]["manifest"]).read_text())
    feeds = calib_feeds(onnx_bindings(Path(fpath)), p["model_spec"], manifest, int(opts["images"]))
    threads = int(p.get("threads", 1))
    top_k = int(opts["top_k"])
    graphs = _Graphs(threads)
    ap_of = _SubsetAP(job, Path(fpath), int(opts["val_images"]))
    with tool_call("analysis_failed", f"running the FP32 graph {fpath}"):
        ref_runner = graphs.runner(fp32)
        ref = [ref_runner.infer(f) for f in feeds]  # the FP32 outputs, computed once
    with tool_call("analysis_failed", f"running the quantized graph {qpath}"):
        int8_runner = graphs.runner(model)
        base = _compare(int8_runner, feeds, ref)
    t_outputs = time.monotonic()
    per: list[dict[str, Any]] = []
    # the units of the analysis: layers sharing a quantized activation go together
    units = {g[0].name: g for g in qdq_graph.shared_groups(layers)
             if p["quantizer"] not in COMPUTE_UNITS_ONLY
             or any(x.op in qdq_graph.COMPUTE_OPS for x in g)}

    def nodes_of(labels: list[str]) -> list[str]:
        return [x.name for u in labels for x in units[u]]

    def variant(labels: list[str]) -> Any:
        return graphs.runner(qdq_graph.float_layers(model, nodes_of(labels), fp32))

    best = _TopK(top_k)
    for label, group in units.items():
        others = [u for u in units if u != label]
        with tool_call("analysis_failed", f"layer {label}: the graph with it in float"):
            float_runner, q_runner = variant([label]), variant(others)
            alone_float = _compare(float_runner, feeds, ref)
            alone_q = _compare(q_runner, feeds, ref)
        recovered = round(base["error"] - alone_float["error"], 9)
        best.offer((-recovered, -alone_q["error"]), label, (float_runner, q_runner))
        per.append({"layer": label, "nodes": [x.name for x in group],
                    "op": "+".join(dict.fromkeys(x.op for x in group)),
                    "activations": sorted({t for x in group for t in x.activations}),
                    "weights": [w for x in group for w in x.weights],
                    "error_only_quantized": alone_q["error"],
                    "error_only_float": alone_float["error"],
                    "error_recovered": recovered,
                    "outputs_only_quantized": alone_q["outputs"]})
    outputs_s = time.monotonic() - t_outputs
    # the layers whose float version brings the outputs closest to FP32, scored by AP: the
    # FP32 and INT8 graphs and each candidate alone in float and alone quantized, all in one
    # pass over the subset (their sessions kept from the output comparison)
    ranked = sorted(per, key=lambda r: (-r["error_recovered"], -r["error_only_quantized"]))
    scored = {"fp32": ref_runner, "int8": int8_runner}
    for r in ranked[:top_k]:
        scored[f"float:{r['layer']}"], scored[f"quantized:{r['layer']}"] = best.runners[r["layer"]]
    with tool_call("analysis_failed", "scoring the candidates' AP"):
        aps = ap_of.many(scored)
    best.runners.clear()
    ap_fp32, ap_int8 = aps["fp32"], aps["int8"]
    for r in ranked[:top_k]:
        r["ap_only_float"] = aps[f"float:{r['layer']}"]
        r["ap_recovered"] = round(r["ap_only_float"] - ap_int8, 6)
        r["ap_only_quantized"] = aps[f"quantized:{r['layer']}"]
        r["ap_drop"] = round(ap_fp32 - r["ap_only_quantized"], 6)
    order = recipe_candidates(ranked[:top_k])
    # a trial of one layer is that layer alone in float: its AP is already known
    known: dict[tuple[str, ...], float] = {(r["layer"],): r["ap_only_float"] for r in ranked[:top_k]}
    kept, ap_cur, steps = greedy_recipe(
        order,
        lambda trial: known[tuple(trial)] if tuple(trial) in known else ap_of(variant(trial)),
        ap_fp32, ap_int8, float(opts["max_ap_drop"]), int(opts["max_float_layers"]))
    chosen = [x.record() for u in kept for x in units[u]]  # the recipe names nodes
    target_met = ap_fp32 - ap_cur <= opts["max_ap_drop"]
    recipe = {"float_layers": [x["layer"] for x in chosen],
              "layers": [{k: x[k] for k in ("layer", "op", "activations", "weights")} for x in chosen],
              "AP_fp32": ap_fp32, "AP_int8": ap_int8, "AP_recipe": ap_cur,
              "val_images": ap_of.images, "max_ap_drop": opts["max_ap_drop"],
              "max_float_layers": opts["max_float_layers"], "target_met": target_met,
              "note": "" if target_met else
              (f"AP drop {ap_fp32 - ap_cur:.4f} > max_ap_drop {opts['max_ap_drop']} with "
               f"{len(kept)} layer groups ({len(chosen)} nodes) in float (max_float_layers "
               f"{opts['max_float_layers']}; {len(order)} of the top_k {top_k} candidates win AP "
               f"back alone in float; a larger analyze.top_k scores more)"),
              "consumers": recipe_terms(chosen), "steps": steps,
              "source": {"quantized": str(qpath), "float": str(fpath)}}
    sens = {"quantizer": p["quantizer"], "layers": sorted(per, key=lambda r: -r["error_recovered"]),
            "int8": {"error": base["error"], "outputs": base["outputs"]},
            "AP_fp32": ap_fp32, "AP_int8": ap_int8, "val_images": ap_of.images,
            "calib_images": len(feeds), "options": opts}
    write_json_atomic(job.out_dir / "sensitivity.json", sens)
    write_json_atomic(job.out_dir / "recipe.json", recipe)
    import onnxruntime

    wall = time.monotonic() - t0
    return Result(artifacts={"sensitivity": str(job.out_dir / "sensitivity.json"),
                             "recipe": str(job.out_dir / "recipe.json")},
                  data={"quantized_layers": len(layers), "layer_groups": len(units),
                        "float_layers": recipe["float_layers"],
                        "AP_fp32": ap_fp32, "AP_int8": ap_int8, "AP_recipe": ap_cur,
                        "target_met": target_met, "top_layers": [
                            {k: r.get(k) for k in ("layer", "op", "error_recovered", "ap_recovered",
                                                   "ap_drop")} for r in ranked[:int(opts["top_k"])]],
                        "graphs_run": graphs.n, "analyze_s": round(wall, 2),
                        "outputs_s": round(outputs_s, 2), "ap_s": round(ap_of.seconds, 2),
                        "onnxruntime": onnxruntime.__version__})

