"""Small real ONNX models and COCO datasets made for tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def const_detector(path: Path, box: list[float], label: int, score: float = 0.9,
                   input_name: str = "x", size: int = 64, opset: int = 13) -> Path:
    """A valid ONNX 'detector' that always outputs one box (depends on its input)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, size, size])
    outs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 1, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 1])]
    inits = [helper.make_tensor("b", TensorProto.FLOAT, [1, 1, 4], box),
             helper.make_tensor("s", TensorProto.FLOAT, [1, 1], [score]),
             helper.make_tensor("l", TensorProto.INT64, [1, 1], [label]),
             helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]
    nodes = [helper.make_node("ReduceMean", [input_name], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["b", "z"], ["boxes"]),
             helper.make_node("Add", ["s", "z"], ["scores"]),
             helper.make_node("Identity", ["l"], ["labels"])]
    g = helper.make_graph(nodes, "const", [x], outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    path.write_bytes(m.SerializeToString())
    return path


def one_image_coco(root: Path, box_xywh: list[float], category_id: int,
                   categories: tuple[int, ...] = (1, 3, 7), w: int = 200, h: int = 100) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 127, np.uint8)).save(root / "images" / "a.jpg")
    ann = {"images": [{"id": 5, "file_name": "a.jpg", "width": w, "height": h}],
           "annotations": [{"id": 1, "image_id": 5, "category_id": category_id,
                            "bbox": box_xywh, "area": box_xywh[2] * box_xywh[3], "iscrowd": 0}],
           "categories": [{"id": c, "name": f"c{c}"} for c in categories]}
    p = root / "val.json"
    p.write_text(json.dumps(ann))
    return p
