"""The GPU hand-off: bundle every TensorRT cell, run the bundle "on a GPU host" (its own run_all.sh
with the TensorRT double on PYTHONPATH and trtexec on that double on PATH; fixture trtexec logs),
ingest the results back: builds, AP, latency, the calibration cache, and the faults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import trt_double
from conftest import DEMO_TORCH, TORCH_TOOLSET, jobs_run, snakemake, tiny_config, write_config
from helpers_onnx import detector

from quantsweep import dataset, handoff, matrix, paths
from quantsweep.config import validate_config
from quantsweep.handoff import gpu
from quantsweep.handoff.ingest import ingest
from quantsweep.report.summary import build_summary
from quantsweep.status import make_status, read_status, write_status

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures" / "trtexec"
GPU_HOST = TESTS / "gpu_host"
NVIDIA = "https://pypi.nvidia.com"


def trt_toolsets(*versions: tuple[str, str]) -> dict[str, dict]:
    return {f"trt{v}": {"packages": [f"tensorrt=={p}", "cuda-python"], "requires": ["gpu", "tensorrt"],
                        "extra_index_urls": [NVIDIA]} for v, p in versions}


def config() -> dict:
    trt = trt_toolsets(("8.6", "8.6.1.6"), ("10.13", "10.13.0.35"), ("11.0", "11.0.0.1"))
    return validate_config(tiny_config(
        toolsets={"torch2.13": TORCH_TOOLSET, **trt}, models={"demo-torch": DEMO_TORCH},
        matrix=[{"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13]},
                {"models": ["demo-torch"], "toolsets": ["trt8.6", "trt10.13"], "opsets": [13],
                 "precisions": ["fp32"], "backends": ["tensorrt_api", "trtexec"]},
                {"models": ["demo-torch"], "toolsets": ["trt11.0"], "opsets": [13],
                 "precisions": ["fp16"], "backends": ["tensorrt_api"]}],
        tensorrt={"batch": [1, 2, 4]}))


def plan_of(cfg: dict) -> list[dict]:
    return [{"cell": p.cell.id, **p.cell.axes(), "status": p.status, "reason": p.reason}
            for p in matrix.expand(cfg)]


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[dict, Path, Path]:
    """A results tree as the sweep leaves it here: the graph made in torch2.13; the TensorRT
    cells skipped because their toolsets need a GPU; the dataset's manifest."""
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
    dataset.prepare(cfg["dataset"], tmp_path / "data")
    return cfg, results, tmp_path / "data" / "manifest.json"


def test_bundle_then_ingest_round_trip(sweep: tuple[dict, Path, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, results, man = sweep
    out = tmp_path / "bundle"
    cells = handoff.bundle(cfg, results, out, manifest=man)
    assert sorted(cells) == sorted(c.cell.id for c in matrix.expand(cfg)
                                   if c.cell.backend in handoff.TRT_BACKENDS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == 2 and manifest["left_out"] == []
    assert len(manifest["val"]["checksum"]) == 64
    assert len(list((out / "val" / "images").iterdir())) == 6  # the tiny val split
    d86 = out / "cells" / manifest["cells"]["demo-torch/trt8.6/opset13/none/fp32/trtexec"]
    script = (d86 / "run.sh").read_text()
    graph = json.loads((d86 / "cell.json").read_text())["request"]["onnx"]
    assert graph.startswith("../../graphs/") and (d86 / graph).is_file()
    assert f"trtexec --onnx={graph} --saveEngine=out/model.engine" in script
    assert "--minShapes=images:1x3x8x8,orig_target_sizes:1x2" in script  # the graph's real names
    assert "> out/trtexec.log 2>&1" in script and "quantsweep.handoff.gpu evaluate cell.json" in script
    assert json.loads((d86 / "cell.json").read_text())["graph_from"] == "demo-torch/torch2.13/opset13/none"
    assert len(list((out / "graphs").iterdir())) == 1  # one graph, once, for every cell
    reqs = (out / "requirements-trt8.6.txt").read_text().splitlines()
    assert reqs[0] == f"--extra-index-url {NVIDIA}" and "tensorrt==8.6.1.6" in reqs and "pycocotools" in reqs
    assert (out / "lib" / "quantsweep" / "handoff" / "gpu.py").is_file()
    assert "quantsweep ingest" in (out / "README.md").read_text()

    # "on the GPU host": trtexec logs from fixtures, the API build through the double
    d10 = out / "cells" / manifest["cells"]["demo-torch/trt10.13/opset13/none/fp32/trtexec"]
    for d, log in ((d86, "passed_int8_8.6.log"), (d10, "out_of_memory_10.log")):
        (d / "out").mkdir()
        shutil.copy(FIXTURES / log, d / "out" / "trtexec.log")
    api = out / "cells" / manifest["cells"]["demo-torch/trt8.6/opset13/none/fp32/tensorrt_api"]
    monkeypatch.chdir(api)
    with trt_double.installed("8.6.1.6"):
        assert gpu.main(["build", "cell.json"]) == 0
        # the helper graph takes 8x8 images, the demo's preprocessing makes 320x320: a row
        assert gpu.main(["evaluate", "cell.json"]) == 1
    res = json.loads((api / "out" / "evaluate.json").read_text())
    assert res["reason_class"] == "inference" and "outside the engine's optimization profile" in res["message"]
    monkeypatch.chdir(tmp_path)

    done = ingest(out, results, man)
    after_failed_build = {"build": "failed", "evaluate": "skipped"}
    assert done.cells == {"demo-torch/trt8.6/opset13/none/fp32/trtexec": {"build": "ok", "evaluate": "skipped",
                                                                          "latency": "ok"},
                          "demo-torch/trt10.13/opset13/none/fp32/trtexec": after_failed_build,
                          "demo-torch/trt8.6/opset13/none/fp32/tensorrt_api": {"build": "ok",
                                                                               "evaluate": "failed"},
                          "demo-torch/trt11.0/opset13/none/fp16/tensorrt_api": after_failed_build}
    assert any("trt8.6/opset13/none/fp32/trtexec: built, but no" in m for m in done.missing)
    assert any("trt10.13/opset13/none/fp32/tensorrt_api: no" in m for m in done.missing)
    refused = read_status(paths.fill(results, "build", "status.json", model="demo-torch",
                                     toolset="trt11.0", opset=13, quantizer="none",
                                     precision="fp16", backend="tensorrt_api"))
    assert refused["reason_class"] == "unsupported_precision" and "removed in 11" in refused["message"]
    axes = dict(zip(matrix.AXES, ("demo-torch", "trt8.6", 13, "none", "fp32", "trtexec"), strict=True))
    b = read_status(paths.fill(results, "build", "status.json", **axes))
    assert (b["status"], b["mode"], b["device"]) == ("ok", "measured", "NVIDIA A10")
    assert b["tool_versions"]["tensorrt"] == "8.6.1"
    assert Path(b["log"]).parent == paths.fill(results, "build", **axes)  # the log is kept here
    lat = read_status(paths.fill(results, "latency", "status.json", **axes))
    assert lat["data"]["latency_ms"] == pytest.approx(0.738281) and lat["data"]["timed_by"] == "trtexec"
    failed = read_status(paths.fill(results, "build", "status.json", **{**axes, "toolset": "trt10.13"}))
    assert failed["reason_class"] == "out_of_memory"

    rows = build_summary(results, plan_of(cfg)).set_index("cell")
    r = rows.loc["demo-torch/trt8.6/opset13/none/fp32/trtexec"]
    assert r["gpu"] == "NVIDIA A10" and r["gpu_latency_ms"] == pytest.approx(0.743914)
    assert r["latency_ms"] == pytest.approx(0.738281)
    assert (r["status"], r["stage"], r["reason_class"]) == ("skipped", "evaluate", "not_evaluated")
    assert pd_isnan(r["AP"])
    a = rows.loc["demo-torch/trt8.6/opset13/none/fp32/tensorrt_api"]
    assert a["gpu"] == "cuda:0 (Test Double GPU)" and a["reason_class"] == "inference"
    assert rows.loc["demo-torch/trt10.13/opset13/none/fp32/tensorrt_api"]["build_status"] == "skipped"


def pd_isnan(x: object) -> bool:
    return x is None or x != x


def test_bad_bundle_requests_say_what_is_wrong(sweep: tuple[dict, Path, Path], tmp_path: Path) -> None:
    cfg, results, man = sweep
    with pytest.raises(handoff.HandoffError, match="not TensorRT cells"):
        handoff.bundle(cfg, results, tmp_path / "b", ["demo-torch/torch2.13/opset13/none/fp32/onnxruntime"],
                       manifest=man)
    with pytest.raises(handoff.HandoffError, match="not cells of this configuration"):
        handoff.bundle(cfg, results, tmp_path / "b", ["nope"], manifest=man)
    with pytest.raises(handoff.HandoffError, match="no dataset manifest"):
        handoff.bundle(cfg, results, tmp_path / "b", manifest=tmp_path / "none.json")
    shutil.rmtree(results / "demo-torch" / "torch2.13")
    with pytest.raises(handoff.HandoffError, match="no TensorRT cell has a graph yet"):
        handoff.bundle(cfg, results, tmp_path / "c", manifest=man)
    with pytest.raises(handoff.HandoffError, match="run the sweep first"):
        handoff.bundle(cfg, results, tmp_path / "c", ["demo-torch/trt8.6/opset13/none/fp32/trtexec"],
                       manifest=man)
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()
    with pytest.raises(handoff.HandoffError, match="not a quantsweep bundle"):
        ingest(tmp_path, results, man)


def test_tensorrt_rows_point_at_their_simulated_sibling() -> None:
    from quantsweep.report.summary import add_simulated_sibling

    def row(toolset: str, backend: str, status: str = "skipped", quantizer: str = "ort-qdq",
            **kw: object) -> dict:
        return {"cell": f"m/{toolset}/opset13/{quantizer}/int8/{backend}", "model": "m",
                "toolset": toolset, "opset": 13, "quantizer": quantizer, "precision": "int8",
                "backend": backend, "status": status, **kw}

    rows = [row("ort1.20", "tensorrt_sim", "ok", AP=0.45), row("trt8.6", "tensorrt_api"),
            row("trt10.13", "trtexec", "ok", AP=0.4), row("trt8.6", "tensorrt_api", quantizer="other"),
            row("ort1.20", "onnxruntime", "ok", AP=0.47)]
    add_simulated_sibling(rows)
    assert rows[1]["simulated_sibling"] == rows[2]["simulated_sibling"] == rows[0]["cell"]
    assert rows[1]["simulated_AP"] == 0.45 and "AP_delta_vs_simulated" not in rows[1]
    assert rows[2]["AP_delta_vs_simulated"] == pytest.approx(-0.05)
    assert "simulated_sibling" not in rows[3] and "simulated_sibling" not in rows[4]


def test_bundle_takes_the_graph_the_build_stage_would(tmp_path: Path) -> None:
    """A trt-calibrator cell already calibrated (float graph + TensorRT's own cache) is bundled as
    implicit INT8 without tensorrt.int8 saying so: the bundle and the build stage choose alike."""
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
    dataset.prepare(cfg["dataset"], tmp_path / "data")
    out = tmp_path / "bundle"
    assert handoff.bundle(cfg, results, out, manifest=tmp_path / "data" / "manifest.json") == [cell.id]
    d = out / "cells" / json.loads((out / "manifest.json").read_text())["cells"][cell.id]
    script = (d / "run.sh").read_text()
    assert "--int8 --calib=calibration.cache" in script
    assert (d / "calibration.cache").read_text() == cache.read_text()
    assert not (out / "calibrate").exists()  # calibrated already: nothing to calibrate there


# ---- the whole round trip: a real tiny sweep, its bundle run on the double, ingested ---------

ONNX_MODEL = {"source": "onnx", "from": {"model": "demo-torch", "toolset": "torch2.13"},
              "inputs": DEMO_TORCH["inputs"], "decode": DEMO_TORCH["decode"]}
TRT = trt_toolsets(("8.6", "8.6.1.6"), ("11.4", "11.4.0.106"))


def round_trip_config() -> dict:
    return tiny_config(
        toolsets={"torch2.13": TORCH_TOOLSET, **TRT},
        models={"demo-torch": DEMO_TORCH, "demo-torch-onnx": ONNX_MODEL, "onnx-only-on-gpu": ONNX_MODEL},
        matrix=[
            # the graphs, and TensorRT INT8 simulated from the ORT quantizer's cache, made here
            {"models": ["demo-torch-onnx"], "toolsets": ["torch2.13"], "opsets": [13]},
            {"models": ["demo-torch-onnx"], "toolsets": ["torch2.13"], "opsets": [13],
             "quantizers": ["ort-qdq"], "precisions": ["int8"], "backends": ["onnxruntime", "tensorrt_sim"]},
            # the TensorRT cells: skipped here, handed off
            {"models": ["demo-torch-onnx"], "toolsets": list(TRT), "opsets": [13],
             "precisions": ["fp32", "fp16"], "backends": ["tensorrt_api", "trtexec"]},
            {"models": ["demo-torch-onnx"], "toolsets": list(TRT), "opsets": [13],
             "quantizers": ["ort-qdq", "trt-calibrator"], "precisions": ["int8"],
             "backends": ["tensorrt_api", "trtexec"]},
            # a graph no CPU toolset runs: the export its from: names
            {"models": ["onnx-only-on-gpu"], "toolsets": ["trt8.6"], "opsets": [13], "backends": ["trtexec"]}],
        quantize={"calib_images": 2}, latency={"images": 2, "rounds": 3, "warmup": 1})


def gpu_host_env(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH with the TensorRT double; PATH with trtexec on it; this interpreter."""
    bin_dir = tmp_path / "gpu-bin"
    bin_dir.mkdir()
    exe = bin_dir / "trtexec"
    exe.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(GPU_HOST)!r})\n"
                   f"import trtexec_double\nsys.exit(trtexec_double.main(sys.argv[1:]))\n")
    exe.chmod(0o755)
    return {**os.environ, "PYTHONPATH": str(GPU_HOST), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "QUANTSWEEP_PYTHON": sys.executable}


def axes_of(cell_id: str) -> dict:
    m, t, o, q, p, b = cell_id.split("/")
    return {"model": m, "toolset": t, "opset": int(o.removeprefix("opset")), "quantizer": q,
            "precision": p, "backend": b}


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "quantsweep.cli", *args, "--config", "config.yaml"],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.mark.slow
def test_every_tensorrt_cell_goes_to_the_gpu_host_and_comes_back_with_ap(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    root.mkdir()
    write_config(root, round_trip_config())
    snakemake(root)
    cfg = validate_config(round_trip_config())
    trt_cells = [p.cell.id for p in matrix.expand(cfg) if p.cell.backend in handoff.TRT_BACKENDS]
    assert len(trt_cells) == 17
    r = cli(root, "bundle", "-o", "bundle")
    assert "left out" not in r.stderr  # every TensorRT cell, the from: model's and trt-calibrator's too
    bundle = root / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert sorted(manifest["cells"]) == sorted(trt_cells)
    assert list(manifest["calibrations"]) == ["demo-torch-onnx/trt8.6/opset13/trt-calibrator",
                                              "demo-torch-onnx/trt11.4/opset13/trt-calibrator"]
    spec = json.loads((bundle / "cells" / manifest["cells"]["onnx-only-on-gpu/trt8.6/opset13/none/fp32/trtexec"]
                       / "cell.json").read_text())
    assert spec["graph_from"] == "demo-torch/torch2.13/opset13/export"

    run = subprocess.run(["sh", str(bundle / "run_all.sh")], env=gpu_host_env(tmp_path),
                         capture_output=True, text=True, cwd=tmp_path)
    assert "refused: TensorRT 11.4.0.106 has no INT8 calibrators" in run.stderr, run.stderr[-3000:]
    cal = bundle / "calibrate" / manifest["calibrations"]["demo-torch-onnx/trt8.6/opset13/trt-calibrator"]
    assert (cal / "out" / "calibration.cache").read_text().startswith("TRT-8601-EntropyCalibration2")

    r = cli(root, "ingest", "bundle")
    assert "missing" not in r.stderr, r.stderr
    again = snakemake(root)  # what ingest wrote is new input of the summary, and of nothing else
    assert jobs_run(again) == {"summary": 1, "ledger": 1, "report": 1, "all": 1}, jobs_run(again)
    rows = pd.read_csv(root / "results" / "summary.csv").set_index("cell")
    fp32 = rows.loc["demo-torch-onnx/torch2.13/opset13/none/fp32/onnxruntime", "AP"]
    int8 = rows.loc["demo-torch-onnx/torch2.13/opset13/ort-qdq/int8/onnxruntime", "AP"]
    sim = rows.loc["demo-torch-onnx/torch2.13/opset13/ort-qdq/int8/tensorrt_sim", "AP"]
    engines = rows[rows.index.isin(trt_cells) & (rows.status == "ok")]
    # the double runs each engine's ONNX graph on ONNX Runtime: every AP is that graph's
    expected = {"none": fp32, "trt-calibrator": fp32, "ort-qdq": int8}
    for cell, r_ in engines.iterrows():
        assert r_["mode"] == "measured" and "Test Double GPU" in r_["device"], cell
        assert r_["AP"] == pytest.approx(expected[r_["quantizer"]], abs=1e-6), cell
        assert r_["latency_ms"] > 0 and r_["code_digest"] and r_["quantsweep_version"], cell
        assert "tensorrt=" in r_["tool_versions"], cell
    refusals = [c for c in trt_cells if c.startswith("demo-torch-onnx/trt11.4/")
                and ("/fp16/" in c or "trt-calibrator" in c)]
    assert len(refusals) == 4 and sorted(engines.index) == sorted(set(trt_cells) - set(refusals))
    qdq = rows.loc["demo-torch-onnx/trt8.6/opset13/ort-qdq/int8/trtexec"]
    assert qdq["simulated_AP"] == pytest.approx(sim) and qdq["AP_delta_vs_simulated"] == pytest.approx(int8 - sim)
    assert qdq["speedup_vs_fp32"] > 0  # against the FP32 engine timed on the same GPU
    refused = rows.loc["demo-torch-onnx/trt11.4/opset13/trt-calibrator/int8/tensorrt_api"]
    assert (refused["status"], refused["stage"], refused["reason_class"]) == ("skipped", "quantize", "not_available")
    assert rows.loc["demo-torch-onnx/trt11.4/opset13/none/fp16/trtexec", "reason_class"] == "unsupported_precision"
    q = read_status(paths.fill(root / "results", "quantize", "status.json", model="demo-torch-onnx",
                               toolset="trt8.6", opset=13, quantizer="trt-calibrator"))
    assert q["status"] == "ok" and q["data"]["cache_inspection"]["header"].startswith("TRT-8601")
    ledger = json.loads((root / "results" / "ledger.json").read_text())
    engine_steps = [s["step"] for s in ledger["steps"] if s["to_cell"] == qdq.name]
    engine = f"INT8 ort-qdq TensorRT engine (trtexec, {qdq['device']})"
    assert qdq["device"] == "cuda:0 (Test Double GPU)"
    assert engine_steps == [f"ONNX FP32 -> {engine}", f"INT8 ort-qdq simulated -> {engine}"]
    assert "TensorRT on the GPU host vs its CPU estimate" in (root / "results" / "report.html").read_text()

    # faults: ingested twice is the same; a cell without out/; AP scored on another val split
    summary = (root / "results" / "summary.csv").read_bytes()
    cli(root, "ingest", "bundle")
    snakemake(root)
    assert (root / "results" / "summary.csv").read_bytes() == summary
    broken, results = tmp_path / "broken", tmp_path / "results-copy"
    shutil.copytree(bundle, broken, symlinks=True)
    shutil.copytree(root / "results", results)
    lost = "demo-torch-onnx/trt8.6/opset13/none/fp16/tensorrt_api"
    other = "demo-torch-onnx/trt8.6/opset13/none/fp32/tensorrt_api"
    shutil.rmtree(broken / "cells" / manifest["cells"][lost] / "out")
    m = broken / "cells" / manifest["cells"][other] / "out" / "metrics.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "val_checksum": "0" * 64}))
    for stage in ("build", "evaluate", "latency"):
        shutil.rmtree(paths.fill(results, stage, **axes_of(lost)))
    done = ingest(broken, results, root / "resources" / "datasets" / "tiny" / "manifest.json")
    assert lost not in done.cells and any(x.startswith(f"{lost}: no") for x in done.missing)
    assert done.cells[other] == {"build": "ok", "evaluate": "failed"}
    ev = read_status(paths.fill(results, "evaluate", "status.json", **axes_of(other)))
    assert ev["reason_class"] == "val_split_mismatch" and "0" * 64 in ev["message"]
    assert manifest["val"]["checksum"] in ev["message"]
    assert done.cells["demo-torch-onnx/trt8.6/opset13/ort-qdq/int8/trtexec"]["evaluate"] == "ok"
