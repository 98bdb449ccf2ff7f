"""The evaluation loop: preprocess (prefetched in a thread), infer, decode, write detections."""

from __future__ import annotations

import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from quantsweep.backends import make_runner
from quantsweep.evaluate.decode import (
    DecodeError,
    label_to_category,
    parse_names,
    split_outputs,
    to_detections,
    unmatched_names,
)
from quantsweep.evaluate.preprocess import iter_feeds, val_images
from quantsweep.job import Job, Result, ToolFailure, tool_call
from quantsweep.status import write_json_atomic


def model_class_names(model: str | Path | None, dec: dict[str, Any]) -> list[str] | None:
    """The model's class names: ``decode.names``, else the ONNX metadata ``names`` (written by
    Ultralytics' exporter), else the ``names`` a framework stage wrote in ``source.json``."""
    if dec.get("names"):
        return parse_names(dec["names"])
    if model is not None and (Path(model) / "source.json").is_file():
        names = json.loads((Path(model) / "source.json").read_text()).get("names")
        return parse_names(names) if names else None
    if model is None or not str(model).endswith(".onnx") or not Path(model).is_file():
        return None
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    return parse_names(meta["names"]) if "names" in meta else None


def evaluate_runner(runner: Any, spec: dict[str, Any], manifest: dict[str, Any],
                    ev: dict[str, Any], model_names: list[str] | None = None
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Detections of the val split and the loop's numbers. A decode or label-map problem is a
    ToolFailure (a failed row); detections of categories the dataset lacks are dropped and
    counted (``foreign_detections``), or fail the row with ``foreign_categories: error``."""
    return evaluate_runners({"": runner}, spec, manifest, ev, model_names)[""]


def evaluate_runners(runners: dict[str, Any], spec: dict[str, Any], manifest: dict[str, Any],
                     ev: dict[str, Any], model_names: list[str] | None = None
                     ) -> dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]:
    """``evaluate_runner`` for several runners of the same model contract in one pass over the
    images: each image is read and preprocessed once and run by every runner (the per-layer
    analysis scores its candidate graphs so). Per runner: its detections and numbers."""
    images = val_images(manifest, "val", ev.get("max_images"))
    dec = spec["decode"]
    if dec.get("nms"):  # NMS keeps boxes in score order: the first max_detections are all we score
        dec = {**dec, "nms": {**dec["nms"], "max_det": min(dec["nms"].get("max_det", 300),
                                                          ev["max_detections"])}}
    try:
        cat_ids = label_to_category(dec["label_map"], manifest["categories"], model_names)
    except DecodeError as exc:
        raise ToolFailure(exc.reason_class, str(exc)) from None
    dataset_ids = {c["id"] for c in manifest["categories"]}
    dets: dict[str, list[dict[str, Any]]] = {k: [] for k in runners}
    foreign: dict[str, dict[int, int]] = {k: {} for k in runners}
    infer_s = dict.fromkeys(runners, 0.0)

    def decode(im: dict[str, Any], meta: Any, outs: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            per = split_outputs(outs, dec, 1)[0]
            return to_detections(per, meta, im["id"], dec, cat_ids, ev["score_threshold"],
                                 ev["max_detections"])
        except DecodeError as exc:
            raise ToolFailure(exc.reason_class, f"decoding the outputs of image "
                              f"{im['file_name']}: {exc}") from None

    def collect(key: str, recs: list[dict[str, Any]]) -> None:
        for r in recs:
            if r["category_id"] in dataset_ids:
                dets[key].append(r)
            else:
                foreign[key][r["category_id"]] = foreign[key].get(r["category_id"], 0) + 1

    t0 = time.monotonic()
    # images are preprocessed ahead in one thread and decoded behind in another, while the
    # runners infer (ONNX Runtime releases the GIL): the loop runs at the runners' pace
    with ThreadPoolExecutor(max_workers=1) as decoder:
        pending: deque[tuple[str, Future[list[dict[str, Any]]]]] = deque()
        for im, meta, feeds in iter_feeds(images, spec["preprocess"], spec["inputs"]):
            for key, runner in runners.items():
                t1 = time.perf_counter()
                with tool_call("inference", f"{spec.get('name', 'model')} on image {im['file_name']}"):
                    outs = runner.infer(feeds)
                infer_s[key] += time.perf_counter() - t1
                pending.append((key, decoder.submit(decode, im, meta, outs)))
            while pending and pending[0][1].done():  # in order; a decode error stops the loop
                key, fut = pending.popleft()
                collect(key, fut.result())
        while pending:
            key, fut = pending.popleft()
            collect(key, fut.result())
    wall = time.monotonic() - t0
    n = max(1, len(images))
    unmatched = unmatched_names(dec["label_map"], model_names, manifest["categories"])
    out = {}
    for key, runner in runners.items():
        n_foreign = sum(foreign[key].values())
        if n_foreign and ev.get("foreign_categories", "drop") == "error":
            raise ToolFailure("foreign_categories", f"{n_foreign} detections name category ids the "
                              f"dataset does not have: {sorted(foreign[key])[:10]} (label_map "
                              f"{dec['label_map'] if isinstance(dec['label_map'], str) else 'list'}; "
                              f"evaluate.foreign_categories: error)")
        conv = getattr(getattr(runner, "adapt", None), "conversions", {})
        stats = {"images": len(images), "wall_s": round(wall, 3), "images_per_s": round(n / wall, 2),
                 "latency_ms_mean": round(1000 * infer_s[key] / n, 3),
                 "input_conversions": [vars(c) for c in conv.values()],
                 "foreign_detections": n_foreign,
                 "foreign_category_ids": {str(k): v for k, v in sorted(foreign[key].items())}}
        if unmatched:
            stats["unmatched_class_names"] = unmatched
        out[key] = (dets[key], stats)
    return out


def run(job: Job) -> Result:
    """The evaluate stage (and framework_eval): detections.json for the val split."""
    p = job.params
    manifest = json.loads(Path(p["dataset"]["manifest"]).read_text())
    upstream = "build" if "build" in job.inputs else "framework"
    model = str(job.artifact(upstream, "model"))
    backend = p["backend"]
    opts = {"threads": p["evaluate"]["threads"], **p.get("backend_options", {})}
    if backend == "paddle_tensorrt":  # the Paddle-TRT settings the build stage worked out
        opts["paddle_tensorrt"] = job.inputs[upstream]["data"]["paddle_tensorrt"]
    with tool_call("runner_create", f"{backend} could not load {model}"):
        runner = make_runner(backend, model, opts)
    dec = p["model_spec"]["decode"]
    names = model_class_names(model, dec) if dec["label_map"] == "names" else None
    dets, stats = evaluate_runner(runner, p["model_spec"], manifest, p["evaluate"], names)
    if getattr(runner, "settings", None):
        stats["runner_settings"] = runner.settings
    out = job.out_dir / "detections.json"
    write_json_atomic(out, dets, indent=None)
    built = job.inputs.get(upstream, {})
    # a simulated build stays simulated in every number measured on it
    return Result(backend=built.get("backend") or backend, mode=built.get("mode", "measured"),
                  device=getattr(runner, "device", "cpu"), artifacts={"detections": str(out)},
                  data=stats)
