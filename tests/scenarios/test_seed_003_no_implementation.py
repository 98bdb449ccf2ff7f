"""Field report 003: TensorRT 8.6.1 INT8 build fails with "Could not find any implementation for
node ..." for a fused conv + scale + pointwise node; fixed in TensorRT 10; FP16 fallback.

Reproduced through a trtexec that replays the fixture log (tests/fixtures/trtexec/
no_implementation_8.6.log, and the passing log once the node is constrained to FP16) and the
fallback policy of the build stage; the doctor names the node, the versions and the fallback."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import tiny_config, write_config
from doctor_cli import codes, doctor
from helpers_onnx import detector

from quantsweep import paths
from quantsweep.backends import build
from quantsweep.job import Job
from quantsweep.report.summary import fallback_row
from quantsweep.status import make_status, write_status

FIXTURES = Path(__file__).parents[1] / "fixtures" / "trtexec"
# the fused node of the fixture log, and the layers it fuses
NODE = "/model.22/proto/cv1/conv/Conv + PWN(PWN(/model.22/proto/cv1/act/Sigmoid), /model.22/proto/cv1/act/Mul)"
LAYERS = ["/model.22/proto/cv1/conv/Conv", "/model.22/proto/cv1/act/Sigmoid", "/model.22/proto/cv1/act/Mul"]


def test_fallback_row_and_doctor(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    log = (FIXTURES / "no_implementation_8.6.log").read_text()
    assert NODE in log
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    passed, failing = FIXTURES / "passed_int8_8.6.log", FIXTURES / "no_implementation_8.6.log"
    (bin_dir / "trtexec").write_text(
        f"#!/bin/sh\ncase \"$*\" in *--layerPrecisions*) cat {passed}; exit 0;; esac\n"
        f"cat {failing}; exit 1\n")
    (bin_dir / "trtexec").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    axes = {"model": "det", "toolset": "trt8.6", "opset": 13, "quantizer": "ort-qdq",
            "precision": "int8", "backend": "trtexec"}
    cell = paths.cell_id(**axes)
    out = paths.fill(tmp_path / "results", "build", "", **axes)
    out.mkdir(parents=True)
    qdq = detector(tmp_path / "qdq.onnx", qdq=True)
    job = Job("build", cell, out, {"backend": "trtexec", "precision": "int8",
                                   "tensorrt": {"version": "8.6.1", "fallback": "fp16-layers"}},
              {"quantize": {"artifacts": {"model": str(qdq)}, "data": {"int8": True}}})
    res = build.run(job)
    assert (res.status, res.reason_class) == ("failed", "no_implementation")
    fb = res.data["fallback"]
    assert fb["status"] == "ok" and fb["layer_precisions"] == {name: "fp16" for name in LAYERS}
    assert "--layerPrecisions=" + ",".join(f"{n}:fp16" for n in LAYERS) in fb["data"]["command"]
    row = fallback_row({"cell": cell, **axes}, fb)
    assert row["status"] == "ok" and row["gpu"] == "NVIDIA A10" and row["fallback_of"] == cell

    write_status(out / "status.json", make_status(
        "build", cell, "failed", reason_class=res.reason_class, message=res.message,
        tool_versions={"tensorrt": "8.6.1"}, data=res.data))
    write_config(tmp_path, tiny_config())
    rc, rep, text = doctor(tmp_path, cell)
    (f,) = codes(rep)["no_implementation"]
    assert rc == 1 and f["seed"] == "003"
    assert f["evidence"]["node"] == ", ".join(LAYERS) and "8.6.1" in f["evidence"]["versions"]
    assert NODE in f["message"]
    assert "fallback-fp16-layers" in f["fix"]
    assert "field report 003" in text
