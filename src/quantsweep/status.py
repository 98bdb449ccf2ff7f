"""The status protocol: every stage of every cell writes ``status.json``.

Fields (DESIGN.md): stage, cell, status (ok|failed|skipped), reason_class, message, mode
(measured|simulated|skipped), backend, device, tool_versions, started, duration_s, log.
Everything is written to a temporary name and renamed, so a killed run leaves nothing
half-written that looks complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from quantsweep import __version__

STATUSES = ("ok", "failed", "skipped")
MODES = ("measured", "simulated", "skipped")
FIELDS = ("stage", "cell", "status", "reason_class", "message", "mode", "backend", "device",
          "tool_versions", "started", "duration_s", "log")


def _read_umask() -> int:
    mask = os.umask(0o022)  # reading it means setting it: once, at import, before any thread
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temporary name, then rename: never half-written. The file gets the mode a
    plain ``open`` would give it (0644 under the usual umask), not mkstemp's private 0600, so
    a team sharing a results folder can read it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """``obj`` as JSON, indented for a reader; ``indent=None`` for bulk data (detections): the
    json module encodes indented output in Python, not in C (0.20 s against 0.07 s for an
    evaluation's 20,000 detections)."""
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


def make_status(stage: str, cell: str, status: str, *, reason_class: str = "", message: str = "",
                mode: str | None = None, backend: str = "", device: str = "cpu",
                tool_versions: dict[str, str] | None = None, started: str = "",
                duration_s: float = 0.0, log: str = "", **extra: Any) -> dict[str, Any]:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if mode is None:
        mode = "measured" if status == "ok" else "skipped"
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if status == "skipped" and mode != "skipped":
        raise ValueError("a skipped stage has mode 'skipped'")
    rec = {"stage": stage, "cell": cell, "status": status, "reason_class": reason_class,
           "message": message, "mode": mode, "backend": backend, "device": device,
           "tool_versions": tool_versions or {}, "started": started,
           "duration_s": round(float(duration_s), 3), "log": log,
           "quantsweep_version": __version__}
    rec.update(extra)
    return rec


def write_status(path: str | Path, record: dict[str, Any]) -> None:
    missing = [f for f in FIELDS if f not in record]
    if missing:
        raise ValueError(f"status record lacks {missing}")
    write_json_atomic(path, record)


class StatusFileError(ValueError):
    pass


def read_status(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StatusFileError(f"{p}: unreadable status file: {exc}") from None
    if not isinstance(rec, dict) or rec.get("status") not in STATUSES:
        raise StatusFileError(f"{p}: not a quantsweep status file (no valid 'status')")
    return rec


def stage_status(results: str | Path, stage: str, **axes: Any) -> dict[str, Any] | None:
    """The status record of ``stage`` for the cell ``axes``, or None when the stage has not run."""
    from quantsweep.paths import fill

    p = fill(results, stage, "status.json", **axes)
    return read_status(p) if p.exists() else None

