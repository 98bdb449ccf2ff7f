"""Paddle -> ONNX with paddle2onnx, in the toolset's paddle2onnx version, through its Python
API or its command line (the line users paste from forums; recorded in the status)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from quantsweep.backends.paddle_inference import MODEL_FILES, locate_model  # noqa: F401  (re-used)
from quantsweep.job import Job, ToolFailure, describe_exit, tool_call

CALIBRATION_FILE = "calibration.cache"


def check_format(model_file: Path, paddle_version: str) -> None:
    """A PIR model (.json) needs Paddle >= 3.0: say so instead of letting Paddle misread it."""
    major = int(paddle_version.split(".")[0])
    if model_file.suffix == ".json" and major < 3:
        raise ToolFailure("unsupported_format",
                          f"{model_file}: a PIR model (inference.json) needs Paddle >= 3.0 and "
                          f"paddle2onnx >= 2.0; this toolset has paddle {paddle_version}. Use a "
                          f"Paddle 3.x toolset, or save the model with FLAGS_enable_pir_api=0 "
                          f"(inference.pdmodel)")


def set_pir_flag(model_file: Path) -> None:
    # must be set before paddle is imported; Paddle 3.x reads .json only with PIR on
    os.environ["FLAGS_enable_pir_api"] = "1" if model_file.suffix == ".json" else "0"


def _bool(v: bool) -> str:
    return "True" if v else "False"


def cli_command(model_file: Path, params_file: Path, save_file: Path, opset: int,
                opts: dict[str, Any], major: int, calib: Path | None) -> list[str]:
    """The paddle2onnx command line for these options, as its --help spells them. Options the
    version lacks are passed anyway when set (the tool's own error is the row's reason)."""
    exe = str(Path(sys.executable).with_name("paddle2onnx"))
    backend = opts.get("deploy_backend", "onnxruntime")
    cmd = [exe, "--model_dir", str(model_file.parent), "--model_filename", model_file.name,
           "--params_filename", params_file.name, "--save_file", str(save_file),
           "--opset_version", str(opset), "--enable_auto_update_opset", "False",
           "--enable_onnx_checker", _bool(opts.get("enable_onnx_checker", True))]
    if major < 2 or backend != "onnxruntime":
        cmd += ["--deploy_backend", backend]
    if calib is not None:
        cmd += ["--save_calibration_file", str(calib)]
    if opts.get("optimize_tool") is not None:
        cmd += ["--optimize_tool", str(opts["optimize_tool"])]
    return cmd


def _api_kwargs(opts: dict[str, Any], calib: Path | None) -> dict[str, Any]:
    kw: dict[str, Any] = {"auto_upgrade_opset": False,
                          "enable_onnx_checker": opts.get("enable_onnx_checker", True),
                          "enable_optimize": opts.get("enable_optimize", True),
                          "deploy_backend": opts.get("deploy_backend", "onnxruntime")}
    if calib is not None:
        kw["calibration_file"] = str(calib)
    if opts.get("optimize_tool") is not None:
        kw["optimize_tool"] = opts["optimize_tool"]  # 2.x only: 1.x raises its own TypeError
    return kw


def export_model(model_dir: Path, dst: Path, opset: int, opts: dict[str, Any],
                 calib: Path | None = None) -> dict[str, Any]:
    """paddle2onnx (``opts['method']``: Python API or command line) on a Paddle inference model
    directory; returns what was run. ``calib``: where paddle2onnx writes its TensorRT cache."""
    model_file, params_file = locate_model(model_dir)
    set_pir_flag(model_file)
    with tool_call("tool_missing", "importing paddle2onnx"):
        import paddle
        import paddle2onnx
    check_format(model_file, paddle.__version__)
    major = int(paddle2onnx.__version__.split(".")[0])
    tmp = dst.with_name(".export-" + dst.name)
    tmp.unlink(missing_ok=True)
    if calib is not None:
        calib.unlink(missing_ok=True)
    what = f"paddle2onnx {paddle2onnx.__version__} at opset {opset}"
    method = opts.get("method", "api")
    record: dict[str, Any] = {"version": paddle2onnx.__version__, "method": method}
    if method == "cli":
        cmd = cli_command(model_file, params_file, tmp, opset, opts, major, calib)
        record["command"] = shlex.join(cmd)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        sys.stderr.write(proc.stdout + proc.stderr)  # into the stage log
        if proc.returncode != 0:
            reason, msg = describe_exit(proc.returncode, proc.stdout + proc.stderr,
                                        f"the paddle2onnx command line ({what})")
            raise ToolFailure(reason, msg)
    else:
        kw = _api_kwargs(opts, calib)
        record["call"] = f"paddle2onnx.export({model_file.name}, {params_file.name}, " \
                         f"opset_version={opset}, " + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")"
        with tool_call("export_failed", what):
            paddle2onnx.export(str(model_file), str(params_file), save_file=str(tmp),
                               opset_version=opset, **kw)
    if not tmp.exists():
        raise ToolFailure("export_failed", f"{what} wrote no model (and reported no error)")
    tmp.replace(dst)
    if calib is not None:
        record["calibration_file"] = str(calib) if calib.exists() else None
    return record


def export(job: Job, dst: Path, opset: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """paddle2onnx on the framework model, or on its repaired copy when ``export.repair``
    names repairs (the copy is deleted after the conversion; the parity reference stays the
    unrepaired model)."""
    import shutil

    opts = job.params["model_spec"]["export"]
    calib = dst.with_name(CALIBRATION_FILE) if opts["save_calibration_file"] else None
    model_dir = job.artifact("framework", "model")
    repairs: list[dict[str, Any]] = []
    work = dst.parent / ".export-work-repair"  # a killed job's copy is a leftover verify names
    if opts.get("repair"):
        from quantsweep.export import repairs as repair_module

        shutil.rmtree(work, ignore_errors=True)
        set_pir_flag(locate_model(model_dir)[0])
        model_dir, repairs = repair_module.apply(model_dir, opts["repair"], work)
    try:
        record = export_model(model_dir, dst, opset, opts, calib)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    exporter = {"name": "paddle2onnx", "version": record.pop("version")}
    if repairs:
        exporter["repairs"] = [r["name"] for r in repairs]
        record["repairs"] = repairs
    return exporter, record
