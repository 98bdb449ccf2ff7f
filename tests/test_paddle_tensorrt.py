"""Paddle-TRT (backend paddle_tensorrt, field report 000) against the real Paddle 2.6 CPU wheel:
the configuration calls are Paddle's own, and a Paddle without TensorRT refuses them with its own
message; the build stage turns that into a skipped row that says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ENVS, PADDLE_TOOLSET, REPO, env_run

from quantsweep.toolsets import ensure_env

PROBE = r"""
import json, sys
from paddle import inference
from quantsweep.backends import paddle_inference as pi
from quantsweep.backends import build
from quantsweep.job import Job, Skip
out = {"available": pi.tensorrt_available()}
try:
    pi.configure_tensorrt(inference.Config(), "int8", True,
                          {"image": ([1, 3, 64, 64], [1, 3, 64, 64], [2, 3, 64, 64])}, {})
    out["configure"] = "accepted"
except Exception as exc:
    out["configure"] = f"{type(exc).__name__}: {exc}"
try:
    pi.configure_tensorrt(inference.Config(), "int8", False, {}, {})
except ValueError as exc:
    out["float_int8"] = str(exc)
job = Job("build", "c", __import__("pathlib").Path(sys.argv[1]),
          {"backend": "paddle_tensorrt", "precision": "int8", "tensorrt": {}},
          {"quantize": {"artifacts": {"model": "m.onnx", "paddle_model": sys.argv[1]},
                        "data": {"int8": True, "quantizer": "paddleslim-ptq"}}})
try:
    build.run(job)
except Skip as exc:
    out["skip"] = [exc.reason_class, exc.message]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_paddle_trt_configuration_on_a_paddle_without_tensorrt(tmp_path: Path) -> None:
    env = ensure_env("paddle2.6-p2o1.3", PADDLE_TOOLSET, ENVS)
    assert env.status == "ok", env.message
    r = env_run(env, "-c", PROBE, str(tmp_path), capture_output=True, text=True, timeout=300,
                extra_env={"PYTHONPATH": str(REPO / "src")})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ok, why = out["available"]
    assert not ok and "(0, 0, 0)" in why and "paddle 2.6.2" in why
    # Paddle accepted the GPU call and the engine's arguments, then refused for want of TensorRT
    assert out["configure"].startswith("RuntimeError") and "compile with TENSORRT" in out["configure"]
    assert "quantize with PaddleSlim first" in out["float_int8"]
    assert out["skip"][0] == "missing_requirement" and "not compiled with CUDA and TensorRT" in out["skip"][1]
