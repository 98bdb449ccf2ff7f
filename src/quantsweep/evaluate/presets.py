"""Decode presets (data, no code): the output conventions of common exporters, filled into a
model's ``decode`` block before the user's own keys, which override them one by one. A preset
never says anything about preprocessing: that stays in the model's ``preprocess``."""

from __future__ import annotations

import copy
from typing import Any

# COCO's 80 category ids in the order of the contiguous class indices 0..79 (ids 1..90 with
# the gaps COCO left: 12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
COCO80_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
              25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49,
              50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74,
              75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]

PRESETS: dict[str, dict[str, Any]] = {
    # Ultralytics YOLOv8/v11 ONNX: output0 [B, 4+nc, N], cx,cy,w,h in input pixels, then the
    # per-class sigmoid scores; no NMS in the graph (NMS as Ultralytics' own validation runs it)
    "ultralytics-yolo": {"layout": "yolo", "output": "output0", "box_format": "cxcywh",
                         "coordinates": "input", "label_map": "names",
                         "nms": {"iou": 0.7, "conf": 0.001, "max_det": 300}},
    # Ultralytics RT-DETR ONNX (8.4): output0 [B, 300, 6] = cx,cy,w,h normalized to the network
    # input, score, class index (top-300 queries, no NMS)
    "ultralytics-rtdetr": {"layout": "rows", "output": "output0",
                           "columns": ["cx", "cy", "w", "h", "score", "class"],
                           "coordinates": "normalized_input", "label_map": "names"},
    # torchvision detection models: boxes [N,4] x1,y1,x2,y2 in the pixels of the tensor they
    # were given, scores [N], labels [N] (91-index COCO labels = category ids); N data-dependent
    "torchvision": {"layout": "separate", "boxes": "boxes", "scores": "scores",
                    "labels": "labels", "box_format": "xyxy", "coordinates": "input",
                    "label_map": "coco91"},
    # PaddleDetection's deploy contract: bbox [M,6] (class, score, x1, y1, x2, y2) in original
    # pixels + bbox_num [B], read by position
    "paddledetection": {"layout": "paddle_bbox", "bbox": 0, "bbox_num": 1,
                        "coordinates": "original"},
    # PaddleDetection heads exported with exclude_nms (the NMS op is not PIR-compatible in
    # Paddle 3.x): boxes [B,N,4] x1,y1,x2,y2 in original pixels + per-class scores [B,C,N],
    # by position; the NMS is MultiClassNMS's, as PP-YOLOE+ configures it
    "paddledetection-nonms": {"layout": "boxes_scores", "boxes": 0, "scores": 1,
                              "box_format": "xyxy", "coordinates": "original",
                              "nms": {"iou": 0.7, "conf": 0.01, "max_det": 300}},
    # TensorRT's EfficientNMS plugin (and end-to-end exports that mimic it): num_dets [B,1],
    # det_boxes [B,K,4] x1,y1,x2,y2 in input pixels, det_scores [B,K], det_classes [B,K]
    "efficient-nms": {"layout": "separate", "count": "num_dets", "boxes": "det_boxes",
                      "scores": "det_scores", "labels": "det_classes", "box_format": "xyxy",
                      "coordinates": "input"},
}


def apply_preset(decode: dict[str, Any]) -> dict[str, Any]:
    """``decode`` with its preset's fields filled in (the user's keys win; ``nms`` merges key
    by key). An unknown preset is left for the schema to report."""
    name = decode.get("preset")
    if name not in PRESETS:
        return decode
    out = copy.deepcopy(PRESETS[name])
    for key, value in decode.items():
        if key == "nms" and isinstance(value, dict) and isinstance(out.get("nms"), dict):
            out["nms"] = {**out["nms"], **value}
        else:
            out[key] = value
    return out
