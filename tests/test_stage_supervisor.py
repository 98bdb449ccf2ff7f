"""The stage supervisor: a tool's crash is data; a bug in quantsweep fails the rule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from quantsweep import stage as sv
from quantsweep.interpreter import BYTECODE_DIR
from quantsweep.job import describe_exit, salient_line
from quantsweep.status import make_status, write_status


def _run(tmp: Path, body: str, upstream: dict | None = None, timeout: float = 60,
         stage: str = "export") -> dict:
    script = tmp / "tool_stage.py"
    script.write_text(body)
    return sv.run_stage(stage, "m/t/opset13", tmp / "out", None, upstream or {}, {},
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


def test_native_abort_reason_is_the_error_line_not_the_trailing_warning(tmp_path: Path):
    # what paddle2onnx 2.1.0 does on an attribute it cannot convert: an [ERROR] line, a
    # warning printed afterwards, and exit status 255 with no Python traceback
    rec = _run(tmp_path, "import os, sys\n"
                         "sys.stderr.write('\\x1b[0;31m[ERROR] Failed to convert PaddlePaddle model: "
                         "(Unimplemented) the 0th elementwise MUST be ir::FloatAttribute\\x1b[0m\\n')\n"
                         "sys.stderr.write('UserWarning: No ccache found.\\n  warnings.warn(msg)\\n')\n"
                         "sys.stderr.flush()\nos._exit(255)\n")
    # in the export stage that message is a known failure: its class is the known one
    assert rec["status"] == "failed" and rec["reason_class"] == "pir_double_scale"
    first = rec["message"].splitlines()[0]
    assert first == ("exit code 255: [ERROR] Failed to convert PaddlePaddle model: (Unimplemented) "
                     "the 0th elementwise MUST be ir::FloatAttribute")
    # the same words from another stage are not that failure: the generic class stays
    script = (tmp_path / "tool_stage.py").read_text()
    other = _run(tmp_path, script, stage="quantize")
    assert other["status"] == "failed" and other["reason_class"] == "tool_error"


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


def test_tool_call_puts_the_real_error_first():
    from quantsweep.job import ToolFailure, tool_call

    # Paddle's dy2static errors start with "In transformed code:" and end with the error
    text = ("In transformed code:\n\n    File \"model.py\", line 71, in forward\n"
            "        hm = F.sigmoid(hm_logits)\n\n"
            "    TypeError: (InvalidType) sigmoid(): argument (position 1) must be Value")
    with pytest.raises(ToolFailure) as ei, tool_call("framework_save", "paddle.jit.save"):
        raise TypeError(text)
    first, _, rest = ei.value.message.partition("\n")
    assert first == ("paddle.jit.save: TypeError: TypeError: (InvalidType) sigmoid(): "
                     "argument (position 1) must be Value")
    assert "In transformed code:" in rest  # the whole message is kept below
    with pytest.raises(ToolFailure) as ei, tool_call("export_failed"):
        raise ValueError("one line")
    assert ei.value.message == "ValueError: one line"


def test_stage_runs_with_the_jobs_threads(tmp_path: Path):
    script = tmp_path / "s.py"
    script.write_text("import os, sys\nsys.exit('threads=' + os.environ['OMP_NUM_THREADS'])\n")
    rec = sv.run_stage("evaluate", "c", tmp_path / "out", None, {}, {}, tmp_path / "l.txt", [],
                       60, python=sys.executable, script=script, threads=3)
    assert rec["message"].startswith("exit code 1: threads=3")


def test_salient_line_skips_paddles_signal_report():
    # paddle2onnx 1.3.1 at an opset it cannot write: the reason on stdout, then Paddle's
    # C++ signal handler report (which contains "Traceback (most recent call last)")
    text = ("[Paddle2ONNX] Use opset_version = 20 for ONNX export.\n"
            "\x1b[1;31m[ERROR] [Paddle2ONNX] Only support opset_version in range of [7, 19].\x1b[0m\n\n"
            "--------------------------------------\nC++ Traceback (most recent call last):\n"
            "--------------------------------------\n0   paddle2onnx::Export(char const*)\n\n"
            "----------------------\nError Message Summary:\n----------------------\n"
            "FatalError: `Process abort signal` is detected by the operating system.\n"
            "  [TimeInfo: *** Aborted at 1795439017 (unix time) try \"date -d @1795439017\" ***]\n"
            "  [SignalInfo: *** SIGABRT (@0x7a8) received by PID 1960 ***]\n")
    assert salient_line(text) == "[ERROR] [Paddle2ONNX] Only support opset_version in range of [7, 19]."
    reason, msg = describe_exit(-6, text, "paddle2onnx")
    assert reason == "tool_crash"
    assert msg.splitlines()[0] == ("paddle2onnx died by SIGABRT: [ERROR] [Paddle2ONNX] Only support "
                                   "opset_version in range of [7, 19].")


def test_toolset_interpreter_keeps_its_bytecode_in_the_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # envs are installed without bytecode: a stage process compiles what it imports once, into
    # the env, even where PYTHONDONTWRITEBYTECODE keeps bytecode out of the user's trees
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    lib, env_dir, ts = tmp_path / "lib", tmp_path / "env", tmp_path / "toolset"
    lib.mkdir()
    ts.mkdir()
    (lib / "tool_mod.py").write_text("VALUE = 42\n")
    (ts / "env.json").write_text(json.dumps({"python": sys.executable, "env_dir": str(env_dir)}))
    script = tmp_path / "s.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(lib)!r})\nimport tool_mod\n"
                      "sys.exit(f'value={tool_mod.VALUE}')\n")
    written = []
    for _ in range(2):
        rec = sv.run_stage("evaluate", "c", tmp_path / "out", ts, {}, {}, tmp_path / "l.txt", [],
                           60, script=script)
        assert rec["message"].startswith("exit code 1: value=42"), rec["message"]
        pycs = list((env_dir / BYTECODE_DIR).rglob("tool_mod.*.pyc"))
        assert len(pycs) == 1, pycs
        written.append(pycs[0].stat().st_mtime_ns)
    assert written[0] == written[1]  # the second process read what the first one wrote
    assert not (lib / "__pycache__").exists()
