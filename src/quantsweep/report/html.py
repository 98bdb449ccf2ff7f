"""``results/report.html``: one self-contained page (inline SVG and CSS, no CDN, works offline)
with the matrix's status/AP heatmap, accuracy vs latency per toolset, the precision-loss ledger
per model as a waterfall, and the failures with their classified reasons and doctor findings.
Simulated numbers are drawn hollow and labelled; nothing simulated looks measured."""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

STATUS_COLORS = {"ok": "#2e7d32", "failed": "#c62828", "skipped": "#9e9e9e", "excluded": "#e0e0e0"}


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _figure(w: float, h: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text (searchable, small)
    return plt.subplots(figsize=(w, h))


def heatmap(df: Any) -> str:
    """Rows: model/toolset/opset; columns: quantizer/precision/backend; colour = status, text = AP
    (``sim`` marks a simulated value)."""
    from matplotlib.patches import Patch, Rectangle

    rows = sorted({(r.model, r.toolset, int(r.opset)) for r in df.itertuples()})
    cols = sorted({(r.quantizer, r.precision, r.backend) for r in df.itertuples()})
    fig, ax = _figure(1.0 + 0.55 * len(cols), 0.8 + 0.28 * len(rows))
    ri = {r: i for i, r in enumerate(rows)}
    ci = {c: i for i, c in enumerate(cols)}
    for r in df.itertuples():
        y, x = ri[(r.model, r.toolset, int(r.opset))], ci[(r.quantizer, r.precision, r.backend)]
        ax.add_patch(Rectangle((x, y), 0.95, 0.9, color=STATUS_COLORS.get(r.status, "#fff"),
                               hatch="///" if r.mode == "simulated" else None, fill=True))
        if isinstance(r.AP, float) and r.AP == r.AP:
            label = f"{r.AP:.3f}" + ("\nsim" if r.mode == "simulated" else "")
            ax.text(x + 0.47, y + 0.45, label, ha="center", va="center", fontsize=6, color="white")
    ax.set_xlim(0, len(cols))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks([i + 0.47 for i in range(len(cols))])
    ax.set_xticklabels(["/".join(c) for c in cols], rotation=70, ha="right", fontsize=6)
    ax.set_yticks([i + 0.45 for i in range(len(rows))])
    ax.set_yticklabels([f"{m} / {t} / opset{o}" for m, t, o in rows], fontsize=6)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    handles = [Patch(color=c, label=k) for k, c in STATUS_COLORS.items()]
    handles.append(Patch(facecolor=STATUS_COLORS["ok"], hatch="///", label="simulated"))
    ax.legend(handles=handles, fontsize=6, ncol=5, loc="lower left", bbox_to_anchor=(0, 1.0))
    return _svg(fig)


CPU_AXIS = "latency per image, ms (ONNX Runtime CPU, this machine, timed alone; bars: IQR)"
GPU_AXIS = "latency per image, ms (TensorRT engine on its GPU host; bars: IQR where timed by quantsweep)"


def scatter(df: Any, on_gpu: bool = False) -> str:
    """AP vs latency (the latency stage: median, IQR as error bars), one colour per toolset;
    simulated points hollow. The CPU rows, or (``on_gpu``) the engines timed on a GPU host."""
    where = ~_on_cpu(df) if on_gpu else _on_cpu(df)
    ok = df[(df.status == "ok") & df.AP.notna() & df.latency_ms.notna() & where]
    fig, ax = _figure(7, 4.2)
    for k, (toolset, g) in enumerate(sorted(ok.groupby("toolset"), key=lambda t: t[0])):
        color = f"C{k % 10}"
        for simulated, h in g.groupby(g["mode"] == "simulated"):
            if "latency_iqr_ms" in h:
                ax.errorbar(h.latency_ms, h.AP, xerr=h.latency_iqr_ms.fillna(0) / 2, fmt="none",
                            ecolor=color, elinewidth=0.8, alpha=0.7)
            ax.scatter(h.latency_ms, h.AP, s=28, label=f"{toolset}" + (" (simulated)" if simulated else ""),
                       facecolors="none" if simulated else color, edgecolors=color)
    ax.set_xlabel(GPU_AXIS if on_gpu else CPU_AXIS)
    ax.set_ylabel("AP (COCO, val split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return _svg(fig)


def _on_cpu(df: Any) -> Any:
    """Rows measured on this machine's CPU (not engines timed on a GPU host)."""
    return df["gpu"].fillna("") == "" if "gpu" in df else df["status"] == df["status"]


GPU_COLUMNS = ["cell", "device", "AP", "simulated_AP", "AP_delta_vs_simulated", "AP_delta_vs_fp32",
               "latency_ms", "latency_iqr_ms", "speedup_vs_fp32"]


def gpu_rows(df: Any) -> list[dict[str, Any]]:
    """TensorRT engines measured on a GPU host (ingested), with their CPU estimate beside them."""
    if "gpu" not in df:
        return []
    g = df[(df["gpu"].fillna("") != "") & df["AP"].notna()].astype(object)
    return [{c: ("" if r.get(c) is None or r.get(c) != r.get(c) else r.get(c)) for c in GPU_COLUMNS}
            for r in g.to_dict("records")]


LATENCY_TABLE = ["cell", "mode", "latency ms [95% CI]", "rounds", "stopped at", "speedup vs FP32"]


def latency_rows(df: Any) -> list[dict[str, Any]]:
    """The rows the latency stage timed here, their intervals and significance spelled out."""
    from quantsweep.report import speedup_text

    if "latency_ci_low_ms" not in df:
        return []
    out = []
    for r in df[df["latency_ms"].notna() & _on_cpu(df)].to_dict("records"):
        lo, hi = r.get("latency_ci_low_ms"), r.get("latency_ci_high_ms")
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo == lo and hi == hi and lo is not None else ""
        rounds = r.get("latency_rounds")
        out.append({"cell": r["cell"], "mode": r["mode"], "latency ms [95% CI]": f"{r['latency_ms']:.3f}{ci}",
                    "rounds": "" if rounds is None or rounds != rounds else int(rounds),
                    "stopped at": r.get("latency_stop") if isinstance(r.get("latency_stop"), str) else "",
                    "speedup vs FP32": speedup_text(r)})
    return out


def waterfall(steps: list[dict[str, Any]], model: str, toolset: str, opset: int) -> str:
    """Framework FP32 -> ONNX FP32 -> each INT8 variant: the AP change of every step."""
    chain = [s for s in steps if (s["model"], s["toolset"], s["opset"]) == (model, toolset, opset)]
    fig, ax = _figure(7, 0.6 + 0.32 * len(chain))
    for i, s in enumerate(chain):
        color = "#c62828" if s["delta"] < 0 else "#2e7d32"
        ax.barh(i, s["delta"], left=s["from_AP"], color="none" if s["mode"] == "simulated" else color,
                edgecolor=color, hatch="///" if s["mode"] == "simulated" else None)
        ax.text(max(s["from_AP"], s["to_AP"]), i, f"  {s['delta']:+.4f}" +
                (" (sim)" if s["mode"] == "simulated" else ""), va="center", fontsize=6)
    ax.set_yticks(range(len(chain)))
    ax.set_yticklabels([s["step"] for s in chain], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("AP")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def layer_bars(an: dict[str, Any]) -> str:
    """One analysed graph: per layer (most sensitive first, top 20) the output error when only
    that layer is quantized; the AP it costs alone, where that was measured."""
    layers = an["layers"]
    fig, ax = _figure(7, 0.6 + 0.22 * len(layers))
    recipe = set(an["recipe"]["float_layers"])
    for i, x in enumerate(layers):
        ax.barh(i, x["error_only_quantized"], color="#c62828" if x["layer"] in recipe else "#90a4ae")
        if x.get("ap_drop") is not None:
            ax.text(x["error_only_quantized"], i, f"  AP {-x['ap_drop']:+.4f} alone, "
                    f"{x['ap_recovered']:+.4f} in float", va="center", fontsize=6)
    ax.set_yticks(range(len(layers)))
    ax.set_yticklabels([f"{x['layer']} ({x['op']})" for x in layers], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("1 - cosine of the outputs vs FP32 with only this layer in INT8 "
                  "(red: kept in float by the recipe)")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(df: Any, ledger: dict[str, Any]) -> str:
    import pandas as pd

    df = df.copy()
    for c in ("AP", "latency_ms", "latency_iqr_ms"):  # a summary from before the latency stage
        df[c] = pd.to_numeric(df[c], errors="coerce") if c in df else float("nan")
    counts = df["status"].value_counts().to_dict()
    engines = gpu_rows(df)
    where = ("TensorRT engines were measured on a GPU host and ingested from its hand-off bundle: "
             f"{len(engines)} rows (device column), listed with their CPU estimate below"
             if engines else "TensorRT itself was not run")
    parts = [f"<h1>quantsweep report</h1><p>{len(df)} cells: "
             + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
             + ". Hatched or hollow marks are <b>simulated</b> (TensorRT INT8 estimated on the CPU); "
               f"every other number was measured on this machine. {where}.</p>",
             "<h2>Matrix: status and AP</h2>", heatmap(df),
             "<h2>Accuracy vs latency</h2>", scatter(df)]
    if engines:
        parts += ["<h2>TensorRT on the GPU host vs its CPU estimate</h2><p>AP of each engine, the "
                  "simulated AP of the same graph (tensorrt_sim) and their difference; latency of the "
                  "engine on its GPU (median ms per image; trtexec's own timing for trtexec cells).</p>",
                  _table(engines, GPU_COLUMNS), scatter(df, on_gpu=True)]
    timed = latency_rows(df)
    if timed:
        parts += ["<h2>Speedups on this machine's CPU</h2><p>Each graph timed alone against its "
                  "FP32 graph in interleaved rounds: medians with their 95% intervals (order "
                  "statistics), the rounds taken and why the stage stopped (<code>target_ci</code> "
                  "met, or <code>max_rounds</code>). A speedup whose interval contains 1.0x is "
                  "<b>not significant</b>: no win the rounds can tell from noise.</p>",
                  _table(timed, LATENCY_TABLE)]
    steps = ledger.get("steps", [])
    chains = sorted({(s["model"], s["toolset"], s["opset"]) for s in steps
                     if not s["step"].startswith("framework")})
    parts.append("<h2>Precision-loss ledger</h2>")
    if not chains:  # framework -> export steps only: no chain to draw, say so under the heading
        parts.append("<p>No quantization or engine steps in this sweep: every step of the ledger "
                     "is framework -> export (see the summary's AP_delta_vs_framework).</p>")
    for model, toolset, opset in chains:
        parts.append(f"<h3>{html.escape(model)} / {html.escape(toolset)} / opset{opset}</h3>")
        parts.append(waterfall(steps, model, toolset, opset))
    div = [{"cell": cell, "AP change": d.get("delta"),
            "first diverging tensor": (d.get("first") or {}).get("tensor", d.get("error", "none")),
            "op": (d.get("first") or {}).get("op_type", ""),
            "cosine": (d.get("first") or {}).get("cosine", "")}
           for cell, d in ledger.get("divergence", {}).items()]
    if div:
        parts += ["<h3>Where the INT8 graphs leave the FP32 graph (largest drop per chain)</h3>",
                  _table(div, ["cell", "AP change", "first diverging tensor", "op", "cosine"])]
    for key, an in ledger.get("analysis", {}).items():
        r = an["recipe"]
        parts += [f"<h3>Per-layer INT8 sensitivity: {html.escape(key)}</h3><p>{an['quantized_layers']} "
                  f"quantized layers; AP on {an['val_images']} val images: FP32 {an['AP_fp32']:.4f}, "
                  f"INT8 {an['AP_int8']:.4f}, recipe ({len(r['float_layers'])} layers in float) "
                  f"{r['AP_recipe']:.4f}{'' if r['target_met'] else ' (target not met)'}. "
                  f"Data: {html.escape(an['file'])}</p>", layer_bars(an)]
    bad = df[df.status == "failed"].astype(object).fillna("")
    parts += ["<h2>Failures</h2>",
              _table(bad.to_dict("records"), ["cell", "stage", "reason_class", "reason", "doctor"])]
    found = df[df["doctor"].fillna("") != ""].astype(object).fillna("")
    parts += ["<h2>Doctor findings</h2><p>Run <code>quantsweep doctor CELL</code> for the evidence "
              "and the fix.</p>", _table(found.to_dict("records"), ["cell", "status", "doctor"])]
    style = ("body{font-family:sans-serif;margin:24px;max-width:1400px}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;"
             "vertical-align:top}th{background:#f3f3f3}svg{max-width:100%;height:auto}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>quantsweep report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def main(argv: list[str]) -> int:
    import argparse

    import pandas as pd

    from quantsweep.status import write_text_atomic

    ap = argparse.ArgumentParser(prog="report")
    ap.add_argument("--summary", required=True)
    ap.add_argument("--ledger", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    df = pd.read_csv(a.summary)
    text = render(df, json.loads(Path(a.ledger).read_text()))
    write_text_atomic(a.out, text)
    print(f"{a.out}: {len(text) // 1024} KiB")
    return 0
