"""The GPU hand-off: ``quantsweep bundle`` writes a self-contained folder for the TensorRT cells
this machine cannot run (graphs, caches, the exact trtexec command and the Python-API build per
cell, requirements, a README); on a GPU host ``sh run_all.sh`` fills each cell's ``out/``;
``quantsweep ingest`` reads those logs back into the cells' build status as ``mode: measured``
on the GPU the log names.

A cell whose own export/quantize did not run here (its TensorRT toolset cannot be created without
a GPU) takes the graph of the same model, opset and quantizer from a toolset where it did run;
``graph_from`` in ``cell.json`` and in the ingested status says which.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

from quantsweep import matrix, paths
from quantsweep.status import (
    make_status,
    stage_status,
    write_json_atomic,
    write_status,
    write_text_atomic,
)

TRT_BACKENDS = ("tensorrt_api", "trtexec")
OUT = "out"


class HandoffError(ValueError):
    pass


def _slug(cell_id: str) -> str:
    return cell_id.replace("/", "__")


def _graph(results: Path, cell: matrix.Cell, cells: list[matrix.Cell]) -> tuple[dict[str, Any], str]:
    """The quantize record whose graph this cell builds: its own, else a sibling's."""
    own = stage_status(results, "quantize", **cell.axes())
    if own and own["status"] == "ok":
        return own, cell.toolset
    for other in cells:
        if (other.model, other.opset, other.quantizer) == (cell.model, cell.opset, cell.quantizer):
            rec = stage_status(results, "quantize", **other.axes())
            if rec and rec["status"] == "ok":
                return rec, other.toolset
    raise HandoffError(f"{cell.id}: no graph of {cell.model} opset {cell.opset} quantizer "
                       f"{cell.quantizer} was made in any toolset of this sweep (run the sweep first)")


def _trt_version(cfg: dict[str, Any], toolset: str) -> str:
    for pkg in cfg["toolsets"][toolset].get("packages", []):
        name, _, version = str(pkg).partition("==")
        if name.strip().lower() in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13") and version:
            return version.strip()
    if v := cfg.get("tensorrt", {}).get("version"):
        return str(v)
    raise HandoffError(f"toolset {toolset!r} pins no tensorrt==VERSION: cannot tell which TensorRT "
                       f"the cell is for")


def bundle(cfg: dict[str, Any], results: Path, out: Path, selected: list[str] | None = None,
           root: Path = Path(".")) -> list[str]:
    """Write the bundle for ``selected`` cell ids (default: every planned TensorRT cell); it is
    written beside ``out`` and renamed when complete."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HandoffError(f"{out}: exists and is not an empty directory; give a new one")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        cells = _bundle(cfg, results, tmp, selected, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return cells


def _bundle(cfg: dict[str, Any], results: Path, out: Path, selected: list[str] | None,
            root: Path) -> list[str]:
    from quantsweep.backends.build import tensorrt_build_request, tensorrt_graph
    from quantsweep.backends.tensorrt_plan import CommandError, graph_inputs
    from quantsweep.backends.trtexec import command
    from quantsweep.job import Skip

    planned = [p.cell for p in matrix.expand(cfg) if p.status == "planned"]
    trt_cells = [c for c in planned if c.backend in TRT_BACKENDS]
    if selected:
        by_id = {c.id: c for c in planned}
        unknown = [s for s in selected if s not in by_id]
        if unknown:
            raise HandoffError(f"not cells of this configuration: {unknown}")
        not_trt = [s for s in selected if by_id[s].backend not in TRT_BACKENDS]
        if not_trt:
            raise HandoffError(f"not TensorRT cells (backend tensorrt_api or trtexec): {not_trt}")
        trt_cells = [by_id[s] for s in selected]
    if not trt_cells:
        raise HandoffError("the configuration has no TensorRT cells to hand off")
    (out / "cells").mkdir(parents=True, exist_ok=True)
    lib = out / "lib" / "quantsweep"
    shutil.copytree(Path(__file__).parent, lib, ignore=shutil.ignore_patterns("__pycache__"))
    opts = cfg.get("tensorrt", {})
    written, requirements, missing = [], {}, []
    for cell in trt_cells:
        try:
            q, graph_from = _graph(results, cell, planned)
        except HandoffError as exc:
            if selected:  # a cell asked for by name must be bundled
                raise
            missing.append(str(exc))
            continue
        try:  # the graph (and cache) the cell's build stage would take
            graph, cache, qdq = tensorrt_graph(q, cell.precision, opts)
        except Skip as exc:
            if selected:
                raise HandoffError(f"{cell.id}: {exc.message}") from None
            missing.append(f"{cell.id}: {exc.message}")
            continue
        d = out / "cells" / _slug(cell.id)
        d.mkdir()
        shutil.copyfile(root / graph, d / "model.onnx")
        if cache is not None:
            shutil.copyfile(root / cache, d / "calibration.cache")
        version = _trt_version(cfg, cell.toolset)
        req = tensorrt_build_request(Path("model.onnx"), cell.precision, version, Path(OUT), opts,
                                     Path("calibration.cache") if cache is not None else None, qdq)
        spec = {"cell": cell.id, **cell.axes(), "tensorrt_version": version, "graph_from": graph_from,
                "request": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(req).items()}}
        try:
            line = shlex.join(command(req, inputs=graph_inputs(d / "model.onnx")))
        except CommandError as exc:
            spec["refused"] = str(exc)
            line = ""
        if "refused" in spec:  # the version cannot build this cell: nothing to run
            script = f"echo {shlex.quote('refused: ' + spec['refused'])} >&2\nexit 3\n"
        elif cell.backend == "trtexec":
            script = f"cd \"$(dirname \"$0\")\" && mkdir -p {OUT} && {line} > {OUT}/trtexec.log 2>&1\n"
        else:
            script = (f"cd \"$(dirname \"$0\")\" && mkdir -p {OUT} && PYTHONPATH=../../lib "
                      f"python -m quantsweep.handoff build-api cell.json\n")
        write_json_atomic(d / "cell.json", spec)
        write_text_atomic(d / "run.sh", "#!/bin/sh\n" + script)
        (d / "run.sh").chmod(0o755)
        requirements[cell.toolset] = cfg["toolsets"][cell.toolset].get("packages", [])
        written.append(cell.id)
    if not written:
        raise HandoffError("no TensorRT cell has a graph yet:\n" + "\n".join(missing))
    for toolset, pkgs in requirements.items():
        write_text_atomic(out / f"requirements-{toolset}.txt", "\n".join(map(str, pkgs)) + "\n")
    write_json_atomic(out / "manifest.json", {"cells": {c: _slug(c) for c in written},
                                              "left_out": missing})
    write_text_atomic(out / "run_all.sh", "#!/bin/sh\n# each cell writes its out/; a failing cell "
                      "does not stop the others\nfor s in cells/*/run.sh; do sh \"$s\" || echo "
                      "\"$s: exit $?\" >&2; done\n")
    write_text_atomic(out / "README.md", _readme(written, sorted(requirements)))
    return written


def _readme(cells: list[str], toolsets: list[str]) -> str:
    reqs = "\n".join(f"    pip install -r requirements-{t}.txt   # one environment per TensorRT version"
                     for t in toolsets)
    listed = "\n".join(f"- `{c}`" for c in cells)
    return f"""# quantsweep GPU hand-off bundle

TensorRT cells that the sweep's machine could not run. On a host with an NVIDIA GPU:

{reqs}
    sh run_all.sh          # or sh cells/<cell>/run.sh, in the environment of its TensorRT version

Each `cells/<cell>/run.sh` runs either the exact `trtexec` command of the cell (log in
`out/trtexec.log`) or the TensorRT Python-API build (`lib/quantsweep`, result in
`out/build_api.json`, builder log in `out/build.log`). Copy the folder back and run
`quantsweep ingest <this folder>` in the sweep's directory: each cell's build status becomes
`mode: measured` on the GPU its log names.

`cell.json` says which graph each cell builds (`graph_from`: the toolset that made it) and the
build request.

Cells:
{listed}
"""


def build_api(spec_path: Path) -> int:
    """Runs on the GPU host, in a cell directory: the Python-API build, then a timing run."""
    from quantsweep.backends import tensorrt_api
    from quantsweep.backends.tensorrt_plan import BuildRequest
    from quantsweep.job import ToolFailure

    spec = json.loads(spec_path.read_text())
    r = spec["request"]
    fields: dict[str, Any] = {k: (Path(v) if k in ("onnx", "engine", "cache", "timing_cache",
                                                   "layer_info", "profile") and v else v)
                              for k, v in r.items()}
    fields["batch"] = tuple(fields["batch"])
    req = BuildRequest(**fields)
    out = Path(OUT)
    out.mkdir(exist_ok=True)
    result: dict[str, Any]
    try:
        info = tensorrt_api.build(req, out / "build.log")
        runner = tensorrt_api.Runner(req.engine, {})
        result = {"status": "ok", "device": runner.device, "data": info}
    except ToolFailure as exc:
        result = {"status": "failed", "reason_class": exc.reason_class, "message": exc.message}
    write_json_atomic(out / "build_api.json", result)
    return 0 if result["status"] == "ok" else 1


def ingest(bundle_dir: Path, results: Path) -> dict[str, str]:
    """Each bundled cell's ``out/`` -> its build status (and an evaluate status saying where the
    engine was measured). Cells whose ``out/`` is empty are left as they are."""
    from quantsweep.backends.trtexec import parse_log

    manifest_path = bundle_dir / "manifest.json"
    if not manifest_path.is_file():
        raise HandoffError(f"{bundle_dir}: no manifest.json: not a quantsweep bundle")
    try:
        manifest = json.loads(manifest_path.read_text())["cells"]
    except (ValueError, KeyError) as exc:
        raise HandoffError(f"{manifest_path}: not a bundle manifest ({exc})") from None
    done: dict[str, str] = {}
    for cell_id, slug in manifest.items():
        d = bundle_dir / "cells" / slug
        spec = json.loads((d / "cell.json").read_text())
        axes = {k: spec[k] for k in matrix.AXES}
        trtexec_log, api = d / OUT / "trtexec.log", d / OUT / "build_api.json"
        common = {"backend": spec["backend"], "ingested_from": str(d),
                  "graph_from": spec["graph_from"], "tool_versions": {"tensorrt": spec["tensorrt_version"]}}
        if "refused" in spec:
            rec = make_status("build", cell_id, "failed", reason_class="unsupported_precision",
                              message=spec["refused"], **common)
        elif spec["backend"] == "trtexec" and trtexec_log.is_file():
            parsed = parse_log(trtexec_log.read_text(errors="replace"))
            gpu = parsed.get("gpu", "GPU (not named in the log)")
            common["tool_versions"]["tensorrt"] = parsed.get("tensorrt_version", spec["tensorrt_version"])
            if parsed["errors"]:
                e = parsed["errors"][0]
                rec = make_status("build", cell_id, "failed", reason_class=e["class"],
                                  message=f"trtexec on {gpu}: {e['detail']} ({e['meaning']})",
                                  device=gpu, log=str(trtexec_log), data=parsed, **common)
            elif parsed["passed"]:
                rec = make_status("build", cell_id, "ok", device=gpu, log=str(trtexec_log),
                                  artifacts={"trtexec_log": str(trtexec_log)}, data=parsed, **common)
            else:
                rec = make_status("build", cell_id, "failed", reason_class="trtexec_failed",
                                  message=f"{trtexec_log}: trtexec did not pass and no error line "
                                          f"was recognised", device=gpu, log=str(trtexec_log),
                                  data=parsed, **common)
        elif spec["backend"] == "tensorrt_api" and api.is_file():
            res = json.loads(api.read_text())
            if res["status"] == "ok":
                rec = make_status("build", cell_id, "ok", device=res["device"], log=str(d / OUT / "build.log"),
                                  data=res["data"], **common)
            else:
                rec = make_status("build", cell_id, "failed", reason_class=res["reason_class"],
                                  message=res["message"], log=str(d / OUT / "build.log"), **common)
        else:
            continue
        write_status(paths.fill(results, "build", "status.json", **axes), rec)
        if rec["status"] == "ok":
            write_status(paths.fill(results, "evaluate", "status.json", **axes), make_status(
                "evaluate", cell_id, "skipped", reason_class="gpu_host_only",
                message=f"the engine was built and timed on {rec['device']} (ingested from "
                        f"{bundle_dir}); its COCO evaluation has to run on that host",
                backend=spec["backend"], device=rec["device"]))
        done[cell_id] = rec["status"]
    return done


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "build-api":
        sys.exit(build_api(Path(sys.argv[2])))
    print("usage: python -m quantsweep.handoff build-api cell.json", file=sys.stderr)
    sys.exit(2)
