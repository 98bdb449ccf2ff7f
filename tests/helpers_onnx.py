"""Small real ONNX models and COCO datasets made for tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


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


def detector(path: Path, qdq: bool = False, custom_op: bool = False) -> Path:
    """images [N,3,8,8] float + orig_target_sizes [N,2] int64 (RT-DETR's contract) ->
    boxes [N,2] = sizes * mean(relu(conv(images))), scores [N,4]."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    inits = [w]
    x = "images"
    nodes = []
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"], name="q_in"),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq_in")]
        x = "dq"
    nodes += [
        helper.make_node("Conv", [x, "w"], ["c"], name="conv_fused", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["scores"], name="pool", axes=[2, 3], keepdims=0),
        helper.make_node("ReduceMean", ["scores"], ["m"], name="mean", axes=[1], keepdims=1),
        helper.make_node("Cast", ["orig_target_sizes"], ["sz"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sz", "m"], ["boxes"], name="scale"),
    ]
    if custom_op:
        nodes.append(helper.make_node("FancyNMS", ["boxes"], ["boxes2"], name="nms",
                                      domain="com.example"))
    g = helper.make_graph(
        nodes, "det",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 8, 8]),
         helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("boxes" if not custom_op else "boxes2", TensorProto.FLOAT,
                                       ["N", 2]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4])],
        inits)
    opsets = [helper.make_opsetid("", 13)] + ([helper.make_opsetid("com.example", 1)] if custom_op else [])
    m = helper.make_model(g, opset_imports=opsets)
    if not custom_op:
        onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def feeds(n: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"images": rng.random((n, 3, 8, 8), dtype=np.float32),
            "orig_target_sizes": np.array([[640, 480], [1280, 720]][:n], dtype=np.int64)}


def ort_outputs(model: Path, f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, f), strict=True))
