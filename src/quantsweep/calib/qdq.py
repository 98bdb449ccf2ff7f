"""Calibration ranges <-> caches <-> QDQ graphs, with ONNX Runtime's own quantizer (runs in a
toolset that has onnxruntime).

The CPU simulation of TensorRT INT8: the cache's per-tensor scales become symmetric activation
ranges; weights are quantized per channel (as TensorRT does); ONNX Runtime's ``QDQQuantizer``
writes the Q/DQ nodes. A layer whose input or output has no scale stays in float, as TensorRT
runs a layer without a dynamic range in higher precision. Only ``op_types`` are quantized
(default Conv): an estimate of TensorRT's INT8, not its kernels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.calib import Cache

SIM_OP_TYPES = ("Conv",)


def amax_from_tensors_data(tensors_data: Any) -> dict[str, float]:
    """Per-tensor absolute maxima from ONNX Runtime's ``TensorsData`` (a calibrator's result)."""
    out = {}
    for name, td in tensors_data.data.items():
        lo, hi = td.range_value  # scalars or 1-element arrays, by ORT version
        out[name] = float(max(np.abs(np.asarray(lo, np.float64)).max(),
                              np.abs(np.asarray(hi, np.float64)).max()))
    return out


def calibrate(onnx_path: Path, reader: Any, method: str, op_types: list[str] | None,
              work_dir: Path) -> Any:
    """ONNX Runtime's calibrator (MinMax/Entropy/Percentile) -> its ``TensorsData``."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    cal = create_calibrator(str(onnx_path), op_types_to_calibrate=op_types,
                            augmented_model_path=str(work_dir / "augmented.onnx"),
                            calibrate_method=getattr(CalibrationMethod, method),
                            extra_options={"symmetric": True})
    cal.collect_data(reader)
    return cal.compute_data()


def constants_to_initializers(model: Any) -> int:
    """Move tensor-valued ``Constant`` nodes into initializers (ORT's quantizer finds weights
    only there); returns how many were moved."""
    from onnx import numpy_helper

    keep, moved = [], 0
    for n in model.graph.node:
        value = next((a for a in n.attribute if a.name == "value"), None)
        if n.op_type == "Constant" and value is not None and len(n.attribute) == 1:
            arr = numpy_helper.to_array(value.t)
            model.graph.initializer.append(numpy_helper.from_array(arr, n.output[0]))
            moved += 1
        else:
            keep.append(n)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return moved


def apply_cache(float_onnx: Path, cache: Cache, dst: Path,
                op_types: tuple[str, ...] = SIM_OP_TYPES,
                keep_float: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write ``dst``: ``float_onnx`` with Q/DQ from ``cache``; report what was quantized.
    ``keep_float``: layers a recipe runs in higher precision (TensorRT's layer precisions)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantType
    from onnxruntime.quantization.calibrate import TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    from quantsweep.calib import bad_scale
    from quantsweep.qdq_graph import constants, name_nodes

    model = onnx.load(str(float_onnx))
    constants_to_initializers(model)  # paddle2onnx's TensorRT export keeps weights in Constants
    name_nodes(model.graph)
    consts = constants(model.graph)
    usable = {k: v for k, v in cache.scales.items() if bad_scale(v) is None}
    chosen: list[str] = []
    float_layers: list[str] = []
    for n in model.graph.node:
        if n.op_type not in op_types:
            continue
        acts = [x for x in list(n.input) + list(n.output) if x and x not in consts]
        int8 = n.name not in keep_float and all(a in usable for a in acts)
        (chosen if int8 else float_layers).append(n.name)
    if not chosen:
        raise ValueError(f"no {'/'.join(op_types)} layer of {float_onnx} has scales for its "
                         f"input and output in the cache: nothing would run in INT8")
    ranges = TensorsData(CalibrationMethod.MinMax, {
        k: TensorData(lowest=np.float32(-v * 127.0), highest=np.float32(v * 127.0))
        for k, v in usable.items()})
    q = QDQQuantizer(model, True, False, QuantType.QInt8, QuantType.QInt8, ranges, chosen, None,
                     list(op_types), {"ActivationSymmetric": True, "WeightSymmetric": True})
    out = q.quantize_model()
    tmp = dst.with_name(".sim-" + dst.name)
    onnx.save(out, str(tmp))
    tmp.replace(dst)
    return {"int8_layers": len(chosen), "float_layers": len(float_layers),
            "float_layer_names": float_layers[:20], "op_types": list(op_types),
            "recipe_float_layers": [n for n in keep_float if n in float_layers]}
