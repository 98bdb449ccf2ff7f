"""``quantsweep inspect-model FILE.onnx``: what a graph takes and gives (names, dtypes, shapes
with their symbolic dims, opset, producer, metadata), which decode layout its outputs fit, and a
``models:`` block to paste; and the check of a model block against its real graph that
``quantsweep check-config`` runs when the file exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quantsweep.evaluate.decode import OUTPUT_KEYS, parse_names
from quantsweep.evaluate.presets import PRESETS


class ModelFileError(ValueError):
    pass


def _dims(t: Any) -> list[int | str]:
    out: list[int | str] = []
    for d in t.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return out


def describe(path: str | Path) -> dict[str, Any]:
    import onnx

    p = Path(path)
    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several kinds
        raise ModelFileError(f"{p}: not a readable ONNX model: {exc}") from None
    inits = {i.name for i in m.graph.initializer}
    dtype = onnx.helper.tensor_dtype_to_np_dtype

    def tensor(t: Any) -> dict[str, Any]:
        et = t.type.tensor_type.elem_type
        return {"name": t.name, "dtype": str(dtype(et)) if et else "?", "shape": _dims(t)}

    return {"file": str(p), "producer": f"{m.producer_name} {m.producer_version}".strip(),
            "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import},
            "inputs": [tensor(i) for i in m.graph.input if i.name not in inits],
            "outputs": [tensor(o) for o in m.graph.output],
            "metadata": {p.key: p.value for p in m.metadata_props}}


def _names(desc: dict[str, Any]) -> list[str] | None:
    raw = desc["metadata"].get("names")
    if raw is None:
        return None
    try:
        return parse_names(raw)
    except ValueError:
        return None


def recognise(desc: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(what it looks like, a decode block, why). ``unknown`` when nothing fits."""
    outs = desc["outputs"]
    by_name = {o["name"].lower(): o for o in outs}
    names = _names(desc)
    nc = len(names) if names else None
    is_int = {o["name"]: o["dtype"].startswith("int") for o in outs}
    if len(outs) == 4:
        count = [o for o in outs if o["name"].lower() in ("num_dets", "num_detections", "num")
                 or (is_int[o["name"]] and len(o["shape"]) == 2 and o["shape"][1] == 1)]
        boxes = [o for o in outs if len(o["shape"]) == 3 and o["shape"][-1] in (4, "?")
                 or len(o["shape"]) == 3 and isinstance(o["shape"][-1], str)]
        if count and boxes:
            rest = [o for o in outs if o not in (count[0], boxes[0])]
            labels = next((o for o in rest if is_int[o["name"]] or "class" in o["name"].lower()), rest[-1])
            scores = next(o for o in rest if o is not labels)
            dec = {"preset": "efficient-nms", "count": count[0]["name"], "boxes": boxes[0]["name"],
                   "scores": scores["name"], "labels": labels["name"]}
            return "efficient-nms", _drop_preset_defaults(dec), (
                "a count output, boxes [B,K,4], scores and classes: NMS inside the graph "
                "(TensorRT EfficientNMS convention)")
    if {"boxes", "scores", "labels"} <= set(by_name):
        dec = {"preset": "torchvision", "boxes": by_name["boxes"]["name"],
               "scores": by_name["scores"]["name"], "labels": by_name["labels"]["name"]}
        return "torchvision", _drop_preset_defaults(dec), (
            "boxes / scores / labels outputs (torchvision detection models; check box "
            "coordinates and label_map for other exporters)")
    if len(outs) == 2:
        a, b = outs
        for bbox, num in ((a, b), (b, a)):
            if len(bbox["shape"]) == 2 and bbox["shape"][1] == 6 and len(num["shape"]) == 1:
                return "paddledetection", {"preset": "paddledetection"}, (
                    "bbox [M,6] + bbox_num [B], read by position (PaddleDetection's deploy "
                    "contract)")
    if len(outs) == 1 and len(outs[0]["shape"]) == 3:
        o = outs[0]
        _, d1, d2 = o["shape"]
        ultra = "ultralytics" in desc["producer"].lower() or "ultralytics" in json.dumps(
            desc["metadata"]).lower()
        rtdetr = "rtdetr" in json.dumps(desc["metadata"]).lower().replace("-", "")
        if d2 == 6 and ultra and rtdetr:
            dec = {"preset": "ultralytics-rtdetr", "output": o["name"]}
            if not names:
                dec["label_map"] = "dataset"
            return "ultralytics-rtdetr", _drop_preset_defaults(dec), (
                f"one tensor [B,{d1},6] of an Ultralytics RT-DETR: normalized cx,cy,w,h, score, "
                f"class per query")
        if d2 == 6 and not (nc is not None and nc + 4 == 6):
            return "rows", {"layout": "rows", "output": o["name"], "coordinates": "input",
                            "columns": ["x1", "y1", "x2", "y2", "score", "class"]}, (
                "one tensor [B,N,6]: rows of an end-to-end head (the usual x1,y1,x2,y2,score,"
                "class; check the column order and coordinates for your exporter)")
        if isinstance(d1, int) and (nc is None or d1 == nc + 4) and (not isinstance(d2, int) or d2 > d1):
            dec = {"preset": "ultralytics-yolo", "output": o["name"]}
            if not names:
                dec["label_map"] = "dataset"
            return ("ultralytics-yolo" if ultra else "yolo"), _drop_preset_defaults(dec), (
                f"one tensor [B,{d1},{d2}]: 4 box channels + {d1 - 4} class scores over "
                f"{d2} candidates, no NMS in the graph")
        if isinstance(d2, int) and (not isinstance(d1, int) or d1 > d2):
            dec = {"preset": "ultralytics-yolo", "output": o["name"], "transposed": True}
            if not names:
                dec["label_map"] = "dataset"
            return "yolo", _drop_preset_defaults(dec), (
                f"one tensor [B,{d1},{d2}]: candidates as rows; 4 box channels + class scores "
                f"(set objectness: true for YOLOv5/v7's 5th column)")
    return "unknown", {}, ("no known layout fits these outputs; see config/README.md for "
                           "separate / rows / yolo / paddle_bbox")


def _drop_preset_defaults(dec: dict[str, Any]) -> dict[str, Any]:
    preset = PRESETS.get(dec.get("preset", ""), {})
    return {k: v for k, v in dec.items() if k == "preset" or preset.get(k) != v}


def _input_role(t: dict[str, Any]) -> str:
    n = t["name"].lower()
    if len(t["shape"]) == 4:
        return "image"
    if "scale" in n:
        return "scale_factor"
    if "im_shape" in n:
        return "im_shape"
    if "size" in n or "shape" in n:
        return "orig_size_wh"
    return "image"


def models_block(name: str, desc: dict[str, Any], decode: dict[str, Any]) -> str:
    import yaml

    inputs = []
    for t in desc["inputs"]:
        entry: dict[str, Any] = {"name": t["name"], "role": _input_role(t)}
        if t["dtype"] not in ("float32", "?"):
            entry["dtype"] = t["dtype"]
        inputs.append(entry)
    block = {name: {"source": "onnx", "path": desc["file"], "inputs": inputs, "decode": decode}}
    img = next((t for t in desc["inputs"] if len(t["shape"]) == 4), None)
    size = img["shape"][2:] if img and all(isinstance(d, int) and d > 0 for d in img["shape"][2:]) else None
    text = yaml.safe_dump({"models": block}, sort_keys=False, default_flow_style=None)
    note = (f"    # preprocess: not guessed; the graph's input is {size[0]}x{size[1]}: set resize, size, "
            f"mean/std to the model's own\n" if size else
            "    # preprocess: not guessed: set resize, size and mean/std to the model's own\n")
    return text + note


def format_description(desc: dict[str, Any], kind: str, why: str) -> str:
    def line(t: dict[str, Any]) -> str:
        return f"  {t['name']}: {t['dtype']} {t['shape']}"

    meta = {k: (v if len(v) <= 100 else v[:97] + "...") for k, v in desc["metadata"].items()}
    out = [f"{desc['file']}", f"producer: {desc['producer'] or '?'}",
           "opset: " + ", ".join(f"{k} {v}" for k, v in desc["opset"].items()),
           "inputs:", *map(line, desc["inputs"]), "outputs:", *map(line, desc["outputs"])]
    if meta:
        out += ["metadata:", *(f"  {k}: {v}" for k, v in meta.items())]
    out += [f"layout: {kind}: {why}"]
    return "\n".join(out)


def graph_problems(name: str, model: dict[str, Any]) -> list[str]:
    """A model block against its real ONNX graph: inputs and decode outputs that the graph does
    not have (the real names listed), and output shapes the layout cannot read."""
    if model.get("source") != "onnx" or "path" not in model or not Path(model["path"]).is_file():
        return []
    try:
        desc = describe(model["path"])
    except ModelFileError as exc:
        return [f"models.{name}.path: {exc}"]
    out = []
    real_in = [t["name"] for t in desc["inputs"]]
    for i, t in enumerate(model.get("inputs", [])):
        if t["name"] not in real_in:
            out.append(f"models.{name}.inputs[{i}].name: {t['name']!r} is not an input of "
                       f"{model['path']}; its inputs: {real_in}")
    outs = desc["outputs"]
    real_out = [o["name"] for o in outs]
    dec = model["decode"]
    need, optional = OUTPUT_KEYS[dec["layout"]]
    for key in need + optional:
        ref = dec.get(key)
        if ref is None:
            continue
        if isinstance(ref, int) and ref >= len(outs):
            out.append(f"models.{name}.decode.{key}: output #{ref}; {model['path']} has "
                       f"{len(outs)} outputs: {real_out}")
        elif isinstance(ref, str) and ref not in real_out:
            out.append(f"models.{name}.decode.{key}: {ref!r} is not an output of {model['path']}; "
                       f"its outputs: {real_out}")
    if dec["layout"] in ("yolo", "rows") and isinstance(dec.get("output"), str | int) and not out:
        o = outs[dec["output"]] if isinstance(dec["output"], int) else outs[real_out.index(dec["output"])]
        if len(o["shape"]) not in (2, 3):
            out.append(f"models.{name}.decode.output: {o['name']!r} has shape {o['shape']}; layout "
                       f"{dec['layout']!r} reads [B,N,K] (or [B,C,N])")
        elif dec["layout"] == "rows" and isinstance(o["shape"][-1], int) and \
                o["shape"][-1] != len(dec.get("columns", [])):
            out.append(f"models.{name}.decode.columns: {len(dec.get('columns', []))} columns; "
                       f"{o['name']!r} has {o['shape'][-1]} (shape {o['shape']})")
    if dec["label_map"] == "names" and not dec.get("names") and not _names(desc):
        out.append(f"models.{name}.decode.label_map: 'names', but {model['path']} has no 'names' "
                   f"metadata; give decode.names or another label_map")
    return out
