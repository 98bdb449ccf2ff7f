"""Toolsets: named, pinned package sets, each installed once by uv into its own venv.

The env lives in ``<envs_dir>/<name>-<hash>/`` where the hash covers the requirements, the
Python version and the package sources; it is reused while that hash is unchanged. uv does
not read pip's configuration, so the machine's pip settings (constraint files, find-links,
index URLs from pip's config files and ``PIP_*`` variables) are passed to it explicitly.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantsweep import status as st
from quantsweep.interpreter import interpreter_env

# What quantsweep's own stage code needs inside every toolset env (beyond the tools).
RUNTIME_PACKAGES = ("pillow",)
COMPLETE_MARKER = ".quantsweep-complete"


@dataclass
class PipSettings:
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"index_url": self.index_url, "extra_index_urls": self.extra_index_urls,
                "find_links": self.find_links, "constraints": self.constraints}


def _split(value: str) -> list[str]:
    return [v for v in value.replace("\n", " ").split() if v]


def _pip_config_items(python: str) -> list[tuple[str, str]]:
    """(key, value) pairs of pip's configuration, as `pip config list` reports them: read
    in-process with pip's own loader when ``python`` is this interpreter (a pip subprocess
    costs ~0.4 s on every toolset job), else by running `pip config list`."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        try:
            from pip._internal.configuration import Configuration

            conf = Configuration(isolated=False)
            conf.load()
            return [(k, str(v)) for k, v in conf.items()]
        except Exception:  # noqa: BLE001 - pip's internals moved: ask pip itself
            pass
    try:
        out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                             text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    items = []
    for line in out.splitlines():
        if "=" in line:
            key, _, raw = line.partition("=")
            items.append((key.strip(), raw.strip().strip("'\"")))
    # `pip config list` sorts by name; PIP_* variables (":env:") take precedence over files
    return sorted(items, key=lambda kv: kv[0].startswith(":env:"))


def read_pip_settings(python: str = sys.executable) -> PipSettings:
    """The machine's pip configuration as pip itself reports it (files and PIP_* variables)."""
    values: dict[str, list[str]] = {}
    for key, raw in _pip_config_items(python):
        opt = key.rsplit(".", 1)[-1].strip()
        # later items (env, site) override earlier ones for single-valued options
        values[opt] = _split(raw) if opt != "index-url" else [raw]
    s = PipSettings()
    if values.get("index-url"):
        s.index_url = values["index-url"][0]
    s.extra_index_urls = values.get("extra-index-url", [])
    s.find_links = values.get("find-links", [])
    s.constraints = values.get("constraint", [])
    return s


def python_version(python: str = sys.executable) -> str:
    """The version of ``python``; no subprocess when it is this interpreter (any path to it)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return ".".join(map(str, sys.version_info[:3]))
    return subprocess.run(
        [python, "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"],
        capture_output=True, text=True, check=True).stdout.strip()


def env_hash(spec: dict[str, Any], pip: PipSettings, py_version: str) -> str:
    constraint_text = []
    for c in pip.constraints:
        try:
            constraint_text.append(Path(c).read_text(encoding="utf-8"))
        except OSError:
            constraint_text.append(c)
    key = {
        "packages": sorted(spec["packages"]) + sorted(RUNTIME_PACKAGES),
        **({"no_deps": sorted(spec["no_deps"])} if spec.get("no_deps") else {}),
        "index_url": spec.get("index_url"),
        **({"extra_index_urls": spec["extra_index_urls"]} if spec.get("extra_index_urls") else {}),
        "find_links": spec.get("find_links", []),
        "pip": pip.as_dict(),
        "constraints": constraint_text,
        "python": py_version,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def uv_install_args(spec: dict[str, Any], pip: PipSettings) -> list[str]:
    """uv pip install options equivalent to what pip would use on this machine."""
    # pip's behaviour across indexes. No bytecode at install: the env's processes compile what
    # they import, once (interpreter_env)
    args: list[str] = ["--index-strategy", "unsafe-best-match"]
    index = spec.get("index_url") or pip.index_url
    if index:
        args += ["--index-url", index]
    for url in [*spec.get("extra_index_urls", []), *pip.extra_index_urls]:
        args += ["--extra-index-url", url]
    for link in [*spec.get("find_links", []), *pip.find_links]:
        args += ["--find-links", link]
    for c in pip.constraints:
        if Path(c).exists():
            args += ["--constraint", c]
    return args


def _uv() -> str:
    exe = shutil.which("uv")
    if exe:
        return exe
    try:
        from uv import find_uv_bin  # the uv package on PyPI ships its binary

        return str(find_uv_bin())
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError("uv is not installed (it is a dependency of quantsweep)") from exc


def check_requires(requires: list[str]) -> str | None:
    """None when this machine has everything; otherwise the missing requirement, explained."""
    for req in requires:
        if req == "gpu":
            has_dev = any(Path("/dev").glob("nvidia[0-9]*"))
            smi = shutil.which("nvidia-smi")
            ok = False
            if smi:
                r = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
                ok = r.returncode == 0 and "GPU" in r.stdout
            if not (has_dev or ok):
                return "requires gpu: no NVIDIA GPU on this machine (no /dev/nvidia*, nvidia-smi absent or lists none)"
        elif req == "trtexec":
            if not shutil.which("trtexec"):
                return "requires trtexec: not on PATH"
        elif req == "tensorrt":
            pass  # checked after install, by importing it inside the env
    return None


def _lock(path: Path) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "w")  # noqa: SIM115 - held until released
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


@dataclass
class EnvResult:
    status: str
    env_dir: str
    python: str
    versions: dict[str, str]
    reason_class: str = ""
    message: str = ""
    created: bool = False
    seconds: float = 0.0


def freeze(python: str) -> dict[str, str]:
    out = subprocess.run([_uv(), "pip", "freeze", "--python", python], capture_output=True,
                         text=True, check=True).stdout
    versions = {}
    for line in out.splitlines():
        if "==" in line:
            name, _, ver = line.partition("==")
            versions[name.strip().lower()] = ver.strip()
        elif " @ " in line:
            name, _, ver = line.partition(" @ ")
            versions[name.strip().lower()] = ver.strip()
    return versions


def ensure_env(name: str, spec: dict[str, Any], envs_dir: str | Path,
               pip: PipSettings | None = None, base_python: str | None = None) -> EnvResult:
    """Create (once) or reuse the env for ``spec``; never raises on an install failure."""
    pip = pip or read_pip_settings()
    base_python = base_python or os.path.realpath(sys.executable)
    h = env_hash(spec, pip, python_version(base_python))
    env_dir = Path(envs_dir).resolve() / f"{name}-{h}"
    py = env_dir / "bin" / "python"
    t0 = time.monotonic()
    missing = check_requires(spec.get("requires", []))
    if missing:
        return EnvResult("skipped", str(env_dir), "", {}, "missing_requirement", missing)
    lock = _lock(env_dir.with_name(env_dir.name + ".lock"))
    try:
        marker = env_dir / COMPLETE_MARKER
        if marker.exists():  # reuse: the versions were frozen when the env was made
            versions = json.loads(marker.read_text()).get("versions") or freeze(str(py))
            return EnvResult("ok", str(env_dir), str(py), versions, seconds=time.monotonic() - t0)
        if env_dir.exists():  # left half-made by a killed run
            shutil.rmtree(env_dir)
        uv = _uv()
        r = subprocess.run([uv, "venv", "--quiet", "--python", base_python, str(env_dir)],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            return EnvResult("failed", str(env_dir), "", {}, "env_create",
                             (r.stderr or r.stdout).strip()[-4000:])
        pkgs = list(spec["packages"])
        lower = " ".join(pkgs).lower()
        pkgs += [p for p in RUNTIME_PACKAGES if p not in lower]
        cmd = [uv, "pip", "install", "--python", str(py), *uv_install_args(spec, pip), *pkgs]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            shutil.rmtree(env_dir, ignore_errors=True)
            return EnvResult("failed", str(env_dir), "", {}, classify_install_error(r.stderr),
                             (r.stderr or r.stdout).strip()[-4000:])
        if spec.get("no_deps"):  # packages whose declared requirements cannot be installed
            r = subprocess.run([uv, "pip", "install", "--python", str(py), "--no-deps",
                                *uv_install_args(spec, pip), *spec["no_deps"]],
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                shutil.rmtree(env_dir, ignore_errors=True)
                return EnvResult("failed", str(env_dir), "", {}, classify_install_error(r.stderr),
                                 (r.stderr or r.stdout).strip()[-4000:])
        if "tensorrt" in spec.get("requires", []):
            r = subprocess.run([str(py), "-c", "import tensorrt"], capture_output=True,
                               text=True, check=False, env=interpreter_env(env_dir, dict(os.environ)))
            if r.returncode != 0:
                return EnvResult("skipped", str(env_dir), str(py), freeze(str(py)),
                                 "missing_requirement",
                                 "requires tensorrt: `import tensorrt` fails in the env: "
                                 + r.stderr.strip()[-500:])
        versions = freeze(str(py))
        (env_dir / COMPLETE_MARKER).write_text(json.dumps({"spec": spec, "hash": h,
                                                           "versions": versions}))
        return EnvResult("ok", str(env_dir), str(py), versions, created=True,
                         seconds=time.monotonic() - t0)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def classify_install_error(stderr: str) -> str:
    low = stderr.lower()
    if "no solution found" in low or "unsatisfiable" in low or "not found in the package registry" in low:
        return "unresolvable_pin"
    if "failed to build" in low or "build backend" in low:
        return "build_failed"
    if "network" in low or "connection" in low or "dns" in low:
        return "network"
    return "install_failed"


def write_toolset_outputs(name: str, spec: dict[str, Any], out_dir: str | Path,
                          envs_dir: str | Path) -> dict[str, Any]:
    """The `toolset` rule: create/reuse the env, write versions.txt, env.json, status.json."""
    out = Path(out_dir)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    res = ensure_env(name, spec, envs_dir)
    lines = [f"# toolset {name}: {res.status}" + (f" ({res.message.splitlines()[0]})"
                                                  if res.message else "")]
    lines += [f"{k}=={v}" for k, v in sorted(res.versions.items())]
    text = "\n".join(lines) + "\n"
    st.write_text_atomic(out / "versions.txt", text)
    st.write_json_atomic(out / "env.json", {"python": res.python, "env_dir": res.env_dir,
                                           "status": res.status})
    rec = st.make_status("toolset", name, res.status, reason_class=res.reason_class,
                         message=res.message, tool_versions=res.versions, started=started,
                         duration_s=res.seconds, created=res.created, env_dir=res.env_dir,
                         requires=spec.get("requires", []))
    st.write_status(out / "status.json", rec)
    return rec
