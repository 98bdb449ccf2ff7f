"""The one place where artifact paths are built.

A cell is ``{model}/{toolset}/opset{opset}/{quantizer}/{precision}/{backend}``; stages that
do not depend on every axis live at the matching prefix. The same templates serve the
Snakefile (wildcards left in) and the library (``fill``).
"""

from __future__ import annotations

import re
from pathlib import Path

# Stage directories, relative to the results directory. Wildcards in braces.
TOOLSET = "toolsets/{toolset}"
FRAMEWORK = "{model}/{toolset}/framework"
FRAMEWORK_EVAL = "{model}/{toolset}/framework/evaluate"
EXPORT = "{model}/{toolset}/opset{opset}/export"
QUANTIZE = "{model}/{toolset}/opset{opset}/{quantizer}/quantize"
ANALYZE = "{model}/{toolset}/opset{opset}/{quantizer}/analyze"
CELL = "{model}/{toolset}/opset{opset}/{quantizer}/{precision}/{backend}"
BUILD = CELL + "/build"
EVALUATE = CELL + "/evaluate"
LATENCY = CELL + "/latency"

STAGE_DIRS = {
    "toolset": TOOLSET,
    "framework": FRAMEWORK,
    "framework_eval": FRAMEWORK_EVAL,
    "export": EXPORT,
    "quantize": QUANTIZE,
    "analyze": ANALYZE,
    "build": BUILD,
    "evaluate": EVALUATE,
    "latency": LATENCY,
}

# Wildcard constraints for the Snakefile: names never contain '/', opsets are integers.
NAME_RE = r"[A-Za-z0-9._-]+"
WILDCARD_CONSTRAINTS = {
    "model": NAME_RE,
    "toolset": NAME_RE,
    "quantizer": NAME_RE,
    "precision": NAME_RE,
    "backend": NAME_RE,
    "dataset": NAME_RE,
    "opset": r"\d+",
}


def pattern(results: str | Path, stage: str, filename: str = "") -> str:
    """A Snakemake path pattern for ``stage`` (wildcards kept)."""
    base = f"{results}/{STAGE_DIRS[stage]}"
    return f"{base}/{filename}" if filename else base


def stage_glob(stage: str, filename: str = "status.json") -> str:
    """A glob, below the results directory, matching ``filename`` of ``stage`` for every value of
    its axes (``*/*/opset*/export/status.json`` for the export)."""
    return f"{re.sub(r'{[a-z]+}', '*', STAGE_DIRS[stage])}/{filename}"


def fill(results: str | Path, stage: str, filename: str = "", **axes: object) -> Path:
    """The concrete path of ``stage`` for the given axis values."""
    return Path(pattern(results, stage, filename).format(**axes))


def cell_id(model: str, toolset: str, opset: int | str, quantizer: str, precision: str,
            backend: str) -> str:
    """The name of a cell: its path below the results directory."""
    return CELL.format(model=model, toolset=toolset, opset=opset, quantizer=quantizer,
                       precision=precision, backend=backend)


def dataset_dir(resources: str | Path, dataset: str) -> Path:
    return Path(resources) / "datasets" / dataset


def log_path(logs: str | Path, stage_dir: str | Path) -> Path:
    return Path(logs) / Path(stage_dir) / "log.txt"
