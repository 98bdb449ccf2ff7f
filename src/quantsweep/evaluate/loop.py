"""The evaluation loop: preprocess (prefetched in a thread), infer, decode, write detections."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.evaluate.decode import DecodeError, label_to_category, split_outputs, to_detections
from quantsweep.evaluate.preprocess import Meta, build_feeds, load_image, preprocess
from quantsweep.job import Job, Result, ToolFailure, tool_call
from quantsweep.status import write_json_atomic


def val_images(manifest: dict[str, Any], split: str, limit: int | None) -> list[dict[str, Any]]:
    ann = json.loads(Path(manifest["splits"][split]["annotations"]).read_text())
    root = Path(manifest["splits"][split]["images"])
    images = sorted(ann["images"], key=lambda im: im["id"])[:limit]
    return [{**im, "path": str(root / im["file_name"])} for im in images]


def iter_preprocessed(images: list[dict[str, Any]], pre: dict[str, Any],
                      prefetch: int = 4) -> Iterator[tuple[dict[str, Any], np.ndarray, Meta]]:
    """Yield (image record, CHW array, meta); decoding runs ahead in a worker thread."""

    def work(im: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray, Meta]:
        x, meta = preprocess(load_image(im["path"]), pre)
        return im, x, meta

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(work, im) for im in images[:prefetch]]
        nxt = prefetch
        while pending:
            fut = pending.pop(0)
            if nxt < len(images):
                pending.append(pool.submit(work, images[nxt]))
                nxt += 1
            yield fut.result()


def evaluate_runner(runner: Any, spec: dict[str, Any], manifest: dict[str, Any],
                    ev: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    images = val_images(manifest, "val", ev.get("max_images"))
    cat_ids = label_to_category(spec["decode"]["label_map"], manifest["categories"])
    dets: list[dict[str, Any]] = []
    infer_s = 0.0
    t0 = time.monotonic()
    for im, x, meta in iter_preprocessed(images, spec["preprocess"]):
        feeds = build_feeds([x], [meta], spec["inputs"])
        t1 = time.perf_counter()
        with tool_call("inference", f"{spec.get('name', 'model')} on image {im['file_name']}"):
            outs = runner.infer(feeds)
        infer_s += time.perf_counter() - t1
        try:
            per = split_outputs(outs, spec["decode"], 1)[0]
            dets += to_detections(per, meta, im["id"], spec["decode"], cat_ids,
                                  ev["score_threshold"], ev["max_detections"])
        except DecodeError as exc:
            raise ToolFailure("decode", f"decoding outputs of image {im['file_name']}: {exc}") from None
    wall = time.monotonic() - t0
    n = max(1, len(images))
    conv = getattr(getattr(runner, "adapt", None), "conversions", {})
    stats = {"images": len(images), "wall_s": round(wall, 3), "images_per_s": round(n / wall, 2),
             "latency_ms_mean": round(1000 * infer_s / n, 3),
             "input_conversions": [vars(c) for c in conv.values()]}
    return dets, stats


def make_runner(backend: str, model: str, options: dict[str, Any]) -> Any:
    if backend in ("onnxruntime", "tensorrt_sim"):  # the simulation's Q/DQ graph runs on ORT
        from quantsweep.backends import onnxruntime as ortb

        return ortb.runner(model, options)
    if backend in ("paddle_inference", "paddle_tensorrt"):
        from quantsweep.backends import paddle_inference

        return paddle_inference.runner(model, options)
    if backend in ("tensorrt_api", "trtexec"):  # trtexec's engine runs in the same runtime
        from quantsweep.backends import tensorrt_api

        return tensorrt_api.runner(model, options)
    if backend == "torch":
        from quantsweep.demo import torch_model

        return torch_model.runner(model, options)
    raise ToolFailure("not_implemented", f"no runner for backend {backend!r}")


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
    dets, stats = evaluate_runner(runner, p["model_spec"], manifest, p["evaluate"])
    out = job.out_dir / "detections.json"
    write_json_atomic(out, dets)
    built = job.inputs.get(upstream, {})
    # a simulated build stays simulated in every number measured on it
    return Result(backend=built.get("backend") or backend, mode=built.get("mode", "measured"),
                  device=getattr(runner, "device", "cpu"), artifacts={"detections": str(out)},
                  data=stats)
