"""Model sources: where a model comes from and how its framework stage builds it. The top of
the house: a source may import anything below it; export, quantize, build and evaluate never
import a source (they read what the framework stage wrote, e.g. ``source.json``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# the framework stage of each model source: "module:function"
FRAMEWORK: dict[str, str] = {
    "demo-torch": "quantsweep.demo.framework:run",
    "demo-paddle": "quantsweep.demo.framework:run",
    "paddle": "quantsweep.sources.paddle_source:framework",
    "torch": "quantsweep.sources.torch_source:framework",
    "ultralytics": "quantsweep.sources.ultralytics_source:framework",
}

# the quantsweep modules a source's ``source.json`` names for the later stages (the module
# factory, the QAT hooks), which import them by name (backends.torch_module)
NAMED_MODULES: dict[str, tuple[str, ...]] = {
    "demo-torch": ("quantsweep.demo.torch_model", "quantsweep.demo.train"),
    "ultralytics": ("quantsweep.sources.ultralytics_source",),
}


def framework_stage(source: str) -> Callable[[Any], Any]:
    mod, _, fn = FRAMEWORK[source].partition(":")
    return getattr(importlib.import_module(mod), fn)  # type: ignore[no-any-return]


def run_framework(job: Any) -> Any:
    """The framework stage of the job's model source."""
    return framework_stage(job.params["model_spec"]["source"])(job)
