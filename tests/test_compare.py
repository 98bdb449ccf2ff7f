"""`quantsweep compare`: pivot tables of a summary (a simulated number is marked), a baseline
toolset, and what changed between two sweeps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from quantsweep.report.compare import CompareError, diff, pivot


def _summary(ap_new: float = 0.40) -> pd.DataFrame:
    rows = []
    for ts, ap in (("paddle2.6", 0.48), ("paddle3.3", ap_new)):
        base = {"model": "m", "toolset": ts, "opset": 13, "reason_class": "", "mode": "measured"}
        rows.append({**base, "quantizer": "none", "precision": "fp32", "backend": "onnxruntime",
                     "status": "ok", "AP": ap})
        rows.append({**base, "quantizer": "ort-qdq", "precision": "int8", "backend": "tensorrt_sim",
                     "status": "ok", "AP": ap - 0.01, "mode": "simulated"})
        rows.append({**base, "quantizer": "none", "precision": "fp16", "backend": "onnxruntime",
                     "status": "excluded", "AP": None})
    rows.append({"model": "m", "toolset": "trt10", "opset": 13, "quantizer": "none",
                 "precision": "fp32", "backend": "tensorrt_api", "status": "skipped",
                 "reason_class": "missing_requirement", "mode": "skipped", "AP": None})
    return pd.DataFrame(rows)


def test_pivot_marks_simulated_and_failed_cells():
    t = pivot(_summary())
    assert list(t.columns) == ["none/fp32/onnxruntime", "none/fp32/tensorrt_api",
                               "ort-qdq/int8/tensorrt_sim"]  # excluded cells are not columns
    assert t.loc[("m", "paddle2.6", 13), "none/fp32/onnxruntime"] == "0.4800"
    assert t.loc[("m", "paddle2.6", 13), "ort-qdq/int8/tensorrt_sim"] == "0.4700 (sim)"
    assert t.loc[("m", "trt10", 13), "none/fp32/tensorrt_api"] == "skipped: missing_requirement"


def test_baseline_toolset_and_bad_arguments():
    t = pivot(_summary(), "AP", baseline="paddle2.6")
    assert t.loc[("m", "paddle3.3", 13), "none/fp32/onnxruntime"] == "-0.0800"
    assert t.loc[("m", "paddle2.6", 13), "none/fp32/onnxruntime"] == "0.0000"
    with pytest.raises(CompareError, match="not a toolset of this sweep"):
        pivot(_summary(), "AP", baseline="nope")
    with pytest.raises(CompareError, match="one of"):
        pivot(_summary(), "mAP")


def test_diff_between_two_sweeps(tmp_path: Path):
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    _summary(0.40).to_csv(old, index=False)
    _summary(0.30).to_csv(new, index=False)
    d = diff(pd.read_csv(old), pd.read_csv(new))
    assert set(d["backend"]) == {"onnxruntime", "tensorrt_sim"} and set(d["toolset"]) == {"paddle3.3"}
    assert d["AP_delta"].round(4).tolist() == [-0.1, -0.1]
    r = subprocess.run([sys.executable, "-m", "quantsweep.cli", "compare", str(old), str(new),
                        "--format", "csv"], capture_output=True, text=True)
    assert r.returncode == 0 and "paddle3.3" in r.stdout and "paddle2.6" not in r.stdout
    r = subprocess.run([sys.executable, "-m", "quantsweep.cli", "compare", str(old), str(old)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "no cell changed" in r.stdout
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    r = subprocess.run([sys.executable, "-m", "quantsweep.cli", "compare", str(tmp_path / "bad.csv")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a quantsweep summary" in r.stderr


def test_diff_says_whether_code_or_tool_versions_made_two_rows_differ():
    old = _summary(0.40).assign(code_digest="aaa", tool_versions="onnx=1.17.0")
    new = old.copy()
    new.loc[(new.toolset == "paddle3.3") & (new.quantizer == "none"), "code_digest"] = "bbb"
    new.loc[(new.toolset == "paddle3.3") & (new.quantizer == "none"), "AP"] = 0.39
    new.loc[(new.toolset == "paddle2.6") & (new.quantizer == "ort-qdq"), "tool_versions"] = "onnx=1.20.1"
    new.loc[(new.toolset == "paddle2.6") & (new.quantizer == "ort-qdq"), "AP"] = 0.45
    new.loc[new.toolset == "trt10", ["code_digest", "tool_versions"]] = ["ccc", "onnx=1.20.1"]
    d = diff(old, new).set_index(["toolset", "quantizer", "precision"])
    assert d.loc[("paddle3.3", "none", "fp32"), "differs_in"] == "code"
    assert d.loc[("paddle2.6", "ort-qdq", "int8"), "differs_in"] == "tool versions"
    # same numbers, other code: listed all the same (a row that may be stale, or is not)
    assert d.loc[("trt10", "none", "fp32"), "differs_in"] == "code and tool versions"
    assert len(d) == 4  # the fp16 rows (paddle3.3, excluded) changed code too
    # summaries written before code digests existed compare as before
    assert set(diff(_summary(0.4), _summary(0.3))["differs_in"]) == {""}


def test_axes_of_the_users_choice_and_a_table_that_fits_the_terminal(tmp_path: Path):
    df = _summary()
    t = pivot(df, "AP", rows=["toolset"], cols=["backend"])
    # model, opset, quantizer and precision join the rows: no cell is hidden
    assert t.index.names == ["toolset", "model", "opset", "quantizer", "precision"]
    assert list(t.columns) == ["onnxruntime", "tensorrt_api", "tensorrt_sim"]
    assert t.loc[("paddle2.6", "m", 13, "ort-qdq", "int8"), "tensorrt_sim"] == "0.4700 (sim)"
    # a column with no value at all is left out
    df.loc[df.backend == "tensorrt_api", "status"] = "excluded"
    assert "none/fp32/tensorrt_api" not in pivot(df).columns
    with pytest.raises(CompareError, match="not axes"):
        pivot(_summary(), rows=["device"])
    with pytest.raises(CompareError, match="as rows and as columns"):
        pivot(_summary(), rows=["model"], cols=["model"])
    # fitting 70 characters: letters for the headers, a legend, and wrapped tables
    wide = pd.concat([_summary().assign(quantizer=f"quantizer-with-a-long-name-{i}") for i in range(4)])
    out = subprocess.run([sys.executable, "-m", "quantsweep.cli", "compare", "--width", "70",
                          str(_write(tmp_path, wide))], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    table_lines = [ln for ln in out.stdout.splitlines() if ln.startswith("|")]
    assert table_lines and max(map(len, table_lines)) <= 70
    assert "columns abbreviated to fit 70 characters, in" in out.stdout
    assert "\nA = quantizer-with-a-long-name-0/fp32/onnxruntime\n" in out.stdout
    assert "| 0.4700 (sim) |" in out.stdout  # values printed as written, not re-parsed
    assert "= quantizer-with-a-long-name-3/int8/tensorrt_sim" in out.stdout
    full = subprocess.run([sys.executable, "-m", "quantsweep.cli", "compare", "--width", "1000",
                           str(_write(tmp_path, wide))], capture_output=True, text=True).stdout
    assert "abbreviated" not in full and "quantizer-with-a-long-name-3/int8/tensorrt_sim" in full


def _write(tmp_path: Path, df: pd.DataFrame) -> Path:
    p = tmp_path / "summary.csv"
    df.to_csv(p, index=False)
    return p
