"""Shared fixtures. Integration tests run real tools: uv-built toolset envs, paddle2onnx,
torch, ONNX Runtime, pycocotools and Snakemake, on tiny configs in temporary directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from quantsweep.toolsets import EnvResult

REPO = Path(__file__).resolve().parents[1]
# toolset envs are shared by every test run on this machine (created once, keyed by hash)
ENVS = Path(os.environ.get("QUANTSWEEP_TEST_ENVS", REPO / ".envs"))
# Three pytest-xdist workers share the two cores, each running Snakemake with --cores 2: an
# OpenMP process with two threads beside other busy processes waits at every barrier for a
# preempted thread (the demo's training, 150 steps: 18.6 s alone, 97 s with a second one
# beside it; on one thread each: 30.4 s alone, 31.1 s side by side). Every tool a test starts
# (torch, Paddle, MKL) defaults to one thread; a stage given an explicit thread count keeps it.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

TORCH_TOOLSET = {"packages": ["torch==2.13.0+cpu", "onnx==1.20.1", "onnxruntime==1.23.2",
                              "onnxscript"]}
ORT_TOOLSET = {"packages": ["onnx==1.17.0", "onnxruntime==1.20.1", "numpy<2"]}
# the default config's toolsets that the tests build too: one env each for the sweep and the tests
_DEFAULT_TOOLSETS = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["toolsets"]
PADDLE_TOOLSET = _DEFAULT_TOOLSETS["paddle2.6-p2o1.3"]
MODELOPT_TOOLSET = _DEFAULT_TOOLSETS["modelopt0.47"]

DEMO_TORCH = {
    "source": "demo-torch",
    "inputs": [{"name": "images", "dtype": "float32", "role": "image"},
               {"name": "orig_target_sizes", "dtype": "int32", "role": "orig_size_wh"}],
    "decode": {"layout": "separate", "boxes": "boxes", "scores": "scores", "labels": "labels"},
}


# PaddleDetection's deploy contract of the demo detector (outputs read by position)
DEMO_PADDLE = {
    "source": "demo-paddle",
    "inputs": [{"name": "image", "dtype": "float32", "role": "image"},
               {"name": "im_shape", "dtype": "float32", "role": "im_shape"},
               {"name": "scale_factor", "dtype": "float32", "role": "scale_factor"}],
    "decode": {"layout": "paddle_bbox", "bbox": 0, "bbox_num": 1},
}


TINY_LATENCY = {"images": 2, "rounds": 3, "max_rounds": 3, "warmup": 1}
# for the sweeps of tests that read no timing (export, sources' failure rows, Slurm, decode rows,
# the demo's contracts and floors, the real architectures' and PP-YOLOE's sweeps): no latency stage. The
# stage runs in the other sweeps (test_latency, test_codedigest at its defaults, the shared
# sweeps of both contracts, the Ultralytics/torchvision source sweep of test_sources)
NO_LATENCY = {**TINY_LATENCY, "backends": []}


def tiny_config(**over: object) -> dict:
    cfg = {
        "envs_dir": str(ENVS),
        "dataset": {"name": "tiny", "source": "synthetic",
                    "synthetic": {"seed": 1, "train": 16, "calib": 2, "val": 6}},
        "demo": {"toolset": "torch2.13", "steps": 2, "batch_size": 4, "top_k": 20},
        "toolsets": {"torch2.13": TORCH_TOOLSET},
        "models": {"demo-torch": DEMO_TORCH},
        "matrix": [{"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13]}],
        # the latency stage runs in every sweep, at its smallest: its statistics are tested on
        # their own (test_latency) and at the defaults in one sweep (test_codedigest); at the
        # defaults it was two thirds of the Ultralytics and real-architecture sweeps' time
        "latency": dict(TINY_LATENCY),
    }
    cfg.update(over)
    return cfg


def env_run(env: EnvResult, *args: str, extra_env: dict[str, str] | None = None,
            **kw: Any) -> subprocess.CompletedProcess:
    """A toolset env's interpreter (an ensure_env result) run as a stage runs it: what it
    imports is compiled once and kept in the env (quantsweep.interpreter.interpreter_env)."""
    from quantsweep.interpreter import interpreter_env

    return subprocess.run([env.python, *args],
                          env=interpreter_env(env.env_dir, {**os.environ, **(extra_env or {})}), **kw)


def write_config(tmp: Path, cfg: dict) -> Path:
    p = tmp / "config.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
              timeout: float | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir,
                       env={**os.environ, **env} if env else None, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r


def artifact(root: Path, rec: dict, name: str) -> Path:
    """An artifact of a status record; paths are relative to the workflow's directory."""
    p = Path(rec["artifacts"][name])
    return p if p.is_absolute() else root / p


def jobs_run(r: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs Snakemake executed, by rule, from its log."""
    import re

    counts: dict[str, int] = {}
    for m in re.finditer(r"^(?:local)?rule (\w+):", r.stderr + r.stdout, re.M):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    write_config(tmp_path, tiny_config())
    return tmp_path


PADDLESLIM_CELLS = "demo-paddle/paddle2.6-p2o1.3/opset13/paddleslim-ptq/int8"


@pytest.fixture(scope="session")
def paddleslim_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real tiny sweep: demo-paddle quantized by PaddleSlim in Paddle 2.6, converted by
    paddle2onnx 1.3.1 (QDQ, and float + TensorRT cache), run on ONNX Runtime, simulated TensorRT,
    Paddle Inference's float CPU configuration and Paddle-TRT. Shared by test_quantize and the
    field-report scenarios 000 and 001."""
    import json

    root = tmp_path_factory.mktemp("paddleslim")
    cfg = tiny_config()
    cfg["toolsets"]["paddle2.6-p2o1.3"] = PADDLE_TOOLSET
    cfg["models"]["demo-paddle"] = json.loads(json.dumps(DEMO_PADDLE))
    cfg["matrix"] = [{"models": ["demo-paddle"], "toolsets": ["paddle2.6-p2o1.3"], "opsets": [13]},
                     {"models": ["demo-paddle"], "toolsets": ["paddle2.6-p2o1.3"], "opsets": [13],
                      "quantizers": ["paddleslim-ptq"], "precisions": ["int8"],
                      "backends": ["onnxruntime", "tensorrt_sim", "paddle_inference",
                                   "paddle_tensorrt"]}]
    cfg["quantize"] = {"calib_images": 2}
    write_config(root, cfg)
    snakemake(root)
    return root



def int8_sweep_config() -> dict:
    """Two models (a torch export, and the same graph run by another toolset), each at FP32 and
    ORT INT8: 4 quantize, 4 build, 4 evaluate jobs."""
    cfg = tiny_config()
    cfg["toolsets"]["ort1.20"] = {"packages": [*ORT_TOOLSET["packages"], "sympy"]}
    cfg["models"]["demo-torch-onnx"] = {
        "source": "onnx", "from": {"model": "demo-torch", "toolset": "torch2.13"},
        "inputs": [{"name": "images", "role": "image"},
                   {"name": "orig_target_sizes", "role": "orig_size_wh"}],
        "decode": {"layout": "separate", "boxes": "boxes", "scores": "scores", "labels": "labels"}}
    cfg["matrix"] = [
        {"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13]},
        {"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13],
         "quantizers": ["ort-qdq"], "precisions": ["int8"]},
        {"models": ["demo-torch-onnx"], "toolsets": ["ort1.20"], "opsets": [13]},
        {"models": ["demo-torch-onnx"], "toolsets": ["ort1.20"], "opsets": [13],
         "quantizers": ["ort-qdq"], "precisions": ["int8"]},
    ]
    cfg["quantize"] = {"calib_images": 2}
    return cfg


@pytest.fixture(scope="session")
def int8_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real tiny sweep shared by the test files that read it (test_eval_loop) and those that
    break and repair it (test_no_holes: each of its tests leaves it whole again)."""
    root = tmp_path_factory.mktemp("int8sweep")
    write_config(root, int8_sweep_config())
    snakemake(root)
    return root


# The suite runs on three pytest-xdist workers on two cores (pyproject's addopts): the Slurm test
# mostly waits on Slurm's status checks, and every tool runs on one thread (above), so a third
# worker fills the waits. A worker takes whole files (module fixtures are built once), and the
# files that read a session sweep go to the same worker (the sweep is built once, and
# test_no_holes' breaking and repairing it never races a reader). Files are handed out longest
# first (pyproject: --no-loadscope-reorder keeps this order), the short ones last, so that no worker
# ends alone on a long one (2026-12-07: test_rerun, 100 s, handed out last kept one worker busy 70 s
# after the other two had finished). Wall times on 2 cores, three workers: floors 380 s, PP-YOLOE
# 278, sources 251, the PaddleSlim sweep's files 245, real architectures 228, Slurm 202 (mostly
# waiting: started early, beside the heavy ones), the int8 sweep's files 150, export 124,
# handoff 114, rerun 100, codedigest 91; the rest under 65 s each.
SHARED_SWEEPS = ("int8_sweep", "paddleslim_sweep")
LONGEST_FIRST = ("test_demo_floors", "test_sources", "test_slurm", "test_paddledet", "test_quantize",
                 "test_real_detectors", "test_no_holes", "test_eval_loop", "test_export", "test_handoff",
                 "test_rerun", "test_codedigest", "test_seed_002_runtime_scales", "test_demo",
                 "test_onnx_slice", "test_snapshot", "test_paddle3", "test_analyze", "test_decode_rows",
                 "test_inspect_model")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    group = {module(i): module(i) for i in items}
    for item in items:
        for name in SHARED_SWEEPS:
            if name in getattr(item, "fixturenames", ()):
                group[module(item)] = name

    def rank(item: pytest.Item) -> int:
        stem = Path(module(item)).stem
        return LONGEST_FIRST.index(stem) if stem in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's tests stay together and in order
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group[module(item)]))
