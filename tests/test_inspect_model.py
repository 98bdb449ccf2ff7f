"""`quantsweep inspect-model` recognises each exporter's outputs (graphs with those exact output
signatures, run through the real CLI), and `check-config` checks a model block against its
graph: unknown output and input names are listed with the real ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import yaml
from conftest import tiny_config, write_config
from onnx import TensorProto, helper, numpy_helper

F, I32, I64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
NP = {F: np.float32, I32: np.int32, I64: np.int64}


def graph(path: Path, outputs: list[tuple[str, int, list]], metadata: dict | None = None,
          inputs: list[tuple[str, int, list]] = (("images", F, [1, 3, 64, 64]),)) -> Path:
    """A valid graph with these outputs (constant zeros, declared with symbolic dims)."""
    nodes, inits = [], []
    for name, et, shape in outputs:
        concrete = [d if isinstance(d, int) else 1 for d in shape]
        inits.append(numpy_helper.from_array(np.zeros(concrete, NP[et]), f"{name}_c"))
        nodes.append(helper.make_node("Identity", [f"{name}_c"], [name]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, et, s) for n, et, s in inputs],
                          [helper.make_tensor_value_info(n, et, s) for n, et, s in outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="test")
    m.ir_version = 8
    for k, v in (metadata or {}).items():
        m.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(m)
    path.write_bytes(m.SerializeToString())
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quantsweep.cli", *args], capture_output=True, text=True)


NAMES80 = str({i: f"class{i}" for i in range(80)})
ULTRA = {"author": "Ultralytics", "names": NAMES80}
CASES = {
    "ultralytics-yolo": ([("output0", F, ["batch", 84, "anchors"])], ULTRA),
    "ultralytics-rtdetr": ([("output0", F, ["Concatoutput0_dim_0", "Concatoutput0_dim_1", 6])],
                           {**ULTRA, "description": "Ultralytics rtdetr-l model", "head": "RTDETRDecoder"}),
    "torchvision": ([("boxes", F, ["N", 4]), ("labels", I64, ["N"]), ("scores", F, ["N"])], {}),
    "efficient-nms": ([("num_dets", I32, [1, 1]), ("det_boxes", F, [1, 100, 4]),
                       ("det_scores", F, [1, 100]), ("det_classes", I32, [1, 100])], {}),
    "rows": ([("output0", F, [1, 300, 6])], {}),
    "paddledetection": ([("save_infer_model/scale_0.tmp_0", F, ["M", 6]),
                         ("save_infer_model/scale_1.tmp_0", I32, ["B"])], {}),
}


def test_inspect_model_recognises_each_layout_and_its_block_validates(tmp_path: Path):
    for kind, (outs, meta) in CASES.items():
        p = graph(tmp_path / f"{kind}.onnx", outs, meta)
        r = cli("inspect-model", str(p), "--name", "m")
        assert r.returncode == 0, r.stderr
        assert f"layout: {kind}:" in r.stdout, r.stdout
        assert "batch" in r.stdout or kind != "ultralytics-yolo"  # symbolic dims shown by name
        block = yaml.safe_load(r.stdout.split("# paste into config.yaml (then set preprocess):")[1])
        cfg = tiny_config()
        cfg["models"].update(block["models"])
        cfg["matrix"].append({"models": ["m"], "toolsets": ["torch2.13"]})
        cp = write_config(tmp_path, cfg)
        c = cli("check-config", "--config", str(cp))
        assert c.returncode == 0, (kind, c.stderr)


def test_unknown_outputs_are_exit_1_with_the_reason(tmp_path: Path):
    p = graph(tmp_path / "odd.onnx", [("a", F, [2, 3, 4, 5]), ("b", F, [7])])
    r = cli("inspect-model", str(p))
    assert r.returncode == 1 and "layout: unknown" in r.stdout
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    r = cli("inspect-model", str(bad))
    assert r.returncode == 2 and "bad.onnx: not a readable ONNX model" in r.stderr


def test_check_config_lists_the_real_names(tmp_path: Path):
    p = graph(tmp_path / "t.onnx", CASES["torchvision"][0])
    cfg = tiny_config()
    cfg["models"]["m"] = {"source": "onnx", "path": str(p), "inputs": [{"name": "image"}],
                          "decode": {"boxes": "bboxes", "scores": "scores", "labels": "labels"}}
    cfg["matrix"].append({"models": ["m"], "toolsets": ["torch2.13"]})
    r = cli("check-config", "--config", str(write_config(tmp_path, cfg)))
    assert r.returncode == 2
    assert "models.m.decode.boxes: 'bboxes' is not an output" in r.stderr
    assert "['boxes', 'labels', 'scores']" in r.stderr
    assert "models.m.inputs[0].name: 'image' is not an input" in r.stderr and "['images']" in r.stderr


def test_check_config_refuses_a_missing_file_and_an_output_named_thrice(tmp_path: Path):
    cfg = tiny_config()
    cfg["models"]["m"] = {"source": "onnx", "path": str(tmp_path / "nope.onnx"),
                          "inputs": [{"name": "images"}],
                          "decode": {"boxes": "out", "scores": "out", "labels": "out"}}
    cfg["matrix"].append({"models": ["m"], "toolsets": ["torch2.13"]})
    r = cli("check-config", "--config", str(write_config(tmp_path, cfg)))
    assert r.returncode == 2
    assert f"models.m.path: '{tmp_path / 'nope.onnx'}' does not exist" in r.stderr
    assert "models.m.decode.scores: output 'out' is already decode.boxes" in r.stderr
    assert "models.m.decode.labels: output 'out' is already decode.boxes" in r.stderr


def test_rows_columns_checked_in_the_config(tmp_path: Path):
    cfg = tiny_config()
    cfg["models"]["m"] = {"source": "onnx", "path": str(graph(tmp_path / "r.onnx", CASES["rows"][0])),
                          "inputs": [{"name": "images"}],
                          "decode": {"layout": "rows", "output": "output0",
                                     "columns": ["x1", "y1", "x2", "cy", "class", "skip"]}}
    cfg["matrix"].append({"models": ["m"], "toolsets": ["torch2.13"]})
    r = cli("check-config", "--config", str(write_config(tmp_path, cfg)))
    assert r.returncode == 2
    assert "has no 'score' column" in r.stderr and "has no complete box" in r.stderr
    cfg["models"]["m"]["decode"]["columns"] = ["x1", "y1", "x2", "y2", "score", "class", "skip"]
    r = cli("check-config", "--config", str(write_config(tmp_path, cfg)))
    assert r.returncode == 2 and "7 columns; 'output0' has 6" in r.stderr
