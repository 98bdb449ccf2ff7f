"""Debian packages a test needs (Slurm, Chromium), installed with apt-get when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def missing(binaries: tuple[str, ...]) -> list[str]:
    return [b for b in binaries if not (shutil.which(b) or Path("/usr/sbin", b).exists())]


def ensure(packages: tuple[str, ...], binaries: tuple[str, ...]) -> str | None:
    """Installs Debian's ``packages`` when one of ``binaries`` is missing. None when they are
    there, else why they cannot be installed on this machine (not root, no apt-get)."""
    lacking = missing(binaries)
    if not lacking:
        return None
    if not shutil.which("apt-get"):
        return f"{lacking} not installed and this machine has no apt-get"
    if os.geteuid() != 0:
        return f"{lacking} not installed and installing {' '.join(packages)} needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
    r = subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env, capture_output=True,
                       text=True)
    if r.returncode != 0 or missing(binaries):
        raise RuntimeError(f"apt-get install {' '.join(packages)} failed:\n{r.stderr[-2000:]}")
    return None
