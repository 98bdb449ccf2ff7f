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

from quantsweep.job import Job, Skip, ToolFailure, tool_call


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
    spec = job.params["model_spec"]
    if spec["source"] not in ("demo-torch", "torch", "ultralytics"):
        raise ToolFailure("not_applicable", f"torch-qat fine-tunes a PyTorch model; "
                                            f"{spec['name']} is a {spec['source']} model")
    from quantsweep.backends import torch_module

    src = torch_module.read_source(job.artifact("framework", "model"))
    qat = src.get("qat")
    if not qat:
        raise Skip("needs_training_step", f"{job.params['quantizer']} fine-tunes with a training "
                                          f"step, and {spec['name']} ({spec['source']}) names none "
                                          f"(models.{spec['name']}.qat: loss and batches)")
    with tool_call("tool_missing", "importing torch"):
        import torch

    from quantsweep.evaluate.preprocess import example_feeds
    from quantsweep.quantize.calibdata import calib_feeds, contract_bindings

    opts = job.params.get("options", {})
    mode = "dynamic" if job.params["quantizer"] == "torch-qat-dynamic" else "static"
    steps, lr = int(opts.get("steps", 30)), float(opts.get("lr", 1e-4))
    module = torch_module.build(src)
    torch.manual_seed(0)
    fqs = _wrap(module, _fake_quant_conv(mode))
    if not fqs:
        raise Skip("not_applicable", f"{spec['name']} has no Conv2d layer to fake-quantize")
    names = [t["name"] for t in src["inputs"]]
    manifest = json.loads(Path(job.params["dataset"]["manifest"]).read_text())
    feeds = calib_feeds(contract_bindings(spec), spec, manifest, int(job.params["calib_images"]))
    t0 = time.monotonic()
    with torch.no_grad():  # activation ranges on the calib split
        for m in fqs:
            m.calibrating = True
        for f in feeds:
            module(*(torch.from_numpy(a) for a in torch_module.module_inputs(src, f)))
        for m in fqs:
            m.calibrating = False
    losses = []
    if steps:
        loss_fn = torch_module.import_factory(qat["loss"], src.get("python_path"))
        with tool_call("qat_data", f"{qat['batches']} (the QAT training tensors)"):
            batches = list(torch_module.import_factory(qat["batches"], src.get("python_path"))(
                manifest, spec["preprocess"]))
        opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(0)
        bs = min(int(opts.get("batch_size", 8)), len(batches[0]))
        module.train()
        for m in module.modules():  # fine-tune the weights, keep the BN statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        for _ in range(steps):
            idx = torch.randint(len(batches[0]), (bs,), generator=gen)
            loss = loss_fn(module, *(b[idx] for b in batches))
            if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or not loss.requires_grad:
                raise ToolFailure("qat_loss", f"{qat['loss']} returned "
                                              f"{type(loss).__name__} {getattr(loss, 'shape', '')}: "
                                              f"not a scalar tensor with a gradient")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        module.eval()
    for m in fqs:
        m.freeze()
    example = tuple(torch.from_numpy(a) for a in torch_module.module_inputs(src, example_feeds(spec)))
    target, _ = torch_module.export_target(module, example)
    tmp = dst.with_name(".qat-" + dst.name)
    with tool_call("export_failed", f"torch.onnx.export of the fake-quantized detector at opset {opset}"), \
            torch.no_grad():
        torch.onnx.export(target, example, str(tmp),
                          opset_version=max(opset, 13), dynamo=False, input_names=names,
                          output_names=src["output_names"])
    tmp.replace(dst)
    return {"tool": f"torch {torch.__version__} fake quantization", "amax": mode, "qat_steps": steps,
            "qat_lr": lr, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None, "fake_quant_convs": len(fqs),
            "qat_s": round(time.monotonic() - t0, 1)}
