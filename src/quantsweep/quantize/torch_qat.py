"""Quantizer ``torch-qat``: quantization-aware fine-tuning of the demo torch detector with torch's
fake quantization (INT8, symmetric: per-tensor activations at every convolution's input,
per-channel weights), then ``torch.onnx.export`` to a Q/DQ graph.

``torch-qat`` (static amax): each activation range is calibrated on the calib split and kept as a
constant; the exported scales are constants of the graph, as TensorRT needs them.
``torch-qat-dynamic``: each activation range is the tensor's own maximum, computed at run time
(field report 002: QAT exported this way lost accuracy); the export computes the scales with
ReduceMax/Div in the graph, which ``quantsweep doctor`` flags (``runtime_scales``).
Weight scales are frozen from the fine-tuned weights in both variants."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.job import Job, ToolFailure, tool_call


def _fake_quant_conv(mode: str) -> Any:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FakeQuantConv(nn.Module):
        amax: Any
        scale: Any
        wscale: Any

        def __init__(self, conv: nn.Conv2d):
            super().__init__()
            self.conv = conv
            self.mode = mode
            self.calibrating = False
            self.register_buffer("amax", torch.tensor(0.0))
            self.register_buffer("scale", torch.tensor(1.0))
            self.register_buffer("wscale", torch.ones(conv.out_channels))
            self.frozen = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.calibrating:
                self.amax = torch.maximum(self.amax, x.detach().abs().max())
                return self.conv(x)
            if self.mode == "static":  # a constant once frozen: an initializer in the export
                scale = self.scale if self.frozen else (self.amax / 127.0).clamp(min=1e-8)
            else:  # computed from the tensor itself, at run time
                scale = (x.abs().max() / 127.0).clamp(min=1e-8).detach()
            zero = torch.zeros((), dtype=torch.int32)
            xq = torch.fake_quantize_per_tensor_affine(x, scale, zero, -128, 127)
            w = self.conv.weight
            ws = self.wscale if self.frozen else (w.detach().abs().amax(dim=(1, 2, 3)) / 127.0).clamp(min=1e-8)
            wq = torch.fake_quantize_per_channel_affine(
                w, ws, torch.zeros(w.shape[0], dtype=torch.int32), 0, -128, 127)
            return F.conv2d(xq, wq, self.conv.bias, self.conv.stride, self.conv.padding,
                            self.conv.dilation, self.conv.groups)

        def freeze(self) -> None:
            w = self.conv.weight.detach()
            self.scale = (self.amax / 127.0).clamp(min=1e-8)
            self.wscale = (w.abs().amax(dim=(1, 2, 3)) / 127.0).clamp(min=1e-8)
            self.frozen = True

    return FakeQuantConv


def _wrap(module: Any, cls: Any) -> list[Any]:
    from torch import nn

    wrapped = []
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            fq = cls(child)
            setattr(module, name, fq)
            wrapped.append(fq)
        else:
            wrapped += _wrap(child, cls)
    return wrapped


def quantize(job: Job, dst: Path, opset: int) -> dict[str, Any]:
    with tool_call("tool_missing", "importing torch"):
        import torch

    from quantsweep.demo import train as demo_train
    from quantsweep.demo.torch_model import load_deploy
    from quantsweep.quantize.calibdata import calib_feeds, contract_bindings

    opts = job.params.get("options", {})
    mode = "dynamic" if job.params["quantizer"] == "torch-qat-dynamic" else "static"
    steps, lr = int(opts.get("steps", 30)), float(opts.get("lr", 1e-4))
    spec = job.params["model_spec"]
    if spec["source"] != "demo-torch":
        raise ToolFailure("not_applicable", f"torch-qat fine-tunes the demo torch detector; "
                                            f"{spec['name']} is a {spec['source']} model")
    model_dir = job.artifact("framework", "model")
    meta = json.loads((model_dir / "meta.json").read_text())
    dep = load_deploy(model_dir / "weights.npz", meta)
    torch.manual_seed(0)
    fqs = _wrap(dep.det, _fake_quant_conv(mode))
    manifest = json.loads(Path(job.params["dataset"]["manifest"]).read_text())
    feeds = calib_feeds(contract_bindings(spec), spec, manifest, int(job.params["calib_images"]))
    t0 = time.monotonic()
    with torch.no_grad():  # activation ranges on the calib split
        for m in fqs:
            m.calibrating = True
        for f in feeds:
            dep.det(torch.from_numpy(f["images"]))
        for m in fqs:
            m.calibrating = False
    losses = []
    if steps:
        cat_ids = sorted(c["id"] for c in manifest["categories"])
        xs, hms, regs, wgts = demo_train.load_split(manifest, "train", spec["preprocess"],
                                                    len(cat_ids), cat_ids)
        X, HM, RG, WG = (torch.from_numpy(a) for a in (xs, hms, regs, wgts))
        opt = torch.optim.AdamW(dep.det.parameters(), lr=lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(0)
        bs = min(int(opts.get("batch_size", 8)), len(X))
        dep.det.train()
        for m in dep.det.modules():  # fine-tune the weights, keep the BN statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        for _ in range(steps):
            idx = torch.randint(len(X), (bs,), generator=gen)
            out_hm, out_reg = dep.det(X[idx])
            loss = demo_train.focal_loss(out_hm, HM[idx]) + \
                demo_train.REG_WEIGHT * demo_train.giou_loss(out_reg, RG[idx], WG[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        dep.det.eval()
    for m in fqs:
        m.freeze()
    s = meta["input_size"]
    tmp = dst.with_name(".qat-" + dst.name)
    with tool_call("export_failed", f"torch.onnx.export of the fake-quantized detector at opset {opset}"), \
            torch.no_grad():
        torch.onnx.export(dep, (torch.zeros(1, 3, s, s), torch.from_numpy(np.array([[640, 480]], np.int32))),
                          str(tmp), opset_version=max(opset, 13), dynamo=False,
                          input_names=["images", "orig_target_sizes"],
                          output_names=["labels", "boxes", "scores"])
    tmp.replace(dst)
    return {"tool": f"torch {torch.__version__} fake quantization", "amax": mode, "qat_steps": steps,
            "qat_lr": lr, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None, "fake_quant_convs": len(fqs),
            "qat_s": round(time.monotonic() - t0, 1)}
