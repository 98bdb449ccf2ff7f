"""``import tensorrt``: the TensorRT double (tests/trt_double.py) of the cell's version."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _version  # noqa: E402
import trt_double  # noqa: E402

sys.modules[__name__] = trt_double.make_tensorrt(_version.version())
