"""The quantsweep source a stage executes, as a digest its rule's params carry: editing or
upgrading that code reruns the stage (Snakemake's params trigger) and nothing else.

A stage's code is its script (``scripts/<stage>.py``), the stage supervisor, and the
quantsweep modules they import, followed through the import graph (imports inside functions
and ``"quantsweep.x:fn"`` registry strings included). The dispatchers (the quantize stage, the
build stage, the runner factory (``backends.make_runner``), the exporters, the model sources) import one
module per quantizer, backend, exporter or source lazily: only the ones the cell selects are
followed from them. ``tests/test_codedigest.py`` checks, on real stage runs, that every
quantsweep module a stage loads is in its digest."""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1]  # src/
REPO = SRC.parent
SCRIPTS = REPO / "scripts"
PKG = "quantsweep"

# the modules each dispatcher may import lazily; followed only when the cell selects them
QUANTIZERS = {
    "ort-qdq": {"quantsweep.quantize.ort_qdq"},
    "modelopt-ptq": {"quantsweep.quantize.modelopt_ptq"},
    "paddleslim-ptq": {"quantsweep.quantize.paddle_ptq"},
    "torch-qat": {"quantsweep.quantize.torch_qat"},
    "torch-qat-dynamic": {"quantsweep.quantize.torch_qat"},
    "trt-calibrator": {"quantsweep.quantize.trt_calibrator"},
}
_TRT_BUILD = {"quantsweep.backends.tensorrt_api", "quantsweep.backends.trtexec",
              "quantsweep.backends.tensorrt_plan", "quantsweep.calib.inspect"}
BUILDERS = {  # what backends/build.py imports for each backend
    "onnxruntime": {"quantsweep.backends.onnxruntime"},
    "tensorrt_sim": {"quantsweep.calib.qdq", "quantsweep.calib.inspect"},
    "paddle_inference": {"quantsweep.backends.paddle_inference"},
    "paddle_tensorrt": {"quantsweep.backends.paddle_inference"},
    "tensorrt_api": _TRT_BUILD,
    "trtexec": _TRT_BUILD,
}


def _runners() -> dict[str, set[str]]:
    from quantsweep.backends import RUNNER_MODULES

    return {b: {f"quantsweep.backends.{m}"} for b, m in RUNNER_MODULES.items()}


def _sources() -> dict[str, set[str]]:
    from quantsweep.sources import FRAMEWORK

    return {s: {ref.partition(":")[0]} for s, ref in FRAMEWORK.items()}


def _named() -> dict[str, set[str]]:
    from quantsweep.sources import NAMED_MODULES

    return {s: set(ms) for s, ms in NAMED_MODULES.items()}


def _exporters() -> dict[str, set[str]]:
    from quantsweep.export import EXPORTERS

    return {s: {f"quantsweep.export.{m}"} for s, m in EXPORTERS.items()}


def _union(table: dict[str, set[str]]) -> set[str]:
    return set().union(*table.values())


@functools.cache
def dispatchers() -> dict[str, set[str]]:
    return {"quantsweep.quantize": _union(QUANTIZERS),
            "quantsweep.backends.build": _union(BUILDERS),
            "quantsweep.backends": _union(_runners()),
            "quantsweep.export": _union(_exporters()),
            "quantsweep.sources": _union(_sources()) | _union(_named()),
            "quantsweep.backends.torch_module": _union(_named())}


def module_file(name: str) -> Path | None:
    """The source file of a quantsweep module (package: its __init__), or None."""
    base = SRC.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


_REF = re.compile(r"^quantsweep(\.[A-Za-z_][A-Za-z0-9_]*)+(:[A-Za-z_][A-Za-z0-9_.]*)?$")


@functools.cache
def imports(path: Path) -> frozenset[str]:
    """The quantsweep modules a file imports anywhere in it (function bodies too), and the
    modules named by ``"quantsweep.x.y:fn"`` strings (registries imported by name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()

    def add(name: str) -> None:
        parts = name.split(".")
        for k in range(len(parts), 1, -1):  # the module itself and the packages it is in
            cand = ".".join(parts[:k])
            if module_file(cand):
                out.add(cand)
                out.update(".".join(parts[:j]) for j in range(2, k))
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(PKG + "."):
                    add(a.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and (node.module == PKG or node.module.startswith(PKG + ".")):
            for a in node.names:  # ``from quantsweep.x import y``: y may be a module
                if module_file(f"{node.module}.{a.name}"):
                    add(f"{node.module}.{a.name}")
                else:
                    add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _REF.match(node.value):
            add(node.value.partition(":")[0])
    out.discard(PKG)
    return frozenset(out)


def chosen(stage: str, quantizer: str = "", backend: str = "", source: str = "") -> set[str]:
    """The modules the cell selects at the dispatchers its stage passes through."""
    from quantsweep.export import FRAMEWORK_BACKEND
    from quantsweep.quantize import recipe_parent

    out: set[str] = set()
    if quantizer:
        out |= QUANTIZERS.get(recipe_parent(quantizer) or quantizer, set())
    if backend:
        out |= (BUILDERS if stage == "build" else _runners()).get(backend, set())
    if source:
        out |= _named().get(source, set())
        out |= {"framework": _sources(), "export": _exporters()}.get(stage, {}).get(source, set())
        if stage in ("export", "framework_eval") and source in FRAMEWORK_BACKEND:
            out |= _runners()[FRAMEWORK_BACKEND[source]]  # the framework model as reference
    if stage in ("export", "analyze"):
        out |= _runners()["onnxruntime"]  # parity / the analysis run the graphs on ONNX Runtime
    return out


# what each stage's rule selects its code by (the keys of ``digest``)
STAGE_SELECTORS: dict[str, tuple[str, ...]] = {
    "train": (), "framework": ("source",), "framework_eval": ("source",), "export": ("source",),
    "quantize": ("quantizer", "source"), "analyze": (), "build": ("backend",), "evaluate": ("backend",),
    "latency": (), "summary": (), "ledger": (), "report": ()}
SUPERVISED = ("train", "framework", "framework_eval", "export", "quantize", "analyze", "build",
              "evaluate", "latency")
SCRIPT = {"framework_eval": "framework_eval", "train": "train"}


def modules(stage: str, quantizer: str = "", backend: str = "", source: str = "") -> list[str]:
    """The quantsweep modules the stage executes, sorted."""
    pick = chosen(stage, quantizer, backend, source)
    roots = set(imports(SCRIPTS / f"{SCRIPT.get(stage, stage)}.py"))
    if stage in SUPERVISED:
        roots.add("quantsweep.stage")
    seen: set[str] = set()
    todo = sorted(roots)
    disp = dispatchers()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        f = module_file(m)
        if f is None:
            continue
        nxt = set(imports(f))
        if m in disp:
            nxt = (nxt - disp[m]) | (disp[m] & pick)
        todo.extend(sorted(nxt - seen))
    return sorted(seen)


@functools.cache
def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def digest(stage: str, quantizer: str = "", backend: str = "", source: str = "") -> str:
    """sha256 (16 hex digits) of the stage's script and modules: file names and contents."""
    files = [SCRIPTS / f"{SCRIPT.get(stage, stage)}.py"] + \
        [p for p in map(module_file, modules(stage, quantizer, backend, source)) if p is not None]
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(REPO)}:{_file_hash(p)}\n".encode())
    return h.hexdigest()[:16]
