# cheap bookkeeping: on the machine that runs Snakemake, never submitted to a cluster
localrules: plan, summary, ledger, report


rule plan:
    """The expanded matrix, excluded cells included."""
    output:
        f"{RESULTS}/plan.json",
    params:
        cells=spec(matrix.plan_records(CELLS)),
    log:
        "logs/plan.log",
    run:
        from quantsweep.status import write_text_atomic

        write_text_atomic(output[0], params.cells)


rule summary:
    """One row per cell of the matrix: results/summary.csv."""
    input:
        plan=f"{RESULTS}/plan.json",
        manifest=MANIFEST,
        toolsets=sorted({P("toolset", "status.json").format(toolset=c.cell.toolset) for c in CELLS}),
        evaluate=[P("evaluate", "metrics.json").format(**c.axes()) for c in PLANNED],
        analyze=[P("analyze", "status.json").format(**a) for a in ANALYZED],
        latency=[P("latency", "status.json").format(**c.axes()) for c in PLANNED
                 if c.backend in LATENCY_BACKENDS],
        framework=[P("framework_eval", "metrics.json").format(model=m, toolset=t)
                   for m, t in framework_pairs()],
    output:
        report(f"{RESULTS}/summary.csv", caption="../report/summary.rst", category="Results"),
    params:
        code=code("summary"),  # editing the code that writes the table rewrites it
    log:
        "logs/summary.log",
    shell:
        "{PY} {SCRIPTS}/summary.py --results $(dirname {output}) --plan {input.plan} --out {output} "
        "--manifest {input.manifest} "
        "> {log} 2>&1 || (cat {log} >&2; exit 1)"


rule ledger:
    """The precision-loss ledger (results/ledger.json and .csv): where the AP goes along each
    chain, and the first tensor where the largest INT8 drop's graph leaves the FP32 graph."""
    input:
        summary=f"{RESULTS}/summary.csv",
        manifest=MANIFEST,
    output:
        json=f"{RESULTS}/ledger.json",
        csv=report(f"{RESULTS}/ledger.csv", caption="../report/ledger.rst", category="Results"),
    params:
        code=code("ledger"),
        specs=spec({m: {k: v for k, v in model_spec(m).items() if k != "export"}
                          for m in sorted({c.model for c in PLANNED})}),
    log:
        "logs/ledger.log",
    shell:
        "{PY} {SCRIPTS}/ledger.py --summary {input.summary} --results $(dirname {output.json}) "
        "--specs {params.specs:q} --manifest {input.manifest} --out {output.json} "
        "> {log} 2>&1 || (cat {log} >&2; exit 1)"


rule report:
    """results/report.html: heatmap, accuracy vs latency, ledger waterfalls, failures; offline."""
    input:
        summary=f"{RESULTS}/summary.csv",
        ledger=f"{RESULTS}/ledger.json",
    output:
        report(f"{RESULTS}/report.html", caption="../report/report.rst", category="Report"),
    params:
        code=code("report"),
    log:
        "logs/report.log",
    shell:
        "{PY} {SCRIPTS}/report.py --summary {input.summary} --ledger {input.ledger} --out {output} "
        "> {log} 2>&1 || (cat {log} >&2; exit 1)"
