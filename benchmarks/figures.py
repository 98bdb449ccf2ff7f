"""One line per figure: what every benchmark prints for `benchmarks/run_all.py`.

A figure is ``{"benchmark", "figure", "value", "goal", "met"}``; a figure that could not be
measured has ``value`` and ``met`` null and a ``reason``, never a made-up value."""

from __future__ import annotations

import json
from typing import Any


def figure(benchmark: str, name: str, value: float, goal: str, **extra: Any) -> dict[str, Any]:
    """``goal``: "<= X" or ">= X"."""
    op, _, bound = goal.partition(" ")
    met = value <= float(bound) if op == "<=" else value >= float(bound)
    return {"benchmark": benchmark, "figure": f"{benchmark}.{name}", "value": round(value, 4),
            "goal": goal, "met": met, **extra}


def unmeasured(benchmark: str, name: str, goal: str, reason: str) -> dict[str, Any]:
    return {"benchmark": benchmark, "figure": f"{benchmark}.{name}", "value": None, "goal": goal,
            "met": None, "reason": reason}


def emit(figs: list[dict[str, Any]]) -> None:
    for f in figs:
        print(json.dumps(f), flush=True)
