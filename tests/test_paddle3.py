"""The current Paddle generation on the real wheels (paddlepaddle 3.3.1 + paddle2onnx 2.1.0): the
demo saved by the legacy `paddle.jit.save` path fails in its framework stage with Paddle's own
message, and the doctor names the failure and the fix that this same sweep proves (the PIR save
path of the same network in the same toolset goes through every stage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import DEMO_PADDLE, REPO, snakemake, tiny_config, write_config

TOOLSET = "paddle3.3-p2o2.1"


@pytest.mark.slow
def test_paddle3_legacy_save_fails_with_a_doctor_fix_and_pir_goes_through(tmp_path: Path) -> None:
    cfg = tiny_config()
    cfg["toolsets"][TOOLSET] = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["toolsets"][TOOLSET]
    for name, fmt in (("demo-paddle", "legacy"), ("demo-paddle-pir", "pir")):
        cfg["models"][name] = {**json.loads(json.dumps(DEMO_PADDLE)), "paddle_format": fmt}
    cfg["matrix"] = [{"models": ["demo-paddle", "demo-paddle-pir"], "toolsets": [TOOLSET], "opsets": [13]}]
    write_config(tmp_path, cfg)
    snakemake(tmp_path)
    s = pd.read_csv(tmp_path / "results" / "summary.csv").set_index("model")
    legacy, pir = s.loc["demo-paddle"], s.loc["demo-paddle-pir"]
    assert (legacy["status"], legacy["stage"], legacy["reason_class"]) == \
        ("failed", "framework", "legacy_save_under_pir"), legacy.to_dict()
    assert "must be Value, but got Variable" in legacy["reason"]
    assert "error:legacy_save_under_pir" in legacy["doctor"]
    assert pir["status"] == "ok" and pir["parity_ok"], pir.to_dict()
    assert "paddlepaddle=3.3.1" in pir["tool_versions"] and "paddle2onnx=2.1.0" in pir["tool_versions"]
    # the framework evaluation asks for oneDNN; Paddle 3.3.1's oneDNN executor cannot run a PIR
    # program (its first run stops), so the runner falls back to the plain CPU kernels, says why,
    # and the row is scored as usual
    fe = json.loads((tmp_path / "results/demo-paddle-pir" / TOOLSET / "framework/evaluate/status.json").read_text())
    assert fe["status"] == "ok", fe
    rs = fe["data"]["runner_settings"]
    assert rs["onednn"] is False and "ConvertPirAttribute2RuntimeAttribute" in rs["onednn_error"], rs
    assert pir["framework_AP"] == pytest.approx(pir["AP"], abs=1e-3)
    r = subprocess.run([sys.executable, "-m", "quantsweep.cli", "doctor", legacy["cell"], "--config",
                        str(tmp_path / "config.yaml")], cwd=tmp_path, capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "legacy_save_under_pir" in r.stdout and "paddle_format: pir" in r.stdout
    assert "paddlepaddle 3.3.1" in r.stdout and "framework/status.json" in r.stdout
