"""Quantize stage. ``none`` passes the exported model through unchanged."""

from __future__ import annotations

from quantsweep.job import Job, Result, Skip


def run(job: Job) -> Result:
    q = job.params["quantizer"]
    model = job.artifact("export", "model")
    if q == "none":
        return Result(artifacts={"model": str(model)}, data={"quantizer": "none"})
    raise Skip("not_implemented", f"quantizer {q!r} is not implemented in this quantsweep version")
