"""Run ``quantsweep doctor`` the way a user does, in a sweep's directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def doctor(workdir: Path, cell: str) -> tuple[int, dict[str, Any], str]:
    """(exit code, the --json report, the text report)."""
    base = [sys.executable, "-m", "quantsweep.cli", "doctor", cell, "--config", "config.yaml"]
    j = subprocess.run([*base, "--json"], cwd=workdir, capture_output=True, text=True)
    t = subprocess.run(base, cwd=workdir, capture_output=True, text=True)
    assert j.returncode == t.returncode, (j.stderr, t.stderr)
    assert j.returncode in (0, 1), j.stderr
    return j.returncode, json.loads(j.stdout), t.stdout


def codes(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in report["findings"]:
        out.setdefault(f["code"], []).append(f)
    return out
