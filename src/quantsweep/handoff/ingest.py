"""``quantsweep ingest BUNDLE``: what the GPU host wrote in a bundle's ``out/`` folders, read back
into the cells' stages (``mode: measured``, device = the GPU they name):

- a calibration's cache -> the ``trt-calibrator`` quantize stage of its toolset (the cache is
  copied into the results and inspected against the graph, as ``quantsweep cache inspect`` does);
- trtexec's log or the Python-API build -> the build stage;
- ``metrics.json`` -> the evaluate stage, refused when it was scored on a val split whose checksum
  is not this sweep's;
- the engine's timing (``latency.json``, or trtexec's own) -> the latency stage.

The logs and results are copied into the results folder, so the rows do not depend on the bundle
staying where it is. Cells whose ``out/`` is missing or incomplete are named, and what they have
is kept; ingesting the same bundle twice writes the same files.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantsweep import matrix, paths
from quantsweep.handoff import OUT, HandoffError
from quantsweep.status import make_status, write_json_atomic, write_status


@dataclass
class Ingested:
    """What an ingest did: per cell, the status of each stage it wrote; the cells (or stages)
    whose results were not in the bundle."""

    cells: dict[str, dict[str, str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except ValueError as exc:
        raise HandoffError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(rec, dict) or "status" not in rec:
        raise HandoffError(f"{path}: not a result the GPU host's quantsweep writes (no 'status')")
    return rec


def _copy(src: Path, dst_dir: Path) -> str:
    dst_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst_dir / src.name)
    return str(dst_dir / src.name)


class _Ingest:
    def __init__(self, bundle_dir: Path, results: Path, checksum: str):
        self.bundle, self.results, self.checksum = bundle_dir, results, checksum
        manifest_path = bundle_dir / "manifest.json"
        if not manifest_path.is_file():
            raise HandoffError(f"{bundle_dir}: no manifest.json: not a quantsweep bundle")
        try:
            self.manifest = json.loads(manifest_path.read_text())
            self.manifest["cells"]  # noqa: B018 - the key every bundle has
        except (ValueError, KeyError) as exc:
            raise HandoffError(f"{manifest_path}: not a bundle manifest ({exc})") from None
        if self.manifest.get("format") != 2:
            raise HandoffError(f"{manifest_path}: a bundle of format {self.manifest.get('format', 1)}; "
                               f"this quantsweep reads format 2: make the bundle again")
        self.done = Ingested()
        self.common = {"code_digest": self.manifest.get("code_digest", ""),
                       "bundle_quantsweep_version": self.manifest.get("quantsweep_version", "")}

    def _status(self, stage: str, axes: dict[str, Any], cell_id: str, status: str,
                where: Path, **kw: Any) -> dict[str, Any]:
        rec = make_status(stage, cell_id, status, ingested_from=str(where), **self.common, **kw)
        write_status(paths.fill(self.results, stage, "status.json", **axes), rec)
        self.done.cells.setdefault(cell_id, {})[stage] = status
        return rec

    # ---- calibrations (quantize stage of trt-calibrator cells) ----------------------------

    def calibration(self, unit: str, slug: str) -> dict[str, Any] | None:
        from quantsweep import calib
        from quantsweep.calib.inspect import inspect_cache

        d = self.bundle / "calibrate" / slug
        spec = json.loads((d / "cell.json").read_text())
        axes = {k: spec[k] for k in ("model", "toolset", "opset", "quantizer")}
        tv = {"tensorrt": spec["tensorrt_version"]}
        if "refused" in spec:
            return self._status("quantize", axes, unit, "skipped", d, reason_class="not_available",
                                message=spec["refused"], tool_versions=tv)
        res = _read(d / OUT / "calibrate.json")
        if res is None:
            self.done.missing.append(f"{unit}: no {d / OUT / 'calibrate.json'} (not calibrated yet)")
            return None
        if res["status"] != "ok":
            return self._status("quantize", axes, unit, res["status"], d, reason_class=res["reason_class"],
                                message=f"on the GPU host: {res['message']}", tool_versions=tv,
                                log=str(d / OUT / "calibration.log"))
        qdir = paths.fill(self.results, "quantize", **axes)
        cache = _copy(d / OUT / "calibration.cache", qdir)
        onnx = (d / spec["onnx"]).resolve()
        try:
            report = inspect_cache(calib.read(cache), onnx, (spec["tensorrt_version"],))
        except calib.CacheError as exc:
            return self._status("quantize", axes, unit, "failed", d, reason_class="invalid_cache",
                                message=f"the GPU host's calibration cache: {exc}", tool_versions=tv)
        errors = [f for f in report["findings"] if f["severity"] == "error"]
        log = _copy(d / OUT / "calibration.log", qdir) if (d / OUT / "calibration.log").is_file() else ""
        return self._status(
            "quantize", axes, unit, "ok", d, tool_versions=tv, log=log,
            message=f"{len(errors)} error(s) in the cache TensorRT wrote: {errors[0]['message']}" if errors else "",
            artifacts={"model": str(onnx), "float_model": str(onnx), "calibration_cache": cache},
            data={**res["data"], "quantizer": "trt-calibrator", "int8": False, "cache_inspection": report})

    # ---- cells -------------------------------------------------------------------------------

    def cell(self, cell_id: str, slug: str) -> None:
        d = self.bundle / "cells" / slug
        spec = json.loads((d / "cell.json").read_text())
        axes = {k: spec[k] for k in matrix.AXES}
        common = {"backend": spec["backend"], "graph_from": spec["graph_from"],
                  "tool_versions": {"tensorrt": spec["tensorrt_version"]}}
        if "refused" in spec:
            if spec.get("refused_stage") == "quantize":  # a calibration refusal is its quantize row
                self._downstream("build", axes, cell_id, d, "quantize", "skipped", spec["refused"])
                return
            rec = self._status("build", axes, cell_id, "failed", d, reason_class="unsupported_precision",
                               message=spec["refused"], **common)
            self._downstream("evaluate", axes, cell_id, d, "build", "failed", rec["message"])
            return
        build = self._build(d, spec, axes, common)
        if build is None:
            return
        if build["status"] != "ok":
            self._downstream("evaluate", axes, cell_id, d, "build", build["status"], build["message"])
            return
        if self._evaluate(d, spec, axes, build) or spec["backend"] == "trtexec":
            self._latency(d, spec, axes, build)

    def _downstream(self, first: str, axes: dict[str, Any], cell_id: str, where: Path, upstream: str,
                    status: str, message: str) -> None:
        """The stages from ``first`` on, skipped after ``upstream`` ended ``status``, as the stage
        supervisor writes them (so that no stage looks older than the one before it)."""
        line = (message.strip().splitlines() or [""])[0][:300]
        for stage in ("build", "evaluate")[("build", "evaluate").index(first):]:
            self._failed_evaluation(axes, cell_id, where, "skipped", f"upstream_{status}",
                                    f"upstream {upstream} {status}: {line}", stage=stage)
            upstream, status = stage, "skipped"

    def _build(self, d: Path, spec: dict[str, Any], axes: dict[str, Any],
               common: dict[str, Any]) -> dict[str, Any] | None:
        from quantsweep.backends.trtexec import parse_log

        cell_id, out = spec["cell"], d / OUT
        bdir = paths.fill(self.results, "build", **axes)
        log, api = out / "trtexec.log", out / "build_api.json"
        if spec["backend"] == "trtexec" and log.is_file():
            kept = _copy(log, bdir)
            parsed = parse_log(log.read_text(errors="replace"))
            gpu = parsed.get("gpu", "GPU (not named in the log)")
            common["tool_versions"]["tensorrt"] = parsed.get("tensorrt_version", spec["tensorrt_version"])
            kw = {"device": gpu, "log": kept, "data": parsed, **common}
            if parsed["errors"]:
                e = parsed["errors"][0]
                return self._status("build", axes, cell_id, "failed", d, reason_class=e["class"],
                                    message=f"trtexec on {gpu}: {e['detail']} ({e['meaning']})", **kw)
            if parsed["passed"]:
                return self._status("build", axes, cell_id, "ok", d, artifacts={"trtexec_log": kept}, **kw)
            return self._status("build", axes, cell_id, "failed", d, reason_class="trtexec_failed",
                                message=f"{kept}: trtexec did not pass and no error line was recognised", **kw)
        res = _read(api) if spec["backend"] == "tensorrt_api" else None
        if res is None:
            self.done.missing.append(f"{cell_id}: no {log if spec['backend'] == 'trtexec' else api} "
                                     f"(not built yet)")
            return None
        kept = _copy(out / "build.log", bdir) if (out / "build.log").is_file() else ""
        if res["status"] == "ok":
            return self._status("build", axes, cell_id, "ok", d, device=res["device"], log=kept,
                                data=res["data"], **common)
        return self._status("build", axes, cell_id, res["status"], d, reason_class=res["reason_class"],
                            message=f"on the GPU host: {res['message']}", log=kept, **common)

    def _evaluate(self, d: Path, spec: dict[str, Any], axes: dict[str, Any], build: dict[str, Any]) -> bool:
        """The evaluate stage from the GPU host's results; True when it has AP."""
        cell_id, out = spec["cell"], d / OUT
        res = _read(out / "evaluate.json")
        edir = paths.fill(self.results, "evaluate", **axes)
        kw = {"backend": spec["backend"], "device": (res or {}).get("device", build["device"]),
              "graph_from": spec["graph_from"], "tool_versions": build["tool_versions"]}
        if res is None:
            self.done.missing.append(f"{cell_id}: built, but no {out / 'evaluate.json'} (not evaluated yet)")
            self._failed_evaluation(axes, cell_id, d, "skipped", "not_evaluated",
                                    f"the engine was built on {build['device']}, but {out} has no "
                                    f"evaluation: run {d / 'run.sh'} on the GPU host again", **kw)
            return False
        if res["status"] != "ok":
            self._failed_evaluation(axes, cell_id, d, res["status"], res["reason_class"],
                                    f"on the GPU host: {res['message']}", data=res.get("data", {}), **kw)
            return False
        metrics = json.loads((out / "metrics.json").read_text())
        theirs = metrics.get("val_checksum")
        if theirs != self.checksum:
            self._failed_evaluation(axes, cell_id, d, "failed", "val_split_mismatch",
                                    f"{out / 'metrics.json'} was scored on a val split of checksum "
                                    f"{theirs}; this sweep's val split has checksum {self.checksum}: "
                                    f"AP refused", **kw)
            return False
        dets = _copy(out / "detections.json", edir)
        write_json_atomic(edir / "metrics.json", {**metrics, "mode": "measured"})
        self._status("evaluate", axes, cell_id, "ok", d, data={**res["data"], "AP": metrics["AP"]},
                     artifacts={"detections": dets, "metrics": str(edir / "metrics.json")}, **kw)
        return True

    def _failed_evaluation(self, axes: dict[str, Any], cell_id: str, where: Path, status: str,
                           reason_class: str, message: str, stage: str = "evaluate", **kw: Any) -> None:
        """A stage that failed (or was refused, or skipped) on its way back: its status, and for
        the evaluate stage the metrics.json its rule declares, saying the same."""
        rec = self._status(stage, axes, cell_id, status, where, reason_class=reason_class,
                           message=message, **kw)
        if stage == "evaluate":
            write_json_atomic(paths.fill(self.results, "evaluate", "metrics.json", **axes),
                              {k: rec[k] for k in ("status", "reason_class", "message", "mode")})

    def _latency(self, d: Path, spec: dict[str, Any], axes: dict[str, Any], build: dict[str, Any]) -> None:
        cell_id, out = spec["cell"], d / OUT
        kw = {"backend": spec["backend"], "device": build["device"], "tool_versions": build["tool_versions"]}
        if spec["backend"] == "trtexec":  # trtexec's own timing of its engine
            m = build["data"].get("metrics", {})
            if "latency_median_ms" not in m:
                self.done.missing.append(f"{cell_id}: trtexec's log has no performance summary")
                return
            data = {"latency_ms": m["latency_median_ms"], "latency_iqr_ms": None,
                    "latency_p99_ms": m.get("latency_p99_ms"), "timed_by": "trtexec"}
        else:
            res = _read(out / "latency.json")
            if res is None:
                self.done.missing.append(f"{cell_id}: evaluated, but no {out / 'latency.json'}")
                return
            data = {k: res.get(k) for k in ("latency_ms", "latency_iqr_ms", "images", "rounds_ms")}
            data["timed_by"] = "quantsweep (TensorRT runtime)"
        self._status("latency", axes, cell_id, "ok", d, data=data, **kw)


def ingest(bundle_dir: Path, results: Path, dataset_manifest: Path) -> Ingested:
    """Read every cell of the bundle back (see the module's docstring). ``dataset_manifest``:
    this sweep's, whose val split the GPU host's AP must have been scored on."""
    from quantsweep.dataset import split_checksum

    if not dataset_manifest.is_file():
        raise HandoffError(f"{dataset_manifest}: no dataset manifest (the sweep's val split checks "
                           f"the AP the GPU host sends back)")
    job = _Ingest(bundle_dir, results, split_checksum(json.loads(dataset_manifest.read_text()), "val"))
    for unit, slug in job.manifest.get("calibrations", {}).items():
        job.calibration(unit, slug)
    for cell_id, slug in job.manifest["cells"].items():
        job.cell(cell_id, slug)
    return job.done
