"""Expand the configured matrix into cells (planned or excluded, with the reason)."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

from quantsweep import paths
from quantsweep.quantize import RECIPE_QUANTIZERS, RECIPE_SUFFIX, recipe_parent

AXES = ("model", "toolset", "opset", "quantizer", "precision", "backend")
_BLOCK_KEYS = {"model": "models", "toolset": "toolsets", "opset": "opsets",
               "quantizer": "quantizers", "precision": "precisions", "backend": "backends"}


@dataclass(frozen=True, order=True)
class Cell:
    model: str
    toolset: str
    opset: int
    quantizer: str
    precision: str
    backend: str

    @property
    def id(self) -> str:
        return paths.cell_id(**self.axes())

    def axes(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    status: str  # planned | excluded
    reason: str = ""


def _matches(cell: Cell, match: dict[str, Any]) -> bool:
    for axis, want in match.items():
        values = want if isinstance(want, list) else [want]
        if getattr(cell, axis) not in values:
            return False
    return True


def _analyzed_cells(block: dict[str, Any]) -> list[Cell]:
    """The int8 cells of a block with ``analyze: true`` (its quantized graphs)."""
    if not block.get("analyze"):
        return []
    lists = [block[_BLOCK_KEYS[a]] for a in AXES]
    cells = (Cell(*combo) for combo in itertools.product(*lists))
    return [c for c in cells if c.precision == "int8" and c.quantizer != "none"]


def expand(cfg: dict[str, Any]) -> list[PlannedCell]:
    """All cells of the matrix, in a stable order; excluded ones keep their first reason. A
    block with ``analyze: true`` adds a recipe cell (quantizer ``<q>-recipe``) beside each of its
    int8 cells whose quantizer takes a recipe; it shares its parent's exclusion."""
    seen: dict[Cell, None] = {}
    for block in cfg["matrix"]:
        lists = [block[_BLOCK_KEYS[a]] for a in AXES]
        for combo in itertools.product(*lists):
            seen.setdefault(Cell(*combo), None)
        for c in _analyzed_cells(block):
            if c.quantizer in RECIPE_QUANTIZERS:
                seen.setdefault(Cell(**{**c.axes(), "quantizer": c.quantizer + RECIPE_SUFFIX}), None)
    out = []
    for cell in seen:
        parent = recipe_parent(cell.quantizer)
        ruled = Cell(**{**cell.axes(), "quantizer": parent}) if parent else cell
        reason = next((r["reason"] for r in cfg.get("exclude", []) if _matches(ruled, r["match"])),
                      None)
        out.append(PlannedCell(cell, "excluded" if reason else "planned", reason or ""))
    return out


def analyzed(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The quantized graphs the sensitivity analysis runs on: (model, toolset, opset, quantizer)
    of the planned int8 cells of blocks with ``analyze: true``."""
    planned_cells = set(planned(cfg))
    keys = {(c.model, c.toolset, c.opset, c.quantizer) for block in cfg["matrix"]
            for c in _analyzed_cells(block) if c in planned_cells}
    return [dict(zip(("model", "toolset", "opset", "quantizer"), k, strict=True))
            for k in sorted(keys)]


def plan_records(rows: list[PlannedCell]) -> list[dict[str, Any]]:
    """The plan as ``plan.json`` holds it (and the summary reads it): axes, cell id, status, reason."""
    return [{**pc.cell.axes(), "cell": pc.cell.id, "status": pc.status, "reason": pc.reason}
            for pc in rows]


def planned(cfg: dict[str, Any]) -> list[Cell]:
    return [p.cell for p in expand(cfg) if p.status == "planned"]


def format_table(rows: list[PlannedCell]) -> str:
    header = ("cell", "status", "reason")
    body = [(p.cell.id, p.status, p.reason) for p in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(2)]
    lines = [f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]}"]
    lines += [f"{c:<{widths[0]}}  {s:<{widths[1]}}  {r}".rstrip() for c, s, r in body]
    n_ex = sum(p.status == "excluded" for p in rows)
    lines.append(f"{len(rows)} cells: {len(rows) - n_ex} planned, {n_ex} excluded")
    return "\n".join(lines)
