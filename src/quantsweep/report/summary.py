"""``results/summary.csv``: one row per cell of the matrix, excluded/skipped/failed included.

The row's status is that of the first stage in chain order that did not end ``ok`` and was
not merely skipped because of an upstream stage: the root cause, with its stage and reason.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from quantsweep import paths
from quantsweep.quantize import recipe_parent
from quantsweep.status import stage_status, write_text_atomic

KEY_PACKAGES = ("paddlepaddle", "paddle2onnx", "paddleslim", "torch", "onnx", "onnxruntime",
                "tensorrt", "nvidia-modelopt", "numpy")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
CHAIN = ("toolset", "framework", "export", "quantize", "build", "evaluate")
# the latency stage's figures: medians with their 95% intervals, the rounds taken and why the
# stage stopped adding rounds (quantsweep.latency)
LATENCY_COLUMNS = ("latency_ms", "latency_iqr_ms", "latency_ci_low_ms", "latency_ci_high_ms",
                   "latency_rounds", "latency_stop", "fp32_latency_ms", "speedup_vs_fp32",
                   "speedup_ci_low", "speedup_ci_high", "speedup_significant")


def cell_row(results: Path, cell: dict[str, Any]) -> dict[str, Any]:
    axes = {k: cell[k] for k in ("model", "toolset", "opset", "quantizer", "precision", "backend")}
    row: dict[str, Any] = {"cell": cell["cell"], **axes}
    if cell["status"] == "excluded":
        row.update(status="excluded", stage="", reason_class="excluded", reason=cell["reason"],
                   mode="skipped")
        return row
    # each stage's path template takes the axes it depends on and ignores the rest
    stages = {s: stage_status(results, s, **axes) for s in CHAIN}
    parent = recipe_parent(cell["quantizer"])
    chain: tuple[str, ...] = CHAIN
    if parent:  # a recipe cell: its parent's analysis comes before its own quantize stage
        stages["analyze"] = stage_status(results, "analyze", **{**axes, "quantizer": parent})
        chain = (*CHAIN[:3], "analyze", *CHAIN[3:])
    # stages a GPU host ran from a hand-off bundle (quantsweep.handoff.ingest) replace the ones
    # that could not run here: the chain starts at the first of them
    first = next((i for i, st in enumerate(chain) if (stages.get(st) or {}).get("ingested_from")), 0)
    chain = chain[first:]
    root = None
    for stage in chain:
        rec = stages[stage]
        if rec is None:
            continue
        row[f"{stage}_status"] = rec["status"]
        if root is None and rec["status"] != "ok" and not rec["reason_class"].startswith("upstream_"):
            root = (stage, rec)
    ev = stages["evaluate"]
    if root is None and (ev is None or ev["status"] != "ok"):
        root = ("evaluate", ev or {"status": "failed", "reason_class": "missing",
                                   "message": "no evaluate status"})
    if root is None:
        row.update(status="ok", stage="", reason_class="", reason="")
    else:
        stage, rec = root
        row.update(status=rec["status"], stage=stage, reason_class=rec["reason_class"],
                   reason=(rec["message"].strip().splitlines() or [""])[0][:400])
    row["mode"] = ev["mode"] if ev else "skipped"
    # the quantsweep that wrote the row's last stage (a stage rerun after an upgrade says so)
    row["quantsweep_version"] = next((r.get("quantsweep_version", "") for r in reversed(list(stages.values()))
                                      if r), "")
    # the code of every stage the row went through (quantsweep.codedigest), as one digest
    digests = [f"{s}:{r['code_digest']}" for s, r in stages.items() if r and r.get("code_digest")]
    row["code_digest"] = hashlib.sha256("\n".join(digests).encode()).hexdigest()[:12] if digests else ""
    row["device"] = ev["device"] if ev and ev["status"] == "ok" else ""
    tv = {**(stages["toolset"] or {}).get("tool_versions", {}),
          **(stages["build"] or {}).get("tool_versions", {})}  # an ingested build names its TensorRT
    row["tool_versions"] = "; ".join(f"{k}={tv[k]}" for k in KEY_PACKAGES if k in tv)
    exp = stages["export"]
    if exp and exp["status"] in ("ok", "failed") and "exporter" in exp.get("data", {}):
        row["opset_written"] = exp["data"].get("opset")
        ex = exp["data"]["exporter"]
        row["exporter"] = f"{ex['name']} {ex['version']}" + "".join(
            f" + repair {r}" for r in ex.get("repairs", []))
        row["export_s"] = exp["data"].get("export_s")
        par = exp["data"].get("parity") or {}
        row["parity_ok"] = par.get("ok")
        row["parity_cosine"] = par.get("worst_cosine")
        row["parity_max_abs"] = par.get("worst_max_abs")
    metrics_path = paths.fill(results, "evaluate", "metrics.json", **axes)
    if ev and ev["status"] == "ok" and metrics_path.exists():
        m = json.loads(metrics_path.read_text())
        for k in METRICS:
            row[k] = m.get(k)
        # the evaluation loop's own timing, taken while other jobs share the machine: a
        # throughput, labelled as such; latency_ms comes from the latency stage
        row["eval_latency_ms"] = ev["data"].get("latency_ms_mean")
        row["images_per_s"] = ev["data"].get("images_per_s")
        row["foreign_detections"] = ev["data"].get("foreign_detections")
        conv = ev["data"].get("input_conversions") or []
        row["input_conversions"] = "; ".join(f"{c['name']}:{c['fed']}->{c['bound']}" for c in conv)
    lat = stage_status(results, "latency", **axes)
    if lat is not None:  # timed alone on the machine, against the FP32 graph (quantsweep.latency)
        row["latency_status"] = lat["status"]
        if lat["status"] == "ok":  # a GPU host's timing has no FP32 pair (add_fp32_sibling)
            for k in LATENCY_COLUMNS:
                row[k] = lat["data"].get(k)
    b = stages["build"]
    if b and b["status"] == "ok" and b["device"] not in ("", "cpu"):
        # an engine built on a GPU (here, or on a GPU host and ingested from a hand-off bundle)
        row["gpu"] = b["device"]
        m = b.get("data", {}).get("metrics", {})
        row["gpu_latency_ms"] = m.get("latency_mean_ms")
        row["gpu_throughput_qps"] = m.get("throughput_qps")
        row["engine_from"] = b.get("ingested_from", "")
    if b and b["status"] == "failed" and isinstance(b.get("data", {}).get("fallback"), dict):
        row["_fallback"] = b["data"]["fallback"]
    if parent:
        row.update(recipe_info(results, axes, parent, stages["quantize"]))
    analysis = stage_status(results, "analyze", **axes) if not parent else None
    if analysis is not None:  # the cell's graph was analysed: its most sensitive layers
        row["analyze_status"] = analysis["status"]
        top = analysis.get("data", {}).get("top_layers") or []
        row["analyze_top_layers"] = "; ".join(
            f"{t['layer']} ({t['ap_recovered']:+.4f} AP in float)" if t.get("ap_recovered") is not None
            else t["layer"] for t in top[:3])
    fw_path = paths.fill(results, "framework_eval", "metrics.json", **axes)
    if fw_path.exists():
        fm = json.loads(fw_path.read_text())
        if fm.get("status") == "ok":
            row["framework_AP"] = fm["AP"]
            if row.get("AP") is not None:
                row["AP_delta_vs_framework"] = round(row["AP"] - fm["AP"], 6)
    # the size of what the cell runs: the quantizer's graph (or the export, for quantizer none)
    built = next((s for s in (stages["quantize"], exp) if s and s["status"] == "ok"), None)
    model_file = built["artifacts"].get("model") if built else None
    if model_file and Path(model_file).is_file():
        row["model_bytes"] = Path(model_file).stat().st_size
    return row


def recipe_info(results: Path, axes: dict[str, Any], parent: str,
                quantize: dict[str, Any] | None) -> dict[str, Any]:
    """A recipe cell's link to its parent cell and what its recipe promised."""
    out: dict[str, Any] = {"recipe_of": paths.cell_id(**{**axes, "quantizer": parent})}
    rec = ((quantize or {}).get("data") or {}).get("recipe")
    if rec:
        out["recipe_float_layers"] = "; ".join(rec["float_layers"])
        out["recipe_target_met"] = rec["target_met"]
        if not rec["target_met"]:
            out["recipe_note"] = rec.get("note", "")
    return out


def add_recipe_links(rows: list[dict[str, Any]]) -> None:
    """Each recipe row gets the AP it won back over its parent INT8 row and its speed relative
    to it."""
    by_cell = {r["cell"]: r for r in rows}
    for r in rows:
        par = by_cell.get(r.get("recipe_of") or "")
        if par is None or r.get("AP") is None or par.get("AP") is None:
            continue
        r["AP_delta_vs_parent"] = round(r["AP"] - par["AP"], 6)
        # each speedup was timed against the same FP32 graph in its own interleaved rounds: their
        # ratio holds even when the two latency runs saw different load on the machine
        if r.get("speedup_vs_fp32") and par.get("speedup_vs_fp32"):
            r["speed_vs_parent"] = round(r["speedup_vs_fp32"] / par["speedup_vs_fp32"], 3)


def add_fp32_sibling(rows: list[dict[str, Any]]) -> None:
    """Each quantized or reduced-precision row gets the AP and latency of its FP32 sibling: the
    same model, toolset and opset with quantizer none at fp32, on the same backend when that
    one has a result, else on ONNX Runtime."""
    by_key = {(r["model"], r["toolset"], r["opset"], r["quantizer"], r["precision"], r["backend"]): r
              for r in rows}
    for r in rows:
        if r["quantizer"] == "none" and r["precision"] == "fp32" or r.get("AP") is None:
            continue
        sib = None
        for backend in (r["backend"], "onnxruntime"):
            cand = by_key.get((r["model"], r["toolset"], r["opset"], "none", "fp32", backend))
            if cand is not None and cand.get("AP") is not None:
                sib = cand
                break
        if sib is None:
            continue
        r["fp32_cell"] = sib["cell"]
        r["AP_delta_vs_fp32"] = round(r["AP"] - sib["AP"], 6)
        # speedup_vs_fp32 is the latency stage's own (both graphs timed in the same rounds); an
        # engine timed on a GPU host has none: the FP32 engine's latency on the same GPU
        if r.get("speedup_vs_fp32") is None and r.get("gpu") and sib.get("gpu") == r["gpu"] \
                and r.get("latency_ms") and sib.get("latency_ms"):
            r["fp32_latency_ms"] = sib["latency_ms"]
            r["speedup_vs_fp32"] = round(sib["latency_ms"] / r["latency_ms"], 3)


def add_simulated_sibling(rows: list[dict[str, Any]]) -> None:
    """Each TensorRT row (tensorrt_api, trtexec) gets the CPU estimate of the same graph: the
    tensorrt_sim row of the same model, opset, quantizer and precision (any toolset), whose
    numbers stay labelled simulated."""
    sims = {(r["model"], r["opset"], r["quantizer"], r["precision"]): r for r in rows
            if r["backend"] == "tensorrt_sim" and r.get("status") == "ok"}
    for r in rows:
        if r["backend"] in ("tensorrt_api", "trtexec") and "fallback_of" not in r:
            sib = sims.get((r["model"], r["opset"], r["quantizer"], r["precision"]))
            if sib is not None:
                r["simulated_sibling"] = sib["cell"]
                r["simulated_AP"] = sib.get("AP")
                if r.get("AP") is not None and sib.get("AP") is not None:  # the estimate's error
                    r["AP_delta_vs_simulated"] = round(r["AP"] - sib["AP"], 6)


def fallback_row(failed: dict[str, Any], fb: dict[str, Any]) -> dict[str, Any]:
    """The linked row of a fallback build: the failed INT8 cell's axes, its own status."""
    row = {k: failed[k] for k in ("model", "toolset", "opset", "quantizer", "backend")}
    ok = fb["status"] == "ok"
    layers = ", ".join(f"{k}:{v}" for k, v in (fb.get("layer_precisions") or {}).items())
    row.update(cell=f"{failed['cell']}+fallback-{fb['policy']}", precision=f"{failed['precision']}+{fb['policy']}",
               fallback_of=failed["cell"], status="ok" if ok else "failed", stage="" if ok else "build",
               reason_class="" if ok else fb.get("reason_class", ""),
               reason=(f"built after {fb.get('after')} with {layers or fb.get('precision')}" if ok
                       else fb.get("message", "")),
               mode="measured" if ok else "skipped", build_status=fb["status"])
    if ok:
        row["gpu"] = fb.get("device", "")
        m = (fb.get("data") or {}).get("metrics", {})
        row["gpu_latency_ms"] = m.get("latency_mean_ms")
        row["gpu_throughput_qps"] = m.get("throughput_qps")
    return row


def doctor_codes(results: Path, row: dict[str, Any], annotations: Path | None) -> str:
    """The doctor's errors and warnings for a cell, by code (``quantsweep doctor`` has the
    evidence)."""
    from quantsweep import doctor

    if row.get("status") == "excluded" or "fallback_of" in row:
        return ""
    axes = {k: row[k] for k in ("model", "toolset", "opset", "quantizer", "precision", "backend")}
    try:
        found = doctor.diagnose(results, axes, annotations)
    except doctor.DoctorError:
        return ""
    except Exception as exc:  # noqa: BLE001 - a check that breaks must not lose the summary
        return f"doctor failed: {type(exc).__name__}: {exc}"[:200]
    codes = {f"{f['severity']}:{f['code']}": None for f in found if f["severity"] != "info"}
    return "; ".join(codes)


def build_summary(results: str | Path, plan: list[dict[str, Any]],
                  annotations: Path | None = None) -> Any:
    import pandas as pd

    rows = []
    for planned in plan:
        row = cell_row(Path(results), planned)
        row["doctor"] = doctor_codes(Path(results), row, annotations)
        fb = row.pop("_fallback", None)
        rows.append(row)
        if fb:
            rows.append(fallback_row(row, fb))
    add_fp32_sibling(rows)
    add_simulated_sibling(rows)
    add_recipe_links(rows)
    cols = ["cell", "model", "toolset", "opset", "quantizer", "precision", "backend", "status",
            "stage", "reason_class", "reason", "mode", "device", *METRICS, "framework_AP",
            "AP_delta_vs_framework", "fp32_cell", "AP_delta_vs_fp32", *LATENCY_COLUMNS,
            "eval_latency_ms", "images_per_s",
            "model_bytes", "foreign_detections",
            "opset_written", "exporter", "export_s", "parity_ok", "parity_cosine", "parity_max_abs",
            "input_conversions", "tool_versions", "quantsweep_version", "code_digest",
            "gpu", "gpu_latency_ms", "gpu_throughput_qps",
            "engine_from", "fallback_of", "simulated_sibling", "simulated_AP", "AP_delta_vs_simulated",
            "recipe_of", "recipe_float_layers", "recipe_target_met", "recipe_note",
            "AP_delta_vs_parent", "speed_vs_parent", "analyze_status", "analyze_top_layers", "doctor",
            *[f"{s}_status" for s in CHAIN], "latency_status"]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df.columns:
            df[c] = None
    return df[cols]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="summary")
    ap.add_argument("--results", required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--manifest", help="the dataset manifest: the doctor's detection checks")
    a = ap.parse_args(argv)
    plan = json.loads(Path(a.plan).read_text())
    ann = None
    if a.manifest and Path(a.manifest).exists():
        ann = Path(json.loads(Path(a.manifest).read_text())["splits"]["val"]["annotations"])
    df = build_summary(a.results, plan, ann)
    write_text_atomic(a.out, df.to_csv(index=False))
    counts = df["status"].value_counts().to_dict()
    print(f"{len(df)} cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0
