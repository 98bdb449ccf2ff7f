"""Rerun semantics with real Snakemake runs on a tiny config (real torch, ORT, pycocotools)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from conftest import ORT_TOOLSET, REPO, jobs_run, snakemake, tiny_config, write_config


def _config() -> dict:
    cfg = tiny_config()
    cfg["toolsets"]["ort1.20"] = dict(ORT_TOOLSET)
    cfg["models"]["demo-torch-onnx"] = {
        "source": "onnx", "from": {"model": "demo-torch", "toolset": "torch2.13"},
        "inputs": [{"name": "images", "role": "image"},
                   {"name": "orig_target_sizes", "role": "orig_size_wh"}],
        "decode": {"layout": "separate", "boxes": "boxes", "scores": "scores",
                   "labels": "labels"}}
    cfg["matrix"].append({"models": ["demo-torch-onnx"], "toolsets": ["ort1.20"],
                          "opsets": [13]})
    cfg["matrix"].append({"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13],
                          "precisions": ["fp16"]})
    cfg["exclude"] = [{"match": {"precision": "fp16"}, "reason": "no fp16 on CPU"}]
    return cfg


def test_rerun_semantics(tmp_path: Path):
    cfg = _config()
    write_config(tmp_path, cfg)
    snakemake(tmp_path)
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert sorted(summary["status"]) == ["excluded", "ok", "ok"]
    assert summary.loc[summary.status == "excluded", "reason"].item() == "no fp16 on CPU"

    # nothing changed: nothing runs
    r = snakemake(tmp_path)
    assert jobs_run(r) == {}, r.stderr[-2000:]

    # one model's preprocessing: only that model's chain (its export's parity check and its
    # evaluation feed images through it); the other model is not touched
    cfg["models"]["demo-torch-onnx"]["preprocess"] = {"mean": [0.5, 0.5, 0.5]}
    write_config(tmp_path, cfg)
    r = snakemake(tmp_path)
    assert jobs_run(r) == {"export": 1, "quantize": 1, "build": 1, "evaluate": 1, "latency": 1,
                           "summary": 1, "ledger": 1, "report": 1, "all": 1}, jobs_run(r)

    # the evaluation score threshold: every evaluation, nothing upstream
    cfg["evaluate"] = {"score_threshold": 0.01}
    write_config(tmp_path, cfg)
    r = snakemake(tmp_path)
    assert jobs_run(r) == {"evaluate": 2, "framework_eval": 1, "summary": 1, "ledger": 1,
                           "report": 1, "all": 1}, jobs_run(r)

    # one toolset's pin: exactly that toolset's chain
    cfg["toolsets"]["ort1.20"]["packages"] = [*ORT_TOOLSET["packages"], "six"]
    write_config(tmp_path, cfg)
    r = snakemake(tmp_path)
    assert jobs_run(r) == {"toolset": 1, "export": 1, "quantize": 1, "build": 1, "evaluate": 1,
                           "latency": 1, "summary": 1, "ledger": 1, "report": 1, "all": 1}, jobs_run(r)
    versions = (tmp_path / "results/toolsets/ort1.20/versions.txt").read_text()
    assert "six==" in versions

    # a deleted metrics.json, asked for by name: only that chain's last job
    target = "results/demo-torch/torch2.13/opset13/none/fp32/onnxruntime/evaluate/metrics.json"
    (tmp_path / target).unlink()
    r = snakemake(tmp_path, target)
    assert jobs_run(r) == {"evaluate": 1}, jobs_run(r)
    assert json.loads((tmp_path / target).read_text())["status"] == "ok"


def test_sigkill_mid_run_leaves_nothing_that_looks_complete(tmp_path: Path):
    cfg = tiny_config()
    cfg["demo"]["steps"] = 400  # long enough to be killed inside the training job
    write_config(tmp_path, cfg)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
           str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    train_log = tmp_path / "logs" / "train" / "demo.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if train_log.exists() and "step" in train_log.read_text():
            break
        time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("training never started")
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and the job, at once
    proc.wait()
    train_dir = tmp_path / "resources" / "demo" / "train"
    assert not (train_dir / "status.json").exists()
    assert not (train_dir / "weights.npz").exists()  # written only at the end, atomically
    # resume with fewer steps: the incomplete job reruns, everything ends complete
    cfg["demo"]["steps"] = 2
    write_config(tmp_path, cfg)
    snakemake(tmp_path, "--unlock")  # a killed Snakemake leaves its lock: the documented step
    snakemake(tmp_path)
    for st in (tmp_path / "results").rglob("status.json"):
        assert json.loads(st.read_text())["status"] in ("ok", "failed", "skipped")
    leftovers = [p for p in (tmp_path / "results").rglob("*") if p.name.endswith(".tmp")
                 or p.name.startswith(".export-")]
    assert leftovers == []
