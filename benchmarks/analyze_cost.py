"""Cost of the sensitivity analysis (the ``analyze`` stage) vs one evaluation of the same INT8
cell, measured side by side in one run on the quantized graphs a sweep already made (target
<= 5x for the demo), and how it grows with the number of quantized layers.

For each analysed graph (a ``.../<quantizer>/analyze/status.json`` under the results folder):
the analysis is run again from its quantize stage's graphs and the sweep's own parameters, then
the INT8 graph is evaluated once on the whole val split with the evaluation loop; both use the
same threads. Prints layers, seconds, the ratio, and the analysis seconds per quantized layer.

    python benchmarks/analyze_cost.py [--results results] [--config config/config.yaml ...]
"""
import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from quantsweep import analyze  # noqa: E402
from quantsweep.backends import make_runner  # noqa: E402
from quantsweep.config import read_yaml, validate_config  # noqa: E402
from quantsweep.evaluate.loop import evaluate_runner, model_class_names  # noqa: E402
from quantsweep.job import Job  # noqa: E402
from quantsweep.status import read_status  # noqa: E402


def config(files: list[str]) -> dict:
    cfg: dict = {}
    for f in files:  # later files over earlier ones, as Snakemake's --configfile does
        for k, v in read_yaml(f).items():
            cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return validate_config(cfg)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="results")
    ap.add_argument("--config", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    cfg = config(a.config)
    manifest = f"resources/datasets/{cfg['dataset']['name']}/manifest.json"
    found = sorted(Path(a.results).glob("*/*/opset*/*/analyze/status.json"))
    if not found:
        print(f"no analysed graph under {a.results}: run a sweep with analyze: true first")
        return 1
    rows = []
    for st in found:
        model, toolset, opset, quantizer = st.parts[-6:-2]
        q = read_status(st.parent.parent / "quantize" / "status.json")
        spec = {"name": model, **cfg["models"][model]}
        params = {"model_spec": spec, "backend": "onnxruntime", "quantizer": quantizer,
                  "evaluate": {**cfg["evaluate"], "threads": a.threads},
                  "dataset": {"manifest": manifest}, "analyze": cfg["analyze"], "threads": a.threads}
        out = Path(tempfile.mkdtemp(prefix="analyze-cost-"))
        try:
            t0 = time.perf_counter()
            res = analyze.run(Job("analyze", str(st.parent), out, params, {"quantize": q}))
            t_an = time.perf_counter() - t0
            t0 = time.perf_counter()
            runner = make_runner("onnxruntime", q["artifacts"]["model"], {"threads": a.threads})
            dec = spec["decode"]
            names = model_class_names(q["artifacts"]["float_model"], dec) \
                if dec["label_map"] == "names" else None
            evaluate_runner(runner, spec, json.loads(Path(manifest).read_text()), params["evaluate"], names)
            t_ev = time.perf_counter() - t0
        finally:
            shutil.rmtree(out, ignore_errors=True)
        d = res.data
        rows.append((f"{model}/{toolset}/{opset}/{quantizer}", d["quantized_layers"], d["graphs_run"],
                     t_an, d["outputs_s"], d["ap_s"], t_ev))
    print(f"{'graph':58s} {'layers':>6s} {'graphs':>6s} {'analyze s':>9s} {'outputs s':>9s} "
          f"{'AP s':>6s} {'eval s':>7s} {'ratio':>6s} {'s/layer':>7s}")
    for name, layers, graphs, t_an, t_out, t_ap, t_ev in rows:
        print(f"{name:58s} {layers:6d} {graphs:6d} {t_an:9.2f} {t_out:9.2f} {t_ap:6.2f} {t_ev:7.2f} "
              f"{t_an / t_ev:5.2f}x {t_an / layers:7.3f}")
    print("target: analysis <= 5x one evaluation of the same cell (demo)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
