"""The GPU hand-off: ``quantsweep bundle`` writes a self-contained folder with every TensorRT cell
of the sweep (this machine cannot run them); on a GPU host ``sh run_all.sh`` calibrates, builds,
evaluates and times each cell (``quantsweep.handoff.gpu``); ``quantsweep ingest`` reads the
results back into the cells' stages as ``mode: measured`` on the GPU they name
(``quantsweep.handoff.ingest``).

The bundle holds:
- ``graphs/``: each graph once, by content; a cell's own graph when its toolset made one,
  else the same model, opset and quantizer's graph from another toolset, else (quantizer
  ``none``) the export a ``from:`` model names; ``graph_from`` in ``cell.json`` says which stage
  made it.
- ``calibrate/<unit>/``: TensorRT's own calibration (quantizer ``trt-calibrator``) of a float
  graph, fed with ``calib/<graph>.npz`` (the calib split through the model's preprocessing);
  its cache is what that toolset's cells build from.
- ``cells/<cell>/``: ``cell.json`` (the build request, the model's contract and decoding, the
  evaluation options) and ``run.sh`` (the exact trtexec command or the Python-API build, then
  the evaluation of the engine on the val split and its timing).
- ``val/``: the val split (annotations, images unless the GPU host has them at a path) and its
  checksum; ``lib/quantsweep``: this quantsweep; ``requirements-<toolset>.txt`` (with NVIDIA's
  index); ``run_all.sh``; ``README.md``; ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantsweep import matrix
from quantsweep.handoff import scripts
from quantsweep.status import stage_status, write_json_atomic, write_text_atomic

TRT_BACKENDS = ("tensorrt_api", "trtexec")
OUT = scripts.OUT  # each cell's results folder on the GPU host
FORMAT = 2  # of manifest.json
# what the GPU host's evaluation needs beside the toolset's own packages
GPU_EVAL_PACKAGES = ("pillow", "pycocotools")


class HandoffError(ValueError):
    pass


def slug(unit_id: str) -> str:
    return unit_id.replace("/", "__")


@dataclass
class Graph:
    """The graph a cell's TensorRT build takes and what made it."""

    record: dict[str, Any]  # a quantize-like record: artifacts (model, float_model, cache), data
    made_by: str  # the stage that made it: <model>/<toolset>/opset<N>/<quantizer or export>
    calibrate: bool = False  # trt-calibrator: TensorRT calibrates it on the GPU host first


def _ok(results: Path, stage: str, **axes: Any) -> dict[str, Any] | None:
    rec = stage_status(results, stage, **axes)
    return rec if rec and rec["status"] == "ok" else None


def _made_by(model: str, toolset: str, opset: int, what: str) -> str:
    return f"{model}/{toolset}/opset{opset}/{what}"


def find_graph(cfg: dict[str, Any], results: Path, cell: matrix.Cell,
               planned: list[matrix.Cell]) -> Graph:
    """The graph of ``cell``: its own quantize stage's; a sibling toolset's of the same model,
    opset and quantizer; for quantizer ``none``, the export its ``from:`` names. A
    ``trt-calibrator`` cell takes the float graph (quantizer ``none``) found that way."""
    if cell.quantizer == "trt-calibrator":
        own = _ok(results, "quantize", **cell.axes())
        if own is not None:
            return Graph(own, _made_by(cell.model, cell.toolset, cell.opset, cell.quantizer))
        float_cell = matrix.Cell(**{**cell.axes(), "quantizer": "none", "precision": "fp32"})
        g = find_graph(cfg, results, float_cell, planned)
        model = g.record["artifacts"]["model"]
        return Graph({"artifacts": {"model": model, "float_model": model,
                                    "calibration_cache": "(TensorRT's, made on the GPU host)"},
                      "data": {"int8": False, "quantizer": "trt-calibrator", "calibration": "implicit"}},
                     g.made_by, calibrate=True)
    toolsets = [cell.toolset] + [c.toolset for c in planned if c.toolset != cell.toolset
                                 and (c.model, c.opset, c.quantizer) == (cell.model, cell.opset, cell.quantizer)]
    for toolset in dict.fromkeys(toolsets):
        rec = _ok(results, "quantize", **{**cell.axes(), "toolset": toolset})
        if rec is not None:
            return Graph(rec, _made_by(cell.model, toolset, cell.opset, cell.quantizer))
    src = cfg["models"][cell.model].get("from") if cfg["models"][cell.model]["source"] == "onnx" else None
    if src and cell.quantizer == "none":
        rec = _ok(results, "export", model=src["model"], toolset=src["toolset"], opset=cell.opset)
        if rec is not None:
            return Graph({"artifacts": {"model": rec["artifacts"]["model"]},
                          "data": {"int8": False, "quantizer": "none"}},
                         _made_by(src["model"], src["toolset"], cell.opset, "export"))
    raise HandoffError(f"{cell.id}: no graph of {cell.model} opset {cell.opset} quantizer "
                       f"{cell.quantizer} was made in any toolset of this sweep"
                       + (f" nor by the export its from: names ({src['model']}/{src['toolset']})"
                          if src and cell.quantizer == "none" else "") + " (run the sweep first)")


def tensorrt_version(cfg: dict[str, Any], toolset: str) -> str:
    for pkg in cfg["toolsets"][toolset].get("packages", []):
        name, _, version = str(pkg).partition("==")
        if name.strip().lower() in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13") and version:
            return version.strip()
    if v := cfg.get("tensorrt", {}).get("version"):
        return str(v)
    raise HandoffError(f"toolset {toolset!r} pins no tensorrt==VERSION: cannot tell which TensorRT "
                       f"the cell is for")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def tree_digest(root: Path) -> str:
    """sha256 of the files under ``root`` (names and bytes, in name order)."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and "__pycache__" not in q.parts):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


class _Writer:
    """Puts graphs and calibration feeds into the bundle once each."""

    def __init__(self, out: Path, root: Path):
        self.out, self.root = out, root
        self.graphs: dict[str, str] = {}
        self.feeds: dict[str, str] = {}

    def graph(self, path: str | Path) -> str:
        """The bundle path (relative to its root) of a copy of ``path``."""
        src = self.root / path
        key = str(src.resolve())
        if key not in self.graphs:
            dst = self.out / "graphs" / f"{_digest(src)}.onnx"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                shutil.copyfile(src, dst)
            self.graphs[key] = str(dst.relative_to(self.out))
        return self.graphs[key]

    def calib_feeds(self, graph: str, spec: dict[str, Any], manifest: dict[str, Any], n: int) -> str:
        """The calib split through the model's preprocessing, in the graph's input dtypes, as one
        ``.npz`` (array ``<image>/<input>``) for the GPU host's calibration."""
        import numpy as np

        from quantsweep.quantize.calibdata import calib_feeds, onnx_bindings

        if graph not in self.feeds:
            feeds = calib_feeds(onnx_bindings(self.out / graph), spec, manifest, n)
            dst = self.out / "calib" / (Path(graph).stem + ".npz")
            dst.parent.mkdir(parents=True, exist_ok=True)
            arrays: dict[str, Any] = {f"{i}/{k}": v for i, f in enumerate(feeds) for k, v in f.items()}
            np.savez(dst, **arrays)
            self.feeds[graph] = str(dst.relative_to(self.out))
        return self.feeds[graph]


def bundle(cfg: dict[str, Any], results: Path, out: Path, selected: list[str] | None = None,
           root: Path = Path("."), manifest: Path | None = None,
           val_images: str | None = None) -> list[str]:
    """Write the bundle for ``selected`` cell ids (default: every planned TensorRT cell); it is
    written beside ``out`` and renamed when complete. ``manifest``: the dataset manifest (the
    val split and the calibration images); ``val_images``: where the GPU host has the val
    images (they are then not copied; their checksum still is)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HandoffError(f"{out}: exists and is not an empty directory; give a new one")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        cells = _bundle(cfg, results, tmp, selected, root, manifest, val_images)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return cells


def _select(cfg: dict[str, Any], selected: list[str] | None) -> tuple[list[matrix.Cell], list[matrix.Cell]]:
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
    return planned, trt_cells


def _load_manifest(cfg: dict[str, Any], manifest: Path | None) -> dict[str, Any]:
    path = manifest or Path("resources") / "datasets" / cfg["dataset"]["name"] / "manifest.json"
    if not path.is_file():
        raise HandoffError(f"{path}: no dataset manifest (run the sweep first)")
    return json.loads(path.read_text())


def _write_val(out: Path, man: dict[str, Any], val_images: str | None) -> dict[str, Any]:
    """The val split for the GPU host's evaluation, and its checksum."""
    from quantsweep.dataset import split_checksum

    val = man["splits"]["val"]
    d = out / "val"
    d.mkdir(parents=True)
    shutil.copyfile(val["annotations"], d / "annotations.json")
    if val_images is None:
        names = [im["file_name"] for im in json.loads(Path(val["annotations"]).read_text())["images"]]
        for name in names:
            (d / "images" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(val["images"]) / name, d / "images" / name)
    info = {"checksum": split_checksum(man, "val"), "annotations": "val/annotations.json",
            "images": val_images or "val/images"}
    write_json_atomic(d / "manifest.json", {"categories": man["categories"], "splits": {
        "val": {"annotations": info["annotations"], "images": info["images"]}}, "checksum": info["checksum"]})
    return info


def _bundle(cfg: dict[str, Any], results: Path, out: Path, selected: list[str] | None,
            root: Path, manifest: Path | None, val_images: str | None) -> list[str]:
    from quantsweep.backends.build import tensorrt_build_request, tensorrt_graph
    from quantsweep.job import Skip

    planned, trt_cells = _select(cfg, selected)
    man = _load_manifest(cfg, manifest)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    lib = out / "lib" / "quantsweep"
    shutil.copytree(Path(__file__).parents[1], lib, ignore=shutil.ignore_patterns("__pycache__"))
    val = _write_val(out, man, val_images)
    opts = cfg.get("tensorrt", {})
    files = _Writer(out, root)
    written: list[str] = []
    missing: list[str] = []
    calibrations: dict[str, dict[str, Any]] = {}
    by_toolset: dict[str, list[str]] = {}
    for cell in trt_cells:
        try:
            g = find_graph(cfg, results, cell, planned)
            graph, cache, qdq = tensorrt_graph(g.record, cell.precision, opts)
        except (HandoffError, Skip) as exc:
            why = str(exc) if isinstance(exc, HandoffError) else f"{cell.id}: {exc.message}"
            if selected:  # a cell asked for by name must be bundled
                raise HandoffError(why) from None
            missing.append(why)
            continue
        version = tensorrt_version(cfg, cell.toolset)
        d = out / "cells" / slug(cell.id)
        d.mkdir()
        rel = files.graph(graph)  # relative to the bundle's root; run.sh runs in the cell's folder
        onnx = Path("../..") / rel
        spec: dict[str, Any] = {"cell": cell.id, **cell.axes(), "tensorrt_version": version,
                                "graph_from": g.made_by}
        if g.calibrate:
            unit = _made_by(cell.model, cell.toolset, cell.opset, cell.quantizer)
            if unit not in calibrations:
                calibrations[unit] = _calibration(cfg, out, files, unit, cell, version, rel, man)
            spec["calibration"] = unit
            cache_path: Path | None = Path("../../calibrate") / slug(unit) / OUT / "calibration.cache"
            if "refused" in calibrations[unit]:
                spec["refused"] = calibrations[unit]["refused"]
                spec["refused_stage"] = "quantize"
        elif cache is not None:
            shutil.copyfile(root / cache, d / "calibration.cache")
            cache_path = Path("calibration.cache")
        else:
            cache_path = None
        req = tensorrt_build_request(onnx, cell.precision, version, Path(OUT), opts, cache_path, qdq)
        spec["request"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(req).items()}
        spec["evaluate"] = _evaluation(cfg, cell)
        write_text_atomic(d / "run.sh", scripts.cell(spec, req, out / rel))
        write_json_atomic(d / "cell.json", spec)
        (d / "run.sh").chmod(0o755)
        by_toolset.setdefault(cell.toolset, []).append(slug(cell.id))
        written.append(cell.id)
    if not written:
        raise HandoffError("no TensorRT cell has a graph yet:\n" + "\n".join(missing))
    for toolset in by_toolset:
        write_text_atomic(out / f"requirements-{toolset}.txt", requirements(cfg["toolsets"][toolset]))
    write_json_atomic(out / "manifest.json", {
        "format": FORMAT, "quantsweep_version": _version(), "code_digest": tree_digest(lib),
        "cells": {c: slug(c) for c in written}, "calibrations": {u: slug(u) for u in calibrations},
        "left_out": missing, "val": val})
    write_text_atomic(out / "run_all.sh", scripts.run_all(by_toolset, {
        t: [slug(u) for u, c in calibrations.items() if c["toolset"] == t] for t in by_toolset}))
    write_text_atomic(out / "README.md", scripts.readme(written, sorted(by_toolset), val_images))
    return written


def _version() -> str:
    from quantsweep import __version__

    return __version__


def requirements(toolset: dict[str, Any]) -> str:
    """A pip requirements file for a toolset on the GPU host: its indexes (TensorRT's libraries
    are on NVIDIA's), its packages, and what the evaluation there needs."""
    lines = []
    if toolset.get("index_url"):
        lines.append(f"--index-url {toolset['index_url']}")
    lines += [f"--extra-index-url {u}" for u in toolset.get("extra_index_urls", [])]
    lines += [f"--find-links {u}" for u in toolset.get("find_links", [])]
    pkgs = [str(p) for p in toolset.get("packages", [])]
    have = {re.split(r"[\s<>=!~\[;]", p, maxsplit=1)[0].lower() for p in pkgs}
    pkgs += [p for p in GPU_EVAL_PACKAGES if p not in have]
    return "\n".join(lines + pkgs) + "\n"


def _evaluation(cfg: dict[str, Any], cell: matrix.Cell) -> dict[str, Any]:
    """What the GPU host's evaluation of the engine reads: the model's contract and decoding,
    the evaluation options and the latency stage's."""
    spec = {k: v for k, v in cfg["models"][cell.model].items() if k in ("inputs", "preprocess", "decode")}
    return {"model_spec": {"name": cell.model, **spec}, "evaluate": cfg["evaluate"],
            "latency": cfg["latency"]}


def _calibration(cfg: dict[str, Any], out: Path, files: _Writer, unit: str, cell: matrix.Cell,
                 version: str, graph: str, man: dict[str, Any]) -> dict[str, Any]:
    """``calibrate/<unit>/``: TensorRT's calibration of ``graph`` for one toolset's
    ``trt-calibrator`` cells of a model and opset."""
    from quantsweep.quantize.trt_calibrator import refusal

    spec: dict[str, Any] = {"unit": unit, "toolset": cell.toolset, "model": cell.model,
                            "opset": cell.opset, "quantizer": cell.quantizer,
                            "tensorrt_version": version, "onnx": f"../../{graph}",
                            "algorithm": cfg["quantize"].get("trt-calibrator", {}).get(
                                "algorithm", "EntropyCalibration2")}
    why = refusal(version)
    d = out / "calibrate" / slug(unit)
    d.mkdir(parents=True)
    if why:
        spec["refused"] = why
        script = scripts.refused(why)
    else:
        n = int(cfg["quantize"]["calib_images"])
        model_spec = {"name": cell.model, **cfg["models"][cell.model]}
        spec["feeds"] = "../../" + files.calib_feeds(graph, model_spec, man, n)
        spec["calib_images"] = n
        script = scripts.python_step("calibrate")
    write_json_atomic(d / "cell.json", spec)
    write_text_atomic(d / "run.sh", scripts.head(unit) + script)
    (d / "run.sh").chmod(0o755)
    return spec
