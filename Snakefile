# quantsweep: export -> quantize -> calibrate -> build -> evaluate -> report, swept over a
# matrix of tool versions. Every rule runs a thin script from scripts/ through the stage
# supervisor (quantsweep.stage); the logic lives in src/quantsweep/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/toolsets.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/quantize.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/build.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/latency.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/ledger.json",
        f"{RESULTS}/report.html",
        TREE,
