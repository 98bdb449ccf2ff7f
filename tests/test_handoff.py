"""The GPU hand-off: bundle the TensorRT cells, run them "on a GPU host" (fixture trtexec logs,
and the Python-API build through the TensorRT double), ingest the results back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import trt_double
from conftest import DEMO_TORCH, TORCH_TOOLSET, tiny_config
from helpers_onnx import detector

from quantsweep import handoff, matrix, paths
from quantsweep.config import validate_config
from quantsweep.report.summary import build_summary
from quantsweep.status import make_status, read_status, write_status

FIXTURES = Path(__file__).parent / "fixtures" / "trtexec"


def config() -> dict:
    trt = {f"trt{v}": {"packages": [f"tensorrt=={p}", "cuda-python"], "requires": ["gpu", "tensorrt"]}
           for v, p in (("8.6", "8.6.1.6"), ("10.13", "10.13.0.35"), ("11.0", "11.0.0.1"))}
    return validate_config(tiny_config(
        toolsets={"torch2.13": TORCH_TOOLSET, **trt}, models={"demo-torch": DEMO_TORCH},
        matrix=[{"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13]},
                {"models": ["demo-torch"], "toolsets": ["trt8.6", "trt10.13"], "opsets": [13],
                 "precisions": ["fp32"], "backends": ["tensorrt_api", "trtexec"]},
                {"models": ["demo-torch"], "toolsets": ["trt11.0"], "opsets": [13],
                 "precisions": ["fp16"], "backends": ["tensorrt_api"]}],
        tensorrt={"batch": [1, 2, 4]}))


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[dict, Path]:
    """A results tree as the sweep leaves it here: the graph made in torch2.13; the TensorRT
    cells skipped because their toolsets need a GPU."""
    cfg = config()
    results = tmp_path / "results"
    model = detector(tmp_path / "graph.onnx")
    for p in matrix.expand(cfg):
        axes = p.cell.axes()
        ok = p.cell.toolset == "torch2.13"
        write_status(paths.fill(results, "quantize", "status.json", **axes), make_status(
            "quantize", p.cell.id, "ok" if ok else "skipped",
            reason_class="" if ok else "upstream_toolset", artifacts={"model": str(model)} if ok else {},
            data={"int8": False, "quantizer": "none"}))
        for stage in ("build", "evaluate"):
            if not ok:
                write_status(paths.fill(results, stage, "status.json", **axes), make_status(
                    stage, p.cell.id, "skipped", reason_class="upstream_toolset",
                    message="upstream toolset skipped: requires gpu"))
    return cfg, results


def test_bundle_then_ingest_round_trip(sweep: tuple[dict, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, results = sweep
    out = tmp_path / "bundle"
    cells = handoff.bundle(cfg, results, out)
    assert sorted(cells) == sorted(c.cell.id for c in matrix.expand(cfg)
                                   if c.cell.backend in handoff.TRT_BACKENDS)
    manifest = json.loads((out / "manifest.json").read_text())["cells"]
    d86 = out / "cells" / manifest["demo-torch/trt8.6/opset13/none/fp32/trtexec"]
    script = (d86 / "run.sh").read_text()
    assert "trtexec --onnx=model.onnx --saveEngine=out/model.engine" in script
    assert "--minShapes=images:1x3x8x8,orig_target_sizes:1x2" in script  # the graph's real names
    assert "> out/trtexec.log 2>&1" in script
    assert json.loads((d86 / "cell.json").read_text())["graph_from"] == "torch2.13"
    assert (out / "requirements-trt8.6.txt").read_text().startswith("tensorrt==8.6.1.6")
    assert (out / "lib" / "quantsweep" / "backends" / "tensorrt_api.py").is_file()
    assert "quantsweep ingest" in (out / "README.md").read_text()

    # "on the GPU host": trtexec logs from fixtures, the API build through the double
    d10 = out / "cells" / manifest["demo-torch/trt10.13/opset13/none/fp32/trtexec"]
    for d, log in ((d86, "passed_int8_8.6.log"), (d10, "out_of_memory_10.log")):
        (d / "out").mkdir()
        shutil.copy(FIXTURES / log, d / "out" / "trtexec.log")
    api = out / "cells" / manifest["demo-torch/trt8.6/opset13/none/fp32/tensorrt_api"]
    monkeypatch.chdir(api)
    with trt_double.installed("8.6.1.6"):
        assert handoff.build_api(Path("cell.json")) == 0
    monkeypatch.chdir(tmp_path)

    done = handoff.ingest(out, results)
    assert done == {"demo-torch/trt8.6/opset13/none/fp32/trtexec": "ok",
                    "demo-torch/trt10.13/opset13/none/fp32/trtexec": "failed",
                    "demo-torch/trt8.6/opset13/none/fp32/tensorrt_api": "ok",
                    "demo-torch/trt11.0/opset13/none/fp16/tensorrt_api": "failed"}
    refused = read_status(paths.fill(results, "build", "status.json", model="demo-torch",
                                     toolset="trt11.0", opset=13, quantizer="none",
                                     precision="fp16", backend="tensorrt_api"))
    assert refused["reason_class"] == "unsupported_precision" and "removed in 11" in refused["message"]
    d11 = out / "cells" / manifest["demo-torch/trt11.0/opset13/none/fp16/tensorrt_api"]
    assert "exit 3" in (d11 / "run.sh").read_text()
    axes = dict(zip(matrix.AXES, ("demo-torch", "trt8.6", 13, "none", "fp32", "trtexec"), strict=True))
    b = read_status(paths.fill(results, "build", "status.json", **axes))
    assert (b["status"], b["mode"], b["device"]) == ("ok", "measured", "NVIDIA A10")
    assert b["tool_versions"]["tensorrt"] == "8.6.1"
    failed = read_status(paths.fill(results, "build", "status.json", **{**axes, "toolset": "trt10.13"}))
    assert failed["reason_class"] == "out_of_memory"

    plan = [{"cell": p.cell.id, **p.cell.axes(), "status": p.status, "reason": p.reason}
            for p in matrix.expand(cfg)]
    rows = build_summary(results, plan).set_index("cell")
    r = rows.loc["demo-torch/trt8.6/opset13/none/fp32/trtexec"]
    assert r["gpu"] == "NVIDIA A10" and r["gpu_latency_ms"] == pytest.approx(0.743914)
    assert r["build_status"] == "ok" and r["reason_class"] == "gpu_host_only"
    assert pd_isnan(r["AP"])  # no accuracy was measured for it: none is shown
    a = rows.loc["demo-torch/trt8.6/opset13/none/fp32/tensorrt_api"]
    assert a["gpu"] == "cuda:0 (Test Double GPU)"
    assert rows.loc["demo-torch/trt10.13/opset13/none/fp32/tensorrt_api"]["build_status"] == "skipped"


def pd_isnan(x: object) -> bool:
    return x is None or x != x


def test_bad_bundle_requests_say_what_is_wrong(sweep: tuple[dict, Path], tmp_path: Path) -> None:
    cfg, results = sweep
    with pytest.raises(handoff.HandoffError, match="not TensorRT cells"):
        handoff.bundle(cfg, results, tmp_path / "b", ["demo-torch/torch2.13/opset13/none/fp32/onnxruntime"])
    with pytest.raises(handoff.HandoffError, match="not cells of this configuration"):
        handoff.bundle(cfg, results, tmp_path / "b", ["nope"])
    shutil.rmtree(results / "demo-torch" / "torch2.13")
    with pytest.raises(handoff.HandoffError, match="no TensorRT cell has a graph yet"):
        handoff.bundle(cfg, results, tmp_path / "c")
    with pytest.raises(handoff.HandoffError, match="run the sweep first"):
        handoff.bundle(cfg, results, tmp_path / "c", ["demo-torch/trt8.6/opset13/none/fp32/trtexec"])
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()
    with pytest.raises(handoff.HandoffError, match="not a quantsweep bundle"):
        handoff.ingest(tmp_path, results)


def test_tensorrt_rows_point_at_their_simulated_sibling() -> None:
    from quantsweep.report.summary import add_simulated_sibling

    def row(toolset: str, backend: str, status: str = "skipped", quantizer: str = "ort-qdq",
            **kw: object) -> dict:
        return {"cell": f"m/{toolset}/opset13/{quantizer}/int8/{backend}", "model": "m",
                "toolset": toolset, "opset": 13, "quantizer": quantizer, "precision": "int8",
                "backend": backend, "status": status, **kw}

    rows = [row("ort1.20", "tensorrt_sim", "ok", AP=0.45), row("trt8.6", "tensorrt_api"),
            row("trt10.13", "trtexec"), row("trt8.6", "tensorrt_api", quantizer="other"),
            row("ort1.20", "onnxruntime", "ok", AP=0.47)]
    add_simulated_sibling(rows)
    assert rows[1]["simulated_sibling"] == rows[2]["simulated_sibling"] == rows[0]["cell"]
    assert rows[1]["simulated_AP"] == 0.45
    assert "simulated_sibling" not in rows[3] and "simulated_sibling" not in rows[4]


def test_bundle_takes_the_graph_the_build_stage_would(tmp_path: Path) -> None:
    """A trt-calibrator cell (float graph + TensorRT's own cache) is bundled as implicit INT8
    without tensorrt.int8 saying so: the bundle and the build stage choose the graph alike."""
    base = config()
    cfg = validate_config({**{k: v for k, v in base.items() if k not in ("matrix", "exclude")},
                           "matrix": [{"models": ["demo-torch"], "toolsets": ["trt8.6"], "opsets": [13],
                                       "quantizers": ["trt-calibrator"], "precisions": ["int8"],
                                       "backends": ["trtexec"]}]})
    results = tmp_path / "results"
    cell = matrix.expand(cfg)[0].cell
    cache = tmp_path / "calibration.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\nimages: 3c010204\n")
    model = detector(tmp_path / "graph.onnx")
    write_status(paths.fill(results, "quantize", "status.json", **cell.axes()), make_status(
        "quantize", cell.id, "ok", artifacts={"model": str(model), "float_model": str(model),
                                              "calibration_cache": str(cache)},
        data={"int8": False, "quantizer": "trt-calibrator", "calibration": "implicit"}))
    out = tmp_path / "bundle"
    assert handoff.bundle(cfg, results, out) == [cell.id]
    d = out / "cells" / json.loads((out / "manifest.json").read_text())["cells"][cell.id]
    script = (d / "run.sh").read_text()
    assert "--int8 --calib=calibration.cache" in script
    assert (d / "calibration.cache").read_text() == cache.read_text()
