"""Build PaddleDetection's PP-YOLOE-s at random init with PaddleDetection's own code and save it
as an inference model with its own export (the calls of its tools/export_model.py: load_config,
merge_config, check_config, Trainer(cfg, mode="test"), Trainer.export). Run under a toolset's
interpreter with paddlepaddle 2.6 and paddledet 2.6.0 (installed --no-deps: its pins
sklearn==0.0 and opencv-python<=4.6.0 do not install):

    python paddledet_build.py CONFIG.yml OUT_DIR [--exclude-nms]
        -> OUT_DIR/<config name>/model.pdmodel (Paddle 2.6) or model.json (Paddle 3.x) ...

--exclude-nms: the head's exclude_nms (PP-YOLOE's outputs are then the boxes and per-class
scores before its MultiClassNMS), as PaddleDetection's export does with
`-o PPYOLOEHead.exclude_nms=True`.

No weights are loaded. PP-YOLOE's head starts with zero weights (every score exactly the 0.01
threshold, every box an anchor): those convs alone get seeded random values, so that the
outputs are worth comparing; the rest stays at PaddleDetection's own random init."""

import json
import os
import sys
import time
import zlib

# paddle 2.6's libpaddle.so carries zlib symbols of its own: Python's zlib used for the first
# time after `import paddle` (by scipy, pycocotools) segfaults in inflateReset2 here
zlib.decompress(zlib.compress(b"warm-up"))
# paddle 2.6 made to_static default to SOT; PaddleDetection 2.6.0's export then fails with
# "Can't call main_program when full_graph=False": back to the full-graph path
os.environ.setdefault("ENABLE_FALL_BACK", "False")

import paddle  # noqa: E402
from ppdet.core.workspace import load_config, merge_config  # noqa: E402
from ppdet.engine import Trainer  # noqa: E402
from ppdet.utils.check import check_config  # noqa: E402

cfg_path, out_dir = sys.argv[1], sys.argv[2]
t0 = time.monotonic()
paddle.seed(0)
paddle.set_device("cpu")
cfg = load_config(cfg_path)
merge_config({"use_gpu": False})
if "--exclude-nms" in sys.argv[3:]:
    merge_config({"PPYOLOEHead": {"exclude_nms": True}})
check_config(cfg)
trainer = Trainer(cfg, mode="test")
head = trainer.model.yolo_head
for m in list(head.pred_cls) + list(head.pred_reg):
    m.weight.set_value(paddle.normal(0.0, 0.05, m.weight.shape))
for m in head.pred_cls:
    m.bias.set_value(paddle.normal(-3.0, 0.5, m.bias.shape))
trainer.export(out_dir)
print(json.dumps({"seconds": round(time.monotonic() - t0, 1),
                  "params": sum(int(p.numel()) for p in trainer.model.parameters())}))
