"""Field report 002: a QAT model exported with dynamic amax (scales computed at run time) lost
accuracy after export; static (learned) amax did not.

Reproduced with real ONNX Runtime quantization of a small detector graph: ``quantize_static``
(calibrated, constant scales) and ``quantize_dynamic`` (``DynamicQuantizeLinear``: scales from
each input at run time). The doctor flags the second with the tensor and node, and not the first.
Not reproduced: the accuracy loss itself, and a torch QAT export on demo-torch."""

from __future__ import annotations

from pathlib import Path

from conftest import tiny_config, write_config
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
