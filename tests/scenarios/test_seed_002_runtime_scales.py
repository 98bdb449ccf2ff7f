"""Field report 002: a QAT model exported with dynamic amax (scales computed at run time) lost
accuracy after export; static (learned) amax did not.

Reproduced with real ONNX Runtime quantization of a small detector graph: ``quantize_static``
(calibrated, constant scales) and ``quantize_dynamic`` (``DynamicQuantizeLinear``: scales from
each input at run time). The doctor flags the second with the tensor and node, and not the first.
The second test runs the real torch path: the demo detector fine-tuned with fake quantization
and exported with static and with dynamic amax (quantizers torch-qat, torch-qat-dynamic). Not
asserted: the accuracy loss itself (the tiny sweep's AP is too low to compare; the default
sweep's rows show both APs)."""

from __future__ import annotations

from pathlib import Path

from conftest import NO_LATENCY, tiny_config, write_config
from doctor_cli import codes, doctor
from helpers_onnx import detector, feeds

from quantsweep import paths
from quantsweep.status import make_status, write_status


class _Reader:
    def __init__(self) -> None:
        self.batches = iter([feeds(1) for _ in range(4)])

    def get_next(self):  # noqa: ANN201 - onnxruntime's CalibrationDataReader protocol
        return next(self.batches, None)


def _cell(root: Path, quantizer: str, model: Path) -> str:
    axes = {"model": "det", "toolset": "ort", "opset": 13, "quantizer": quantizer,
            "precision": "int8", "backend": "onnxruntime"}
    write_status(paths.fill(root / "results", "quantize", "status.json", **axes), make_status(
        "quantize", paths.cell_id(**axes), "ok", artifacts={"model": str(model)},
        data={"int8": True, "quantizer": quantizer}))
    return paths.cell_id(**axes)


def test_doctor_flags_run_time_scales_only(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    src = detector(tmp_path / "float.onnx")
    static, dynamic = tmp_path / "static.onnx", tmp_path / "dynamic.onnx"
    quantize_static(str(src), str(static), _Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"], activation_type=QuantType.QInt8)
    quantize_dynamic(str(src), str(dynamic), op_types_to_quantize=["Conv"])
    write_config(tmp_path, tiny_config())  # the doctor reads results/ as this config names it

    _, rep, _ = doctor(tmp_path, _cell(tmp_path, "qat-static", static))
    assert "runtime_scales" not in codes(rep)
    rc, rep, text = doctor(tmp_path, _cell(tmp_path, "qat-dynamic", dynamic))
    found = codes(rep)["runtime_scales"]
    assert rc == 1 and found[0]["seed"] == "002"
    assert found[0]["evidence"]["node"] and found[0]["evidence"]["tensor"]
    assert "DynamicQuantizeLinear" in found[0]["message"] and "static" in found[0]["fix"]
    assert "field report 002" in text


def test_torch_qat_static_and_dynamic_amax(tmp_path: Path) -> None:
    """The demo torch detector fine-tuned with fake quantization in its own toolset (real torch),
    exported twice: static amax gives constant scales, dynamic amax scales computed at run time,
    which the doctor and the summary flag."""
    import pandas as pd
    from conftest import snakemake

    cfg = tiny_config(latency=dict(NO_LATENCY))
    cfg["matrix"].append({"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13],
                          "quantizers": ["torch-qat", "torch-qat-dynamic"], "precisions": ["int8"]})
    cfg["quantize"] = {"calib_images": 2, "torch-qat": {"steps": 2, "batch_size": 2}}
    write_config(tmp_path, cfg)
    snakemake(tmp_path)
    rows = pd.read_csv(tmp_path / "results/summary.csv").set_index("cell")
    base = "demo-torch/torch2.13/opset13"
    static = rows.loc[f"{base}/torch-qat/int8/onnxruntime"]
    dynamic = rows.loc[f"{base}/torch-qat-dynamic/int8/onnxruntime"]
    for r in (static, dynamic):
        assert r["status"] == "ok" and r["fp32_cell"] == f"{base}/none/fp32/onnxruntime", r["reason"]
    assert "runtime_scales" not in str(static["doctor"])
    assert "error:runtime_scales" in dynamic["doctor"]
    _, rep, _ = doctor(tmp_path, f"{base}/torch-qat/int8/onnxruntime")
    assert "runtime_scales" not in codes(rep)
    rc, rep, _ = doctor(tmp_path, f"{base}/torch-qat-dynamic/int8/onnxruntime")
    assert rc == 1 and len(codes(rep)["runtime_scales"]) >= 10  # one per quantized conv input
