"""``quantsweep snapshot`` and ``quantsweep restore``: a sweep's ``resources/`` (dataset, trained
demo weights) and ``results/`` kept with DVC.

snapshot: ``dvc add`` both directories (``resources.dvc`` and ``results.dvc``, to commit with git),
``dvc commit``, ``dvc push`` to the remote (default: the project's ``local`` remote, a directory;
any DVC remote by name or URL). restore: ``dvc checkout``/``dvc pull`` of those ``.dvc`` files
(of git revision REV when given), then ``snakemake --touch``: DVC does not keep modification
times, and without the touch Snakemake would see inputs newer than outputs and recompute.

Nothing local is deleted: a push that fails leaves the workspace as it was; a pull that fails
leaves ``results/`` as it was.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

TRACKED = ("resources", "results")
DEFAULT_REMOTE = "local"


class SnapshotError(RuntimeError):
    pass


def _dvc(args: list[str], cwd: Path, what: str) -> str:
    exe = shutil.which("dvc")
    cmd = [exe] if exe else [sys.executable, "-m", "dvc"]
    r = subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-6:])
        raise SnapshotError(f"{what} failed (dvc {' '.join(args)}):\n{tail}")
    return r.stdout


def _remote_args(remote: str | None) -> list[str]:
    return ["-r", remote] if remote else []


def ensure_project(root: Path) -> None:
    """``dvc init`` where there is no DVC project yet (``--no-scm`` outside a git repository)."""
    if (root / ".dvc").is_dir():
        return
    scm = (root / ".git").exists()
    _dvc(["init", "-q"] + ([] if scm else ["--no-scm"]), root, "dvc init")
    _dvc(["remote", "add", "-d", DEFAULT_REMOTE, ".dvc-remote"], root, "adding the local remote")


def _resolve_remote(root: Path, remote: str | None) -> str | None:
    """A remote name, or a URL/path that becomes the remote ``snapshot``."""
    if remote is None:
        return None
    listed = _dvc(["config", "--list"], root, "dvc config --list")  # remote.<name>.url=...
    names = {m.group(1) for m in re.finditer(r"^remote\.([^.=]+)\.url=", listed, re.M)}
    if remote in names:
        return remote
    _dvc(["remote", "add", "-f", "snapshot", remote], root, f"adding remote {remote}")
    return "snapshot"


def snapshot(root: Path, remote: str | None = None) -> list[str]:
    ensure_project(root)
    present = [d for d in TRACKED if (root / d).is_dir()]
    if "results" not in present:
        raise SnapshotError(f"{root / 'results'}: nothing to snapshot (run the sweep first)")
    name = _resolve_remote(root, remote)
    _dvc(["add", *present], root, "dvc add")
    _dvc(["commit", "-f", *[f"{d}.dvc" for d in present]], root, "dvc commit")
    _dvc(["push", *_remote_args(name), *[f"{d}.dvc" for d in present]], root,
         f"dvc push to remote {name or '(default)'}")
    return [f"{d}.dvc" for d in present]


def restore(root: Path, rev: str | None = None, remote: str | None = None,
            snakemake_args: list[str] | None = None) -> None:
    files = [f"{d}.dvc" for d in TRACKED]
    if rev is not None:
        if not (root / ".git").exists():
            raise SnapshotError(f"{root}: restoring revision {rev} needs a git repository")
        r = subprocess.run(["git", "checkout", rev, "--", *files], cwd=root, capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise SnapshotError(f"git checkout {rev} -- {' '.join(files)} failed: {r.stderr.strip()}")
    present = [f for f in files if (root / f).exists()]
    if "results.dvc" not in present:
        raise SnapshotError(f"{root / 'results.dvc'}: no snapshot here (quantsweep snapshot makes it)")
    # fetch first, and check that the cache now holds everything: dvc fetch exits 0 with only a
    # warning when the remote lacks files, and dvc checkout would then empty the outputs
    name = _resolve_remote(root, remote)
    _dvc(["fetch", *_remote_args(name), *present], root, "dvc pull (fetch from the remote)")
    status = _dvc(["status", *present], root, "dvc status")
    if "not in cache" in status:
        raise SnapshotError(f"dvc pull (fetch from the remote {name or '(default)'}) did not bring "
                            f"every file of {', '.join(present)}: the remote lacks them; nothing in "
                            f"the workspace was changed\n{status.strip()}")
    _dvc(["checkout", *present], root, "dvc pull (checkout into the workspace)")
    cmd = [sys.executable, "-m", "snakemake", "--touch", "--cores", "1", *(snakemake_args or [])]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise SnapshotError(f"snakemake --touch failed:\n{r.stderr[-2000:]}")
