from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_config

from quantsweep import matrix, paths
from quantsweep.config import validate_config
from quantsweep.status import make_status, read_status, write_status


def test_expand_blocks_union_and_exclude_reason():
    cfg = tiny_config()
    cfg["toolsets"]["ort"] = {"packages": ["onnxruntime"]}
    cfg["matrix"] = [
        {"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [11, 13],
         "precisions": ["fp32", "fp16"]},
        {"models": ["demo-torch"], "toolsets": ["torch2.13", "ort"], "opsets": [13]},
    ]
    cfg["exclude"] = [{"match": {"precision": "fp16", "opset": [11]}, "reason": "because"}]
    cfg = validate_config(cfg)
    rows = matrix.expand(cfg)
    ids = [r.cell.id for r in rows]
    assert len(ids) == len(set(ids)) == 5  # 2x2 + ort's one; the overlap counted once
    ex = [r for r in rows if r.status == "excluded"]
    assert [r.cell.id for r in ex] == ["demo-torch/torch2.13/opset11/none/fp16/onnxruntime"]
    assert ex[0].reason == "because"
    table = matrix.format_table(rows)
    assert "5 cells: 4 planned, 1 excluded" in table


def test_cell_path_is_the_cell_id():
    c = matrix.Cell("m", "t", 13, "none", "fp32", "onnxruntime")
    assert c.id == "m/t/opset13/none/fp32/onnxruntime"
    assert paths.fill("results", "evaluate", "metrics.json", **c.axes()) == \
        Path("results/m/t/opset13/none/fp32/onnxruntime/evaluate/metrics.json")


def test_status_roundtrip_and_validation(tmp_path: Path):
    rec = make_status("export", "m/t/opset13", "failed", reason_class="tool_crash", message="x")
    assert rec["mode"] == "skipped"
    write_status(tmp_path / "status.json", rec)
    assert read_status(tmp_path / "status.json")["reason_class"] == "tool_crash"
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind
    with pytest.raises(ValueError):
        make_status("export", "c", "weird")
    with pytest.raises(ValueError):
        make_status("export", "c", "skipped", mode="measured")
    (tmp_path / "bad.json").write_text(json.dumps({"status": "maybe"}))
    with pytest.raises(ValueError, match="bad.json"):
        read_status(tmp_path / "bad.json")


def test_atomic_writes_honour_the_umask(tmp_path: Path):
    """Result files are as readable as a plain open() makes them (0644 under umask 022), not
    mkstemp's private 0600; a stricter umask is honoured too (fresh interpreters: the umask is
    read at import)."""
    import subprocess
    import sys

    code = ("import os, sys; os.umask(int(sys.argv[2], 8)); from quantsweep.status import "
            "write_json_atomic; write_json_atomic(sys.argv[1], {'a': 1}); "
            "print(oct(os.stat(sys.argv[1]).st_mode & 0o777))")
    for umask, mode in (("022", "0o644"), ("077", "0o600"), ("002", "0o664")):
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{umask}.json"), umask],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == mode, (umask, out)
