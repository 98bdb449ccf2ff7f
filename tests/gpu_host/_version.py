"""The TensorRT version the double plays: the cell's (``cell.json`` in the working directory),
else ``TRT_DOUBLE_VERSION``."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: trt_double


def version() -> str:
    spec = Path("cell.json")
    if spec.is_file():
        return str(json.loads(spec.read_text())["tensorrt_version"])
    return os.environ.get("TRT_DOUBLE_VERSION", "10.13.0.35")
