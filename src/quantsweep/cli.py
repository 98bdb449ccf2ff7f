"""The ``quantsweep`` command line."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

DEFAULT_CONFIG = "config/config.yaml"


def _config(path: str | list[str] | None) -> dict | None:
    """The validated config (several files: read one over the other, as Snakemake's
    ``--configfile`` does), or None after printing the error."""
    from quantsweep.config import ConfigError, load_config

    try:
        return load_config(path or DEFAULT_CONFIG)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _cells(a: argparse.Namespace) -> int:
    from quantsweep import matrix

    cfg = _config(a.config)
    if cfg is None:
        return 2
    rows = matrix.expand(cfg)
    if a.format == "json":
        import json

        print(json.dumps([{"cell": r.cell.id, **r.cell.axes(), "status": r.status,
                           "reason": r.reason} for r in rows], indent=2))
    else:
        print(matrix.format_table(rows))
    return 0


def _check(a: argparse.Namespace) -> int:
    from quantsweep.inspect_model import graph_problems

    cfg = _config(a.config)
    if cfg is None:
        return 2
    names = " + ".join(a.config or [DEFAULT_CONFIG])
    problems = [p for name, model in cfg["models"].items() for p in graph_problems(name, model)]
    if problems:
        print(f"error: {names}: the models do not fit their graphs:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 2
    print(f"{names}: ok")
    return 0


def _restore_command(files: list[str] | None, corrupt: list[str]) -> str:
    """The snakemake command that remakes what verify found missing or corrupt."""
    import shlex

    cmd = ["snakemake", "--cores", "all"]
    for f in files or []:
        if Path(f) != Path(DEFAULT_CONFIG):  # the Snakefile reads config/config.yaml itself
            cmd += ["--configfile", f]
    if corrupt:
        cmd += ["--forcerun", *corrupt]
    return " ".join(shlex.quote(c) for c in cmd)


def _verify(a: argparse.Namespace) -> int:
    from quantsweep import tree

    cfg = _config(a.config)
    if cfg is None:
        return 2
    v = tree.verify(cfg, Path("."), cfg["results_dir"])
    if a.clean and v.leftovers:
        tree.remove_leftovers(v.leftovers)
        print(f"deleted {len(v.leftovers)} leftover(s) of killed jobs", file=sys.stderr)
        v.leftovers = []
    if a.json:
        import dataclasses

        print(json.dumps({**dataclasses.asdict(v), "whole": v.whole}, indent=2))
    else:
        print(tree.format_verdict(v, _restore_command(a.config, [p for p, _ in v.corrupt])))
    return 0 if v.whole else 1


def _inspect_model(a: argparse.Namespace) -> int:
    from quantsweep.inspect_model import ModelFileError, describe, format_description, models_block, recognise

    try:
        desc = describe(a.file)
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kind, dec, why = recognise(desc)
    if a.json:
        print(json.dumps({**desc, "layout": kind, "decode": dec, "why": why}, indent=1))
        return 0
    print(format_description(desc, kind, why))
    if dec:
        print("\n# paste into config.yaml (then set preprocess):")
        print(models_block(a.name or Path(a.file).stem.replace(" ", "_"), desc, dec), end="")
    return 0 if dec else 1


def _cache_inspect(a: argparse.Namespace) -> int:
    from quantsweep.calib.inspect import main as inspect_main

    return inspect_main(a.file, a.onnx, a.trt_version, a.json)


def _trtexec_command(a: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from quantsweep.backends.trtexec import BuildRequest, CommandError, command

    onnx = Path(a.onnx)
    if not onnx.is_file():
        print(f"error: {onnx}: no such ONNX file", file=sys.stderr)
        return 2
    dims = {}
    for d in a.dims or []:
        name, _, shape = d.partition("=")
        dims[name] = [int(x) for x in shape.split("x")]
    req = BuildRequest(onnx=onnx, precision=a.precision, trt_version=a.trt_version,
                       engine=Path(a.engine or onnx.with_suffix(".engine")),
                       cache=Path(a.cache) if a.cache else None, qdq=a.qdq,
                       batch=tuple(int(x) for x in a.batch.split(",")),  # type: ignore[arg-type]
                       dims=dims)
    try:
        print(shlex.join(command(req)))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _axes(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def _compare(a: argparse.Namespace) -> int:
    from quantsweep.report import compare as cmp

    try:
        if len(a.summaries) == 2:
            out = cmp.diff(cmp.load(a.summaries[0]), cmp.load(a.summaries[1]))
            if out.empty:
                print(f"no cell changed between {a.summaries[0]} and {a.summaries[1]}")
                return 0
            print(cmp.render(out.set_index(cmp.KEY), a.format))
            return 0
        if len(a.summaries) > 2:
            raise cmp.CompareError("give one summary (pivot tables) or two (OLD NEW: what changed)")
        df = cmp.load(a.summaries[0] if a.summaries else "results/summary.csv")
        table = cmp.pivot(df, a.values, a.baseline, _axes(a.rows), _axes(a.cols))
        width = a.width if a.width is not None else \
            (shutil.get_terminal_size().columns if sys.stdout.isatty() else 0)
        print(cmp.render(table, a.format, width))
        if a.format == "markdown" and any(str(v).endswith("(n.s.)") for v in table.to_numpy().ravel()):
            print("\n(n.s.): not significant, the speedup's 95% interval contains 1.0x")
    except cmp.CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _bundle(a: argparse.Namespace) -> int:
    from pathlib import Path

    from quantsweep import handoff
    from quantsweep.config import ConfigError, load_config

    try:
        cfg = load_config(a.config)
        cells = handoff.bundle(cfg, Path(cfg["results_dir"]), Path(a.output), a.cells or None,
                               val_images=a.val_images)
    except (ConfigError, handoff.HandoffError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import json

    left_out = json.loads((Path(a.output) / "manifest.json").read_text())["left_out"]
    for why in left_out:
        print(f"left out: {why}", file=sys.stderr)
    print(f"{a.output}: {len(cells)} TensorRT cells; on a GPU host: sh {a.output}/run_all.sh, "
          f"then here: quantsweep ingest {a.output}")
    return 0


def _ingest(a: argparse.Namespace) -> int:
    from pathlib import Path

    from quantsweep import handoff
    from quantsweep.config import ConfigError, load_config
    from quantsweep.handoff.ingest import ingest

    try:
        cfg = load_config(a.config)
        manifest = Path("resources") / "datasets" / cfg["dataset"]["name"] / "manifest.json"
        done = ingest(Path(a.bundle), Path(cfg["results_dir"]), manifest)
    except (ConfigError, handoff.HandoffError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for cell, stages in done.cells.items():
        print(f"{cell}: " + ", ".join(f"{stage} {status}" for stage, status in stages.items()))
    for why in done.missing:
        print(f"missing: {why}", file=sys.stderr)
    print(f"{len(done.cells)} cells ingested, {len(done.missing)} results missing; "
          f"`snakemake --cores all` rewrites the summary with them"
          if done.cells else f"{a.bundle}: no cell has results in its out/ yet")
    return 0


def _explain(path: str, as_json: bool) -> int:
    """``doctor --explain FILE``: the known failures a tool's output (a log, a traceback) shows,
    with why and the proven fix; exit 1 when one matches."""
    import json
    from pathlib import Path

    from quantsweep.known_failures import explain

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(errors="replace")
    except OSError as exc:
        print(f"error: {path}: cannot read it ({exc.strerror})", file=sys.stderr)
        return 2
    found = explain(text)
    if as_json:
        print(json.dumps({"file": path, "known_failures": found}, indent=2))
    elif not found:
        print(f"{path}: no known tool failure matches (src/quantsweep/known_failures.py)")
    for k in [] if as_json else found:
        where = "before the sweep" if k["stage"] == "outside" else f"stage {k['stage']}"
        print(f"{path}: {k['code']} ({where})\n  why: {k['why']}\n  fix: {k['fix']}")
    return 1 if found else 0


def _doctor(a: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from quantsweep import doctor, paths
    from quantsweep.config import ConfigError, load_config

    if a.explain:
        return _explain(a.explain, a.json)
    if not a.cell:
        print("error: doctor needs a cell (or --explain FILE)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(a.config)
        results = Path(cfg["results_dir"])
        axes = doctor.resolve(a.cell, results)
        manifest = paths.dataset_dir("resources", cfg["dataset"]["name"]) / "manifest.json"
        ann = None
        if manifest.exists():
            ann = Path(json.loads(manifest.read_text())["splits"]["val"]["annotations"])
        findings = doctor.diagnose(results, axes, ann)
    except (ConfigError, doctor.DoctorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cell = paths.cell_id(**axes)
    if a.json:
        print(json.dumps({"cell": cell, "findings": findings}, indent=2, default=str))
    else:
        print(doctor.format_findings(cell, findings))
    return 1 if any(f["severity"] == "error" for f in findings) else 0


def _snapshot(a: argparse.Namespace) -> int:
    from pathlib import Path

    from quantsweep import snapshot

    cfg = _config(a.config)
    if cfg is None:
        return 2
    try:
        files = snapshot.snapshot(Path("."), a.remote, cfg=cfg, force=a.force,
                                  restore_cmd=_restore_command(a.config, []))
    except snapshot.SnapshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import json

    code = json.loads((Path("results") / snapshot.SNAPSHOT_FILE).read_text())
    made = (f"quantsweep {code['quantsweep_version']} at git commit {code['git_commit'][:12]}"
            + (" with uncommitted changes" if code["git_dirty"] else "")) if code["git_commit"] \
        else f"quantsweep {code['quantsweep_version']} ({code.get('note', 'no git commit')})"
    print(f"pushed {', '.join(d[:-4] + '/' for d in files)} (made by {made}); keep the snapshot "
          f"with: git add {' '.join(files)} && git commit")
    return 0


def _restore(a: argparse.Namespace) -> int:
    from pathlib import Path

    from quantsweep import snapshot

    extra = ["--configfile", a.config] if a.config else []
    try:
        snapshot.restore(Path("."), a.rev, a.remote, extra)
    except snapshot.SnapshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("restored resources/ and results/; `snakemake -n` plans nothing")
    return 0


CONFIG_HELP = (f"a config file (default {DEFAULT_CONFIG}); given twice or more, the files are read one "
               "over the other as snakemake --configfile merges them")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="quantsweep", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cells", help="print the expanded matrix (cell, planned/excluded, reason)")
    c.add_argument("--config", action="append", help=CONFIG_HELP)
    c.add_argument("--format", choices=["table", "json"], default="table")
    c.set_defaults(func=_cells)
    k = sub.add_parser("check-config", help="validate a config file (or several, merged)")
    k.add_argument("--config", action="append", help=CONFIG_HELP)
    k.set_defaults(func=_check)
    v = sub.add_parser("verify", help="is the results tree whole? every planned cell's stage files "
                                      "present and readable, no incomplete jobs or leftovers, the "
                                      "summary matching the cells; exit 1 listing the holes")
    v.add_argument("--config", action="append", help=CONFIG_HELP)
    v.add_argument("--json", action="store_true")
    v.add_argument("--clean", action="store_true",
                   help="delete the work directories and temporary files of killed jobs first")
    v.set_defaults(func=_verify)
    im = sub.add_parser("inspect-model", help="an ONNX model's inputs/outputs, opset, metadata, the "
                                              "decode layout it fits and a models: block to paste")
    im.add_argument("file")
    im.add_argument("--name", help="the model's name in the block (default: the file's stem)")
    im.add_argument("--json", action="store_true")
    im.set_defaults(func=_inspect_model)
    cache = sub.add_parser("cache", help="TensorRT calibration caches")
    csub = cache.add_subparsers(dest="cache_cmd", required=True)
    ci = csub.add_parser("inspect", help="header, TensorRT versions that use or ignore it, bad or "
                                         "missing scales; exit 1 on errors, 2 if unreadable")
    ci.add_argument("file")
    ci.add_argument("--onnx", help="the float ONNX model the cache is meant for")
    ci.add_argument("--trt-version", action="append",
                    help="TensorRT version to judge against (repeatable; default 8.6.1, 10.13.3, 11.4.0)")
    ci.add_argument("--json", action="store_true")
    ci.set_defaults(func=_cache_inspect)
    t = sub.add_parser("trtexec-command", help="the trtexec command line for a model, precision "
                                               "and TensorRT version (input names read from the graph)")
    t.add_argument("--onnx", required=True)
    t.add_argument("--precision", choices=["fp32", "fp16", "int8"], required=True)
    t.add_argument("--trt-version", required=True, help="e.g. 8.6.1, 10.13.3, 11.4.0")
    t.add_argument("--cache", help="calibration cache (implicit INT8, TensorRT <= 10)")
    t.add_argument("--qdq", action="store_true", help="the graph carries Q/DQ (explicit INT8)")
    t.add_argument("--engine", help="default: the ONNX path with .engine")
    t.add_argument("--batch", default="1,1,1", help="min,opt,max of a dynamic batch axis")
    t.add_argument("--dims", action="append", help="NAME=1x3x640x640 for other dynamic dims")
    t.set_defaults(func=_trtexec_command)
    cp = sub.add_parser("compare", help="pivot a summary (rows: model/toolset/opset; columns: "
                                        "quantizer/precision/backend), or OLD.csv NEW.csv: what changed")
    cp.add_argument("summaries", nargs="*", help="default: results/summary.csv")
    cp.add_argument("--values", default="AP",
                    help="AP, AP50, latency_ms, speedup_vs_fp32, AP_delta_vs_fp32, status, "
                         "parity_max_abs or parity_cosine (the export's parity)")
    cp.add_argument("--baseline", help="a toolset: values become the difference to it")
    cp.add_argument("--format", choices=["markdown", "csv", "json"], default="markdown")
    cp.add_argument("--rows", help="axes of the rows, comma-separated (default model,toolset,opset; "
                                   "axes in neither --rows nor --cols join the rows)")
    cp.add_argument("--cols", help="axes of the columns (default quantizer,precision,backend)")
    cp.add_argument("--width", type=int, help="fit the table in this many characters (default: "
                                              "the terminal's width when printing to one)")
    cp.set_defaults(func=_compare)
    b = sub.add_parser("bundle", help="a folder with the TensorRT cells' graphs, caches and build "
                                      "scripts, to run on a GPU host")
    b.add_argument("cells", nargs="*", help="cell ids (default: every TensorRT cell)")
    b.add_argument("-o", "--output", required=True)
    b.add_argument("--config", default="config/config.yaml")
    b.add_argument("--val-images", help="where the GPU host has the val images (not copied into "
                                        "the bundle; their checksum is, and is checked on ingest)")
    b.set_defaults(func=_bundle)
    i = sub.add_parser("ingest", help="read a bundle's GPU results back into its cells")
    i.add_argument("bundle")
    i.add_argument("--config", default="config/config.yaml")
    i.set_defaults(func=_ingest)
    sn = sub.add_parser("snapshot", help="dvc add/commit/push resources/ and results/")
    sn.add_argument("--remote", help="a DVC remote name, or a URL/path (default: the project's)")
    sn.add_argument("--config", action="append", help=CONFIG_HELP + "; the tree is verified "
                                                      "against it first")
    sn.add_argument("--force", action="store_true", help="snapshot a tree that verify finds holes in")
    sn.set_defaults(func=_snapshot)
    rs = sub.add_parser("restore", help="dvc pull resources/ and results/ (of git REV), then "
                                        "snakemake --touch so that nothing recomputes")
    rs.add_argument("rev", nargs="?")
    rs.add_argument("--remote")
    rs.add_argument("--config", help="the sweep's config file, if not config/config.yaml")
    rs.set_defaults(func=_restore)
    dr = sub.add_parser("doctor", help="every check on one cell (field reports 000-004): findings "
                                       "with evidence and the fix; exit 1 when one is an error")
    dr.add_argument("cell", nargs="?", help="a cell id, or a path inside a cell's results directory")
    dr.add_argument("--config", default="config/config.yaml")
    dr.add_argument("--explain", metavar="FILE", help="instead of a cell: the known tool failures "
                                                      "a log or traceback shows ('-' = stdin)")
    dr.add_argument("--json", action="store_true")
    dr.set_defaults(func=_doctor)
    a = ap.parse_args(argv)
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
