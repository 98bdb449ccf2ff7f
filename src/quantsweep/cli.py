"""The ``quantsweep`` command line."""

from __future__ import annotations

import argparse
import sys


def _cells(a: argparse.Namespace) -> int:
    from quantsweep import matrix
    from quantsweep.config import ConfigError, load_config

    try:
        cfg = load_config(a.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
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
    from quantsweep.config import ConfigError, load_config

    try:
        load_config(a.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.config}: ok")
    return 0


def _cache_inspect(a: argparse.Namespace) -> int:
    from quantsweep.calib.inspect import main as inspect_main

    return inspect_main(a.file, a.onnx, a.trt_version, a.json)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="quantsweep", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cells", help="print the expanded matrix (cell, planned/excluded, reason)")
    c.add_argument("--config", default="config/config.yaml")
    c.add_argument("--format", choices=["table", "json"], default="table")
    c.set_defaults(func=_cells)
    k = sub.add_parser("check-config", help="validate a config file")
    k.add_argument("--config", default="config/config.yaml")
    k.set_defaults(func=_check)
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
    a = ap.parse_args(argv)
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
