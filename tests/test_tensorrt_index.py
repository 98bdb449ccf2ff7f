"""Which index the TensorRT toolsets install from, checked against PyPI itself: for every
TensorRT pin of the default config, PyPI holds the ``tensorrt`` package only as a source stub,
and the libraries it pulls in (``tensorrt-libs`` for 8.x, ``tensorrt-cu12-libs`` /
``tensorrt-cu13-libs`` for 10 and 11) have no Linux wheel there: they come from NVIDIA's index,
which the config therefore names."""

from __future__ import annotations

import json
import urllib.request
from functools import cache
from pathlib import Path

import pytest

from quantsweep.config import load_config

NVIDIA_INDEX = "https://pypi.nvidia.com"
LIBS = ("tensorrt-libs", "tensorrt-cu12-libs", "tensorrt-cu13-libs")
CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


@cache
def releases(package: str) -> dict[str, list[dict]]:
    with urllib.request.urlopen(f"https://pypi.org/pypi/{package}/json", timeout=60) as r:
        return json.load(r)["releases"]


def tensorrt_pins() -> dict[str, str]:
    cfg = load_config(CONFIG)
    pins = {}
    for name, ts in cfg["toolsets"].items():
        for pkg in ts["packages"]:
            if pkg.startswith("tensorrt=="):
                pins[name] = pkg.split("==", 1)[1]
    return pins


def test_the_default_config_sweeps_three_tensorrt_versions():
    assert sorted(v.split(".")[0] for v in tensorrt_pins().values()) == ["10", "11", "8"]


@pytest.mark.parametrize("toolset", sorted(tensorrt_pins()))
def test_tensorrt_libraries_are_not_on_pypi_so_the_toolset_names_nvidias_index(toolset: str):
    version = tensorrt_pins()[toolset]
    files = releases("tensorrt")[version]
    assert files and all(f["packagetype"] == "sdist" for f in files), files
    base = version.removesuffix(".post1")
    for lib in LIBS:
        wheels = [f["filename"] for f in releases(lib).get(base, []) + releases(lib).get(version, [])
                  if f["filename"].endswith(".whl") and "linux" in f["filename"]]
        assert not wheels, f"{lib} {version} has Linux wheels on PyPI: {wheels}"
    assert NVIDIA_INDEX in load_config(CONFIG)["toolsets"][toolset]["extra_index_urls"]
