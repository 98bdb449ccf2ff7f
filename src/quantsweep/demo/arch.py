"""Architecture constants shared by the torch and Paddle versions of the demo detector.

Parameter names are identical in both frameworks (BatchNorm buffers aside: torch's
``running_mean``/``running_var`` are Paddle's ``_mean``/``_variance``), so one ``.npz`` of
weights loads into either.
"""

from __future__ import annotations

import numpy as np

# (in, out, stride) of the conv-BN-ReLU backbone blocks: stride 2,4,4,8,8,16,16,32,32
BACKBONE = [(3, 16, 2), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1),
            (64, 96, 2), (96, 96, 1), (96, 128, 2), (128, 128, 1)]
TAPS = [8, 6, 4, 2]  # backbone outputs merged top-down, deepest first (stride 32 -> 4)
LATERAL_IN = [BACKBONE[i][1] for i in TAPS]
NECK = 32
HEAD = 32  # head convs: conv3x3 + ReLU (no BN), then 1x1, as in CenterNet
STRIDE = 4
HM_BIAS_INIT = -2.19  # sigmoid = 0.1: the usual CenterNet prior
REG_SCALE = 16.0


def grid(h: int, w: int, stride: float = STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """Centres (x, y) in input pixels of the h*w output positions, row-major."""
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                         indexing="ij")
    return ((xs.reshape(-1) + 0.5) * stride).astype(np.float32), \
        ((ys.reshape(-1) + 0.5) * stride).astype(np.float32)


def torch_to_paddle_key(key: str) -> str:
    return key.replace("running_mean", "_mean").replace("running_var", "_variance")
