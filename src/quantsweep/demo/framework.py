"""The ``framework`` stage: the demo detector rebuilt in the cell's framework from the
trained weights, checked against the torch reference outputs, and saved in the format the
toolset expects (Paddle: ``paddle.jit.save``; torch: weights + meta)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.job import Job, Result, ToolFailure, tool_call


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _parity(ref: Any, hm: np.ndarray, reg: np.ndarray, scores: np.ndarray,
            tol: float) -> dict[str, Any]:
    # heatmap logits and distances are compared raw; scores sorted (ties may reorder top-K)
    rec = {"hm_max_abs": _max_abs(hm, ref["hm"]),
           "reg_max_abs_rel": _max_abs(reg, ref["reg"]) / max(1.0, float(np.abs(ref["reg"]).max())),
           "scores_max_abs": _max_abs(np.sort(scores, axis=1), np.sort(ref["scores"], axis=1)),
           "tolerance": tol}
    rec["ok"] = all(v <= tol for k, v in rec.items() if k.endswith(("abs", "abs_rel")))
    return rec


def _torch(job: Job, weights: Path, meta: dict[str, Any], ref: Any) -> Result:
    import torch

    from quantsweep.demo.torch_model import load_deploy

    out = job.out_dir / "model"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, out / "weights.npz")
    (out / "meta.json").write_text(json.dumps(meta))
    dep = load_deploy(out / "weights.npz", meta)
    with torch.no_grad():
        hm, reg = dep.det(torch.from_numpy(ref["images"]))
        _, _, scores = dep(torch.from_numpy(ref["images"]), torch.from_numpy(ref["orig_sizes_wh"]))
    par = _parity(ref, hm.numpy(), reg.numpy(), scores.numpy(), job.params["parity_tol"])
    if not par["ok"]:
        raise ToolFailure("framework_parity", f"torch {torch.__version__} does not reproduce the "
                                              f"reference outputs: {par}")
    # how the torch exporter, the parity check and the framework evaluation rebuild it
    (out / "source.json").write_text(json.dumps({
        "factory": "quantsweep.demo.torch_model:deploy_from_dir", "kwargs": {"model_dir": str(out)},
        # the demo's own deploy contract (RT-DETR's); the config's contract is checked against
        # the exported graph
        "inputs": [{"name": "images", "dtype": "float32"}, {"name": "orig_target_sizes", "dtype": "int32"}],
        "output_names": ["labels", "boxes", "scores"],
        "qat": {"batches": "quantsweep.demo.train:qat_batches", "loss": "quantsweep.demo.train:qat_loss"}}))
    return Result(backend="torch", artifacts={"model": str(out)},
                  data={"framework": "torch", "version": torch.__version__, "parity": par})


def _paddle(job: Job, weights: Path, meta: dict[str, Any], ref: Any) -> Result:
    fmt = job.params["model_spec"].get("paddle_format", "legacy")
    # must be set before paddle is imported: 3.x saves PIR (.json) unless it is off
    os.environ["FLAGS_enable_pir_api"] = "1" if fmt == "pir" else "0"
    with tool_call("tool_missing", "importing paddle"):
        import paddle
    major = int(paddle.__version__.split(".")[0])
    if fmt == "pir" and major < 3:
        raise ToolFailure("unsupported_format", f"the PIR (.json) model format needs Paddle >= 3.0; "
                                                f"this toolset has paddle {paddle.__version__}")
    from quantsweep.demo import arch
    from quantsweep.demo.paddle_model import Deploy, load_detector, save_inference_model

    paddle.set_device("cpu")
    with tool_call("framework_load", "loading the demo weights into Paddle"):
        det = load_detector(weights, meta["num_classes"])
    with paddle.no_grad():
        hm, reg = det(paddle.to_tensor(ref["images"]))
    dep = Deploy(det, meta["top_k"], meta["input_size"], meta["input_size"] // arch.STRIDE)
    dep.eval()
    n = ref["images"].shape[0]
    s = float(meta["input_size"])
    sf = np.stack([s / ref["orig_sizes_wh"][:, 1], s / ref["orig_sizes_wh"][:, 0]], 1)
    with paddle.no_grad():
        bbox, _ = dep(paddle.to_tensor(ref["images"]), paddle.to_tensor(np.full((n, 2), s, np.float32)),
                      paddle.to_tensor(sf.astype(np.float32)))
    scores = bbox.numpy()[:, 1].reshape(n, -1)
    par = _parity(ref, hm.numpy(), reg.numpy(), scores, job.params["parity_tol"])
    if not par["ok"]:
        raise ToolFailure("framework_parity", f"paddle {paddle.__version__} differs from the torch "
                                              f"reference beyond tolerance: {par}")
    out = job.out_dir / "model"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tool_call("framework_save", "paddle.jit.save"):
        save_inference_model(det, meta, out / "inference")
    files = sorted(p.name for p in out.iterdir())
    model_file = next((f for f in files if f.endswith((".pdmodel", ".json"))), None)
    if model_file is None:
        raise ToolFailure("framework_save", f"paddle.jit.save wrote no model file: {files}")
    (out / "meta.json").write_text(json.dumps(meta))
    return Result(backend="paddle_inference", artifacts={"model": str(out)},
                  data={"framework": "paddle", "version": paddle.__version__, "format": fmt,
                        "files": files, "model_file": model_file, "parity": par})


def run(job: Job) -> Result:
    spec = job.params["model_spec"]
    weights = job.artifact("train", "weights")
    meta = json.loads(job.artifact("train", "meta").read_text())
    with np.load(job.artifact("train", "reference")) as z:
        ref = {k: z[k] for k in z.files}
    if spec["source"] == "demo-torch":
        with tool_call("tool_missing", "importing torch"):
            import torch  # noqa: F401
        return _torch(job, weights, meta, ref)
    return _paddle(job, weights, meta, ref)
