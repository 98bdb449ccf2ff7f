"""The export stage on real exporters: paddle2onnx 1.3.1 (Python API and command line, the same
graph), torch.onnx.export (TorchScript and dynamo), opsets the exporter cannot write, a user's
Paddle model directory with faults, and parity after every export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pandas as pd
import pytest
from conftest import DEMO_PADDLE, DEMO_TORCH, NO_LATENCY, PADDLE_TOOLSET, artifact, snakemake, tiny_config, write_config
from helpers_onnx import const_detector

from quantsweep.paths import stage_glob

P26 = "paddle2.6-p2o1.3"


def _status(root: Path, cell: str, stage: str = "export") -> dict:
    return json.loads((root / "results" / cell / stage / "status.json").read_text())


def _graph(path: Path) -> onnx.GraphProto:
    g = onnx.load(str(path)).graph
    g.doc_string = ""
    return g


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny sweep: demo-paddle by API and CLI at opsets 7/13/20, torch at 7/13 and
    dynamo at 13/18; then a second run with user Paddle model directories made from it."""
    root = tmp_path_factory.mktemp("export")
    cfg = tiny_config(latency=dict(NO_LATENCY))
    cfg["toolsets"][P26] = PADDLE_TOOLSET
    paddle = json.loads(json.dumps(DEMO_PADDLE))
    cfg["models"].update({
        "demo-paddle": paddle,
        "demo-paddle-cli": {**paddle, "export": {"method": "cli"}},
        "demo-torch-dynamo": {**DEMO_TORCH, "export": {"exporter": "dynamo"}},
    })
    cfg["matrix"] = [
        {"models": ["demo-paddle", "demo-paddle-cli"], "toolsets": [P26], "opsets": [7, 13, 20]},
        {"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [7, 13]},
        {"models": ["demo-torch-dynamo"], "toolsets": ["torch2.13"], "opsets": [13, 18]},
    ]
    write_config(root, cfg)
    snakemake(root)
    # a user's Paddle model directories, made from the demo's: complete, without params,
    # and a PIR-named model (inference.json) for the Paddle 2.6 toolset
    fw = root / "results/demo-paddle" / P26 / "framework/model"
    good, noparams, pir = root / "user-good", root / "user-noparams", root / "user-pir"
    for d in (good, noparams, pir):
        shutil.copytree(fw, d)
    (noparams / "inference.pdiparams").unlink()
    (pir / "inference.pdmodel").rename(pir / "inference.json")
    for name, d in (("user-good", good), ("user-noparams", noparams), ("user-pir", pir)):
        cfg["models"][name] = {**json.loads(json.dumps(DEMO_PADDLE)), "source": "paddle",
                               "path": str(d)}
    cfg["matrix"].append({"models": ["user-good", "user-noparams", "user-pir"],
                          "toolsets": [P26], "opsets": [13]})
    write_config(root, cfg)
    snakemake(root)
    return root


def test_paddle2onnx_cli_and_api_write_the_same_graph(sweep: Path):
    api = _status(sweep, f"demo-paddle/{P26}/opset13")
    cli = _status(sweep, f"demo-paddle-cli/{P26}/opset13")
    assert api["status"] == cli["status"] == "ok"
    assert cli["data"]["method"] == "cli" and api["data"]["method"] == "api"
    assert " --opset_version 13 " in cli["data"]["command"]
    assert cli["data"]["command"].split()[0].endswith("/bin/paddle2onnx")
    g_api = _graph(artifact(sweep, api, "model"))
    g_cli = _graph(artifact(sweep, cli, "model"))
    assert [n.op_type for n in g_api.node] == [n.op_type for n in g_cli.node]
    assert g_api.SerializeToString() == g_cli.SerializeToString()
    for rec in (api, cli):
        assert rec["data"]["opset"] == 13
        assert rec["data"]["exporter"] == {"name": "paddle2onnx", "version": "1.3.1"}
        assert rec["data"]["op_histogram"]["TopK"] >= 1
        assert rec["data"]["export_s"] > 0


def test_opsets_the_exporter_cannot_write_fail_with_its_own_message(sweep: Path):
    for model in ("demo-paddle", "demo-paddle-cli"):
        # paddle2onnx 1.3.1 aborts (SIGABRT): the row carries its [ERROR] line, first
        high = _status(sweep, f"{model}/{P26}/opset20")
        assert high["status"] == "failed" and high["reason_class"] == "tool_crash"
        first = high["message"].splitlines()[0]
        assert "SIGABRT" in first and "Only support opset_version in range of [7, 19]" in first
        low = _status(sweep, f"{model}/{P26}/opset7")
        assert low["status"] == "failed" and low["reason_class"] == "tool_crash"
        assert "model exporting is aborted" in low["message"].splitlines()[0]
        assert "nearest_interp_v2, requires opset_version >= 11" in low["message"]
    torch7 = _status(sweep, "demo-torch/torch2.13/opset7")
    assert torch7["status"] == "failed" and torch7["reason_class"] == "export_failed"
    assert "Unsupported: ONNX export of operator upsample_nearest2d" in torch7["message"]
    # the sweep went on: the downstream stages of a failed export are skipped rows
    rows = pd.read_csv(sweep / "results/summary.csv").set_index("cell")
    row = rows.loc[f"demo-paddle/{P26}/opset20/none/fp32/onnxruntime"]
    assert row["status"] == "failed" and row["stage"] == "export"
    assert rows.loc[f"demo-paddle/{P26}/opset13/none/fp32/onnxruntime", "status"] == "ok"


def test_torch_exporters_and_the_opset_actually_written(sweep: Path):
    ts = _status(sweep, "demo-torch/torch2.13/opset13")
    assert ts["status"] == "ok" and ts["data"]["exporter"]["name"] == "torch.onnx.export (torchscript)"
    assert ts["data"]["inputs"][0]["shape"][0] == "N"  # dynamic batch axis
    dyn18 = _status(sweep, "demo-torch-dynamo/torch2.13/opset18")
    assert dyn18["status"] == "ok" and dyn18["data"]["opset"] == 18
    assert dyn18["data"]["exporter"]["name"] == "torch.onnx.export (dynamo)"
    assert dyn18["data"]["parity"]["ok"]
    # asked for 13, the dynamo exporter writes 18: read back from the model, not believed
    dyn13 = _status(sweep, "demo-torch-dynamo/torch2.13/opset13")
    assert dyn13["status"] == "failed" and dyn13["reason_class"] == "opset_mismatch"
    assert "wrote opset 18, the cell asked for 13" in dyn13["message"]


def test_parity_is_recorded_for_every_ok_export(sweep: Path):
    n = 0
    for st_path in (sweep / "results").glob(stage_glob("export")):
        rec = json.loads(st_path.read_text())
        if rec["status"] != "ok":
            continue
        n += 1
        par = json.loads((st_path.parent / "parity.json").read_text())
        assert par["ok"] and par["images"] == 2  # the tiny calib split
        assert par["tolerance"] == {"images": 8, "max_abs": 0.01, "min_cosine": 0.9999}
        for out in par["outputs"]:
            assert out["shape_match"] and 0 <= out["mean_abs"] <= out["max_abs"]
            # within tolerance by position, or (NMS outputs) the same detections in another order
            assert (out["cosine"] >= 0.9999 and out["max_abs"] <= 0.01) or \
                (par["matched"] == "as detection rows in any order" and par["rows_max_abs"] <= 0.01)
    assert n == 5  # paddle API and CLI, torch, dynamo at 18, the user directory


def test_user_paddle_model_directories(sweep: Path):
    good = _status(sweep, f"user-good/{P26}/opset13")
    assert good["status"] == "ok" and good["data"]["parity"]["ok"]
    fw = _status(sweep, f"user-good/{P26}", "framework")
    assert fw["artifacts"]["model"] == str(sweep / "user-good")  # used in place
    rows = pd.read_csv(sweep / "results/summary.csv").set_index("cell")
    assert rows.loc[f"user-good/{P26}/opset13/none/fp32/onnxruntime", "status"] == "ok"
    nop = _status(sweep, f"user-noparams/{P26}", "framework")
    assert nop["status"] == "failed" and nop["reason_class"] == "invalid_model"
    assert str(sweep / "user-noparams") in nop["message"] and "inference.pdiparams" in nop["message"]
    pir = _status(sweep, f"user-pir/{P26}", "framework")
    assert pir["status"] == "failed" and pir["reason_class"] == "unsupported_format"
    assert "needs Paddle >= 3.0" in pir["message"] and "paddle 2.6.2" in pir["message"]
    # and the summary row of each names the stage and the reason
    row = rows.loc[f"user-pir/{P26}/opset13/none/fp32/onnxruntime"]
    assert row["status"] == "failed" and row["reason_class"] == "unsupported_format"


def test_parity_over_tolerance_fails_the_export(tmp_path: Path):
    """Runs in the main environment with ONNX Runtime: two real models that differ."""
    from helpers_onnx import one_image_coco

    from quantsweep.backends.onnxruntime import runner
    from quantsweep.export.parity import compare

    ann = one_image_coco(tmp_path / "data", [50, 20, 100, 50], 7)
    manifest = {"splits": {"calib": {"annotations": str(ann), "images": str(ann.parent / "images")}}}
    a = const_detector(tmp_path / "a.onnx", [0.25, 0.2, 0.5, 0.5], label=2)
    b = const_detector(tmp_path / "b.onnx", [0.25, 0.2, 0.5, 0.52], label=2)
    spec = {"inputs": [{"name": "x", "dtype": "float32", "role": "image"}],
            "preprocess": {"resize": "stretch", "size": [64, 64], "channel_order": "RGB",
                           "scale": 1 / 255, "mean": [0, 0, 0], "std": [1, 1, 1]}}
    tol = {"images": 4, "max_abs": 0.01, "min_cosine": 0.9999}
    same = compare(runner(a, {}), runner(a, {}), spec, manifest, tol)
    assert same["ok"] and same["images"] == 1
    assert [o["max_abs"] for o in same["outputs"]] == [0.0, 0.0, 0.0]
    diff = compare(runner(a, {}), runner(b, {}), spec, manifest, tol)
    assert not diff["ok"]
    boxes = next(o for o in diff["outputs"] if o["output"] == "boxes")
    assert boxes["max_abs"] == pytest.approx(0.02, abs=1e-6)
    assert boxes["mean_abs"] == pytest.approx(0.005, abs=1e-6)
    assert 0.99 < boxes["cosine"] < 1.0
    # boxes/scores/labels of one detection are a row table: matched in any order they still
    # differ by the same 0.02
    assert diff["problems"] == [f"output boxes: max_abs 0.02 (tolerance 0.01), cosine "
                                f"{boxes['cosine']:.6f} (tolerance 0.9999)",
                                "matched as detection rows in any order: max_abs 0.02"]
    relaxed = compare(runner(a, {}), runner(b, {}), spec, manifest,
                      {**tol, "max_abs": 0.05, "min_cosine": 0.99})
    assert relaxed["ok"] and relaxed["problems"] == []
