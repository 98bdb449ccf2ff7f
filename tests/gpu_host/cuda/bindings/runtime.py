"""``from cuda.bindings import runtime``: cuda-python's runtime double (tests/trt_double.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # tests/
import trt_double  # noqa: E402

sys.modules[__name__] = trt_double.make_cudart()
