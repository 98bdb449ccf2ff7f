"""The stage supervisor: a tool's crash is data; a bug in quantsweep fails the rule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from quantsweep import stage as sv
from quantsweep.status import make_status, write_status


def _run(tmp: Path, body: str, upstream: dict | None = None, timeout: float = 60) -> dict:
    script = tmp / "tool_stage.py"
    script.write_text(body)
    return sv.run_stage("export", "m/t/opset13", tmp / "out", None, upstream or {}, {},
                        tmp / "log.txt", ["metrics.json"], timeout, python=sys.executable,
                        script=script)


def test_segfault_in_tool_is_a_classified_failed_row(tmp_path: Path):
    rec = _run(tmp_path, "import ctypes, sys\nprint('loading', file=sys.stderr)\n"
                         "ctypes.string_at(0)\n")
    assert rec["status"] == "failed" and rec["reason_class"] == "tool_crash"
    assert "SIGSEGV" in rec["message"] and "loading" in rec["message"]
    on_disk = json.loads((tmp_path / "out" / "status.json").read_text())
    assert on_disk["reason_class"] == "tool_crash"
    # declared outputs exist and say what happened; nothing pretends to be a measurement
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["status"] == "failed"


def test_abort_and_timeout(tmp_path: Path):
    rec = _run(tmp_path, "import os\nos.abort()\n")
    assert rec["reason_class"] == "tool_crash" and "SIGABRT" in rec["message"]
    rec = _run(tmp_path, "import time\ntime.sleep(30)\n", timeout=1)
    assert rec["status"] == "failed" and rec["reason_class"] == "timeout"


def test_exception_inside_a_tool_is_data(tmp_path: Path):
    # the innermost frame is outside quantsweep: the tool's own exception
    lib = tmp_path / "sitepkg"
    lib.mkdir()
    (lib / "faketool.py").write_text("def convert():\n    raise RuntimeError('Only support e4m3 or e5m2')\n")
    rec = _run(tmp_path, f"import sys\nsys.path.insert(0, {str(lib)!r})\nimport faketool\n"
                         "faketool.convert()\n")
    assert rec["status"] == "failed" and rec["reason_class"] == "tool_error"
    assert "Only support e4m3 or e5m2" in rec["message"]


def test_bug_in_quantsweep_fails_the_rule(tmp_path: Path):
    script = sv.SRC_DIR / "quantsweep" / "_test_buggy_stage.py"
    script.write_text("def f():\n    return 1 / 0\nf()\n")
    try:
        with pytest.raises(sv.InternalError, match="ZeroDivisionError"):
            sv.run_stage("export", "c", tmp_path / "out", None, {}, {}, tmp_path / "l.txt", [],
                         60, python=sys.executable, script=script)
    finally:
        script.unlink()


def test_upstream_failure_skips_with_root_reason(tmp_path: Path):
    up = tmp_path / "up" / "status.json"
    write_status(up, make_status("export", "c", "failed", reason_class="tool_crash",
                                 message="paddle2onnx died by SIGSEGV"))
    rec = _run(tmp_path, "raise SystemExit('must not run')\n", upstream={"export": up})
    assert rec["status"] == "skipped" and rec["reason_class"] == "upstream_failed"
    assert rec["message"] == "upstream export failed: paddle2onnx died by SIGSEGV"
    assert rec["mode"] == "skipped"
