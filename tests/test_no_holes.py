"""No holes after a crash: real Snakemake sweeps on a tiny config, killed with SIGKILL on their
process group while stage jobs run, then unlocked and rerun; `quantsweep verify` on whole and
holed trees; configs rewritten in another key order rerun nothing; check-config over several
files merged as Snakemake merges them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, jobs_run, snakemake

from quantsweep import snapshot, tree
from quantsweep.config import load_config

AXES_AND_RESULT = ["cell", "status", "stage", "reason_class", "AP", "AP50", "AP75", "AR100"]
EVAL = "results/{}/evaluate"


def _verify(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quantsweep.cli", "verify", "--config",
                           str(root / "config.yaml"), *extra], cwd=root, capture_output=True,
                          text=True)


def _results(root: Path) -> pd.DataFrame:
    """The summary's result columns, and each cell's detections (their digest)."""
    df = pd.read_csv(root / "results" / "summary.csv")
    df = df[AXES_AND_RESULT].sort_values("cell").reset_index(drop=True)
    df["detections"] = [hashlib.sha256((root / EVAL.format(c) / "detections.json").read_bytes())
                        .hexdigest() for c in df["cell"]]
    return df


@pytest.fixture
def sweep(int8_sweep: Path) -> tuple[Path, pd.DataFrame]:
    """The session's tiny INT8 sweep (whole on entry, whole again at the end of each test), and
    its summary's result columns as a clean sweep left them (every repaired tree must give
    them again)."""
    root = int8_sweep
    if not tree.verify(load_config(root / "config.yaml"), root, "results").whole:
        snakemake(root)
    return root, _reference(root)


_REFERENCE: dict[Path, pd.DataFrame] = {}


def _reference(root: Path) -> pd.DataFrame:
    if root not in _REFERENCE:
        clean = _results(root)
        assert sorted(clean["status"]) == ["ok"] * 4, clean
        _REFERENCE[root] = clean
    return _REFERENCE[root]


def _stage_pids(root: Path, stage: str) -> list[int]:
    """Stage supervisor processes of ``stage`` running in ``root``."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if b"quantsweep.stage" in argv and stage.encode() in argv and Path(cwd) == root:
            pids.append(int(d.name))
    return pids


def _kill_during(root: Path, stage: str) -> None:
    """``snakemake --forcerun <stage>`` killed with SIGKILL on its process group once one job of
    the stage has finished and another is running (the user's `kill -9` mid-sweep)."""
    started = time.time()
    status_files = [root / e.path for e in tree.expected_files(load_config(root / "config.yaml"), "results")
                    if e.stage == stage and e.path.endswith("status.json")]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
           str(root), "--configfile", str(root / "config.yaml"), "--cores", "2",
           "--forcerun", stage]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            done = [p for p in status_files if p.exists() and p.stat().st_mtime > started]
            if done and _stage_pids(root, stage):
                break
            if proc.poll() is not None:
                raise AssertionError(f"the forced sweep ended before a {stage} job could be killed")
            time.sleep(0.02)
        else:
            raise AssertionError(f"no {stage} job was seen running")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its jobs, at once
        proc.wait()
    deadline = time.monotonic() + 30
    while _stage_pids(root, stage) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _stage_pids(root, stage), "a stage job outlived the kill of its process group"


@pytest.mark.slow
def test_deleted_cell_files_are_remade(sweep: tuple[Path, pd.DataFrame]) -> None:
    root, clean = sweep
    r = _verify(root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the results tree is whole" in r.stdout

    cell = "demo-torch/torch2.13/opset13/ort-qdq/int8/onnxruntime"
    ev = root / EVAL.format(cell)
    (ev / "metrics.json").unlink()
    (ev / "status.json").unlink()
    r = _verify(root)
    assert r.returncode == 1
    assert f"{EVAL.format(cell)}/metrics.json  (evaluate of {cell})" in r.stdout
    assert "snakemake --cores all" in r.stdout
    # the summary is up to date with what is left, yet the missing evaluation is planned
    r = snakemake(root, "-n")
    assert jobs_run(r) == {"evaluate": 1, "summary": 1, "ledger": 1, "report": 1, "all": 1}, jobs_run(r)
    snakemake(root)
    assert _verify(root).returncode == 0
    pd.testing.assert_frame_equal(_results(root), clean)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["quantize", "evaluate"])
def test_sigkill_during_stage_then_one_rerun_restores_the_tree(
        sweep: tuple[Path, pd.DataFrame], stage: str) -> None:
    root, clean = sweep
    _kill_during(root, stage)
    # the kill made holes: files of the killed jobs are gone or left marked incomplete
    holed = tree.verify(load_config(root / "config.yaml"), root, "results")
    assert holed.incomplete and not holed.whole, holed
    assert all(e.stage in (stage, "build", "evaluate", "latency") for e in holed.missing), holed.missing
    assert _verify(root).returncode == 1

    snakemake(root, "--unlock")  # a killed Snakemake leaves its lock: the documented step
    snakemake(root)
    v = tree.verify(load_config(root / "config.yaml"), root, "results")
    assert v.whole, tree.format_verdict(v, "")
    assert not list((root / ".snakemake" / "incomplete").rglob("*.*")) and not v.incomplete
    assert not v.leftovers
    pd.testing.assert_frame_equal(_results(root), clean)
    r = snakemake(root, "-n")
    assert jobs_run(r) == {}, jobs_run(r)


@pytest.mark.slow
def test_verify_names_corrupt_foreign_and_stale(sweep: tuple[Path, pd.DataFrame]) -> None:
    root, clean = sweep
    cell = "demo-torch-onnx/ort1.20/opset13/none/fp32/onnxruntime"
    metrics = root / EVAL.format(cell) / "metrics.json"
    good = metrics.read_text()
    metrics.write_text(good[: len(good) // 2])  # truncated by something outside the sweep
    foreign = root / "results/old-model/torch2.13/opset11/none/fp32/onnxruntime/evaluate"
    foreign.mkdir(parents=True)
    (foreign / "status.json").write_text('{"status": "ok"}')
    work = root / "results" / cell / "build" / ".build-work-x1"
    work.mkdir()

    r = _verify(root)
    assert r.returncode == 1
    assert f"{EVAL.format(cell)}/metrics.json: not valid JSON" in r.stdout
    assert "old-model/torch2.13/opset11/none/fp32/onnxruntime" in r.stdout and "foreign" in r.stdout
    assert str(work.relative_to(root)) in r.stdout
    restore = r.stdout.strip().splitlines()[-1].strip()
    assert restore.startswith("snakemake --cores all") and "--forcerun" in restore

    # snapshot refuses the holed tree, and takes it with --force
    with pytest.raises(snapshot.SnapshotError, match="holes"):
        snapshot.snapshot(root, remote=str(root / "remote"), cfg=load_config(root / "config.yaml"))
    assert not (root / "results.dvc").exists()

    # the printed command (run as written, with this test's Snakefile) recreates the file
    args = restore.split()[1:]
    snakemake(root, *[a for a in args if a not in ("--cores", "all")])
    assert json.loads(metrics.read_text()) == json.loads(good)
    r = _verify(root, "--clean")
    assert r.returncode == 0, r.stdout
    assert not work.exists() and (foreign / "status.json").exists()  # foreign cells are kept

    # a summary row that does not say what its cell says is stale
    summary = root / "results" / "summary.csv"
    kept = summary.read_text()
    df = pd.read_csv(summary)
    df.loc[df.cell == cell, "AP"] = 0.123
    df.to_csv(summary, index=False)
    r = _verify(root)
    assert r.returncode == 1 and f"{cell}: summary says AP=0.123" in r.stdout
    summary.write_text(kept)
    shutil.rmtree(root / "results" / "old-model")
    assert _verify(root).returncode == 0


def assert_nothing_to_do_with(root: Path, change: Callable[[dict], object]) -> None:
    """The sweep's config changed by ``change`` (then restored): a dry run has no job to run."""
    original = (root / "config.yaml").read_text()
    (root / "config.yaml").write_text(yaml.safe_dump(change(yaml.safe_load(original)), sort_keys=False))
    assert (root / "config.yaml").read_text() != original
    try:
        r = snakemake(root, "-n")
        assert jobs_run(r) == {}, r.stdout[-3000:]
    finally:
        (root / "config.yaml").write_text(original)


@pytest.mark.slow
def test_config_in_another_key_order_reruns_nothing(sweep: tuple[Path, pd.DataFrame]) -> None:
    root, _ = sweep

    def reverse(obj: object) -> object:
        if isinstance(obj, dict):
            return {k: reverse(obj[k]) for k in reversed(list(obj))}
        if isinstance(obj, list):
            return [reverse(x) for x in obj]
        return obj

    assert_nothing_to_do_with(root, reverse)


def test_timing_fewer_backends_reruns_no_latency_job_of_the_others(sweep: tuple[Path, pd.DataFrame]) -> None:
    """latency.backends decides which latency jobs exist; it is not a parameter of the jobs that
    stay: the sweep's cells are all onnxruntime cells, so timing onnxruntime only changes nothing."""
    root, _ = sweep
    assert_nothing_to_do_with(root, lambda cfg: {**cfg, "latency": {**cfg["latency"], "backends": ["onnxruntime"]}})


def test_check_config_merges_files_as_snakemake_does(tmp_path: Path) -> None:
    def check(*files: str) -> subprocess.CompletedProcess:
        args = [a for f in files for a in ("--config", f)]
        return subprocess.run([sys.executable, "-m", "quantsweep.cli", "check-config", *args],
                              cwd=REPO, capture_output=True, text=True)

    overlay = "config/examples/ultralytics.yaml"
    r = check(overlay)  # an overlay alone lacks what config/config.yaml gives it
    assert r.returncode == 2 and "dataset" in r.stderr
    r = check("config/config.yaml", overlay)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"config/config.yaml + {overlay}: ok"
    merged = load_config(["config/config.yaml", overlay]) if Path.cwd() == REPO else \
        load_config([REPO / "config/config.yaml", REPO / overlay])
    base = load_config(REPO / "config/config.yaml")
    # mappings merge key by key (the default's models stay, the example's are added), lists
    # are replaced (the example's matrix), scalars overwritten
    assert set(base["models"]) < set(merged["models"]) and "yolov8n-shapes" in merged["models"]
    assert merged["matrix"] != base["matrix"] and merged["results_dir"] == "results-ultralytics"
    assert merged["dataset"] == base["dataset"]
    # a later file's bad value is named with both files
    bad = tmp_path / "bad.yaml"
    bad.write_text("latency: {rounds: -1}\n")
    r = check("config/config.yaml", str(bad))
    assert r.returncode == 2 and "latency.rounds" in r.stderr and str(bad) in r.stderr


def test_documented_check_config_commands_pass() -> None:
    """Every `quantsweep check-config ...` command the README and the example configs show
    validates as written."""
    import re
    import shlex

    texts = [REPO / "README.md", *sorted((REPO / "config" / "examples").glob("*.yaml"))]
    cmds = {m.group(0).strip("` ") for t in texts
            for m in re.finditer(r"quantsweep check-config(?: --config [a-z][\w./-]*\.yaml)+", t.read_text())}
    assert any(c.count("--config") > 1 for c in cmds), cmds
    for cmd in sorted(cmds):
        r = subprocess.run([sys.executable, "-m", "quantsweep.cli", *shlex.split(cmd)[1:]],
                           cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd}: {r.stderr}"


def test_latency_backends_choose_the_cells_that_are_timed() -> None:
    from conftest import tiny_config

    from quantsweep.config import ConfigError, validate_config

    def timed(latency: dict) -> list[str]:
        cfg = tiny_config(latency=latency)
        cfg["matrix"][0]["backends"] = ["onnxruntime", "tensorrt_sim"]
        return [e.path for e in tree.expected_files(validate_config(cfg), "results") if e.stage == "latency"]

    assert [p.split("/")[-3] for p in timed({})] == ["onnxruntime", "tensorrt_sim"]
    assert [p.split("/")[-3] for p in timed({"backends": ["tensorrt_sim"]})] == ["tensorrt_sim"]
    assert timed({"backends": []}) == []
    with pytest.raises(ConfigError, match=r"latency\.backends"):
        timed({"backends": ["trtexec"]})
