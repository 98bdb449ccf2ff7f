"""Field report 001: PTQ -> paddle2onnx (--deploy_backend tensorrt --save_calibration_file) ->
trtexec --int8 --calib worked only with paddle2onnx 1.3.1 and TensorRT 8.6; TensorRT 10 rejected
or ignored the cache; --shapes named an input the model lacked.

Reproduced with real packages: PaddleSlim + paddle2onnx 1.3.1 write the cache (placeholder
header ``TRT-8XXX-EntropyCalibration2 ``); ``cache inspect`` and the doctor say which TensorRT
versions ignore it. TensorRT 10's rejection runs through the TensorRT double; the trtexec
command is built from the real exported graph's input names. paddle2onnx 2.x's abort on the
quantized model is a row of the default sweep (demo-paddle-from26), not re-run here."""

from __future__ import annotations

from pathlib import Path

import trt_double
from conftest import PADDLESLIM_CELLS, artifact
from doctor_cli import codes, doctor

from quantsweep import calib
from quantsweep.backends import tensorrt_api
from quantsweep.backends.tensorrt_plan import BuildRequest, graph_inputs
from quantsweep.backends.trtexec import command, parse_log
from quantsweep.job import ToolFailure
from quantsweep.status import read_status

FIXTURES = Path(__file__).parents[1] / "fixtures" / "trtexec"


def test_cache_versions_and_input_names(paddleslim_sweep: Path, tmp_path: Path) -> None:
    root = paddleslim_sweep
    q = read_status(root / "results" / PADDLESLIM_CELLS.rsplit("/", 1)[0] / "quantize/status.json")
    cache_path, graph = artifact(root, q, "calibration_cache"), artifact(root, q, "float_model")
    cache = calib.read(cache_path)
    assert cache.header == "TRT-8XXX-EntropyCalibration2 "
    assert calib.compatibility(cache, "10.13.3")[0] == "ignored"
    assert calib.compatibility(cache, "11.4.0")[0] == "ignored"
    assert calib.compatibility(cache, "8.6.1")[0] == "uncertain"

    _, rep, _ = doctor(root, f"{PADDLESLIM_CELLS}/tensorrt_sim")
    (ign,) = codes(rep)["cache_ignored_by"]
    assert "10.13.3" in ign["message"] and "11.4.0" in ign["message"]
    assert ign["evidence"]["file"].endswith("calibration.cache")

    # TensorRT 10 given this cache (through the double): it is not used, and with no data
    # the INT8 build fails instead of silently building something else
    with trt_double.installed("10.13.0.35"):
        req = BuildRequest(onnx=graph, precision="int8", trt_version="10.13.0.35",
                           engine=tmp_path / "e.engine", cache=cache_path, batch=(1, 1, 1))
        try:
            tensorrt_api.build(req, tmp_path / "build.log")
            raise AssertionError("TensorRT 10 built INT8 from an 8.x cache")
        except ToolFailure as exc:
            assert exc.reason_class == "calibration_failed"

    # the trtexec line names the graph's real inputs, and a wrong name is classified
    names = [i.name for i in graph_inputs(graph)]
    cmd = " ".join(command(BuildRequest(onnx=graph, precision="int8", trt_version="8.6.1",
                                        engine=tmp_path / "e.engine", cache=cache_path)))
    assert f"--calib={cache_path}" in cmd
    flags = [f for f in cmd.split() if f.startswith(("--minShapes", "--optShapes", "--maxShapes"))]
    assert len(flags) == 3 and len(names) >= 2  # a dynamic batch over several inputs
    for flag in flags:
        assert {kv.split(":")[0] for kv in flag.split("=", 1)[1].split(",")} == set(names)
    wrong = parse_log((FIXTURES / "wrong_input_name.log").read_text())
    assert wrong["errors"][0]["class"] == "input_name_mismatch"
