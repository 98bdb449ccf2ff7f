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
    a = ap.parse_args(argv)
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
