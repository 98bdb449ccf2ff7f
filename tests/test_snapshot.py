"""DVC round trip on a real tiny sweep: snapshot, delete results/ (and DVC's cache), restore from
the remote -> the same bytes, and Snakemake plans nothing. A remote that cannot be written or read
is one clear error, and nothing local is deleted."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, jobs_run, snakemake, tiny_config, write_config

from quantsweep import snapshot


def digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_snapshot_restore_round_trip(tmp_path: Path) -> None:
    write_config(tmp_path, tiny_config())
    snakemake(tmp_path)
    before = digest(tmp_path / "results")
    assert "summary.csv" in before and "report.html" in before

    # a remote that cannot be created: a clear error, the workspace untouched
    with pytest.raises(snapshot.SnapshotError, match="dvc push"):
        snapshot.snapshot(tmp_path, remote="/proc/quantsweep-remote")
    assert digest(tmp_path / "results") == before

    assert not (tmp_path / "results" / "snapshot.json").exists()  # not left by the failure
    written = snapshot.snapshot(tmp_path, remote=str(tmp_path / "remote"))
    assert written == ["resources.dvc", "results.dvc"]
    assert any((tmp_path / "remote").rglob("*"))
    # the code that made the results, kept with them: this checkout's git commit
    code = json.loads((tmp_path / "results" / "snapshot.json").read_text())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert code["git_commit"] == head and isinstance(code["git_dirty"], bool)
    before = digest(tmp_path / "results")

    shutil.rmtree(tmp_path / "results")
    shutil.rmtree(tmp_path / ".dvc" / "cache")  # only the remote has the data now
    sm = ["-s", str(REPO / "Snakefile"), "--configfile", str(tmp_path / "config.yaml")]
    snapshot.restore(tmp_path, remote=str(tmp_path / "remote"), snakemake_args=sm)
    assert digest(tmp_path / "results") == before
    r = snakemake(tmp_path, "-n")
    assert jobs_run(r) == {} and "Nothing to be done" in r.stdout + r.stderr

    # a remote with nothing in it, and a file to bring back: one clear error, and the files
    # still here stay here
    (tmp_path / "empty").mkdir()
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    (tmp_path / "results" / "summary.csv").unlink()
    with pytest.raises(snapshot.SnapshotError, match="dvc pull"):
        snapshot.restore(tmp_path, remote=str(tmp_path / "empty"), snakemake_args=sm)
    left = digest(tmp_path / "results")
    assert left == {k: v for k, v in before.items() if k != "summary.csv"}
