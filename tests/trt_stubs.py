"""tensorrt-stubs for mypy, installed where ``[tool.mypy] mypy_path`` looks (``.envs/tensorrt-stubs``).

The package cannot be installed normally here: it depends on ``tensorrt`` itself, whose wheel
downloads the library from NVIDIA's index. So it is installed with ``--no-deps --target``.
Its generated ``tensorrt.pyi`` (pybind11-stubgen) has a few lines that are not valid Python
(parameters named ``in``; a required parameter after defaulted ones), which stop mypy before it
checks anything; those lines are repaired in the copy (renamed parameter; ``= ...`` default).

``python tests/trt_stubs.py`` installs them and prints the directory.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

VERSION = "10.13.0.35.1"
ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / ".envs" / "tensorrt-stubs"


def _repair_line(line: str) -> str:
    line = re.sub(r"([(,] ?)(in|from|lambda)(: )", r"\1\2_\3", line)
    head, sep, tail = line.partition("(")
    if not sep:
        return line
    # after the first defaulted parameter, give later required ones a default
    parts = tail.split(", ")
    seen_default = False
    for k, part in enumerate(parts):
        if "=" in part.split(")")[0]:
            seen_default = True
        elif seen_default and re.match(r"^\w+: [^=]+$", part.split(")")[0]):
            name_type, close, rest = part.partition(")")
            parts[k] = f"{name_type} = ...{close}{rest}"
    return head + sep + ", ".join(parts)


def repair(path: Path) -> int:
    """Repair the lines ``ast`` rejects; returns how many were changed."""
    lines = path.read_text().splitlines(keepends=True)
    changed = 0
    for _ in range(100):
        try:
            ast.parse("".join(lines), str(path))
            break
        except SyntaxError as exc:
            k = (exc.lineno or 1) - 1
            fixed = _repair_line(lines[k])
            if fixed == lines[k]:
                raise RuntimeError(f"{path}:{k + 1}: cannot repair: {lines[k].strip()}") from exc
            lines[k] = fixed
            changed += 1
    path.write_text("".join(lines))
    return changed


def ensure(dest: Path = DEST) -> Path:
    marker = dest / f".quantsweep-{VERSION}"
    if marker.exists():
        return dest
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade",
                    "--target", str(dest), f"tensorrt-stubs=={VERSION}"], check=True)
    repair(dest / "tensorrt_bindings" / "tensorrt.pyi")
    marker.write_text("installed with --no-deps; tensorrt.pyi repaired (see tests/trt_stubs.py)\n")
    return dest


if __name__ == "__main__":
    print(ensure())
