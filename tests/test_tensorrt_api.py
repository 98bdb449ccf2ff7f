"""The tensorrt_api backend, type-checked against tensorrt-stubs and driven through the contract
double of TensorRT 8.6, 10 and 11 (tests/trt_double.py). Nothing here runs real TensorRT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trt_double
import trt_stubs
from helpers_onnx import detector, feeds, ort_outputs

from quantsweep.backends import tensorrt_api
from quantsweep.backends.tensorrt_plan import BuildRequest
from quantsweep.job import ToolFailure

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ["8.6.1.6", "10.13.0.35", "11.0.0.1"]


def request(tmp: Path, model: Path, precision: str, version: str, **kw: object) -> BuildRequest:
    return BuildRequest(onnx=model, precision=precision, trt_version=version,
                        engine=tmp / f"{precision}-{version}.engine", batch=(1, 2, 4),
                        timing_cache=tmp / "timing.cache", layer_info=tmp / "layers.json", **kw)


def cache_file(path: Path, header: str) -> Path:
    path.write_text(f"{header}\nimages: 3c010204\nc: 3d4ccccd\n")
    return path


# ---- types -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stubs() -> Path:
    return trt_stubs.ensure()


def _mypy(*paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           *paths], cwd=ROOT, capture_output=True, text=True)


def test_tensorrt_code_type_checks_against_the_stubs(stubs: Path, tmp_path: Path) -> None:
    r = _mypy("src/quantsweep/backends/tensorrt_api.py")
    assert r.returncode == 0, r.stdout + r.stderr
    # the stubs are in effect: TensorRT 8-only API and a wrong flag type are caught
    bad = ROOT / "src" / "quantsweep" / "_typecheck_probe.py"
    bad.write_text("import tensorrt as trt\n\n\ndef f(b: trt.Builder) -> None:\n"
                   "    c = b.create_builder_config()\n    c.max_workspace_size = 1 << 30\n"
                   "    c.set_flag('FP16')\n")
    try:
        r = _mypy(str(bad.relative_to(ROOT)))
    finally:
        bad.unlink()
    assert r.returncode != 0
    assert '"IBuilderConfig" has no attribute "max_workspace_size"' in r.stdout
    assert 'incompatible type "str"; expected "BuilderFlag"' in r.stdout


# ---- build and run -----------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_fp32_build_and_run_match_onnxruntime(tmp_path: Path, version: str) -> None:
    model = detector(tmp_path / "det.onnx")
    with trt_double.installed(version):
        info = tensorrt_api.build(request(tmp_path, model, "fp32", version), tmp_path / "build.log")
        r = tensorrt_api.Runner(info["engine"], {})
        out = r.infer(feeds())
    assert info["profile_shapes"] == {"images": [[1, 3, 8, 8], [2, 3, 8, 8], [4, 3, 8, 8]],
                                      "orig_target_sizes": [[1, 2], [2, 2], [4, 2]]}
    assert info["flags"] == {"fp16": False, "int8": False, "strongly_typed": False,
                             "calibration_cache": None}
    layers = json.loads((tmp_path / "layers.json").read_text())["Layers"]
    assert [la["Name"] for la in layers][:2] == ["conv_fused", "relu"]
    assert Path(info["engine"]).stat().st_size == info["engine_bytes"] > 0
    assert (tmp_path / "timing.cache").exists()
    ref = ort_outputs(model, feeds())
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-6)
    # seed 004: 8.6 binds the int64 sizes as int32; the runner converts (and records it)
    sizes = next(b for b in r.inputs if b.name == "orig_target_sizes")
    if version.startswith("8."):
        assert sizes.dtype == "int32"
        assert vars(r.adapt.conversions["orig_target_sizes"]) == {
            "name": "orig_target_sizes", "fed": "int64", "bound": "int32"}
    else:
        assert sizes.dtype == "int64" and not r.adapt.conversions
    assert r.device == "cuda:0 (Test Double GPU)"


def test_int64_bytes_in_an_int32_binding_give_wrong_boxes(tmp_path: Path) -> None:
    """What the runner's dtype conversion prevents (field report 004)."""
    model = detector(tmp_path / "det.onnx")
    with trt_double.installed("8.6.1.6"):
        info = tensorrt_api.build(request(tmp_path, model, "fp32", "8.6.1.6"), tmp_path / "b.log")
        r = tensorrt_api.Runner(info["engine"], {})
        good = r.infer(feeds())["boxes"]
        r.adapt = lambda f: f  # type: ignore[assignment]  # copy the int64 bytes as they are
        bad = r.infer(feeds())["boxes"]
        with pytest.raises(TypeError, match="without loss"):
            tensorrt_api.Runner(info["engine"], {}).infer(
                {**feeds(), "orig_target_sizes": np.array([[2**40, 1], [1, 1]], np.int64)})
    np.testing.assert_allclose(good, ort_outputs(model, feeds())["boxes"], rtol=1e-6)
    assert not np.allclose(bad, good)
    assert (bad[:, 1] == 0).all()  # each int64's high word read as the height


@pytest.mark.parametrize("version,flags", [
    ("8.6.1.6", {"fp16": False, "int8": True, "strongly_typed": False}),
    ("10.13.0.35", {"fp16": False, "int8": False, "strongly_typed": True}),
    ("11.0.0.1", {"fp16": False, "int8": False, "strongly_typed": True}),
])
def test_qdq_int8_per_version(tmp_path: Path, version: str, flags: dict[str, bool]) -> None:
    model = detector(tmp_path / "qdq.onnx", qdq=True)
    with trt_double.installed(version):
        info = tensorrt_api.build(request(tmp_path, model, "int8", version, qdq=True),
                                  tmp_path / "b.log")
        out = tensorrt_api.Runner(info["engine"], {}).infer(feeds())
    assert {k: info["flags"][k] for k in flags} == flags
    np.testing.assert_allclose(out["scores"], ort_outputs(model, feeds())["scores"], rtol=1e-6)


def test_implicit_int8_takes_only_a_cache_of_its_own_version(tmp_path: Path) -> None:
    model = detector(tmp_path / "det.onnx")
    good = cache_file(tmp_path / "good.cache", "TRT-8601-EntropyCalibration2")
    placeholder = cache_file(tmp_path / "p2o.cache", "TRT-8XXX-EntropyCalibration2 ")
    with trt_double.installed("8.6.1.6"):
        info = tensorrt_api.build(request(tmp_path, model, "int8", "8.6.1.6", cache=good),
                                  tmp_path / "b.log")
        assert info["flags"]["int8"] and info["flags"]["calibration_cache"] == str(good)
        with pytest.raises(ToolFailure) as e:
            tensorrt_api.build(request(tmp_path, model, "int8", "8.6.1.6", cache=placeholder),
                               tmp_path / "b2.log")
    assert e.value.reason_class == "calibration_failed"
    assert "no scaling factors" in e.value.message
    assert "ignoring the cache" in (tmp_path / "b2.log").read_text()
    with trt_double.installed("10.13.0.35"), pytest.raises(ToolFailure) as e:
        tensorrt_api.build(request(tmp_path, model, "int8", "10.13.0.35", cache=good),
                           tmp_path / "b3.log")
    assert e.value.reason_class == "calibration_failed"


def test_version_rules_refuse_what_a_version_cannot_do(tmp_path: Path) -> None:
    model = detector(tmp_path / "det.onnx")
    cache = cache_file(tmp_path / "c.cache", "TRT-8601-EntropyCalibration2")
    with trt_double.installed("11.0.0.1") as trt:
        for precision, kw in (("fp16", {}), ("int8", {"cache": cache})):
            with pytest.raises(ToolFailure) as e:
                tensorrt_api.build(request(tmp_path, model, precision, "11.0.0.1", **kw),
                                   tmp_path / "b.log")
            assert e.value.reason_class == "unsupported_precision"
            assert "removed in 11" in e.value.message
        # and the double enforces the removals the rules avoid
        assert not hasattr(trt.BuilderFlag, "INT8") and not hasattr(trt.BuilderFlag, "FP16")
        assert not hasattr(trt, "IInt8EntropyCalibrator2")
        cfg = trt.Builder(tensorrt_api._logger([])).create_builder_config()
        with pytest.raises(AttributeError):
            cfg.int8_calibrator = None
    with trt_double.installed("10.13.0.35") as trt:
        cfg = trt.Builder(tensorrt_api._logger([])).create_builder_config()
        with pytest.raises(AttributeError, match="max_workspace_size"):
            cfg.max_workspace_size = 1 << 30
        with pytest.raises(TypeError):
            cfg.set_flag("FP16")
        # a cell for another TensorRT than the toolset's is refused, not built with the wrong one
        with pytest.raises(ToolFailure, match="this toolset has TensorRT 10.13"):
            tensorrt_api.build(request(tmp_path, model, "fp32", "8.6.1"), tmp_path / "b.log")
    with trt_double.installed("8.6.1.6") as trt:
        assert not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
        net = trt.Builder(tensorrt_api._logger([])).create_network(0)  # implicit batch
        parser = trt.OnnxParser(net, tensorrt_api._logger([]))
        assert not parser.parse_from_file(str(model))
        assert "EXPLICIT_BATCH" in parser.get_error(0)


def test_build_failures_are_classified(tmp_path: Path) -> None:
    with trt_double.installed("10.13.0.35"), pytest.raises(ToolFailure) as e:
        tensorrt_api.build(request(tmp_path, detector(tmp_path / "c.onnx", custom_op=True), "fp32",
                                   "10.13.0.35"), tmp_path / "b.log")
    assert e.value.reason_class == "unsupported_op" and "FancyNMS" in e.value.message
    # field report 003: no INT8 kernel for a fused node on 8.6; its FP16 constraint builds
    model = detector(tmp_path / "qdq.onnx", qdq=True)
    with trt_double.installed("8.6.1.6", no_int8_kernel_for=("conv_fused",)):
        with pytest.raises(ToolFailure) as e:
            tensorrt_api.build(request(tmp_path, model, "int8", "8.6.1.6", qdq=True), tmp_path / "b.log")
        assert e.value.reason_class == "no_implementation" and "conv_fused" in e.value.message
        info = tensorrt_api.build(request(tmp_path, model, "int8", "8.6.1.6", qdq=True,
                                          layer_precisions={"conv_fused": "fp16"}), tmp_path / "b.log")
        with pytest.raises(ToolFailure, match="not layers of the network"):
            tensorrt_api.build(request(tmp_path, model, "int8", "8.6.1.6", qdq=True,
                                       layer_precisions={"no_such": "fp16"}), tmp_path / "b.log")
    layers = {la["Name"]: la["Precision"] for la in
              json.loads((tmp_path / "layers.json").read_text())["Layers"]}
    assert layers["conv_fused"] == "HALF" and layers["relu"] == "INT8"
    assert info["layer_precisions"] == {"conv_fused": "fp16"}


def test_engines_load_only_whole_and_in_their_own_version(tmp_path: Path) -> None:
    model = detector(tmp_path / "det.onnx")
    with trt_double.installed("8.6.1.6"):
        engine = Path(tensorrt_api.build(request(tmp_path, model, "fp32", "8.6.1.6"),
                                         tmp_path / "b.log")["engine"])
    with trt_double.installed("10.13.0.35"), pytest.raises(ToolFailure) as e:
        tensorrt_api.Runner(engine, {})
    assert e.value.reason_class == "engine_version_mismatch"
    assert str(engine) in e.value.message
    cut = tmp_path / "cut.engine"
    cut.write_bytes(engine.read_bytes()[:-10])
    with trt_double.installed("8.6.1.6"), pytest.raises(ToolFailure) as e:
        tensorrt_api.Runner(cut, {})
    assert e.value.reason_class == "invalid_engine" and "Serialization" in e.value.message


def test_without_tensorrt_the_backend_says_why() -> None:
    ok, why = tensorrt_api.available()
    assert not ok and "tensorrt" in why.lower()


# ---- the build stage ---------------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "trtexec"


def build_job(tmp: Path, backend: str, precision: str, model: Path, int8: bool,
              tensorrt: dict | None = None, cache: Path | None = None, float_model: Path | None = None):
    from quantsweep.job import Job

    out = tmp / "build"
    out.mkdir(exist_ok=True)
    arts = {"model": str(model), "float_model": str(float_model or model)}
    if cache:
        arts["calibration_cache"] = str(cache)
    return Job("build", "cell", out, {"backend": backend, "precision": precision,
                                      "tensorrt": tensorrt or {"batch": [1, 2, 4]}},
               {"quantize": {"artifacts": arts, "data": {"int8": int8, "quantizer": "ort-qdq"}}})


def test_build_stage_builds_with_the_toolsets_tensorrt(tmp_path: Path) -> None:
    from quantsweep.backends import build, make_runner
    from quantsweep.job import Skip

    qdq = detector(tmp_path / "qdq.onnx", qdq=True)
    with trt_double.installed("10.13.0.35"):
        res = build.run(build_job(tmp_path, "tensorrt_api", "int8", qdq, True))
        out = make_runner("tensorrt_api", res.artifacts["model"], {}).infer(feeds())
        with pytest.raises(Skip) as e:  # a Q/DQ graph is not an FP16 cell
            build.run(build_job(tmp_path, "tensorrt_api", "fp16", qdq, True))
        assert e.value.reason_class == "precision_mismatch"
    assert res.backend == "tensorrt_api" and res.mode == "measured"
    assert res.data["flags"]["strongly_typed"] and res.data["tensorrt_version"] == "10.13.0.35"
    assert Path(res.artifacts["build_log"]).exists() and Path(res.artifacts["layer_info"]).exists()
    np.testing.assert_allclose(out["scores"], ort_outputs(qdq, feeds())["scores"], rtol=1e-6)
    with pytest.raises(Skip) as e:  # no TensorRT here
        build.run(build_job(tmp_path, "tensorrt_api", "int8", qdq, True))
    assert e.value.reason_class == "missing_requirement"


def fake_trtexec(bin_dir: Path, script: str) -> dict[str, str]:
    import os

    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "trtexec"
    exe.write_text("#!/bin/sh\n" + script + "\n")
    exe.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("fixture,code,cls", [
    ("passed_int8_8.6.log", 0, None),
    ("no_implementation_8.6.log", 1, "no_implementation"),
    ("calib_ignored_10.log", 1, "calibration_failed"),
    (None, -11, "tool_crash"),
])
def test_build_stage_runs_trtexec_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          fixture: str | None, code: int, cls: str | None) -> None:
    """trtexec here is a script replaying a fixture log (or dying by SIGSEGV)."""
    from quantsweep.backends import build

    script = (f"echo \"$@\" > {tmp_path}/argv; cat {FIXTURES / fixture}; exit {code}" if fixture
              else "echo '[I] Start parsing network model.'; kill -SEGV $$")
    for k, v in fake_trtexec(tmp_path / "bin", script).items():
        monkeypatch.setenv(k, v)
    model = detector(tmp_path / "det.onnx")
    cache = cache_file(tmp_path / "c.cache", "TRT-8601-EntropyCalibration2")
    job = build_job(tmp_path, "trtexec", "int8", model, False,
                    {"int8": "implicit", "batch": [1, 2, 4], "version": "8.6.1"}, cache)
    if cls is None:
        res = build.run(job)
        assert res.backend == "trtexec" and res.mode == "measured"
        assert res.data["metrics"]["throughput_qps"] > 0 and "latency_p99_ms" in res.data["metrics"]
        argv = (tmp_path / "argv").read_text().split()
        assert f"--calib={cache}" in argv and "--int8" in argv
        assert "--minShapes=images:1x3x8x8,orig_target_sizes:1x2" in argv
        return
    with pytest.raises(ToolFailure) as e:
        build.run(job)
    assert e.value.reason_class == cls
    assert "trtexec.log" in e.value.message


def test_int8_fallback_is_a_linked_row_beside_the_failure(tmp_path: Path) -> None:
    """Field report 003 through the double: 8.6 has no INT8 kernel for the fused conv; the cell
    stays failed (no_implementation) and its FP16-layer fallback builds."""
    from quantsweep.backends import build
    from quantsweep.report.summary import fallback_row

    qdq = detector(tmp_path / "qdq.onnx", qdq=True)
    with trt_double.installed("8.6.1.6", no_int8_kernel_for=("conv_fused",)):
        res = build.run(build_job(tmp_path, "tensorrt_api", "int8", qdq, True,
                                  {"batch": [1, 2, 4], "fallback": "fp16-layers"}))
        fb = res.data["fallback"]
        layers = {la["Name"]: la["Precision"] for la in
                  json.loads(Path(fb["artifacts"]["layer_info"]).read_text())["Layers"]}
        whole = build.run(build_job(tmp_path, "tensorrt_api", "int8", qdq, True,
                                    {"batch": [1, 2, 4], "fallback": "fp16"},
                                    float_model=detector(tmp_path / "float.onnx")))
        with pytest.raises(ToolFailure):  # no policy: the failure alone
            build.run(build_job(tmp_path, "tensorrt_api", "int8", qdq, True,
                                {"batch": [1, 2, 4], "fallback": "none"}))
    assert (res.status, res.reason_class) == ("failed", "no_implementation")
    assert fb["status"] == "ok" and fb["layer_precisions"] == {"conv_fused": "fp16"}
    assert Path(fb["artifacts"]["model"]).parent.name == "fallback"
    assert layers["conv_fused"] == "HALF" and layers["relu"] == "INT8"
    assert whole.data["fallback"]["precision"] == "fp16" and whole.data["fallback"]["status"] == "ok"
    assert whole.data["fallback"]["onnx"].endswith("float.onnx")
    row = fallback_row({"cell": "m/trt8.6/opset13/ort-qdq/int8/tensorrt_api", "model": "m",
                        "toolset": "trt8.6", "opset": 13, "quantizer": "ort-qdq", "precision": "int8",
                        "backend": "tensorrt_api"}, fb)
    assert row["fallback_of"] == "m/trt8.6/opset13/ort-qdq/int8/tensorrt_api"
    assert (row["status"], row["precision"]) == ("ok", "int8+fp16-layers")
    assert "conv_fused:fp16" in row["reason"]


def test_a_cache_for_another_graph_fails_before_the_build(tmp_path: Path) -> None:
    from quantsweep.backends import build

    model = detector(tmp_path / "det.onnx")
    other = tmp_path / "other.cache"
    other.write_text("TRT-8601-EntropyCalibration2\np2o.tmp_0: 3c010204\np2o.tmp_1: 3c010204\n")
    job = build_job(tmp_path, "tensorrt_api", "int8", model, False,
                    {"int8": "implicit", "batch": [1, 2, 4]}, other)
    with trt_double.installed("8.6.1.6"), pytest.raises(ToolFailure) as e:
        build.run(job)
    assert e.value.reason_class == "invalid_cache"
    assert str(other) in e.value.message and "another graph" in e.value.message


# ---- quantizer trt-calibrator ------------------------------------------------------------

def calib_job(tmp: Path, model: Path, algorithm: str = "EntropyCalibration2"):
    from conftest import tiny_config

    from quantsweep.config import validate_config
    from quantsweep.dataset import generate_synthetic
    from quantsweep.job import Job

    syn = validate_config(tiny_config())["dataset"]["synthetic"]
    generate_synthetic({**syn, "train": 0, "calib": 3, "val": 1, "min_size": 64, "max_size": 96},
                       "tiny", tmp / "ds")
    out = tmp / "quantize"
    out.mkdir()
    spec = {"name": "det", "source": "onnx",
            "inputs": [{"name": "images", "dtype": "float32", "role": "image"},
                       {"name": "orig_target_sizes", "dtype": "int64", "role": "orig_size_wh"}],
            "preprocess": {"resize": "stretch", "size": [8, 8], "channel_order": "RGB",
                           "scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                           "pad_value": 114}}
    return Job("quantize", "c", out, {"quantizer": "trt-calibrator", "calib_images": 3,
                                      "options": {"algorithm": algorithm},
                                      "dataset": {"manifest": str(tmp / "ds" / "manifest.json")},
                                      "model_spec": spec},
               {"export": {"artifacts": {"model": str(model)}, "data": {}}})


def test_trt_calibrator_writes_the_cache_tensorrt_makes(tmp_path: Path) -> None:
    from quantsweep import calib, quantize
    from quantsweep.backends import build
    from quantsweep.job import Job, Skip

    model = detector(tmp_path / "det.onnx")
    job = calib_job(tmp_path, model)
    with trt_double.installed("8.6.1.6"):
        res = quantize.run(job)
        cache = calib.read(res.artifacts["calibration_cache"])
        # the cell's TensorRT build then takes that cache (implicit INT8) without being told
        (tmp_path / "build").mkdir()
        b = build.run(Job("build", "c", tmp_path / "build",
                          {"backend": "tensorrt_api", "precision": "int8", "tensorrt": {"batch": [1, 2, 4]}},
                          {"quantize": {"artifacts": res.artifacts, "data": res.data}}))
    assert res.data["batches"] == 3 and res.data["calibration"] == "implicit" and not res.data["int8"]
    assert cache.header == "TRT-8601-EntropyCalibration2"
    # the scales TensorRT computed from what the calibrator copied to the device: images are
    # in [0, 1] after this preprocessing; the int64 sizes arrived as the int32 binding wants
    assert 0.9 / 127 < cache.scales["images"] <= 1.0 / 127 + 1e-9
    assert 64 / 127 <= cache.scales["orig_target_sizes"] <= 96 / 127 + 1e-6
    assert b.data["flags"]["calibration_cache"] == res.artifacts["calibration_cache"]
    with trt_double.installed("11.0.0.1"), pytest.raises(Skip) as e:
        quantize.run(calib_job(tmp_path / "t11", model))
    assert e.value.reason_class == "not_available" and "removed in 11" in e.value.message
