"""The default demo's floors sweep (tests/test_demo_floors.py), started when the session's tests
are collected and run beside them at the lowest CPU priority (nice 19): its ~9 minutes of
training use the CPU the other tests leave idle (the suite keeps ~1.2 of 2 cores busy) and
barely slow them, and the floors test, ordered last, waits for what is left.

Not a test module: conftest.py starts and reaps the sweep; the test asserts on its results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from conftest import ENVS, REPO, write_config

from quantsweep.config import load_config

TEST_ID = "tests/test_demo_floors.py::test_default_demo_meets_floors"


@dataclass
class FloorsSweep:
    root: Path
    proc: subprocess.Popen

    def wait(self, timeout: float) -> tuple[int, str]:
        """The sweep's return code and the tail of its log, once it has finished."""
        rc = self.proc.wait(timeout=timeout)
        return rc, (self.root / "snakemake.log").read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:  # the session ended first: the whole process group goes
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def config() -> dict:
    """The default config, as shipped, on the two deploy contracts of the demo at opset 13."""
    cfg = load_config(REPO / "config" / "config.yaml")
    cfg["envs_dir"] = str(ENVS)
    cfg["matrix"] = [{"models": ["demo-paddle"], "toolsets": ["paddle2.6-p2o1.3"], "opsets": [13]},
                     {"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13]}]
    cfg["exclude"] = []
    return cfg


def start(nice: int = 19) -> FloorsSweep:
    root = Path(tempfile.mkdtemp(prefix="quantsweep-floors-"))
    write_config(root, config())
    cmd = ["nice", "-n", str(nice), sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
           "--directory", str(root), "--configfile", str(root / "config.yaml"), "--cores", "2"]
    with open(root / "snakemake.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return FloorsSweep(root, proc)
