"""What a hand-off bundle runs on the GPU host, in a cell's (or a calibration's) folder:

    python -m quantsweep.handoff.gpu calibrate|build|evaluate cell.json

- ``calibrate``: TensorRT's own INT8 calibration of a float graph on the bundled calib feeds
  (``out/calibration.cache``, ``out/calibrate.json``);
- ``build``: the Python-API build (``out/model.engine``, ``out/build_api.json``);
- ``evaluate``: the engine (``out/model.engine``, built by either) on the bundle's val split with
  the sweep's own decoding and COCO scoring (``out/detections.json``, ``out/metrics.json`` with
  the split's checksum, ``out/evaluate.json``), then its timing (``out/latency.json``; a trtexec
  cell keeps trtexec's own timing, in its log).

Each writes its JSON whatever happens; a failure there is a row, not a crash."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from quantsweep.handoff import OUT
from quantsweep.status import write_json_atomic

PATH_FIELDS = ("onnx", "engine", "cache", "timing_cache", "layer_info", "profile")


def _request(spec: dict[str, Any]) -> Any:
    from quantsweep.backends.tensorrt_plan import BuildRequest

    r = spec["request"]
    fields: dict[str, Any] = {k: (Path(v) if k in PATH_FIELDS and v else v) for k, v in r.items()}
    fields["batch"] = tuple(fields["batch"])
    return BuildRequest(**fields)


def _failure(exc: Exception) -> dict[str, Any]:
    from quantsweep.job import Skip, ToolFailure

    if isinstance(exc, ToolFailure | Skip):
        return {"status": "failed" if isinstance(exc, ToolFailure) else "skipped",
                "reason_class": exc.reason_class, "message": exc.message}
    return {"status": "failed", "reason_class": "tool_error", "message": f"{type(exc).__name__}: {exc}"}


def calibrate(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from quantsweep.quantize.trt_calibrator import calibrate as run_calibration

    with np.load(spec["feeds"]) as z:
        feeds: dict[int, dict[str, Any]] = {}
        for key in z.files:
            i, _, name = key.partition("/")
            feeds.setdefault(int(i), {})[name] = z[key]
    info = run_calibration(Path(spec["onnx"]), [feeds[i] for i in sorted(feeds)], spec["algorithm"],
                           Path(OUT), spec["tensorrt_version"])
    return {"status": "ok", "data": info}


def build(spec: dict[str, Any]) -> dict[str, Any]:
    from quantsweep.backends import tensorrt_api
    from quantsweep.job import ToolFailure

    req = _request(spec)
    if req.cache is not None and not req.cache.is_file():
        raise ToolFailure("no_cache", f"{req.cache}: no calibration cache: the calibration of "
                                      f"{spec.get('calibration', 'this cell')} did not run or failed")
    info = tensorrt_api.build(req, Path(OUT) / "build.log")
    runner = tensorrt_api.Runner(req.engine, {})
    return {"status": "ok", "device": runner.device, "data": info}


def _val_manifest() -> dict[str, Any]:
    """The bundle's val split, its paths made absolute (relative ones are below the bundle)."""
    root = Path("../..")
    man = json.loads((root / "val" / "manifest.json").read_text())
    for k in ("annotations", "images"):
        p = Path(man["splits"]["val"][k])
        man["splits"]["val"][k] = str(p if p.is_absolute() else (root / p).resolve())
    return man


def evaluate(spec: dict[str, Any]) -> dict[str, Any]:
    from quantsweep.backends import tensorrt_api
    from quantsweep.dataset import split_checksum
    from quantsweep.evaluate.coco import score_detections
    from quantsweep.evaluate.loop import evaluate_runner, model_class_names
    from quantsweep.job import tool_call

    ev = spec["evaluate"]
    req = _request(spec)
    man = _val_manifest()
    checksum = split_checksum(man, "val")
    with tool_call("runner_create", f"TensorRT could not load {req.engine}"):
        runner = tensorrt_api.Runner(req.engine, {})
    model_spec = ev["model_spec"]
    dec = model_spec["decode"]
    names = model_class_names(req.onnx, dec) if dec["label_map"] == "names" else None
    dets, stats = evaluate_runner(runner, model_spec, man, ev["evaluate"], names)
    out = Path(OUT)
    write_json_atomic(out / "detections.json", dets, indent=None)
    try:
        metrics = score_detections(dets, man["splits"]["val"]["annotations"],
                                   engine=ev["evaluate"].get("coco_engine", "pycocotools"))
    except ValueError as exc:
        return {"status": "failed", "reason_class": "scoring_error", "message": str(exc),
                "device": runner.device, "data": stats}
    metrics["val_checksum"] = checksum
    write_json_atomic(out / "metrics.json", metrics)
    if spec["backend"] == "tensorrt_api":  # trtexec timed its own engine: its log has the numbers
        write_json_atomic(out / "latency.json", time_engine(runner, model_spec, man, ev["latency"]))
    return {"status": "ok", "device": runner.device, "data": stats, "AP": metrics["AP"]}


def time_engine(runner: Any, model_spec: dict[str, Any], man: dict[str, Any],
                opts: dict[str, Any]) -> dict[str, Any]:
    """The engine timed as the latency stage times a CPU graph: warm-up, then rounds over the
    same preprocessed val images; median ms per image and its IQR."""
    from quantsweep.evaluate.preprocess import build_feeds, iter_preprocessed, val_images
    from quantsweep.latency import interleaved_rounds, pass_timer, spread

    images = val_images(man, "val", int(opts["images"]))
    feeds = [build_feeds([x], [m], model_spec["inputs"])
             for _, x, m in iter_preprocessed(images, model_spec["preprocess"])]
    rounds = interleaved_rounds({"cell": pass_timer(runner.infer, feeds)}, int(opts["warmup"]),
                                int(opts["rounds"]))["cell"]
    s = spread(rounds)
    return {"status": "ok", "device": runner.device, "latency_ms": round(s["median"], 4),
            "latency_iqr_ms": round(s["iqr"], 4), "images": len(feeds),
            "rounds_ms": [round(x, 4) for x in rounds]}


STEPS = {"calibrate": (calibrate, "calibrate.json"), "build": (build, "build_api.json"),
         "evaluate": (evaluate, "evaluate.json")}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in STEPS:
        print(f"usage: python -m quantsweep.handoff.gpu {'|'.join(STEPS)} cell.json", file=sys.stderr)
        return 2
    step, result_file = STEPS[argv[0]]
    spec = json.loads(Path(argv[1]).read_text())
    Path(OUT).mkdir(exist_ok=True)
    try:
        result = step(spec)
    except Exception as exc:  # noqa: BLE001 - a tool's failure on the GPU host is the cell's row
        result = _failure(exc)
    write_json_atomic(Path(OUT) / result_file, result)
    print(f"{argv[0]} {spec.get('cell') or spec.get('unit')}: {result['status']}"
          + (f" [{result['reason_class']}] {result['message'][:300]}" if result["status"] != "ok" else ""))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
