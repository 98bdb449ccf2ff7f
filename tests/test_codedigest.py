"""quantsweep's own code as a rerun trigger: each stage's params carry the digest of exactly the
code it executes (quantsweep.codedigest). Checked on real stage runs (every quantsweep module a
stage process loaded is in its digest) and with real Snakemake dry runs after editing a copy
of the code: the jobs each edit reruns."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from conftest import REPO, jobs_run, tiny_config, write_config

from quantsweep import codedigest


def test_a_stage_digest_follows_the_cells_selection():
    ort = codedigest.modules("quantize", quantizer="ort-qdq")
    assert "quantsweep.quantize.ort_qdq" in ort and "quantsweep.calib.qdq" in ort
    assert not {"quantsweep.quantize.modelopt_ptq", "quantsweep.quantize.torch_qat"} & set(ort)
    recipe = codedigest.modules("quantize", quantizer="ort-qdq-recipe")
    assert recipe == ort  # a recipe cell runs the same quantizer
    # the export's parity runs the framework model and ONNX Runtime, never the decoder
    exp = codedigest.modules("export", source="demo-torch")
    assert {"quantsweep.export.torch_export", "quantsweep.backends.torch_module",
            "quantsweep.backends.onnxruntime"} <= set(exp)
    assert not {"quantsweep.evaluate.decode", "quantsweep.export.paddle_export"} & set(exp)
    assert "quantsweep.evaluate.decode" in codedigest.modules("evaluate", backend="onnxruntime")
    assert codedigest.modules("report") == ["quantsweep.paths", "quantsweep.report",
                                            "quantsweep.report.html", "quantsweep.status"]
    assert codedigest.digest("build", backend="onnxruntime") != codedigest.digest("build", backend="trtexec")


def _copy_repo(dst: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith(("src/", "scripts/", "workflow/", "profiles/", "config/")) or f == "Snakefile":
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)
    return dst


def _smk(repo: Path, work: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(work),
           "--configfile", str(work / "config.yaml"), "--cores", "2", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def test_code_edits_rerun_exactly_the_stages_that_execute_that_code(tmp_path: Path):
    repo = _copy_repo(tmp_path / "repo")
    work = tmp_path / "work"
    work.mkdir()
    cfg = tiny_config()
    cfg["matrix"] = [{"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13],
                      "quantizers": ["none", "ort-qdq"], "precisions": ["fp32", "int8"]}]
    cfg["exclude"] = [{"match": {"quantizer": "none", "precision": "int8"}, "reason": "float"},
                      {"match": {"quantizer": "ort-qdq", "precision": "fp32"}, "reason": "int8"}]
    cfg["quantize"] = {"calib_images": 2}
    cfg["latency"] = {}  # the defaults: rounds added until target_ci, up to max_rounds
    write_config(work, cfg)
    loaded = tmp_path / "loaded"
    _smk(repo, work, env={"QUANTSWEEP_LOADED_MODULES": str(loaded)})

    # every quantsweep module each stage process loaded is in that stage's digest
    records = [json.loads(p.read_text()) for p in sorted(loaded.glob("*.json"))]
    assert {r["stage"] for r in records} >= {"train", "framework", "framework_eval", "export",
                                             "quantize", "build", "evaluate"}
    for r in records:
        sel = {k: r[k] for k in codedigest.STAGE_SELECTORS[r["stage"]]}
        missing = set(r["loaded"]) - set(codedigest.modules(r["stage"], **sel))
        assert not missing, (r["stage"], sel, sorted(missing))

    def edit(rel: str) -> dict[str, int]:
        f = repo / "src" / "quantsweep" / rel
        before = f.read_text()
        f.write_text(before + "\n# an edit\n")
        try:
            return jobs_run(_smk(repo, work, "-n"))
        finally:
            f.write_text(before)

    report = {"summary": 1, "ledger": 1, "report": 1, "all": 1}
    assert edit("quantize/ort_qdq.py") == {"quantize": 1, "build": 1, "evaluate": 1, "latency": 1,
                                           **report}
    assert edit("evaluate/decode.py") == {"evaluate": 2, "framework_eval": 1, **report}
    assert edit("report/html.py") == {"report": 1, "all": 1}
    assert edit("latency.py") == {"latency": 2, **report}
    assert edit("export/torch_export.py") == {"export": 1, "quantize": 2, "build": 2, "evaluate": 2,
                                              "latency": 2, **report}
    assert jobs_run(_smk(repo, work, "-n")) == {}  # each edit undone: nothing to rerun
    status = json.loads((work / "results/demo-torch/torch2.13/opset13/ort-qdq/quantize/status.json").read_text())
    assert status["code_digest"] == codedigest.digest("quantize", quantizer="ort-qdq", source="demo-torch")
    # the latency stage: both graphs timed in the same rounds; the FP32 cell against itself
    s = pd.read_csv(work / "results" / "summary.csv")
    s = s[s.status != "excluded"].set_index("quantizer")
    assert (s["latency_status"] == "ok").all() and (s["latency_ms"] > 0).all()
    assert (s["latency_iqr_ms"] >= 0).all() and s["code_digest"].str.len().eq(12).all()
    assert 0.5 < s.loc["none", "speedup_vs_fp32"] < 2
    assert s.loc["none", "latency_ms"] != s.loc["none", "eval_latency_ms"]  # its own measurement
    lat = json.loads((work / "results/demo-torch/torch2.13/opset13/ort-qdq/int8/onnxruntime/latency/"
                      "status.json").read_text())
    n = lat["data"]["latency_rounds"]
    assert len(lat["data"]["rounds_ms"]["cell"]) == len(lat["data"]["rounds_ms"]["fp32"]) == n
    assert 7 <= n <= 15 and lat["data"]["latency_stop"] == ("target_ci" if n < 15 else lat["data"]["latency_stop"])
    # every latency in the summary carries its interval, its rounds and why they stopped
    assert (s["latency_ci_low_ms"] <= s["latency_ms"]).all() and (s["latency_ms"] <= s["latency_ci_high_ms"]).all()
    assert (s["speedup_ci_low"] <= s["speedup_vs_fp32"]).all() and (s["speedup_vs_fp32"] <= s["speedup_ci_high"]).all()
    assert s["latency_rounds"].between(7, 15).all() and set(s["latency_stop"]) <= {"target_ci", "max_rounds"}
    # the FP32 graph against itself is no win: its speedup interval holds 1.0
    assert not s.loc["none", "speedup_significant"]
    # Snakemake's own report of the sweep: the summary, the ledger and quantsweep's page in it
    _smk(repo, work, "--report", str(work / "report.zip"))
    import zipfile

    names = zipfile.ZipFile(work / "report.zip").namelist()
    assert {Path(n).name for n in names} >= {"summary.csv", "ledger.csv", "report.html"}
