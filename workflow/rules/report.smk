rule plan:
    """The expanded matrix, excluded cells included."""
    output:
        f"{RESULTS}/plan.json",
    params:
        cells=json.dumps([{**pc.cell.axes(), "cell": pc.cell.id, "status": pc.status,
                           "reason": pc.reason} for pc in CELLS]),
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
        framework=[P("framework_eval", "metrics.json").format(model=m, toolset=t)
                   for m, t in framework_pairs()],
    output:
        f"{RESULTS}/summary.csv",
    log:
        "logs/summary.log",
    shell:
        "{PY} {SCRIPTS}/summary.py --results $(dirname {output}) --plan {input.plan} --out {output} "
        "--manifest {input.manifest} "
        "> {log} 2>&1 || (cat {log} >&2; exit 1)"
