"""``quantsweep compare``: pivot tables of a sweep's summary, and what changed between two sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantsweep.report import speedup_significant

VALUES = ("AP", "AP50", "latency_ms", "speedup_vs_fp32", "AP_delta_vs_fp32", "status",
          "parity_max_abs", "parity_cosine")
EXPORT_VALUES = ("parity_max_abs", "parity_cosine")  # the export's, measured by ONNX Runtime
KEY = ["model", "toolset", "opset", "quantizer", "precision", "backend"]


class CompareError(ValueError):
    pass


def load(path: str | Path) -> Any:
    import pandas as pd

    p = Path(path)
    try:
        df = pd.read_csv(p)
    except FileNotFoundError:
        raise CompareError(f"{p}: no such summary (run `snakemake --cores all` first)") from None
    except Exception as exc:  # noqa: BLE001 - pandas' parser errors are many
        raise CompareError(f"{p}: not a readable CSV: {exc}") from None
    missing = [c for c in [*KEY, "status", "mode"] if c not in df.columns]
    if missing:
        raise CompareError(f"{p}: not a quantsweep summary (missing columns {missing})")
    return df


def _cell_text(row: Any, value: str) -> str:
    """A number that was not measured is never shown bare: simulated values are marked."""
    if row["status"] != "ok":
        return f"{row['status']}: {row['reason_class']}" if value != "status" else row["status"]
    if value == "status":
        return "ok"
    v = row[value]
    if v != v or v is None:  # NaN
        return ""
    if value in EXPORT_VALUES:
        return f"{v:.3g}"
    text = f"{v:.4f}" if isinstance(v, float) else str(v)
    if value == "speedup_vs_fp32" and speedup_significant(row) is False:
        text += " (n.s.)"  # its 95% interval contains 1.0: no win the rounds can tell from noise
    return f"{text} (sim)" if row["mode"] == "simulated" else text


ROWS = ["model", "toolset", "opset"]
COLS = ["quantizer", "precision", "backend"]


def axes(rows: list[str] | None, cols: list[str] | None) -> tuple[list[str], list[str]]:
    """The row and column axes; an axis in neither goes to the rows (no cell is hidden)."""
    rows, cols = list(rows or (ROWS if not cols else [])), list(cols or (COLS if not rows else []))
    for name, given in (("--rows", rows), ("--cols", cols)):
        bad = [a for a in given if a not in KEY]
        if bad:
            raise CompareError(f"{name}: {bad} are not axes; axes: {', '.join(KEY)}")
    both = [a for a in rows if a in cols]
    if both:
        raise CompareError(f"{both} given as rows and as columns")
    if not cols:
        raise CompareError("--cols: give at least one axis")
    return rows + [a for a in KEY if a not in rows and a not in cols], cols


def pivot(df: Any, value: str = "AP", baseline: str | None = None,
          rows: list[str] | None = None, cols: list[str] | None = None) -> Any:
    """Rows: model × toolset × opset; columns: quantizer × precision × backend (or the axes
    given); columns without any value are left out."""
    import pandas as pd

    if value not in VALUES:
        raise CompareError(f"--values {value!r}: one of {', '.join(VALUES)}")
    rows, cols = axes(rows, cols)
    df = df[df["status"] != "excluded"].copy()
    if baseline is not None:
        if baseline not in set(df["toolset"]):
            raise CompareError(f"--baseline {baseline!r} is not a toolset of this sweep; toolsets: "
                               f"{sorted(set(df['toolset']))}")
        if value in ("status",):
            raise CompareError("--baseline needs a numeric --values")
        base = df[df["toolset"] == baseline].set_index(["model", "opset", "quantizer", "precision",
                                                        "backend"])[value]
        idx = pd.MultiIndex.from_frame(df[["model", "opset", "quantizer", "precision", "backend"]])
        df[value] = df[value].to_numpy() - base.reindex(idx).to_numpy()
    df["text"] = [_cell_text(r, value) for _, r in df.iterrows()]
    df["column"] = df[cols].astype(str).agg("/".join, axis=1)
    table = df.pivot_table(index=rows, columns="column", values="text", aggfunc="first",
                           fill_value="")
    return table.loc[:, (table != "").any(axis=0)]


def fit(table: Any, width: int) -> str:
    """The markdown table within ``width`` characters: if it is wider, the column headers
    become letters (a legend says which is which), and if it is still wider, the columns are
    wrapped into several tables that each fit (the row labels repeated)."""
    text = str(table.reset_index().to_markdown(index=False, disable_numparse=True))
    if max(map(len, text.splitlines()), default=0) <= width:
        return text
    codes = [_code(i) for i in range(len(table.columns))]
    legend = [f"{c} = {name}" for c, name in zip(codes, table.columns, strict=True)]
    short = table.copy()
    short.columns = codes
    parts: list[str] = []
    group: list[str] = []
    for c in codes:
        trial = str(short[[*group, c]].reset_index().to_markdown(index=False, disable_numparse=True))
        if group and max(map(len, trial.splitlines())) > width:
            parts.append(str(short[group].reset_index().to_markdown(index=False, disable_numparse=True)))
            group = []
        group.append(c)
    if group:
        parts.append(str(short[group].reset_index().to_markdown(index=False, disable_numparse=True)))
    note = (f"columns abbreviated to fit {width} characters"
            + (f", in {len(parts)} tables" if len(parts) > 1 else "") + ":")
    return "\n\n".join(parts) + "\n\n" + note + "\n" + "\n".join(legend)


def _code(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"{chr(ord('A') + i // 26 - 1)}{chr(ord('A') + i % 26)}"


def diff(old: Any, new: Any) -> Any:
    """Cells whose status, mode or AP changed between two sweeps (and cells only in one), and
    cells whose code changed; ``differs_in`` says whether the two rows were made by different
    quantsweep code (``code_digest``), different tool versions, or both."""
    import pandas as pd

    cols = ["status", "reason_class", "mode", "AP"]
    prov = ["tool_versions", "code_digest"]
    a = old.reindex(columns=[*KEY, *cols, *prov]).set_index(KEY)
    b = new.reindex(columns=[*KEY, *cols, *prov]).set_index(KEY)
    j = a.merge(b, how="outer", left_index=True, right_index=True, suffixes=("_old", "_new"))
    changed = pd.Series(False, index=j.index)
    for c in cols:
        o, n = j[f"{c}_old"], j[f"{c}_new"]
        if c == "AP":
            delta = (n - o).abs()
            changed |= (delta > 1e-4) | (o.isna() != n.isna())
        else:
            changed |= o.fillna("") != n.fillna("")
    both = j["status_old"].notna() & j["status_new"].notna()
    def text(c: str) -> Any:
        return j[c].astype(object).where(j[c].notna(), "").astype(str)

    code = both & (text("code_digest_old") != text("code_digest_new"))
    tools = both & (text("tool_versions_old") != text("tool_versions_new"))
    j["differs_in"] = ["code and tool versions" if c and t else "code" if c else
                       "tool versions" if t else "" for c, t in zip(code, tools, strict=True)]
    out = j[changed | code].reset_index()
    out["AP_delta"] = out["AP_new"] - out["AP_old"]
    return out.drop(columns=[f"{c}_{s}" for c in prov for s in ("old", "new")])


def render(table: Any, fmt: str, width: int | None = None) -> str:
    if fmt == "csv":
        return str(table.to_csv())
    if fmt == "json":
        return str(table.reset_index().to_json(orient="records", indent=1))
    return fit(table, width) if width else str(table.reset_index().to_markdown(index=False, disable_numparse=True))
