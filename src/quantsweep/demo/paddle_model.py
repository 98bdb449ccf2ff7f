"""The demo detector in Paddle (imported only inside a Paddle toolset).

Same architecture and parameter names as ``torch_model``; ``Deploy`` has PaddleDetection's
export contract: inputs ``image`` [N,3,H,W], ``im_shape`` [N,2], ``scale_factor`` [N,2]
(all float32); outputs ``bbox`` [N*K,6] = (class, score, x1, y1, x2, y2 in original pixels)
and ``bbox_num`` [N] int32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from quantsweep.demo import arch


class ConvBNAct(nn.Layer):
    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, k, s, k // 2, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout)

    def forward(self, x: Any) -> Any:
        return F.relu(self.bn(self.conv(x)))


class Detector(nn.Layer):
    def __init__(self, num_classes: int):
        super().__init__()
        self.backbone = nn.LayerList([ConvBNAct(ci, co, 3, s) for ci, co, s in arch.BACKBONE])
        self.lateral = nn.LayerList([ConvBNAct(ci, arch.NECK, 1, 1) for ci in arch.LATERAL_IN])
        self.smooth = nn.LayerList([ConvBNAct(arch.NECK, arch.NECK, 3, 1)
                                    for _ in arch.LATERAL_IN])
        self.hm_conv = nn.Conv2D(arch.NECK, arch.HEAD, 3, 1, 1)
        self.hm_out = nn.Conv2D(arch.HEAD, num_classes, 1)
        self.reg_conv = nn.Conv2D(arch.NECK, arch.HEAD, 3, 1, 1)
        self.reg_out = nn.Conv2D(arch.HEAD, 4, 1)

    def forward(self, x: Any) -> tuple[Any, Any]:
        feats = {}
        for i, blk in enumerate(self.backbone):
            x = blk(x)
            feats[i] = x
        y = self.smooth[0](self.lateral[0](feats[arch.TAPS[0]]))
        for j in range(1, len(arch.TAPS)):
            lat = self.lateral[j](feats[arch.TAPS[j]])
            # x2 nearest upsampling by target size, not scale_factor: paddle2onnx 2.1.0 cannot
            # convert the float scale attribute of a PIR model ("the 0th elementwise MUST be
            # ir::FloatAttribute"); the result is the same
            y = F.interpolate(y, size=[int(d) for d in lat.shape[2:]], mode="nearest")
            y = self.smooth[j](y + lat)
        hm = self.hm_out(F.relu(self.hm_conv(y)))
        reg = F.relu(self.reg_out(F.relu(self.reg_conv(y)))) * arch.REG_SCALE
        return hm, reg


class Deploy(nn.Layer):
    """PaddleDetection's export contract around the detector."""

    def __init__(self, det: Detector, top_k: int, input_size: int, feat: int):
        super().__init__()
        self.det, self.top_k, self.input_size, self.feat = det, top_k, input_size, feat
        gx, gy = arch.grid(feat, feat)
        self.register_buffer("gx", paddle.to_tensor(gx))
        self.register_buffer("gy", paddle.to_tensor(gy))

    def forward(self, image: Any, im_shape: Any, scale_factor: Any) -> tuple[Any, Any]:
        hm_logits, reg = self.det(image)
        k, hw = self.top_k, self.feat * self.feat
        hm = F.sigmoid(hm_logits)
        peak = F.max_pool2d(hm, 3, stride=1, padding=1)
        hm = hm * paddle.cast(peak == hm, hm.dtype)
        best = paddle.max(hm, axis=1).reshape([-1, hw])
        cls = paddle.argmax(hm, axis=1).reshape([-1, hw])
        scores, idx = paddle.topk(best, k, axis=1)
        labels = paddle.take_along_axis(cls, idx, axis=1)
        cx = paddle.gather(self.gx, idx.reshape([-1])).reshape([-1, k])
        cy = paddle.gather(self.gy, idx.reshape([-1])).reshape([-1, k])
        reg = reg.reshape([-1, 4, hw])
        ltrb = [paddle.take_along_axis(reg[:, i, :], idx, axis=1) for i in range(4)]
        # boxes in network-input pixels, clipped to the resized image (im_shape = (h, w)),
        # then -> original pixels (scale_factor = (sy, sx)), as PaddleDetection does
        h_in, w_in = im_shape[:, 0:1], im_shape[:, 1:2]
        sy = scale_factor[:, 0:1]
        sx = scale_factor[:, 1:2]
        zero = paddle.zeros_like(cx)
        x1 = paddle.minimum(paddle.maximum(cx - ltrb[0], zero), w_in) / sx
        y1 = paddle.minimum(paddle.maximum(cy - ltrb[1], zero), h_in) / sy
        x2 = paddle.minimum(paddle.maximum(cx + ltrb[2], zero), w_in) / sx
        y2 = paddle.minimum(paddle.maximum(cy + ltrb[3], zero), h_in) / sy
        bbox = paddle.stack([paddle.cast(labels, "float32"), scores, x1, y1, x2, y2], axis=2)
        bbox = bbox.reshape([-1, 6])
        bbox_num = paddle.full_like(scores[:, 0], k, dtype="int32")
        return bbox, bbox_num


def load_detector(weights: str | Path, num_classes: int) -> Detector:
    det = Detector(num_classes)
    state = det.state_dict()
    with np.load(weights) as z:
        loaded = {arch.torch_to_paddle_key(k): z[k] for k in z.files}
    missing = sorted(set(state) - set(loaded))
    unexpected = sorted(set(loaded) - set(state))
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not fit the Paddle demo detector "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    det.set_state_dict({k: paddle.to_tensor(v) for k, v in loaded.items()})
    det.eval()
    return det


def save_inference_model(det: Detector, meta: dict[str, Any], prefix: str | Path) -> None:
    from paddle.static import InputSpec

    s = meta["input_size"]
    dep = Deploy(det, meta["top_k"], s, s // arch.STRIDE)
    dep.eval()
    spec = [InputSpec([None, 3, s, s], "float32", "image"),
            InputSpec([None, 2], "float32", "im_shape"),
            InputSpec([None, 2], "float32", "scale_factor")]
    paddle.jit.save(dep, str(prefix), input_spec=spec)
