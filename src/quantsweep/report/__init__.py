"""Reports: the summary table (one row per cell), the ledger, the HTML report, compare."""

from __future__ import annotations

from typing import Any


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else f


def speedup_significant(row: Any) -> bool | None:
    """Whether a row's speedup interval excludes 1.0 (None: the row has no interval)."""
    lo, hi = _num(row.get("speedup_ci_low")), _num(row.get("speedup_ci_high"))
    if lo is None or hi is None:
        return None
    return not (lo <= 1.0 <= hi)


def speedup_text(row: Any) -> str:
    """A speedup for people: with its 95% interval, and "not significant" when the interval
    contains 1.0 (the rounds cannot tell it from no change)."""
    sp = _num(row.get("speedup_vs_fp32"))
    if sp is None:
        return ""
    sig = speedup_significant(row)
    if sig is None:
        return f"{sp:.3f}x"
    ci = f"[{_num(row.get('speedup_ci_low')):.3f}, {_num(row.get('speedup_ci_high')):.3f}]"
    return f"{sp:.3f}x {ci}" if sig else f"{sp:.3f}x not significant {ci}"
