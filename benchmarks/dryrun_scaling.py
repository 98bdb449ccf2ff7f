"""`snakemake -n` time on a 100-cell matrix vs a 1-cell matrix, measured side by side (target <= 3x);
and on the 100 cells with the code digests (quantsweep.codedigest, in every stage's params) vs
without them (QUANTSWEEP_NO_CODE_DIGEST=1, a switch for this benchmark only; target <= 1.2x)."""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import tiny_config  # noqa: E402


def dry_run(cfg: dict, digests: bool = True) -> float:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "config.yaml").write_text(yaml.safe_dump(cfg))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--quiet",
                        "--directory", d, "--configfile", str(Path(d) / "config.yaml"), "--cores", "2"],
                       check=True, capture_output=True,
                       env={**os.environ, **({} if digests else {"QUANTSWEEP_NO_CODE_DIGEST": "1"})})
        return time.perf_counter() - t


one = tiny_config()
big = tiny_config()
big["toolsets"].update({f"t{i}": {"packages": ["onnxruntime"]} for i in range(4)})
big["matrix"] = [{"models": ["demo-torch"], "toolsets": ["torch2.13", "t0", "t1", "t2", "t3"],
                  "opsets": [11, 12, 13, 16, 17], "precisions": ["fp32", "int8"],
                  "backends": ["onnxruntime", "trtexec"]}]
t1, t100 = dry_run(one), dry_run(big)
print(f"1 cell: {t1:.2f} s   100 cells: {t100:.2f} s   ratio {t100 / t1:.2f}x (target <= 3x)")
runs = [(dry_run(big, False), dry_run(big, True)) for _ in range(3)]  # interleaved
without, with_ = sorted(r[0] for r in runs)[1], sorted(r[1] for r in runs)[1]
print(f"100 cells, medians of 3: without code digests {without:.2f} s   with {with_:.2f} s   "
      f"ratio {with_ / without:.2f}x (target <= 1.2x)")
