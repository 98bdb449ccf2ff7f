"""``quantsweep snapshot`` and ``quantsweep restore``: a sweep's ``resources/`` (dataset, trained
demo weights) and ``results/`` kept with DVC.

snapshot: ``dvc add`` both directories (``resources.dvc`` and ``results.dvc``, to commit with git),
``dvc commit``, ``dvc push`` to the remote (default: the project's ``local`` remote, a directory;
any DVC remote by name or URL). restore: ``dvc checkout``/``dvc pull`` of those ``.dvc`` files
(of git revision REV when given), then ``snakemake --touch``: DVC does not keep modification
times, and without the touch Snakemake would see inputs newer than outputs and recompute.

The snapshot records, in ``results/snapshot.json`` (kept with the results), the quantsweep
version and the git commit of the checkout that ran the sweep, beside the DVC revision that
``git add *.dvc && git commit`` then makes.

Nothing local is deleted: a push that fails leaves the workspace as it was; a pull that fails
leaves ``results/`` as it was.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from quantsweep.status import write_json_atomic

TRACKED = ("resources", "results")
SNAPSHOT_FILE = "snapshot.json"  # in results/: the code that made them (git commit), when taken
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


def code_provenance() -> dict[str, Any]:
    """The quantsweep code that made the results: its version, and the git commit of its
    checkout (with whether it had uncommitted changes), when it is one."""
    from quantsweep import __version__
    from quantsweep.codedigest import REPO

    out: dict[str, Any] = {"quantsweep_version": __version__, "checkout": str(REPO),
                           "git_commit": "", "git_dirty": None}

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        except OSError:
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit:
        out["git_commit"] = commit
        out["git_dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    else:
        out["note"] = "the quantsweep code is not a git checkout (an installed copy)"
    return out


def snapshot(root: Path, remote: str | None = None, cfg: dict[str, Any] | None = None,
             force: bool = False, restore_cmd: str = "snakemake --cores all") -> list[str]:
    """``results/snapshot.json`` (the code's git commit, see ``code_provenance``), then ``dvc
    add``/``commit``/``push`` of resources/ and results/; on failure the file goes again.
    Given the sweep's config, the results tree is verified first (``quantsweep.tree``): a tree
    with holes is refused unless ``force``."""
    present = [d for d in TRACKED if (root / d).is_dir()]
    if "results" not in present:
        raise SnapshotError(f"{root / 'results'}: nothing to snapshot (run the sweep first)")
    if cfg is not None:
        from quantsweep import tree

        verdict = tree.verify(cfg, root, cfg.get("results_dir", "results"))
        if not verdict.whole and not force:
            raise SnapshotError("refusing to snapshot a results tree with holes (--force takes it "
                                "as it is):\n" + tree.format_verdict(verdict, restore_cmd))
    ensure_project(root)
    name = _resolve_remote(root, remote)
    record = root / "results" / SNAPSHOT_FILE
    write_json_atomic(record, {**code_provenance(), "taken": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    try:
        _dvc(["add", *present], root, "dvc add")
        _dvc(["commit", "-f", *[f"{d}.dvc" for d in present]], root, "dvc commit")
        _dvc(["push", *_remote_args(name), *[f"{d}.dvc" for d in present]], root,
             f"dvc push to remote {name or '(default)'}")
    except SnapshotError:
        record.unlink(missing_ok=True)
        raise
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
