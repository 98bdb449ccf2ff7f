"""How quantsweep runs a toolset env's interpreter: the environment variables of its processes.

A leaf module: the stage supervisor imports it, so it is part of every stage's code digest (an
edit here changes how every stage runs), while ``toolsets`` (env creation) stays out of them."""

from __future__ import annotations

from pathlib import Path

BYTECODE_DIR = "bytecode"  # under the env: its processes' compiled modules


def interpreter_env(env_dir: str | Path, base: dict[str, str]) -> dict[str, str]:
    """The variables for a process of a toolset env's interpreter: ``base`` with the bytecode of
    what it imports written once, at first import, under the env (PYTHONPYCACHEPREFIX, replacing
    one the user set) even where PYTHONDONTWRITEBYTECODE keeps it out of the user's own trees (the
    env is quantsweep's). Envs are installed without bytecode: compiling at install (pip's way)
    compiles every module of every package, about six times what the stages import (torch's env:
    17 s of CPU, against under 3), and without a place to write it every stage process would
    compile torch or paddle from source (about 2 s of CPU per import). The env must be writable
    by whoever runs the stages: where it is not, Python says nothing and compiles every time."""
    env = {k: v for k, v in base.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(env_dir) / BYTECODE_DIR)
    return env
