"""The trtexec backend without TensorRT: command lines per TensorRT major version built from the
real graph's input names, and the log parser on fixture logs (tests/fixtures/trtexec/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers_onnx import const_detector

from quantsweep.backends.trtexec import BuildRequest, CommandError, Input, command, graph_inputs, parse_log

FIX = Path(__file__).parent / "fixtures" / "trtexec"
DYN = [Input("images", ["N", 3, 320, 320]), Input("orig_target_sizes", ["N", 2])]


def _req(precision: str, trt: str, **kw: object) -> BuildRequest:
    return BuildRequest(onnx=Path("m.onnx"), precision=precision, trt_version=trt,
                        engine=Path("m.engine"), **kw)  # type: ignore[arg-type]


def test_flags_per_tensorrt_major_version():
    cache = Path("calibration.cache")
    c86 = command(_req("int8", "8.6.1", cache=cache, batch=(1, 2, 8)), DYN)
    assert c86[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine"]
    assert "--minShapes=images:1x3x320x320,orig_target_sizes:1x2" in c86
    assert "--optShapes=images:2x3x320x320,orig_target_sizes:2x2" in c86
    assert "--maxShapes=images:8x3x320x320,orig_target_sizes:8x2" in c86
    assert c86[-2:] == ["--int8", "--calib=calibration.cache"]
    assert command(_req("int8", "8.6.1", qdq=True), DYN)[-1] == "--int8"
    assert command(_req("int8", "10.13.3", qdq=True), DYN)[-1] == "--stronglyTyped"
    assert command(_req("int8", "11.4.0", qdq=True), DYN)[-1] == "--stronglyTyped"
    assert command(_req("fp16", "10.13.3"), DYN)[-1] == "--fp16"
    assert not any(f.startswith(("--int8", "--fp16", "--calib", "--best"))
                   for f in command(_req("fp32", "11.4.0"), DYN))
    with pytest.raises(CommandError, match="no --fp16"):
        command(_req("fp16", "11.4.0"), DYN)
    with pytest.raises(CommandError, match="no implicit INT8"):
        command(_req("int8", "11.4.0", cache=cache), DYN)
    with pytest.raises(CommandError, match="random data"):
        command(_req("int8", "8.6.1"), DYN)


def test_fallback_layer_precisions_and_artifacts():
    cmd = command(_req("int8", "8.6.1", cache=Path("c"), layer_precisions={"/m.22/Conv": "fp16"},
                       timing_cache=Path("t.cache"), layer_info=Path("l.json"),
                       profile=Path("p.json"), workspace_mib=2048), DYN)
    assert "--precisionConstraints=obey" in cmd and "--layerPrecisions=/m.22/Conv:fp16" in cmd
    assert {"--memPoolSize=workspace:2048", "--timingCacheFile=t.cache", "--exportLayerInfo=l.json",
            "--exportProfile=p.json", "--profilingVerbosity=detailed"} <= set(cmd)
    with pytest.raises(CommandError, match="strongly typed"):
        command(_req("int8", "10.13.3", qdq=True, layer_precisions={"a": "fp16"}), DYN)


def test_input_names_come_from_the_graph(tmp_path: Path):
    # field report 001: --shapes=input:... on a model whose input is "x"
    model = const_detector(tmp_path / "m.onnx", [0, 0, 1, 1], 0, input_name="x")
    assert [i.name for i in graph_inputs(model)] == ["x"]
    static = BuildRequest(onnx=model, precision="fp32", trt_version="8.6.1", engine=tmp_path / "e")
    assert not any("Shapes" in f for f in command(static))  # a static graph needs no shapes
    with pytest.raises(CommandError, match=r"\['input'\], which are not inputs .* \['x'\]"):
        command(BuildRequest(onnx=model, precision="fp32", trt_version="8.6.1",
                             engine=tmp_path / "e", dims={"input": [1, 3, 64, 64]}))
    with pytest.raises(CommandError, match="dynamic dimension 2"):
        command(_req("fp32", "10.13.3"), [Input("x", ["N", 3, "H", "W"])])
    ok = command(_req("fp32", "10.13.3", dims={"x": [1, 3, 640, 640]}), [Input("x", ["N", 3, "H", "W"])])
    assert "--minShapes=x:1x3x640x640" in ok


@pytest.mark.parametrize("log, cls, detail", [
    ("no_implementation_8.6.log", "no_implementation",
     "/model.22/proto/cv1/conv/Conv + PWN(PWN(/model.22/proto/cv1/act/Sigmoid), /model.22/proto/cv1/act/Mul)"),
    ("unsupported_op_10.log", "unsupported_op", "DeformConv"),
    ("calib_ignored_10.log", "calibration_failed", None),
    ("wrong_input_name.log", "input_name_mismatch", "input"),
    ("out_of_memory_10.log", "out_of_memory", None),
    ("engine_version_10.log", "engine_version_mismatch", None),
])
def test_log_errors_are_classified(log, cls, detail):
    r = parse_log((FIX / log).read_text())
    assert not r["passed"]
    first = r["errors"][0]
    assert first["class"] == cls, r["errors"]
    if detail is not None:
        assert first["detail"] == detail
    assert first["meaning"]


def test_log_performance_summary():
    r = parse_log((FIX / "passed_int8_8.6.log").read_text())
    assert r["passed"] and r["errors"] == []
    assert r["tensorrt_code"] == "8601" and r["tensorrt_version"] == "8.6.1" and r["gpu"] == "NVIDIA A10"
    m = r["metrics"]
    assert m["throughput_qps"] == 1412.66 and m["build_s"] == 39.417
    assert m["latency_min_ms"] == 0.712891 and m["latency_median_ms"] == 0.738281
    assert m["latency_p90_ms"] == 0.762695 and m["latency_p95_ms"] == 0.774414
    assert m["latency_p99_ms"] == 0.842773 and m["gpu_compute_mean_ms"] == 0.670645
    assert m["h2d_mean_ms"] == 0.0675106 and m["d2h_p99_ms"] == 0.00952148


def test_trtexec_command_cli(tmp_path: Path):
    model = const_detector(tmp_path / "m.onnx", [0, 0, 1, 1], 0, input_name="x")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "quantsweep.cli", "trtexec-command",
                               "--onnx", str(model), *args], capture_output=True, text=True)

    r = run("--precision", "int8", "--trt-version", "8.6.1", "--cache", "c.cache")
    assert r.returncode == 0 and r.stdout.split()[-2:] == ["--int8", "--calib=c.cache"]
    r = run("--precision", "int8", "--trt-version", "11.4.0", "--cache", "c.cache")
    assert r.returncode == 2 and "no implicit INT8" in r.stderr
