"""Repairs of a Paddle inference model before paddle2onnx converts it (``export.repair``).

A repair is one function in :data:`REPAIRS`: ``(model_file, dst_dir) -> record``. It loads the
model with Paddle's own API in the toolset's interpreter, changes only what the converter
cannot read, saves the result with Paddle's own API into ``dst_dir`` and returns what it
changed. The export parity of the cell then compares the ONNX model made from the repaired
copy with the unrepaired model run by Paddle: a repair that changes the outputs fails the row.

``pir_interp_size``: Paddle 3.x keeps the ``scale`` of ``nearest_interp``/``bilinear_interp``
as doubles; paddle2onnx 2.1 reads it as floats and stops ("the 0th elementwise MUST be
ir::FloatAttribute", row class ``pir_double_scale``). paddle2onnx reads ``out_h``/``out_w``
instead of the scale when they are set, and Paddle computes the output size from the scale
whenever the scale is set, so the repair writes each such op's static output size there and
leaves the scale alone: both tools accept the model, Paddle's result is unchanged. An op whose
output size is not static (a dynamic input size) cannot be repaired this way: a failure that
says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantsweep.job import ToolFailure, tool_call

INTERP_OPS = ("nearest_interp", "bilinear_interp", "bicubic_interp", "linear_interp")


def _static_hw(shape: Any, op: str, where: Path) -> tuple[int, int]:
    dims = [int(d) for d in shape]
    if len(dims) != 4 or dims[2] <= 0 or dims[3] <= 0:
        raise ToolFailure("repair_failed", f"{where}: repair pir_interp_size: {op} has output shape "
                                           f"{dims}; its height and width must be static (export "
                                           f"the model with a fixed input size)")
    return dims[2], dims[3]


def interp_size(model_file: Path, dst_dir: Path) -> dict[str, Any]:
    """Write the static output size of every interpolation op that has a scale into its
    ``out_h``/``out_w`` (PIR ``.json`` or legacy ``.pdmodel``; saved in the same format)."""
    import paddle

    paddle.enable_static()
    exe = paddle.static.Executor(paddle.CPUPlace())
    prefix = str(model_file.with_suffix(""))
    changed: list[dict[str, Any]] = []
    with tool_call("repair_failed", f"Paddle could not load {model_file} to repair it"):
        prog, feeds, fetches = paddle.static.load_inference_model(prefix, exe)
    block = prog.global_block()
    if model_file.suffix == ".json":  # PIR: pd_op.<name>, attributes set through the op
        for op in block.ops:
            name = op.name().removeprefix("pd_op.")
            if name in INTERP_OPS and op.attrs().get("scale"):
                h, w = _static_hw(op.result(0).shape, name, model_file)
                op.set_int_attr("out_h", h)
                op.set_int_attr("out_w", w)
                changed.append({"op": name, "out_h": h, "out_w": w})
        data = {op.attrs()["name"]: op.result(0) for op in block.ops if op.name() == "pd_op.data"}
        feed_vars = [data[f] for f in feeds]
    else:  # the legacy program: <name>_v2 ops, variables with static shapes
        for op in block.ops:
            name = op.type.removesuffix("_v2")
            if name in INTERP_OPS and op.attr("scale"):
                h, w = _static_hw(block.var(op.output("Out")[0]).shape, name, model_file)
                op._set_attr("out_h", h)
                op._set_attr("out_w", w)
                changed.append({"op": name, "out_h": h, "out_w": w})
        feed_vars = [block.var(f) for f in feeds]
    dst_dir.mkdir(parents=True, exist_ok=True)
    with tool_call("repair_failed", f"Paddle could not save the repaired {model_file}"):
        paddle.static.save_inference_model(str(dst_dir / "model"), feed_vars, fetches, exe,
                                           program=prog)
    return {"name": "pir_interp_size", "changed": changed}


Repair = Callable[[Path, Path], dict[str, Any]]
REPAIRS: dict[str, Repair] = {"pir_interp_size": interp_size}


def apply(model_dir: Path, names: list[str], work: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Each named repair in turn, each on the previous one's output; returns the directory of
    the last repaired model and the records."""
    from quantsweep.backends.paddle_inference import locate_model

    records = []
    for i, name in enumerate(names):
        out = work / f"{i}-{name}"
        records.append(REPAIRS[name](locate_model(model_dir)[0], out))
        model_dir = out
    return model_dir, records
