"""Stage supervisor: runs ``scripts/<stage>.py`` under the cell's toolset interpreter.

Runs in quantsweep's own environment (the one Snakemake runs in). It
- skips the stage when an upstream stage (the toolset included) did not end ``ok``;
- runs the stage script in a subprocess (a tool may abort or segfault), with a timeout;
- classifies what happened: ``ok``/``failed``/``skipped`` from the script, a signal
  (``tool_crash``), a timeout, an exception raised inside a tool (``tool_error``);
- writes ``status.json`` and every declared output, atomically;
- exits non-zero only for a bug in quantsweep itself (a traceback ending in its own code).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantsweep import known_failures
from quantsweep import status as st
from quantsweep.interpreter import interpreter_env
from quantsweep.job import describe_exit, strip_ansi

REPO_ROOT = Path(__file__).resolve().parents[2]
SRC_DIR = REPO_ROOT / "src"
SCRIPTS_DIR = REPO_ROOT / "scripts"


class InternalError(RuntimeError):
    """A bug in quantsweep: the rule must fail."""


def read_versions(toolset_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    p = toolset_dir / "versions.txt"
    if p.exists():
        for line in p.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                k, _, v = line.partition("==")
                out[k] = v
    return out


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


_TB_FRAME = re.compile(r'^  File "([^"]+)", line \d+', re.M)


def _innermost_frame(stderr: str) -> str | None:
    frames = _TB_FRAME.findall(stderr)
    return frames[-1] if frames else None


def classify_exit(returncode: int, stderr: str) -> tuple[str, str]:
    """(reason_class, message) for a stage script that ended without a result."""
    if returncode < 0:
        return describe_exit(returncode, stderr)
    tail = strip_ansi(stderr.strip()[-3000:])
    last = tail.splitlines()[-1] if tail else ""
    if re.match(r"(ModuleNotFoundError|ImportError)\b", last):
        return "tool_missing", last
    frame = _innermost_frame(stderr)
    if frame and (frame.startswith(str(SRC_DIR)) or frame.startswith(str(SCRIPTS_DIR))):
        raise InternalError(f"quantsweep bug (exit {returncode}):\n{tail}")
    return describe_exit(returncode, stderr)


def _write_declared(out_dir: Path, declared: list[str], rec: dict[str, Any]) -> None:
    for name in declared:
        p = out_dir / name
        if not p.exists():
            st.write_json_atomic(p, {"status": rec["status"], "reason_class": rec["reason_class"],
                                     "message": rec["message"], "mode": rec["mode"]})


PostHook = Callable[[dict[str, Any], Path, dict[str, Any]], dict[str, Any]]


def _post_evaluate(result: dict[str, Any], out_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    from quantsweep.evaluate.coco import score_detections

    manifest = json.loads(Path(params["dataset"]["manifest"]).read_text())
    metrics = score_detections(result["artifacts"]["detections"],
                               manifest["splits"]["val"]["annotations"], mode=result["mode"],
                               engine=params.get("evaluate", {}).get("coco_engine", "pycocotools"))
    for key in ("foreign_detections", "foreign_category_ids"):  # dropped before scoring
        if key in result["data"]:
            metrics[key] = result["data"][key]
    st.write_json_atomic(out_dir / "metrics.json", metrics)
    result["artifacts"]["metrics"] = str(out_dir / "metrics.json")
    result["data"]["AP"] = metrics["AP"]
    return result


POST_HOOKS: dict[str, PostHook] = {"evaluate": _post_evaluate, "framework_eval": _post_evaluate}


def _run_streaming(cmd: list[str], env: dict[str, str], logfh: Any,
                   timeout: float) -> tuple[int | None, str]:
    """Run ``cmd``; copy its output to ``logfh`` line by line; return (exit code or None on
    timeout, the last lines of its output)."""
    import collections
    import threading

    tail: collections.deque[str] = collections.deque(maxlen=4000)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", env=env)
    assert proc.stdout is not None
    out = proc.stdout

    def pump() -> None:
        for line in out:
            logfh.write(line)
            logfh.flush()
            tail.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    reader.join(timeout=10)  # a grandchild may still hold the pipe
    return code, "".join(tail)


def remove_leftovers(out_dir: Path, stage: str) -> None:
    """The work directories and half-written temporary files (``status.write_bytes_atomic``) a
    killed job of ``stage`` left in its output directory."""
    for p in out_dir.glob(f".{stage}-work-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in out_dir.glob(".*.tmp"):
        p.unlink(missing_ok=True)


def run_stage(stage: str, cell: str, out_dir: Path, toolset_dir: Path | None,
              upstream: dict[str, Path], params: dict[str, Any], log: Path,
              declared: list[str], timeout: float, python: str | None = None,
              script: Path | None = None, threads: int = 1) -> dict[str, Any]:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    versions = read_versions(toolset_dir) if toolset_dir else {}
    backend = params.get("backend", "")
    inputs: dict[str, dict[str, Any]] = {}

    def finish(status: str, reason_class: str = "", message: str = "", mode: str | None = None,
               **extra: Any) -> dict[str, Any]:
        if status == "failed":  # a failure a tool version is known for gets its own class
            reason_class = known_failures.reason_class(stage, reason_class, message)
        rec = st.make_status(stage, cell, status, reason_class=reason_class, message=message,
                             mode=mode, backend=extra.pop("backend", backend) or backend,
                             device=extra.pop("device", "cpu"), tool_versions=versions,
                             started=started, duration_s=time.monotonic() - t0, log=str(log),
                             code_digest=params.get("code", ""), **extra)
        _write_declared(out_dir, declared, rec)
        st.write_status(out_dir / "status.json", rec)
        return rec

    for name, path in upstream.items():
        try:
            rec = st.read_status(path)
        except st.StatusFileError as exc:
            raise InternalError(str(exc)) from None
        inputs[name] = rec
        if rec["status"] != "ok":
            msg = f"upstream {name} {rec['status']}: {_first_line(rec.get('message', ''))}"
            return finish("skipped", f"upstream_{rec['status']}", msg,
                          upstream_reason_class=rec.get("reason_class", ""))

    env = json.loads((toolset_dir / "env.json").read_text()) if toolset_dir else {}
    python = python or env.get("python") or sys.executable
    # stale work from a killed run never counts: Snakemake runs one job per output directory,
    # so what a killed job of this stage left here is nobody's now
    remove_leftovers(out_dir, stage)
    work = Path(tempfile.mkdtemp(prefix=f".{stage}-work-", dir=out_dir))
    try:
        job = {"stage": stage, "cell": cell, "out_dir": str(out_dir), "params": params,
               "inputs": inputs}
        st.write_json_atomic(work / "job.json", job)
        env_vars = dict(os.environ)
        if env.get("env_dir") and python == env.get("python"):  # the toolset's interpreter
            env_vars = interpreter_env(env["env_dir"], env_vars)
        env_vars["PYTHONPATH"] = os.pathsep.join(
            [str(SRC_DIR)] + ([env_vars["PYTHONPATH"]] if env_vars.get("PYTHONPATH") else []))
        env_vars["OMP_NUM_THREADS"] = str(threads)  # what Snakemake scheduled the job with
        script = script or SCRIPTS_DIR / f"{stage}.py"
        with open(log, "w") as logfh:
            logfh.write(f"$ {python} {script} {work / 'job.json'}\n")
            logfh.flush()
            # stdout and stderr together, in order (native tools such as paddle2onnx's C++
            # print their reason on stdout and abort on stderr), streamed to the log as they
            # come (a long job can be followed) and kept (the tail) for classification
            returncode, stderr = _run_streaming([python, str(script), str(work / "job.json")],
                                                env_vars, logfh, timeout)
            if returncode is None:
                return finish("failed", "timeout", f"stage exceeded {timeout:.0f} s")
        result_path = work / "result.json"
        if not result_path.exists():
            reason, message = classify_exit(returncode, stderr)
            return finish("failed", reason, message)
        result = json.loads(result_path.read_text())
        if result["status"] == "ok" and stage in POST_HOOKS:
            try:
                result = POST_HOOKS[stage](result, out_dir, params)
            except (ValueError, KeyError) as exc:  # detections the scorer refuses: the row fails
                msg = str(exc) if isinstance(exc, ValueError) else f"a detection lacks the key {exc}"
                return finish("failed", "scoring_error", msg, mode=result["mode"],
                              artifacts=result["artifacts"], data=result["data"])
        return finish(result["status"], result["reason_class"], result["message"],
                      mode=result["mode"], backend=result.get("backend") or backend,
                      device=result.get("device", "cpu"), artifacts=result["artifacts"],
                      data=result["data"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quantsweep.stage")
    ap.add_argument("stage")
    ap.add_argument("--cell", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--toolset-dir", type=Path)
    ap.add_argument("--upstream", action="append", default=[], help="NAME=path/status.json")
    ap.add_argument("--params", default="{}")
    ap.add_argument("--log", required=True, type=Path)
    ap.add_argument("--declare", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--threads", type=int, default=1, help="the job's Snakemake threads")
    a = ap.parse_args(argv)
    upstream = dict(u.split("=", 1) for u in a.upstream)
    try:
        rec = run_stage(a.stage, a.cell, a.out, a.toolset_dir,
                        {k: Path(v) for k, v in upstream.items()}, json.loads(a.params), a.log,
                        a.declare, a.timeout, threads=a.threads)
    except InternalError as exc:
        print(f"quantsweep internal error in stage {a.stage} of {a.cell}:\n{exc}", file=sys.stderr)
        return 1
    print(f"{a.stage} {a.cell}: {rec['status']}"
          + (f" [{rec['reason_class']}] {_first_line(rec['message'])}" if rec["message"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
