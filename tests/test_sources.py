"""Model sources other than the demo, through real Snakemake sweeps on tiny configs: a user's
PyTorch module (`source: torch`: factory + python_path + weights), torchvision's SSDlite through
the same source, and Ultralytics YOLOv8n / RT-DETR-l from their .yaml (`source: ultralytics`,
exported by Ultralytics itself at two opsets). Every cell ends as an honest row; bad sources
(a factory that does not import or returns no module, weights whose keys do not fit, an
Ultralytics model that is not a detector) are failed rows that name the problem."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import ENVS, NO_LATENCY, ORT_TOOLSET, TORCH_TOOLSET, env_run, snakemake, tiny_config, write_config
from test_real_detectors import ULTRA_TOOLSET

from quantsweep.interpreter import BYTECODE_DIR
from quantsweep.toolsets import EnvResult, ensure_env

MYDET = textwrap.dedent('''
    """A user's tiny detector: boxes [1,K,4] x1,y1,x2,y2 in input pixels, scores, labels."""
    import torch


    class TinyDet(torch.nn.Module):
        def __init__(self, k=10, classes=5):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)
            self.head = torch.nn.Conv2d(8, 4 + classes, 1)
            self.k = k

        def forward(self, images):
            y = self.head(torch.relu(self.conv(images)))          # [1, 4+C, h, w]
            y = y.flatten(2)[:, :, : self.k].transpose(1, 2)      # [1, K, 4+C]
            xy = torch.sigmoid(y[..., :2]) * 200
            wh = torch.sigmoid(y[..., 2:4]) * 100 + 4
            cls = torch.softmax(y[..., 4:], -1)
            scores, labels = cls.max(-1)
            return {"boxes": torch.cat([xy, xy + wh], -1), "scores": scores, "labels": labels}


    def build(k=10):
        torch.manual_seed(0)
        return TinyDet(k)


    def not_a_module(**kwargs):
        return {"weights": 1}


    def qat_batches(manifest, preprocess):
        torch.manual_seed(0)
        return [torch.rand(4, 3, *preprocess["size"])]


    def qat_loss(module, images):
        return module(images)["scores"].mean()


    def per_box_loss(module, images):
        return module(images)["scores"]
''')


def _torch_env() -> EnvResult:
    env = ensure_env("torch2.13", TORCH_TOOLSET, ENVS)
    assert env.status == "ok", env.message[-2000:]
    # a process of the env run as a stage runs it has torch's bytecode in the env even where
    # PYTHONDONTWRITEBYTECODE is set (as on CI): written by the first import, read by the next
    check = ("import importlib.util, os, sys, torch; pyc = importlib.util.cache_from_source(torch.__file__); "
             "assert os.path.exists(pyc) and pyc.startswith(sys.argv[1]), pyc")
    env_run(env, "-c", check, str(Path(env.env_dir) / BYTECODE_DIR), check=True,
            extra_env={"PYTHONDONTWRITEBYTECODE": "1"})
    return env


def test_users_torch_module_and_bad_sources_are_rows(tmp_path: Path):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "mydet.py").write_text(MYDET)
    save = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import mydet; m = mydet.build(); "
            "torch.save({'model': m.state_dict(), 'epoch': 3}, sys.argv[2]); "
            "torch.save({'backbone.' + k: v for k, v in m.state_dict().items()}, sys.argv[3])")
    env_run(_torch_env(), "-c", save, str(pkg), str(tmp_path / "ckpt.pt"), str(tmp_path / "renamed.pt"),
            check=True)
    contract = {"inputs": [{"name": "images", "dtype": "float32", "role": "image"}],
                "decode": {"boxes": "boxes", "scores": "scores", "labels": "labels",
                           "coordinates": "input"}}
    user = {"source": "torch", "factory": "mydet:build", "kwargs": {"k": 12},
            "python_path": [str(pkg)], **contract}
    cfg = tiny_config(latency=dict(NO_LATENCY))
    cfg["toolsets"]["ort1.20"] = dict(ORT_TOOLSET)
    cfg["models"] = {
        "mine": {**user, "weights": str(tmp_path / "ckpt.pt"), "weights_key": "model"},
        "renamed": {**user, "weights": str(tmp_path / "renamed.pt")},
        "no-module": {**user, "factory": "mydet:not_a_module"},
        "no-import": {**user, "factory": "no_such_package.det:build"},
        "mine-qat": {**user, "qat": {"loss": "mydet:qat_loss", "batches": "mydet:qat_batches"}},
        "mine-dynamo": {**user, "export": {"exporter": "dynamo"}},  # dict outputs, torch.export
        "bad-loss": {**user, "qat": {"loss": "mydet:per_box_loss", "batches": "mydet:qat_batches"}},
    }
    del cfg["demo"]
    cfg["matrix"] = [{"models": list(cfg["models"]), "toolsets": ["torch2.13"], "opsets": [13]},
                     {"models": ["mine"], "toolsets": ["torch2.13"], "opsets": [13],
                      "quantizers": ["ort-qdq", "torch-qat"], "precisions": ["int8"]},
                     {"models": ["mine-dynamo"], "toolsets": ["torch2.13"], "opsets": [18]},
                     {"models": ["mine-qat", "bad-loss"], "toolsets": ["torch2.13"], "opsets": [13],
                      "quantizers": ["torch-qat"], "precisions": ["int8"]}]
    cfg["quantize"] = {"calib_images": 2, "torch-qat": {"steps": 3, "batch_size": 2}}
    write_config(tmp_path, cfg)
    snakemake(tmp_path)
    s = pd.read_csv(tmp_path / "results" / "summary.csv").set_index("cell")
    ok = s.loc["mine/torch2.13/opset13/none/fp32/onnxruntime"]
    assert ok["status"] == "ok" and ok["parity_ok"] and ok["framework_AP"] >= 0
    assert ok["exporter"].startswith("torch.onnx.export (torchscript)")
    dyn = s.loc["mine-dynamo/torch2.13/opset18/none/fp32/onnxruntime"]
    assert dyn["status"] == "ok" and dyn["parity_ok"], dyn["reason"]
    assert dyn["exporter"].startswith("torch.onnx.export (dynamo)")
    assert s.loc["mine/torch2.13/opset13/ort-qdq/int8/onnxruntime", "status"] == "ok"
    qat = s.loc["mine/torch2.13/opset13/torch-qat/int8/onnxruntime"]
    assert (qat["status"], qat["reason_class"]) == ("skipped", "needs_training_step")
    assert "names none (models.mine.qat" in qat["reason"]
    trained = s.loc["mine-qat/torch2.13/opset13/torch-qat/int8/onnxruntime"]
    assert trained["status"] == "ok" and trained["AP"] >= 0, trained["reason"]
    bl = s.loc["bad-loss/torch2.13/opset13/torch-qat/int8/onnxruntime"]
    assert (bl["status"], bl["reason_class"]) == ("failed", "qat_loss")
    assert "mydet:per_box_loss returned Tensor torch.Size([2, 12])" in bl["reason"]
    ren = s.loc["renamed/torch2.13/opset13/none/fp32/onnxruntime"]
    assert (ren["status"], ren["stage"], ren["reason_class"]) == ("failed", "framework", "weights_mismatch")
    assert "4 missing: ['conv.weight', 'conv.bias'" in ren["reason"] and "4 unexpected" in ren["reason"]
    assert "backbone.conv.weight" in ren["reason"]
    nm = s.loc["no-module/torch2.13/opset13/none/fp32/onnxruntime"]
    assert nm["reason_class"] == "factory_error" and "returned a dict, not a torch.nn.Module" in nm["reason"]
    ni = s.loc["no-import/torch2.13/opset13/none/fp32/onnxruntime"]
    assert ni["reason_class"] == "factory_error" and "cannot import no_such_package.det" in ni["reason"]


@pytest.fixture(scope="module")
def ultra_env() -> EnvResult:
    env = ensure_env("ultra8.4", ULTRA_TOOLSET, ENVS)
    assert env.status == "ok", env.message[-3000:]
    return env


def test_ultralytics_and_torchvision_sources_through_every_stage(ultra_env, tmp_path: Path):
    cls_pt = tmp_path / "yolov8n-cls.pt"
    env_run(ultra_env, "-c", "import sys; from ultralytics import YOLO; "
            "YOLO('yolov8n-cls.yaml').save(sys.argv[1])", str(cls_pt), check=True, cwd=tmp_path,
            extra_env={"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp_path / "ucfg")})
    letterbox = {"resize": "letterbox", "size": [320, 320], "scale": 1 / 255, "mean": [0, 0, 0],
                 "std": [1, 1, 1], "pad_value": 114}
    cfg = tiny_config()
    cfg["toolsets"] = {"ultra8.4": ULTRA_TOOLSET}
    cfg["models"] = {
        # decode preset, inputs and class names come from the source; COCO indices -> ids
        "yolov8n": {"source": "ultralytics", "path": "yolov8n.yaml", "preprocess": letterbox,
                    "decode": {"label_map": "coco80"}},
        "rtdetr-l": {"source": "ultralytics", "path": "rtdetr-l.yaml", "preprocess": letterbox,
                     "decode": {"label_map": "coco80"}},
        "classifier": {"source": "ultralytics", "path": str(cls_pt), "preprocess": letterbox},
        # the preset's label_map 'names': a .yaml at random init names its classes '0'..'79'
        "yolov8n-names": {"source": "ultralytics", "path": "yolov8n.yaml", "preprocess": letterbox},
        "ssdlite": {"source": "torch",
                    "factory": "torchvision.models.detection:ssdlite320_mobilenet_v3_large",
                    "kwargs": {"weights": None, "weights_backbone": None},
                    "inputs": [{"name": "images", "dtype": "float32", "role": "image"}],
                    "preprocess": {**letterbox, "resize": "stretch"},
                    "decode": {"preset": "torchvision"},
                    # at random init SSDlite gives hundreds of boxes one same score: which 300 of
                    # them survive is arbitrary and differs between eager PyTorch and ONNX Runtime,
                    # so parity is recorded but not held to the default tolerance here
                    "export": {"dynamic_batch": False, "parity": {"max_abs": 1000, "min_cosine": 0}}},
    }
    del cfg["demo"]
    cfg["matrix"] = [{"models": ["yolov8n"], "toolsets": ["ultra8.4"], "opsets": [13, 17]},
                     {"models": ["rtdetr-l"], "toolsets": ["ultra8.4"], "opsets": [16, 17]},
                     {"models": ["ssdlite", "classifier", "yolov8n-names"], "toolsets": ["ultra8.4"],
                      "opsets": [17]},
                     # a source's graph through INT8: yolov8n here; RT-DETR-l's and SSDlite's
                     # graphs are quantized and simulated in test_real_detectors (the stages
                     # after export do not depend on the source)
                     {"models": ["yolov8n"], "toolsets": ["ultra8.4"],
                      "opsets": [17], "quantizers": ["ort-qdq"], "precisions": ["int8"],
                      "backends": ["onnxruntime", "tensorrt_sim"]}]
    cfg["quantize"] = {"calib_images": 2}
    cfg["dataset"]["synthetic"]["val"] = 4
    write_config(tmp_path, cfg)
    snakemake(tmp_path, env={"YOLO_CONFIG_DIR": str(tmp_path / "ucfg")})
    s = pd.read_csv(tmp_path / "results" / "summary.csv").set_index("cell")
    print(s[["status", "reason_class", "AP", "framework_AP", "parity_ok", "parity_max_abs",
             "exporter", "foreign_detections"]].to_string())
    cls = s[s.model == "classifier"].iloc[0]
    assert (cls["status"], cls["stage"], cls["reason_class"]) == ("failed", "framework", "not_a_detector")
    assert "'classify' model" in cls["reason"]
    names = s[s.model == "yolov8n-names"].iloc[0]
    assert (names["status"], names["stage"], names["reason_class"]) == \
        ("failed", "evaluate", "label_map_mismatch")
    assert "none of the model's 80 class names is a dataset category" in names["reason"]
    fw = json.loads(next((tmp_path / "results" / "yolov8n-names").rglob("framework/evaluate/status.json"))
                    .read_text())
    assert fw["reason_class"] == "label_map_mismatch"  # the framework model carries the names too
    rest = s[~s.model.isin(["classifier", "yolov8n-names"])]
    assert len(rest) == 7
    bad = rest[rest.status != "ok"]
    assert bad.empty, bad[["stage", "reason_class", "reason"]].to_string()
    assert rest["parity_ok"].all() and rest["framework_AP"].notna().all()
    ultra = rest[rest.model != "ssdlite"]
    assert set(ultra["exporter"]) == {"ultralytics export 8.4.190"}
    assert sorted(ultra["opset_written"].unique()) == [13, 16, 17]
