"""The contract between the stage supervisor and a stage script (runs in any toolset env).

The supervisor writes ``job.json``; the script calls a library function that returns a
:class:`Result` or raises :class:`ToolFailure` for an expected failure of a tool; the script
writes ``result.json``. Only stdlib imports here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantsweep.status import write_json_atomic


class ToolFailure(Exception):
    """An expected failure of a tool: becomes a ``failed`` row, not a crashed rule."""

    def __init__(self, reason_class: str, message: str, detail: str = ""):
        super().__init__(message)
        self.reason_class = reason_class
        self.message = message
        self.detail = detail  # what the error names (a node, a tensor), when a classifier found it


class Skip(Exception):
    """The stage does not apply (e.g. the machine lacks what the backend needs)."""

    def __init__(self, reason_class: str, message: str):
        super().__init__(message)
        self.reason_class = reason_class
        self.message = message


@dataclass
class Result:
    status: str = "ok"
    reason_class: str = ""
    message: str = ""
    mode: str = "measured"
    backend: str = ""
    device: str = "cpu"
    artifacts: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    stage: str
    cell: str
    out_dir: Path
    params: dict[str, Any]
    inputs: dict[str, dict[str, Any]]

    def artifact(self, upstream: str, name: str) -> Path:
        try:
            return Path(self.inputs[upstream]["artifacts"][name])
        except KeyError:
            raise KeyError(f"upstream {upstream!r} has no artifact {name!r}") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_WORD = re.compile(r"(?i)(error|fatal|abort|fail|exception|unimplemented)")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


# what Paddle's C++ signal handler prints after any abort: never the reason itself
_CRASH_BOILERPLATE = re.compile(r"(FatalError: `.*` is detected by the operating system|"
                                r"^\[(TimeInfo|SignalInfo):|C\+\+ Traceback|Error Message Summary|"
                                r"^-+$)")
_PY_TRACEBACK = re.compile(r"^Traceback \(most recent call last\):", re.M)


def salient_line(text: str) -> str:
    """The line of a tool's output that says what went wrong: a traceback's last line, else
    a line tagged ``[ERROR]``, else the last line that speaks of an error (a C++ abort is
    often followed by unrelated warnings and a signal handler's report; Paddle puts the real
    error last, under "In transformed code:")."""
    lines = [ln.strip() for ln in strip_ansi(text).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not _CRASH_BOILERPLATE.search(ln)]
    if not lines:
        return ""
    if _PY_TRACEBACK.search(strip_ansi(text)):
        return lines[-1]
    tagged = [ln for ln in lines if ln.startswith("[ERROR]")]
    if tagged:
        return tagged[-1]
    hits = [ln for ln in lines if _ERROR_WORD.search(ln) and "warn" not in ln.lower()]
    return hits[-1] if hits else lines[-1]


def describe_exit(returncode: int, output: str, what: str = "the tool process") -> tuple[str, str]:
    """(reason_class, message) for a tool process that failed without a Python-level result:
    a signal is ``tool_crash``; the message leads with the line that names the error."""
    import signal

    tail = strip_ansi(output.strip()[-3000:])
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return "tool_crash", f"{what} died by {name}: {salient_line(tail)}\n{tail}"
    return "tool_error", f"exit code {returncode}: {salient_line(tail)}\n{tail}"


@contextlib.contextmanager
def tool_call(reason_class: str, what: str = "") -> Iterator[None]:
    """Turn any exception raised inside a tool into a classified ToolFailure."""
    try:
        yield
    except (ToolFailure, Skip):
        raise
    except Exception as exc:  # noqa: BLE001 - the tool's own exception is data
        msg = f"{what}: " if what else ""
        text = strip_ansi(str(exc)).strip()
        head = salient_line(text) if "\n" in text else text  # the summary shows line 1
        full = f"\n{text}" if head != text else ""
        raise ToolFailure(reason_class, f"{msg}{type(exc).__name__}: {head}{full}") from exc


def read_job(path: str | Path) -> Job:
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return Job(stage=raw["stage"], cell=raw["cell"], out_dir=Path(raw["out_dir"]),
               params=raw["params"], inputs=raw["inputs"])


def main(func: Callable[[Job], Result]) -> None:
    """Entry point of every ``scripts/<stage>.py``: ``main(library_function)``."""
    job_path = Path(sys.argv[1])
    job = read_job(job_path)
    result_path = job_path.with_name("result.json")
    try:
        res = func(job)
    except ToolFailure as exc:
        traceback.print_exc()
        res = Result(status="failed", reason_class=exc.reason_class, message=exc.message,
                     mode="skipped")
    except Skip as exc:
        res = Result(status="skipped", reason_class=exc.reason_class, message=exc.message,
                     mode="skipped")
    write_json_atomic(result_path, asdict(res))
    record_loaded_modules(job)


def record_loaded_modules(job: Job) -> None:
    """With ``QUANTSWEEP_LOADED_MODULES`` set (tests/test_codedigest.py): write the quantsweep
    modules this stage process loaded, to check them against the stage's code digest."""
    folder = os.environ.get("QUANTSWEEP_LOADED_MODULES")
    if not folder:
        return
    p = job.params
    loaded = sorted(m for m in sys.modules if m.startswith("quantsweep."))
    write_json_atomic(Path(folder) / f"{job.stage}-{job.cell.replace('/', '_')}.json",
                      {"stage": job.stage, "quantizer": p.get("quantizer", ""),
                       "backend": p.get("backend", ""),
                       "source": (p.get("model_spec") or {}).get("source", ""), "loaded": loaded})
