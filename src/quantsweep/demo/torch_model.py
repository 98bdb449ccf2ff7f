"""The demo detector in PyTorch (imported only inside a toolset that has torch).

A small CenterNet/TTFNet-style anchor-free detector: conv-BN-ReLU backbone to stride 32, a
light top-down merge to stride 4, a class heatmap head and a left/top/right/bottom distance
head. ``Deploy`` wraps it with RT-DETR's deployment contract: inputs ``images`` [N,3,H,W]
float32 and ``orig_target_sizes`` [N,2] int32 (w, h); outputs ``labels``, ``boxes`` (xyxy,
original pixels) and ``scores``, fixed top-K.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from quantsweep.demo import arch


class ConvBNAct(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Detector(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.backbone = nn.ModuleList(ConvBNAct(ci, co, 3, s) for ci, co, s in arch.BACKBONE)
        self.lateral = nn.ModuleList(ConvBNAct(ci, arch.NECK, 1, 1) for ci in arch.LATERAL_IN)
        self.smooth = nn.ModuleList(ConvBNAct(arch.NECK, arch.NECK, 3, 1)
                                    for _ in arch.LATERAL_IN)
        self.hm_conv = nn.Conv2d(arch.NECK, arch.HEAD, 3, 1, 1)
        self.hm_out = nn.Conv2d(arch.HEAD, num_classes, 1)
        self.reg_conv = nn.Conv2d(arch.NECK, arch.HEAD, 3, 1, 1)
        self.reg_out = nn.Conv2d(arch.HEAD, 4, 1)
        nn.init.constant_(self.hm_out.bias, arch.HM_BIAS_INIT)
        nn.init.normal_(self.hm_out.weight, std=0.01)
        nn.init.normal_(self.reg_out.weight, std=0.01)
        nn.init.constant_(self.reg_out.bias, 0.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = {}
        for i, blk in enumerate(self.backbone):
            x = blk(x)
            feats[i] = x
        # top-down: deepest feature first, merged into shallower ones by nearest upsampling
        y = self.lateral[0](feats[arch.TAPS[0]])
        y = self.smooth[0](y)
        for j in range(1, len(arch.TAPS)):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            y = self.smooth[j](y + self.lateral[j](feats[arch.TAPS[j]]))
        hm = self.hm_out(F.relu(self.hm_conv(y)))
        reg = F.relu(self.reg_out(F.relu(self.reg_conv(y)))) * arch.REG_SCALE
        return hm, reg


def decode(hm_logits: torch.Tensor, reg: torch.Tensor, top_k: int,
           input_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(labels [N,K] int64, boxes [N,K,4] xyxy normalized to the input, scores [N,K])."""
    n, c, h, w = hm_logits.shape
    hm = torch.sigmoid(hm_logits)
    peak = F.max_pool2d(hm, 3, stride=1, padding=1)
    hm = hm * (peak == hm).to(hm.dtype)
    best, cls = hm.max(dim=1)  # [N,H,W]
    scores, idx = best.reshape(n, h * w).topk(top_k, dim=1)
    labels = torch.gather(cls.reshape(n, h * w), 1, idx)
    gx, gy = arch.grid(h, w)
    gxt = torch.from_numpy(gx).to(hm.dtype)
    gyt = torch.from_numpy(gy).to(hm.dtype)
    cx = gxt[idx]
    cy = gyt[idx]
    ltrb = torch.gather(reg.reshape(n, 4, h * w), 2, idx.unsqueeze(1).expand(n, 4, top_k))
    x1 = (cx - ltrb[:, 0]) / input_size
    y1 = (cy - ltrb[:, 1]) / input_size
    x2 = (cx + ltrb[:, 2]) / input_size
    y2 = (cy + ltrb[:, 3]) / input_size
    boxes = torch.stack([x1, y1, x2, y2], dim=2).clamp(0.0, 1.0)
    return labels, boxes, scores


class Deploy(nn.Module):
    """RT-DETR's deployment contract around the detector."""

    def __init__(self, det: Detector, top_k: int, input_size: int):
        super().__init__()
        self.det, self.top_k, self.input_size = det, top_k, input_size

    def forward(self, images: torch.Tensor,
                orig_target_sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hm, reg = self.det(images)
        labels, boxes, scores = decode(hm, reg, self.top_k, self.input_size)
        wh = orig_target_sizes.to(boxes.dtype)  # [N,2] (w, h)
        boxes = boxes * wh.repeat(1, 2).unsqueeze(1)
        return labels, boxes, scores


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def load_detector(weights: str | Path, num_classes: int) -> Detector:
    det = Detector(num_classes)
    with np.load(weights) as z:
        state = {k: torch.from_numpy(z[k]) for k in z.files}
    missing, unexpected = det.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not fit the demo detector "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return det.eval()


def load_deploy(weights: str | Path, meta: dict[str, Any]) -> Deploy:
    return Deploy(load_detector(weights, meta["num_classes"]), meta["top_k"],
                  meta["input_size"]).eval()


def deploy_from_dir(model_dir: str) -> Deploy:
    """The factory the framework stage names in ``source.json`` (see backends/torch_module)."""
    import json

    meta = json.loads((Path(model_dir) / "meta.json").read_text())
    return load_deploy(Path(model_dir) / "weights.npz", meta)
