"""The same tiny sweep on one machine and through Snakemake's slurm executor on a real
single-node Slurm (slurm-wlm from Debian, installed by the test when missing): the summaries agree
cell for cell, and the cluster run's jobs really went through Slurm."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import NO_LATENCY, REPO, snakemake, tiny_config, write_config
from slurm_cluster import install, single_node

SAME = ["cell", "status", "stage", "reason_class", "mode", "AP", "AP50", "AP75", "framework_AP",
        "parity_ok", "opset_written"]


@pytest.mark.slow
def test_slurm_profile_runs_the_sweep_like_one_machine(tmp_path: Path) -> None:
    why = install()  # Debian's packages, when missing and this machine can install them
    if why is not None:
        pytest.skip(why)
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    for d in (local, cluster):
        d.mkdir()
        write_config(d, tiny_config(latency=dict(NO_LATENCY)))
    snakemake(local)
    with single_node(tmp_path / "slurm") as env:
        # a job Slurm cannot launch stays pending ("launch failed requeued held"): bounded
        r = snakemake(cluster, "--profile", str(REPO / "profiles" / "slurm"), env=env, timeout=1800)
    out = r.stdout + r.stderr
    submitted = re.findall(r"(?i)job \d+ has been submitted with SLURM jobid (\d+)", out)
    assert len(submitted) >= 5, out[-3000:]  # toolset, data, training, ... each a Slurm job
    a = pd.read_csv(local / "results" / "summary.csv")[SAME].set_index("cell")
    b = pd.read_csv(cluster / "results" / "summary.csv")[SAME].set_index("cell")
    pd.testing.assert_frame_equal(a.sort_index(), b.sort_index())
    assert (b["status"] == "ok").any()
