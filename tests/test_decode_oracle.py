"""Decode correctness by oracle: the val ground truth written into each layout the way the real
exporter writes it (coordinates, box format, class convention, padding, duplicates for NMS),
decoded by the evaluation's own code and scored by pycocotools, must give AP 1.000; the same
tensors read with a deliberate mistake must score below 0.5, and the doctor must name it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_config

from quantsweep import doctor
from quantsweep.config import validate_config
from quantsweep.dataset import generate_synthetic
from quantsweep.evaluate.coco import score_detections
from quantsweep.evaluate.decode import (
    DecodeError,
    LabelMapError,
    label_to_category,
    split_outputs,
    to_detections,
)
from quantsweep.evaluate.preprocess import Meta, preprocess

# the first five COCO categories (ids 1..5): contiguous index i is COCO id i + 1, so reading
# contiguous indices as ids (coco91) is the classic off-by-one
CATS = [{"id": i + 1, "name": n} for i, n in enumerate(["person", "bicycle", "car", "motorcycle",
                                                       "airplane"])]
NAMES = [c["name"] for c in CATS]
PRE = {"resize": "letterbox", "size": [320, 320]}


def _model(**keys: Any) -> dict[str, Any]:
    """A model block as validate_config completes it (preset applied, defaults filled)."""
    model = {"source": "demo-torch", "inputs": [{"name": "x"}],
             "decode": {"boxes": "b", "scores": "s", "labels": "l"}, **keys}
    cfg = tiny_config(models={"m": model})
    cfg["matrix"][0]["models"] = ["m"]
    return validate_config(cfg)["models"]["m"]


@pytest.fixture(scope="module")
def gt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    syn = validate_config(tiny_config())["dataset"]["synthetic"]
    syn.update(seed=3, train=0, calib=1, val=12, categories=CATS, min_size=200, max_size=400)
    man = generate_synthetic(syn, "oracle", tmp_path_factory.mktemp("oracle"))
    ann_path = Path(man["splits"]["val"]["annotations"])
    ann = json.loads(ann_path.read_text())
    pre = _model(preprocess=PRE)["preprocess"]
    images = []
    for im in ann["images"]:
        _, meta = preprocess(np.zeros((im["height"], im["width"], 3), np.uint8), pre)
        objs = [a for a in ann["annotations"] if a["image_id"] == im["id"]]
        xywh = np.array([a["bbox"] for a in objs], float).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        cls = np.array([[c["id"] for c in CATS].index(a["category_id"]) for a in objs], int)
        images.append({"id": im["id"], "meta": meta, "xyxy": xyxy, "cls": cls})
    return {"images": images, "annotations": ann_path, "manifest": man}


def _to_input(xyxy: np.ndarray, m: Meta) -> np.ndarray:
    out = xyxy.copy()
    out[:, [0, 2]] = out[:, [0, 2]] * m.scale_x + m.pad_x
    out[:, [1, 3]] = out[:, [1, 3]] * m.scale_y + m.pad_y
    return out


def _cxcywh(xyxy: np.ndarray) -> np.ndarray:
    return np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def _scores(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.6, 0.95, n).astype(np.float32)


# ---- each exporter's tensors for one image ----------------------------------------------------

def ultralytics_yolo(im: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """output0 [1, 4+nc, N]: cx,cy,w,h in input pixels, sigmoid class scores; every object is
    predicted three times (shifted copies NMS must remove), plus background candidates."""
    box = _cxcywh(_to_input(im["xyxy"], im["meta"]))
    n, nc = len(box), len(CATS)
    cand, cls = [], []
    best = _scores(n, rng)  # per object; its shifted copies score a little lower, so without
    for jit, drop in ((0.0, 0.0), (0.03, 0.05), (-0.04, 0.1)):  # NMS they outrank other objects
        b = box.copy()
        b[:, :2] += jit * b[:, 2:]
        sc = np.full((n, nc), 0.01, np.float32)
        sc[np.arange(n), im["cls"]] = best - drop
        cand.append(b)
        cls.append(sc)
    bg = np.concatenate([rng.uniform(0, 320, (40, 2)), rng.uniform(4, 60, (40, 2))], axis=1)
    cand.append(bg)
    cls.append(rng.uniform(0, 0.0009, (40, nc)).astype(np.float32))  # below conf 0.001
    rows = np.concatenate([np.concatenate(cand), np.concatenate(cls)], axis=1).astype(np.float32)
    perm = rng.permutation(len(rows))
    return {"output0": rows[perm].T[None]}


def ultralytics_rtdetr(im: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """output0 [1, 300, 6]: cx,cy,w,h normalized to the input, score, class index; the other
    queries score low."""
    m = im["meta"]
    box = _cxcywh(_to_input(im["xyxy"], m)) / np.array([m.in_w, m.in_h, m.in_w, m.in_h])
    q = np.zeros((300, 6), np.float32)
    q[:, :4] = rng.uniform(0.1, 0.3, (300, 4))
    q[:, 4] = rng.uniform(0, 0.0005, 300)
    q[:, 5] = rng.integers(0, len(CATS), 300)
    q[:len(box), :4] = box
    q[:len(box), 4] = _scores(len(box), rng)
    q[:len(box), 5] = im["cls"]
    order = np.argsort(-q[:, 4], kind="stable")  # Ultralytics sorts the queries by score
    return {"output0": q[order][None]}


def torchvision(im: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """boxes [N,4] xyxy in the pixels of the tensor given to the model, scores [N], labels [N]
    int64 = COCO category ids (91-index); N data-dependent, no batch axis."""
    return {"boxes": _to_input(im["xyxy"], im["meta"]).astype(np.float32),
            "labels": np.array([CATS[k]["id"] for k in im["cls"]], np.int64),
            "scores": _scores(len(im["cls"]), rng)}


def paddledetection(im: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """bbox [M,6] class, score, x1,y1,x2,y2 in original pixels; bbox_num [1] (outputs by position)."""
    bbox = np.concatenate([im["cls"][:, None], _scores(len(im["cls"]), rng)[:, None], im["xyxy"]], axis=1)
    return {"save_infer_model/scale_0.tmp_0": bbox.astype(np.float32),
            "save_infer_model/scale_1.tmp_0": np.array([len(bbox)], np.int32)}


def paddledetection_nonms(im: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A PaddleDetection head exported with exclude_nms: boxes [1,N,4] xyxy original pixels,
    scores [1,C,N] per class (outputs by position). Each object is predicted three times (shifted
    copies the NMS must remove), and its box also scores, lower, as a second class (the NMS is
    class-aware: that pair stays, ranked below the true one); background candidates under conf."""
    n, nc = len(im["cls"]), len(CATS)
    best = _scores(n, rng)
    boxes, scores = [], []
    for jit, drop in ((0.0, 0.0), (0.03, 0.05), (-0.04, 0.1)):
        b = im["xyxy"].copy()
        wh = b[:, 2:] - b[:, :2]
        b += np.concatenate([jit * wh, jit * wh], axis=1)
        sc = np.full((nc, n), 0.001, np.float32)
        sc[im["cls"], np.arange(n)] = best - drop
        sc[(im["cls"] + 1) % nc, np.arange(n)] = 0.02
        boxes.append(b)
        scores.append(sc)
    bg = np.concatenate([rng.uniform(0, 300, (30, 2)), rng.uniform(310, 400, (30, 2))], axis=1)
    boxes.append(bg)
    scores.append(rng.uniform(0, 0.009, (nc, 30)).astype(np.float32))  # below conf 0.01
    b, sc = np.concatenate(boxes), np.concatenate(scores, axis=1)
    perm = rng.permutation(len(b))
    return {"tmp_0": b[perm][None].astype(np.float32), "tmp_1": sc[:, perm][None]}


def efficient_nms(im: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """num_dets [1,1], det_boxes [1,100,4] xyxy input pixels, det_scores, det_classes [1,100];
    the slots past num_dets hold garbage that must be ignored."""
    n = len(im["cls"])
    boxes = rng.uniform(0, 320, (1, 100, 4)).astype(np.float32)
    scores = rng.uniform(0.5, 1.0, (1, 100)).astype(np.float32)
    classes = rng.integers(0, len(CATS), (1, 100)).astype(np.int32)
    boxes[0, :n] = _to_input(im["xyxy"], im["meta"])
    scores[0, :n] = _scores(n, rng)
    classes[0, :n] = im["cls"]
    return {"num_dets": np.array([[n]], np.int32), "det_boxes": boxes, "det_scores": scores,
            "det_classes": classes}


def end2end_rows(im: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """YOLOv10 / Ultralytics end2end: output0 [1, 300, 6] x1,y1,x2,y2,score,class in input pixels,
    unused rows with score 0."""
    n = len(im["cls"])
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, :, :4] = rng.uniform(0, 320, (300, 4))
    rows[0, :n, :4] = _to_input(im["xyxy"], im["meta"])
    rows[0, :n, 4] = _scores(n, rng)
    rows[0, :n, 5] = im["cls"]
    return {"output0": rows}


def class_first_rows(im: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """PaddleDetection without bbox_num: [N,6] class, score, x1,y1,x2,y2 in original pixels."""
    return {"out": paddledetection(im, rng)["save_infer_model/scale_0.tmp_0"]}


LABELS = {"names": {"label_map": "names", "names": NAMES}, "coco80": {"label_map": "coco80"}}
CASES = {  # name: (encoder, decode block)
    "ultralytics-yolo": (ultralytics_yolo, {"preset": "ultralytics-yolo", **LABELS["names"]}),
    "ultralytics-rtdetr": (ultralytics_rtdetr, {"preset": "ultralytics-rtdetr", **LABELS["coco80"]}),
    "torchvision": (torchvision, {"preset": "torchvision"}),
    "paddledetection": (paddledetection, {"preset": "paddledetection", "label_map": "dataset"}),
    "paddledetection-nonms": (paddledetection_nonms, {"preset": "paddledetection-nonms",
                                                      "label_map": "dataset"}),
    "efficient-nms": (efficient_nms, {"preset": "efficient-nms", **LABELS["coco80"]}),
    "rows-end2end": (end2end_rows, {"layout": "rows", "output": "output0", "coordinates": "input",
                                    "columns": ["x1", "y1", "x2", "y2", "score", "class"],
                                    "label_map": "dataset"}),
    "rows-class-first": (class_first_rows, {"layout": "rows", "output": "out",
                                            "columns": ["class", "score", "x1", "y1", "x2", "y2"],
                                            "label_map": "dataset"}),
}


def _decode_block(block: dict[str, Any]) -> dict[str, Any]:
    return _model(decode=copy.deepcopy(block))["decode"]


def run_oracle(gt: dict[str, Any], encoder: Any, block: dict[str, Any], tmp: Path,
               mutate: Any = None) -> tuple[float, Path]:
    dec = _decode_block(block)
    cat_ids = label_to_category(dec["label_map"], CATS, dec.get("names"))
    rng = np.random.default_rng(0)
    dets = []
    for im in gt["images"]:
        outs = encoder(im, rng)
        if mutate:
            outs = mutate(outs)
        per = split_outputs(outs, dec, 1)[0]
        dets += [d for d in to_detections(per, im["meta"], im["id"], dec, cat_ids, 0.001, 100)
                 if d["category_id"] in {c["id"] for c in CATS}]
    path = tmp / "detections.json"
    path.write_text(json.dumps(dets))
    return score_detections(dets, gt["annotations"])["AP"], path


@pytest.mark.parametrize("case", sorted(CASES))
def test_ground_truth_written_as_the_exporter_does_decodes_to_ap_1(gt, case, tmp_path):
    encoder, block = CASES[case]
    ap, _ = run_oracle(gt, encoder, block, tmp_path)
    assert ap == pytest.approx(1.0, abs=1e-6), case


def _findings(path: Path, gt: dict[str, Any]) -> set[str]:
    return {f["code"] for f in doctor.check_detections(path, gt["annotations"], True, [])}


def test_xyxy_read_as_xywh_collapses_and_the_doctor_names_it(gt, tmp_path):
    encoder, block = CASES["rows-class-first"]
    ap, dets = run_oracle(gt, encoder, {**block, "columns": ["class", "score", "x", "y", "w", "h"]},
                          tmp_path)
    assert ap < 0.5
    assert "xyxy_as_xywh" in _findings(dets, gt)


def test_normalized_read_as_pixels_collapses_and_the_doctor_names_it(gt, tmp_path):
    encoder, block = CASES["ultralytics-rtdetr"]
    ap, dets = run_oracle(gt, encoder, {**block, "coordinates": "original"}, tmp_path)
    assert ap < 0.5
    assert "normalized_boxes" in _findings(dets, gt)


@pytest.mark.parametrize("case", ["efficient-nms", "ultralytics-rtdetr"])
def test_contiguous_labels_read_as_ids_collapse_and_the_doctor_names_the_offset(gt, case, tmp_path):
    encoder, block = CASES[case]
    ap, dets = run_oracle(gt, encoder, {**block, "label_map": "coco91"}, tmp_path)
    assert ap < 0.5
    found = doctor.check_detections(dets, gt["annotations"], True, [])
    offset = [f for f in found if f["code"] == "class_offset"]
    assert offset and offset[0]["evidence"]["value"] == -1


def test_ignoring_num_dets_lets_padding_through(gt, tmp_path):
    """The slots past num_dets are garbage: without `count` they are scored and AP drops."""
    encoder, block = CASES["efficient-nms"]
    ap, _ = run_oracle(gt, encoder, {**block, "count": None}, tmp_path)
    assert ap < 0.9


def test_yolo_without_nms_keeps_duplicates(gt, tmp_path):
    encoder, block = CASES["ultralytics-yolo"]
    ap_nms, _ = run_oracle(gt, encoder, block, tmp_path)
    ap_raw, _ = run_oracle(gt, encoder, {**block, "nms": {"enabled": False}}, tmp_path)
    assert ap_nms == pytest.approx(1.0) and ap_raw < ap_nms


# ---- bad input: one clear error each -------------------------------------------------------

def _dec(block: dict[str, Any]) -> dict[str, Any]:
    return _decode_block(block)


def test_yolo_tensor_whose_dims_fit_neither_layout():
    dec = _dec({"preset": "ultralytics-yolo", "num_classes": 80, "label_map": "coco80"})
    with pytest.raises(DecodeError, match=r"neither dim 1 nor dim 2 is 4\+nc = 84.*\[1, 50, 2100\]|"
                                          r"\[1, 50, 2100\].*neither"):
        split_outputs({"output0": np.zeros((1, 50, 2100), np.float32)}, dec, 1)


def test_label_map_shorter_than_the_class_count_gives_both_numbers(gt):
    dec = _dec({"preset": "ultralytics-yolo", "label_map": "dataset"})
    outs = {"output0": np.zeros((1, 84, 100), np.float32)}
    per = split_outputs(outs, dec, 1)[0]
    with pytest.raises(LabelMapError, match=r"80 classes; the label map has 5 entries"):
        to_detections(per, gt["images"][0]["meta"], 1, dec, label_to_category("dataset", CATS),
                      0.001, 100)


def test_names_with_no_overlap_list_both_sides():
    with pytest.raises(LabelMapError, match=r"none of the model's 3 class names.*'dog'.*airplane"):
        label_to_category("names", CATS, ["dog", "cat", "horse"])


def test_names_match_ultralytics_metadata_and_mark_the_rest_foreign():
    from quantsweep.evaluate.decode import FOREIGN, parse_names

    names = parse_names("{0: 'person', 1: 'traffic light', 2: 'Car'}")
    assert label_to_category("names", CATS, names) == [1, FOREIGN, 3]


def test_coco80_maps_the_contiguous_indices_to_cocos_ids_with_gaps():
    ids = label_to_category("coco80", CATS)
    assert len(ids) == 80 and ids[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13] and ids[-1] == 90
    assert not {12, 26, 29, 30, 45, 66, 68, 69, 71, 83} & set(ids)


def test_a_numpy_error_inside_a_layout_is_a_decode_error_naming_the_outputs():
    dec = _dec({"boxes": "b", "scores": "s", "labels": "l"})
    outs = {"b": np.zeros((1, 10, 4)), "s": np.zeros((1, 7)), "l": np.zeros((1, 10))}
    with pytest.raises(DecodeError, match=r"scores \[1, 7\].*do not fit"):
        split_outputs(outs, dec, 1)
    with pytest.raises(DecodeError, match=r"no output named 'b'; outputs: x \[2\]"):
        split_outputs({"x": np.zeros(2)}, dec, 1)


def test_a_numpy_failure_inside_a_layout_is_a_decode_error():
    dec = _dec({"preset": "paddledetection"})
    outs = {"bbox": np.zeros((3, 6), np.float32), "num": np.array([np.nan], np.float32)}
    with pytest.raises(DecodeError, match=r"layout 'paddle_bbox' failed on outputs bbox \[3, 6\], "
                                          r"num \[1\]: ValueError"):
        split_outputs(outs, dec, 1)


def test_rows_columns_must_be_known_names():
    from quantsweep.config import ConfigError

    with pytest.raises(ConfigError, match=r"decode.columns\[4\]: value 'conf' is not allowed"):
        _dec({"layout": "rows", "output": "o", "columns": ["x1", "y1", "x2", "y2", "conf", "class"]})
