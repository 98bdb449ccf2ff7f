"""Real detector architectures through the whole chain: Ultralytics YOLOv8n (yolo layout) and
RT-DETR-l (rows), torchvision SSDlite (separate, data-dependent N) and a YOLOv8n with NMS inside
(EfficientNMS outputs, count), built at random init and exported by their own exporters in a
toolset with torch, torchvision and ultralytics (tests/real_detectors.py), then swept as
`source: onnx` models: export, ort-qdq INT8 on ONNX Runtime, simulated TensorRT, evaluation,
doctor, cache inspect, trtexec-command and inspect-model. Random weights give AP ~ 0: the rows
must be ok, the AP is what it is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ENVS, NO_LATENCY, ORT_TOOLSET, REPO, env_run, snakemake, tiny_config, write_config

from quantsweep.toolsets import EnvResult, ensure_env

# torchvision's wheels on this machine's index are built against the CUDA build of torch (the
# CPU build of torch 2.13 cannot load torchvision 0.28's operators); CPU execution all the same
ULTRA_TOOLSET = {"packages": ["torch==2.14.1", "torchvision==0.29.1", "ultralytics==8.4.190",
                              "onnx==1.20.1", "onnxruntime==1.23.2", "onnxslim==0.1.98"]}
OPSET, SIZE = 17, 320  # RT-DETR needs opset >= 16 (GridSample)
PLAIN = {"resize": "stretch", "size": [SIZE, SIZE], "scale": 1 / 255, "mean": [0, 0, 0],
         "std": [1, 1, 1]}
MODELS = {
    # Ultralytics: letterbox to 320 with its grey pad, RGB, /255; class indices 0..79 of COCO
    "yolov8n": {"decode": {"preset": "ultralytics-yolo", "label_map": "coco80"},
                "preprocess": {**PLAIN, "resize": "letterbox", "pad_value": 114}},
    "rtdetr-l": {"decode": {"preset": "ultralytics-rtdetr", "label_map": "coco80"},
                 "preprocess": {**PLAIN, "resize": "letterbox", "pad_value": 114}},
    # torchvision normalizes and resizes inside the graph; labels are COCO ids (91-index)
    "ssdlite": {"decode": {"preset": "torchvision"}, "preprocess": PLAIN},
    "yolov8n-e2e": {"decode": {"preset": "efficient-nms", "label_map": "coco80"}, "preprocess": PLAIN},
}
EXPECTED_LAYOUT = {"yolov8n": "ultralytics-yolo", "rtdetr-l": "ultralytics-rtdetr",
                   "ssdlite": "torchvision", "yolov8n-e2e": "efficient-nms"}


@pytest.fixture(scope="module")
def ultra_env() -> EnvResult:
    env = ensure_env("ultra8.4", ULTRA_TOOLSET, ENVS)
    assert env.status == "ok", env.message[-3000:]
    return env


NMS_CHECK = """
import json, sys
import numpy as np, torch, torchvision
from quantsweep.evaluate.nms import batched_nms
rng = np.random.default_rng(int(sys.argv[1]))
out = []
for n, iou in ((1, 0.5), (50, 0.3), (400, 0.5), (2000, 0.7), (3000, 0.9)):
    xy = rng.uniform(0, 150, (n, 2)); wh = rng.uniform(2, 120, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.random(n).astype(np.float32); classes = rng.integers(0, 7, n)
    ref = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                      torch.from_numpy(classes), iou).numpy()
    got = batched_nms(boxes, scores, classes, iou)
    top = batched_nms(boxes, scores, classes, iou, max_det=25)  # stops early: the same first 25
    out.append({"n": n, "kept": len(ref), "equal": ref.tolist() == got.tolist(),
                "equal_top25": ref[:25].tolist() == top.tolist()})
print(json.dumps(out))
"""


def test_numpy_nms_agrees_with_torchvision_batched_nms(ultra_env):
    r = env_run(ultra_env, "-c", NMS_CHECK, "7", capture_output=True, text=True,
                extra_env={"PYTHONPATH": str(REPO / "src")})
    assert r.returncode == 0, r.stderr[-3000:]
    cases = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(c["equal"] and c["equal_top25"] for c in cases), cases
    assert any(c["kept"] < c["n"] for c in cases)  # something was suppressed


@pytest.fixture(scope="module")
def exported(ultra_env: EnvResult, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("real") / "models"
    r = env_run(ultra_env, str(REPO / "tests" / "real_detectors.py"), str(out), str(OPSET), str(SIZE),
                capture_output=True, text=True, timeout=1200,
                extra_env={"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0",
                           "YOLO_CONFIG_DIR": str(out.parent / "ultralytics-settings")})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return out, json.loads((out / "facts.json").read_text())


def test_exporters_write_the_documented_outputs(exported):
    _, facts = exported
    assert facts["yolov8n"]["outputs"] == {"output0": [1, 84, 2100]}
    assert facts["rtdetr-l"]["outputs"] == {"output0": [1, 300, 6]}
    assert list(facts["ssdlite"]["outputs"]) == ["boxes", "scores", "labels"]
    assert facts["yolov8n-e2e"]["outputs"]["det_boxes"] == [1, 100, 4]


def test_inspect_model_recognises_the_four_real_graphs(exported):
    out, _ = exported
    for name, kind in EXPECTED_LAYOUT.items():
        r = subprocess.run([sys.executable, "-m", "quantsweep.cli", "inspect-model",
                            str(out / f"{name}.onnx")], capture_output=True, text=True)
        assert r.returncode == 0 and f"layout: {kind}:" in r.stdout, (name, r.stdout, r.stderr)


def test_real_architectures_through_every_stage(exported, tmp_path: Path):
    out, _ = exported
    cfg = tiny_config(latency=dict(NO_LATENCY))  # these graphs are timed in test_sources' sweep
    cfg["toolsets"] = {"ort1.20": dict(ORT_TOOLSET)}
    cfg["models"] = {n: {"source": "onnx", "path": str(out / f"{n}.onnx"),
                         "inputs": [{"name": "images", "role": "image"}], **m}
                     for n, m in MODELS.items()}
    cfg["matrix"] = [{"models": list(MODELS), "toolsets": ["ort1.20"], "opsets": [OPSET]},
                     {"models": list(MODELS), "toolsets": ["ort1.20"], "opsets": [OPSET],
                      "quantizers": ["ort-qdq"], "precisions": ["int8"],
                      "backends": ["onnxruntime", "tensorrt_sim"]}]
    cfg["quantize"] = {"calib_images": 2}
    cfg["dataset"]["synthetic"]["val"] = 4
    del cfg["demo"]
    cp = write_config(tmp_path, cfg)
    check = subprocess.run([sys.executable, "-m", "quantsweep.cli", "check-config", "--config", str(cp)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    snakemake(tmp_path)
    s = pd.read_csv(tmp_path / "results" / "summary.csv")
    print(s[["cell", "status", "reason_class", "reason", "AP", "foreign_detections", "mode"]].to_string())
    assert len(s) == 12
    bad = s[s.status != "ok"]
    assert bad.empty, bad[["cell", "stage", "reason_class", "reason"]].to_string()
    assert set(s.loc[s.backend == "tensorrt_sim", "mode"]) == {"simulated"}
    assert np.isfinite(s["AP"]).all()
    assert s["parity_ok"].all()  # the source graph and the cell's graph agree on ONNX Runtime
    # the 80/91-class models name COCO ids the 5-category demo set lacks: dropped and counted
    assert (s.loc[s.model != "rtdetr-l", "foreign_detections"].fillna(0) > 0).any()
    for cell in s["cell"]:
        d = subprocess.run([sys.executable, "-m", "quantsweep.cli", "doctor", cell, "--config",
                            "config.yaml", "--json"], capture_output=True, text=True, cwd=tmp_path)
        assert d.returncode in (0, 1), (cell, d.stderr)
        json.loads(d.stdout)
    for model in MODELS:
        cache = tmp_path / "results" / model / "ort1.20" / f"opset{OPSET}" / "ort-qdq" / "quantize" / \
            "calibration.cache"
        c = subprocess.run([sys.executable, "-m", "quantsweep.cli", "cache", "inspect", str(cache),
                            "--onnx", str(out / f"{model}.onnx")], capture_output=True, text=True)
        assert c.returncode in (0, 1) and "TRT-" in c.stdout, (model, c.stdout, c.stderr)
        qdq = cache.parent / "model.onnx"
        t = subprocess.run([sys.executable, "-m", "quantsweep.cli", "trtexec-command", "--onnx",
                            str(qdq), "--precision", "int8", "--trt-version", "10.13.3", "--qdq"],
                           capture_output=True, text=True)
        assert t.returncode == 0, t.stderr
        assert t.stdout.startswith(f"trtexec --onnx={qdq} ") and "--stronglyTyped" in t.stdout, t.stdout
