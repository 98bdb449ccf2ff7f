"""PaddleDetection's own MultiClassNMS on a PP-YOLOE model exported without it: run under a
toolset's interpreter with paddlepaddle and paddledet.

    python paddledet_nms.py MODEL_DIR IN.npz OUT.npz CONF IOU KEEP

CONF "auto": the smallest threshold (at least 0.01) under which no class of any image has
1000 candidates, so that MultiClassNMS's nms_top_k (1000 per class) cuts none (at random init
a class can score high everywhere). IN.npz: image [N,3,H,W], scale_factor [N,2]. OUT.npz:
the threshold used, the model's boxes [N,A,4] and scores [N,C,A], and
ppdet.modeling.ops.multiclass_nms's bbox [M,6] (class, score, x1, y1, x2, y2) and bbox_num [N]
on them (nms_top_k 1000 per class, normalized boxes as PP-YOLOE configures)."""

import sys
from pathlib import Path

import numpy as np
import paddle
from paddle import inference
from ppdet.modeling import ops

model_dir, src, dst = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
iou, keep = float(sys.argv[5]), int(sys.argv[6])
model = next(model_dir / f for f in ("model.json", "model.pdmodel") if (model_dir / f).exists())
cfg = inference.Config(str(model), str(model.with_suffix(".pdiparams")))
cfg.disable_gpu()
cfg.disable_mkldnn()  # Paddle 3.3.1's oneDNN path stops at the double interp scale too
pred = inference.create_predictor(cfg)
feeds = dict(np.load(src))
for name in pred.get_input_names():
    pred.get_input_handle(name).copy_from_cpu(feeds[name])
pred.run()
boxes, scores = (pred.get_output_handle(n).copy_to_cpu() for n in pred.get_output_names())
conf = float(sys.argv[4]) if sys.argv[4] != "auto" else \
    max(0.01, float(np.nextafter(np.sort(scores, axis=2)[..., -1000].max(), np.float32(1))))
bbox, num, _ = ops.multiclass_nms(paddle.to_tensor(boxes), paddle.to_tensor(scores),
                                  score_threshold=conf, nms_top_k=1000, keep_top_k=keep,
                                  nms_threshold=iou, normalized=True)
np.savez(dst, conf=conf, boxes=boxes, scores=scores, bbox=bbox.numpy(), bbox_num=num.numpy())
