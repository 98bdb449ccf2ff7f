"""The ort-qdq quantizer and the CPU simulation of TensorRT INT8 on real ONNX Runtime: a QDQ graph
with static scales next to its FP32 sibling; the same calibration kept as a TensorRT cache and
applied as Q/DQ (mode simulated); a cache the simulated TensorRT ignores fails the row; a calib
request larger than the calib split is one clear failed row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pandas as pd
from conftest import MODELOPT_TOOLSET, artifact, jobs_run, snakemake, tiny_config, write_config

from quantsweep import calib

INT8 = "demo-torch/torch2.13/opset13/ort-qdq/int8/onnxruntime"
SIM = "demo-torch/torch2.13/opset13/ort-qdq/int8/tensorrt_sim"
FP32 = "demo-torch/torch2.13/opset13/none/fp32/onnxruntime"


def _cfg(calib_images: int, trt: str = "8.6.1") -> dict:
    cfg = tiny_config()
    cfg["matrix"] = [{"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13]},
                     {"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13],
                      "quantizers": ["ort-qdq"], "precisions": ["int8"],
                      "backends": ["onnxruntime", "tensorrt_sim"]}]
    cfg["quantize"] = {"calib_images": calib_images, "ort-qdq": {"op_types": ["Conv"]}}
    cfg["simulate"] = {"tensorrt_version": trt}
    return cfg


def _rows(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "results/summary.csv").set_index("cell")


def test_ort_qdq_and_simulated_tensorrt_int8(tmp_path: Path):
    write_config(tmp_path, _cfg(2))
    snakemake(tmp_path)
    rows = _rows(tmp_path)
    int8, fp32, sim = rows.loc[INT8], rows.loc[FP32], rows.loc[SIM]
    assert int8["status"] == fp32["status"] == sim["status"] == "ok"
    assert int8["mode"] == "measured" and sim["mode"] == "simulated"
    q = json.loads((tmp_path / "results/demo-torch/torch2.13/opset13/ort-qdq/quantize/"
                    "status.json").read_text())
    assert q["data"]["calib_images"] == 2 and q["data"]["calibrate_method"] == "MinMax"
    m = onnx.load(str(artifact(tmp_path, q, "model")))
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    dq_out = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    # every Conv reads its activation and its weight through a DequantizeLinear
    assert convs and all(c.input[0] in dq_out and c.input[1] in dq_out for c in convs)
    assert q["data"]["quantize_nodes"] > 0 and q["data"]["runtime_scales"] == 0
    assert q["data"]["dynamic_quantize_nodes"] == 0
    # the INT8 rows carry their FP32 sibling's AP (the delta is what a user compares)
    assert int8["fp32_cell"] == FP32
    assert int8["model_bytes"] < 0.5 * fp32["model_bytes"]  # INT8 weights: the QDQ graph's size
    assert int8["AP_delta_vs_fp32"] == round(int8["AP"] - fp32["AP"], 6)

    # the calibration kept as a TensorRT cache, in TensorRT's format, naming graph tensors
    cache = calib.read(artifact(tmp_path, q, "calibration_cache"))
    assert cache.header == "TRT-8601-MinMaxCalibration" and cache.scales
    r = subprocess.run([sys.executable, "-m", "quantsweep.cli", "cache", "inspect",
                        str(artifact(tmp_path, q, "calibration_cache")), "--onnx",
                        str(artifact(tmp_path, q, "float_model")),
                        "--trt-version", "8.6.1", "--trt-version", "10.13.3"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert "8.6.1: used" in r.stdout and "10.13.3: ignored" in r.stdout
    assert " 0 cache names are not in the graph" in r.stdout
    # the simulation: labelled everywhere, and the cache round trip reproduces ORT's own QDQ
    b = json.loads((tmp_path / "results" / SIM / "build/status.json").read_text())
    ev = json.loads((tmp_path / "results" / SIM / "evaluate/metrics.json").read_text())
    assert b["mode"] == "simulated" and b["backend"] == "tensorrt(sim)" and ev["mode"] == "simulated"
    assert b["data"]["int8_layers"] == len(convs) and b["data"]["float_layers"] == 0
    assert b["data"]["cache_verdicts"]["8.6.1"]["verdict"] == "used"
    assert b["data"]["cache_verdicts"]["11.4.0"]["verdict"] == "ignored"
    assert abs(sim["AP"] - int8["AP"]) < 1e-3

    # TensorRT 10 would ignore an 8.6.1 cache (field report 001): only the simulated cell
    # reruns, and it fails saying so
    write_config(tmp_path, _cfg(2, trt="10.13.3"))
    r = snakemake(tmp_path)
    assert jobs_run(r) == {"build": 1, "evaluate": 1, "latency": 1, "summary": 1, "ledger": 1,
                           "report": 1, "all": 1}, jobs_run(r)
    sim = _rows(tmp_path).loc[SIM]
    assert sim["status"] == "failed" and sim["reason_class"] == "cache_ignored"
    assert "TensorRT 10.13.3 would not use this cache" in sim["reason"] and "TRT-8601" in sim["reason"]

    # more calib images than the split has: one failed row naming the key and the file
    write_config(tmp_path, _cfg(5))
    snakemake(tmp_path)
    rows = _rows(tmp_path)
    row = rows.loc[INT8]
    assert row["status"] == "failed" and row["reason_class"] == "calib_too_small"
    assert "quantize.calib_images is 5" in row["reason"] and "has 2 images" in row["reason"]
    assert "calib.json" in row["reason"] or "calib" in row["reason"]
    assert rows.loc[FP32, "status"] == "ok"  # the FP32 cell was not touched


def test_paddleslim_ptq_then_paddle2onnx_cache(paddleslim_sweep: Path):
    tmp_path = paddleslim_sweep
    rows = _rows(tmp_path)
    base = "demo-paddle/paddle2.6-p2o1.3/opset13/paddleslim-ptq/int8"
    assert rows.loc[f"{base}/onnxruntime", "status"] == "ok"
    assert rows.loc[f"{base}/onnxruntime", "mode"] == "measured"
    assert rows.loc[f"{base}/tensorrt_sim", "status"] == "ok"
    assert rows.loc[f"{base}/tensorrt_sim", "mode"] == "simulated"
    q = json.loads((tmp_path / "results/demo-paddle/paddle2.6-p2o1.3/opset13/paddleslim-ptq/"
                    "quantize/status.json").read_text())
    assert q["data"]["tool"] == "paddleslim 2.6.0 quant_post_static" and q["data"]["algo"] == "avg"
    assert "--deploy_backend tensorrt" in q["data"]["paddle2onnx_tensorrt"]
    assert "--save_calibration_file" in q["data"]["paddle2onnx_tensorrt"]
    assert q["data"]["quantize_nodes"] > 0  # the ONNX Runtime export is a QDQ graph
    # paddle2onnx 1.3.1's own cache: its placeholder header, with a trailing space
    cache = calib.read(artifact(tmp_path, q, "calibration_cache"))
    assert cache.header == "TRT-8XXX-EntropyCalibration2 " and cache.trailing_space
    b = json.loads((tmp_path / "results" / base / "tensorrt_sim/build/status.json").read_text())
    assert b["data"]["cache_verdicts"]["8.6.1"]["verdict"] == "uncertain"
    assert b["data"]["cache_verdicts"]["10.13.3"]["verdict"] == "ignored"
    assert b["data"]["int8_layers"] > 0
    # the quantized Paddle model itself, in Paddle Inference on the CPU (field report 000)
    pi = rows.loc[f"{base}/paddle_inference"]
    assert pi["status"] == "ok" and pi["mode"] == "measured"
    pb = json.loads((tmp_path / "results" / base / "paddle_inference/build/status.json").read_text())
    assert pb["artifacts"]["model"].endswith("paddleslim-ptq/quantize/paddle_model")
    assert "Q/DQ ops run in float" in pb["data"]["note"]


def test_modelopt_ptq_in_its_own_toolset(tmp_path: Path):
    """NVIDIA ModelOpt's INT8 PTQ on the CPU, in its own env, of the demo-torch export."""
    cfg = tiny_config()
    cfg["toolsets"]["modelopt0.47"] = MODELOPT_TOOLSET
    onnx_model = {**json.loads(json.dumps(cfg["models"]["demo-torch"])), "source": "onnx",
                  "from": {"model": "demo-torch", "toolset": "torch2.13"}}
    cfg["models"]["demo-torch-onnx"] = onnx_model
    # both quantizers that take a recipe, analysed: each gets an analysis and a recipe cell
    cfg["matrix"] = [{"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13],
                      "quantizers": ["none", "ort-qdq"], "precisions": ["fp32", "int8"], "analyze": True},
                     {"models": ["demo-torch-onnx"], "toolsets": ["modelopt0.47"], "opsets": [13],
                      "quantizers": ["none", "modelopt-ptq"], "precisions": ["fp32", "int8"],
                      "analyze": True}]
    cfg["exclude"] = [{"match": {"quantizer": "none", "precision": "int8"}, "reason": "float"},
                      {"match": {"quantizer": ["modelopt-ptq", "ort-qdq"], "precision": "fp32"},
                       "reason": "int8"}]
    cfg["quantize"] = {"calib_images": 2}
    cfg["analyze"] = {"images": 2, "val_images": 6, "top_k": 2}
    write_config(tmp_path, cfg)
    snakemake(tmp_path)
    rows = _rows(tmp_path)
    for parent in ("demo-torch/torch2.13/opset13/ort-qdq", "demo-torch-onnx/modelopt0.47/opset13/modelopt-ptq"):
        an = json.loads((tmp_path / "results" / parent / "analyze/status.json").read_text())
        assert an["status"] == "ok", an["message"]
        sens = json.loads((tmp_path / "results" / parent / "analyze/sensitivity.json").read_text())
        # one entry per unit (nodes reading one quantized tensor go together)
        assert len(sens["layers"]) == an["data"]["layer_groups"] > 0
        assert an["data"]["quantized_layers"] >= an["data"]["layer_groups"]
        assert all(0 <= x["error_only_quantized"] <= 2 for x in sens["layers"])
        # a recipe step of one layer is that layer alone in float, whose AP the candidates' pass
        # already scored: no graph is built again for it
        recipe = json.loads((tmp_path / "results" / parent / "analyze/recipe.json").read_text())
        alone = {x["layer"]: x.get("ap_only_float") for x in sens["layers"]}
        scored = [s for s in recipe["steps"]
                  if len(s["float_layers"]) == 1 and alone[s["float_layers"][0]] is not None]
        assert all(s["AP"] == alone[s["float_layers"][0]] for s in scored)
        assert an["data"]["graphs_run"] == (2 + 2 * an["data"]["layer_groups"]
                                            + len(recipe["steps"]) - len(scored))
        recipe_cell = f"{parent}-recipe/int8/onnxruntime"
        r = rows.loc[recipe_cell]
        assert r["status"] == "ok" and r["recipe_of"] == f"{parent}/int8/onnxruntime", r["reason"]
        assert r["AP_delta_vs_parent"] == r["AP_delta_vs_parent"]  # a number: both were scored
        assert rows.loc[f"{parent}/int8/onnxruntime", "analyze_status"] == "ok"
    ledger = json.loads((tmp_path / "results" / "ledger.json").read_text())
    assert {s["step"] for s in ledger["steps"]} >= {"INT8 ort-qdq -> INT8 + recipe on onnxruntime",
                                                     "INT8 modelopt-ptq -> INT8 + recipe on onnxruntime"}
    assert set(ledger["analysis"]) == {"demo-torch/torch2.13/opset13/ort-qdq",
                                       "demo-torch-onnx/modelopt0.47/opset13/modelopt-ptq"}
    assert (tmp_path / "results" / "report.html").read_text().count("Per-layer INT8 sensitivity") == 2
    cell = "demo-torch-onnx/modelopt0.47/opset13/modelopt-ptq/int8/onnxruntime"
    row = rows.loc[cell]
    assert row["status"] == "ok" and row["mode"] == "measured", row["reason"]
    assert row["fp32_cell"] == "demo-torch-onnx/modelopt0.47/opset13/none/fp32/onnxruntime"
    assert abs(row["AP_delta_vs_fp32"]) < 1  # a number, measured against its FP32 sibling
    q = json.loads((tmp_path / "results/demo-torch-onnx/modelopt0.47/opset13/modelopt-ptq/"
                    "quantize/status.json").read_text())
    assert q["data"]["tool"] == "nvidia-modelopt 0.47.0"
    assert q["data"]["quantize_nodes"] > 0 and not q["data"]["runtime_scales"]
    assert q["tool_versions"]["nvidia-modelopt"] == "0.47.0"


def test_a_quantizer_that_drops_the_models_metadata_gets_it_back(tmp_path: Path):
    """ModelOpt 0.47 writes its Q/DQ graph without the float graph's metadata, where Ultralytics
    keeps the class names the evaluation maps (label_map: names) - measured on the YOLOv8n
    example (a label_map_mismatch row before)."""
    import onnx
    from onnx import TensorProto, helper

    from quantsweep.quantize import keep_metadata

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g)
    onnx.save(m, str(tmp_path / "q.onnx"))
    helper.set_model_props(m, {"names": "{0: 'disc', 1: 'ring'}", "stride": "32"})
    onnx.save(m, str(tmp_path / "f.onnx"))
    assert keep_metadata(tmp_path / "f.onnx", tmp_path / "q.onnx") == ["names", "stride"]
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert meta["names"] == "{0: 'disc', 1: 'ring'}"
    assert keep_metadata(tmp_path / "f.onnx", tmp_path / "q.onnx") == []  # nothing missing now
