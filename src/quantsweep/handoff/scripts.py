"""The scripts of a hand-off bundle: each cell's and calibration's ``run.sh``, ``run_all.sh``
and the README, as text."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

OUT = "out"  # each unit's results folder, in its own folder


def head(what: str) -> str:
    return ("#!/bin/sh\n"
            f"# {what}\n"
            "cd \"$(dirname \"$0\")\" && mkdir -p out || exit 1\n"
            "PY=${QUANTSWEEP_PYTHON:-python3}\n"
            "PYTHONPATH=../../lib${PYTHONPATH:+:$PYTHONPATH}\nexport PYTHONPATH\n")


def refused(why: str) -> str:
    """The body of a unit its TensorRT version cannot run: it says why and exits 3."""
    return f"echo {shlex.quote('refused: ' + why)} >&2\nexit 3\n"


def python_step(verb: str) -> str:
    return f"\"$PY\" -m quantsweep.handoff.gpu {verb} cell.json"


def cell(spec: dict[str, Any], req: Any, graph: Path) -> str:
    """The cell's run.sh: build (trtexec's exact command, or the Python API), then evaluate and
    time the engine. A refused cell only says why."""
    from quantsweep.backends.tensorrt_plan import CommandError, graph_inputs, plan
    from quantsweep.backends.trtexec import command

    top = head(spec["cell"])
    if "refused" not in spec:
        try:  # what the version cannot do; trtexec's line with the graph's real input names
            plan(req)
            line = shlex.join(command(req, inputs=graph_inputs(graph))) if spec["backend"] == "trtexec" else ""
        except CommandError as exc:
            spec["refused"] = str(exc)
    if "refused" in spec:  # the version cannot build this cell: nothing to run
        return top + refused(spec["refused"])
    if spec["backend"] == "trtexec":
        build = (f"{line} > {OUT}/trtexec.log 2>&1 || "
                 f"{{ echo \"trtexec failed: $PWD/{OUT}/trtexec.log\" >&2; exit 1; }}\n")
    else:
        build = python_step("build") + " || exit 1\n"
    return top + build + python_step("evaluate") + "\n"


def run_all(by_toolset: dict[str, list[str]], calibrations: dict[str, list[str]]) -> str:
    blocks = []
    for t, cells in by_toolset.items():
        units = " ".join(f"calibrate/{u}" for u in calibrations.get(t, []))
        dirs = " ".join(f"cells/{c}" for c in cells)
        blocks.append(f"""
if want {shlex.quote(t)}; then
  if py=$(python_of {shlex.quote(t)}); then
    for d in {units} {dirs}; do
      QUANTSWEEP_PYTHON="$py" sh "$d/run.sh" || echo "$d: exit $?" >&2
    done
  fi
fi""")
    return f"""#!/bin/sh
# Every cell of this bundle on a GPU host: per TensorRT toolset, an environment (envs/<toolset>,
# made once from requirements-<toolset>.txt; or the interpreter QUANTSWEEP_PYTHON names), then
# its calibrations and its cells. A failing cell does not stop the others.
#   sh run_all.sh [toolset ...]      (default: every toolset)
cd "$(dirname "$0")" || exit 1
SELECTED="$*"
want() {{ [ -z "$SELECTED" ] || case " $SELECTED " in *" $1 "*) ;; *) return 1;; esac; }}
python_of() {{
  if [ -n "$QUANTSWEEP_PYTHON" ]; then echo "$QUANTSWEEP_PYTHON"; return 0; fi
  if [ ! -f "envs/$1/.complete" ]; then
    python3 -m venv "envs/$1" && "envs/$1/bin/pip" install -r "requirements-$1.txt" >&2 \\
      && touch "envs/$1/.complete" || {{ echo "$1: could not install requirements-$1.txt" >&2; return 1; }}
  fi
  echo "$PWD/envs/$1/bin/python"
}}
{"".join(blocks)}
"""


def readme(cells: list[str], toolsets: list[str], val_images: str | None) -> str:
    listed = "\n".join(f"- `{c}`" for c in cells)
    where = (f"the val images are read from `{val_images}` on this host (checked against the "
             f"sweep's checksum when they come back)" if val_images else
             "the val split is in `val/`")
    return f"""# quantsweep GPU hand-off bundle

Every TensorRT cell of the sweep (toolsets {", ".join(toolsets)}). On a host with an NVIDIA GPU
and Python 3:

    sh run_all.sh                 # or: sh run_all.sh <toolset> ...

For each toolset it creates `envs/<toolset>` from `requirements-<toolset>.txt` once (TensorRT's
libraries come from https://pypi.nvidia.com, which the file names; set QUANTSWEEP_PYTHON to use
an interpreter you prepared instead), runs TensorRT's own calibration for `trt-calibrator` cells
(`calibrate/`), then each cell (`cells/<cell>/run.sh`): the exact `trtexec` command (log in
`out/trtexec.log`) or the TensorRT Python-API build (`out/build_api.json`, `out/build.log`), then
the engine's COCO evaluation with the sweep's own decoding and scoring (`out/detections.json`,
`out/metrics.json`) and its timing (`out/latency.json`; trtexec's own timing for trtexec cells);
{where}.

Copy the folder back and run `quantsweep ingest <this folder>` in the sweep's directory: each
cell's build, evaluation and latency become `mode: measured` on the GPU they ran on; then
`snakemake --cores all` rewrites the summary, the ledger and the report with them.

`cell.json` says which graph each cell builds (`graph_from`: the stage that made it) and how.

Cells:
{listed}
"""
