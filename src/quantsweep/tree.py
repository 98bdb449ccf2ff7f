"""The results tree a plan needs, and whether the tree on disk is whole (``quantsweep verify``).

Snakemake (since 7.7) does not remake a missing file whose downstream files are up to date:
a per-cell ``status.json`` deleted by a killed ``--forcerun`` stays missing while
``summary.csv`` exists (snakemake/snakemake#1978). So every file listed here is a target of
the workflow's ``all`` rule: a missing one is remade by the next ``snakemake --cores all``,
and the summary after it. ``verify`` checks the same list on disk.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantsweep import matrix, paths
from quantsweep.status import STATUSES

# a model of these sources has no framework stage: its graph is a file or another cell's export
GRAPH_SOURCES = ("onnx",)
# sources whose framework stage builds the demo from the weights trained here
DEMO_SOURCES = ("demo-torch", "demo-paddle")
TRAIN_STATUS = "demo/train/status.json"  # below the resources directory


@dataclass(frozen=True)
class Expected:
    """One file the plan needs: ``owner`` is the cell (or the stage directory of a stage
    several cells share) it belongs to."""

    owner: str
    stage: str
    path: str


def _add(out: dict[str, Expected], owner: str, stage: str, results: str, filename: str,
         **axes: Any) -> None:
    p = paths.pattern(results, stage, filename).format(**axes)
    out.setdefault(p, Expected(owner, stage, p))


def _stage_files(out: dict[str, Expected], owner: str, stage: str, results: str, **axes: Any) -> None:
    _add(out, owner, stage, results, "status.json", **axes)
    if stage in ("evaluate", "framework_eval"):
        _add(out, owner, stage, results, "metrics.json", **axes)
    if stage == "toolset":
        _add(out, owner, stage, results, "versions.txt", **axes)


def expected_files(cfg: dict[str, Any], results: str, resources: str = "resources") -> list[Expected]:
    """Every per-cell file the configured plan needs, upstream stages included, in a stable
    order (the paths are the ones the workflow's rules write)."""
    from quantsweep.latency import timed_backends

    timed = timed_backends(cfg)
    out: dict[str, Expected] = {}
    models = cfg["models"]
    planned = matrix.planned(cfg)
    if any(models[c.model]["source"] in DEMO_SOURCES for c in planned):
        p = f"{resources}/{TRAIN_STATUS}"
        out[p] = Expected("demo/train", "train", p)
    for c in planned:
        ax = c.axes()
        spec = models[c.model]
        _stage_files(out, paths.STAGE_DIRS["toolset"].format(**ax), "toolset", results, **ax)
        if spec["source"] in GRAPH_SOURCES:
            if "from" in spec:  # another toolset's export of the same opset
                src = {**ax, **spec["from"]}
                _stage_files(out, paths.STAGE_DIRS["export"].format(**src), "export", results, **src)
        else:
            if "from" in spec:  # a framework model another toolset saved
                src = {**ax, **spec["from"]}
                _stage_files(out, paths.STAGE_DIRS["framework"].format(**src), "framework", results, **src)
            for stage in ("framework", "framework_eval"):
                _stage_files(out, paths.STAGE_DIRS[stage].format(**ax), stage, results, **ax)
        for stage in ("export", "quantize"):
            _stage_files(out, paths.STAGE_DIRS[stage].format(**ax), stage, results, **ax)
        for stage in ("build", "evaluate", *(("latency",) if c.backend in timed else ())):
            _stage_files(out, c.id, stage, results, **ax)
    for a in matrix.analyzed(cfg):
        _stage_files(out, paths.STAGE_DIRS["analyze"].format(**a), "analyze", results, **a)
    return list(out.values())


@dataclass
class Verdict:
    """What ``verify`` found: holes (missing or corrupt files, incomplete jobs, leftovers of
    killed jobs, stale summary rows) make the tree not whole; foreign cells are only named."""

    missing: list[Expected] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    incomplete: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    stale_rows: list[tuple[str, str]] = field(default_factory=list)  # (cell, why)
    foreign: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def whole(self) -> bool:
        return not (self.missing or self.corrupt or self.incomplete or self.leftovers
                    or self.stale_rows)


def _check_json(path: Path) -> str | None:
    """Why ``path`` is not a readable stage file, or None."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"not valid JSON ({exc})"
    if path.name == "status.json" and (not isinstance(obj, dict) or obj.get("status") not in STATUSES):
        return "not a quantsweep status file (no valid 'status')"
    if not isinstance(obj, dict):
        return "not a JSON object"
    return None


def corrupt_files(files: list[Expected], root: Path) -> list[tuple[str, str]]:
    """The existing JSON files of ``files`` that do not parse as what they should be."""
    out = []
    for e in files:
        p = root / e.path
        if p.suffix == ".json" and p.exists():
            why = _check_json(p)
            if why:
                out.append((e.path, why))
    return out


def incomplete_markers(root: Path) -> list[str]:
    """The files Snakemake marks as being written by a job that never finished (its file
    persistence: one marker per output, named by the url-safe base64 of the path, long names
    split into ``@``-prefixed directories)."""
    d = root / ".snakemake" / "incomplete"
    out = []
    for m in sorted(d.rglob("*")) if d.is_dir() else []:
        if not m.is_file() or m.name == "migration_underway":
            continue
        parts = [p.removeprefix("@") for p in m.relative_to(d).parts]
        try:
            out.append(base64.urlsafe_b64decode("".join(parts).encode()).decode())
        except (ValueError, UnicodeDecodeError):
            out.append(f"{m} (an unreadable marker)")
    return out


def leftovers(results: Path) -> list[str]:
    """Work directories and temporary files of stage jobs that were killed."""
    if not results.is_dir():
        return []
    found = [p for p in results.rglob(".*-work-*") if p.is_dir()]
    found += [p for p in results.rglob(".*.tmp") if p.is_file()]
    return sorted(str(p) for p in found)


def remove_leftovers(found: list[str]) -> None:
    """Delete what ``leftovers`` found (work of killed jobs: no stage result is in it)."""
    import shutil

    for p in map(Path, found):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def cell_stage_statuses(results: Path, stage: str) -> dict[str, Path]:
    """The status file of a per-cell ``stage`` (build, evaluate, latency) of every cell that has
    one on disk, by cell id."""
    return {str(p.parent.parent.relative_to(results)): p
            for p in sorted(results.glob(paths.stage_glob(stage)))}


def _cell_dirs(results: Path) -> set[str]:
    """Cell ids that have stage files on disk (a build, evaluate or latency status)."""
    return {cell for stage in ("build", "evaluate", "latency")
            for cell in cell_stage_statuses(results, stage)}


def _stale_rows(results: Path, plan: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Summary rows that do not say what their cell's files say (status, stage, AP)."""
    import pandas as pd

    from quantsweep.report.summary import cell_row

    csv = results / "summary.csv"
    if not csv.exists():
        return [("summary.csv", "missing")]
    try:
        df = pd.read_csv(csv)
    except Exception as exc:  # noqa: BLE001 - any unreadable table is a hole
        return [("summary.csv", f"unreadable: {exc}")]
    if "cell" not in df.columns:
        return [("summary.csv", "no 'cell' column")]
    rows = {r["cell"]: r for r in df.to_dict("records")}
    out = []
    for planned in plan:
        cell = planned["cell"]
        row = rows.get(cell)
        if row is None:
            out.append((cell, "no row in summary.csv"))
            continue
        try:
            want = cell_row(results, planned)
        except Exception as exc:  # noqa: BLE001 - its files are reported on their own
            out.append((cell, f"its files cannot be read: {exc}"))
            continue
        for key in ("status", "stage", "reason_class", "AP"):
            have, exp = row.get(key), want.get(key)
            if pd.isna(have) and (exp is None or exp == ""):
                continue
            if key == "AP" and exp is not None and not pd.isna(have) and abs(float(have) - exp) < 1e-9:
                continue
            if have != exp:
                out.append((cell, f"summary says {key}={have!r}, its files say {exp!r}"))
                break
    return out


def verify(cfg: dict[str, Any], root: Path, results: str, resources: str = "resources") -> Verdict:
    """Check the tree under ``root`` (the workflow's directory) against the plan of ``cfg``."""
    files = expected_files(cfg, results, resources)
    v = Verdict(checked=len(files))
    v.missing = [e for e in files if not (root / e.path).exists()]
    v.corrupt = corrupt_files(files, root)
    v.incomplete = incomplete_markers(root)
    res = root / results
    v.leftovers = leftovers(res)
    plan = matrix.plan_records(matrix.expand(cfg))
    known = {p["cell"] for p in plan}
    v.foreign = sorted(_cell_dirs(res) - known) if res.is_dir() else []
    if not (v.missing or v.corrupt):  # rows are compared with whole files only
        v.stale_rows = _stale_rows(res, plan)
    return v


def format_verdict(v: Verdict, restore: str) -> str:
    """The verdict for a person: what is missing, by owner, and the command that restores it."""
    sections = [
        ("missing file(s):", [f"{e.path}  ({e.stage} of {e.owner})" for e in v.missing]),
        ("corrupt file(s):", [f"{p}: {why}" for p, why in v.corrupt]),
        ("file(s) marked incomplete by Snakemake (a job that never finished):", v.incomplete),
        ("leftover(s) of killed jobs (no result is in them; `quantsweep verify --clean` deletes "
         "them, as the next run of their stage does):", v.leftovers),
        ("summary row(s) that do not match their cell's files:", [f"{c}: {why}" for c, why in v.stale_rows]),
        ("foreign cell(s) (not in this config's plan; left as they are):", v.foreign),
    ]
    lines = []
    for title, items in sections:
        if items:
            lines.append(f"{len(items)} {title}")
            lines += [f"  {x}" for x in items]
    if v.whole:
        lines.append(f"the results tree is whole: {v.checked} files of the plan present and readable")
    else:
        lines.append(f"the results tree has holes; to restore it run:\n  {restore}")
    return "\n".join(lines)
