"""`snakemake -n` time on a 100-cell matrix vs a 1-cell matrix, measured side by side (target <= 3x);
and on the 100 cells with the code digests (quantsweep.codedigest, in every stage's params) vs
without them (QUANTSWEEP_NO_CODE_DIGEST=1, a switch for this benchmark only; target <= 1.2x).

    python benchmarks/dryrun_scaling.py [--reps 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_config  # noqa: E402
from figures import emit, figure  # noqa: E402


def dry_run(cfg: dict, digests: bool = True) -> float:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "config.yaml").write_text(yaml.safe_dump(cfg))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--quiet",
                        "--directory", d, "--configfile", str(Path(d) / "config.yaml"), "--cores", "2"],
                       check=True, capture_output=True,
                       env={**os.environ, **({} if digests else {"QUANTSWEEP_NO_CODE_DIGEST": "1"})})
        return time.perf_counter() - t


def measure(reps: int = 3) -> list[dict[str, Any]]:
    one = tiny_config()
    big = tiny_config()
    big["toolsets"].update({f"t{i}": {"packages": ["onnxruntime"]} for i in range(4)})
    big["matrix"] = [{"models": ["demo-torch"], "toolsets": ["torch2.13", "t0", "t1", "t2", "t3"],
                      "opsets": [11, 12, 13, 16, 17], "precisions": ["fp32", "int8"],
                      "backends": ["onnxruntime", "trtexec"]}]
    runs = [(dry_run(one), dry_run(big, False), dry_run(big, True)) for _ in range(reps)]  # interleaved
    t1, without, with_ = (statistics.median(r[i] for r in runs) for i in range(3))
    return [figure("dryrun_scaling", "ratio", with_ / t1, "<= 3", one_cell_s=round(t1, 2),
                   hundred_cells_s=round(with_, 2), reps=reps),
            figure("dryrun_scaling", "digest_ratio", with_ / without, "<= 1.2",
                   without_digests_s=round(without, 2), with_digests_s=round(with_, 2), reps=reps)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    emit(measure(ap.parse_args().reps))
