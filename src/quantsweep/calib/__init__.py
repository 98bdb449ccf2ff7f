"""The TensorRT INT8 calibration cache: read, write, build from activation ranges, convert to
and from a per-tensor scale table (and so to QDQ ranges).

Format (text): a header ``TRT-<version>-<Algorithm>`` (e.g. ``TRT-8601-EntropyCalibration2``;
paddle2onnx 1.3.1 writes ``TRT-8XXX-EntropyCalibration2 `` with a trailing space), then one
line per tensor, ``name: <8 hex digits>`` = the big-endian IEEE-754 float32 of
scale = amax / 127. Only the standard library here: runs in every toolset.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

HEADER = re.compile(r"^TRT-(?P<version>[0-9X]+)-(?P<algorithm>[A-Za-z0-9_]+)(?P<trail>\s*)$")
# the calibrators of TensorRT's API; what each writes in the header
ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
INT8_MAX = 127.0
CACHE_FILE = "calibration.cache"


class CacheError(ValueError):
    """A cache that cannot be read: names the file and the line."""


@dataclass
class Cache:
    version: str  # as written: "8601", "100300", "8XXX"
    algorithm: str
    scales: dict[str, float] = field(default_factory=dict)
    trailing_space: bool = False

    @property
    def header(self) -> str:
        return f"TRT-{self.version}-{self.algorithm}" + (" " if self.trailing_space else "")

    def amax(self) -> dict[str, float]:
        return {k: v * INT8_MAX for k, v in self.scales.items()}


def trt_version_code(version: str) -> str:
    """TensorRT's NV_TENSORRT_VERSION as the header writes it: 8.6.1 -> 8601 (8.x:
    major*1000 + minor*100 + patch), 10.13.3 -> 101303 (10+: major*10000 + minor*100 + patch)."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    major, minor, patch = parts[:3]
    if major >= 10:
        return str(major * 10000 + minor * 100 + patch)
    return str(major * 1000 + minor * 100 + patch)


def hex_to_scale(text: str) -> float:
    return float(struct.unpack(">f", bytes.fromhex(text))[0])


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def parse(text: str, source: str = "<cache>") -> Cache:
    """Parse a cache; any malformed line is a CacheError naming ``source`` and the line."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise CacheError(f"{source}: empty file (a TensorRT calibration cache starts with a "
                         f"'TRT-<version>-<Algorithm>' header)")
    m = HEADER.match(lines[0])
    if not m:
        raise CacheError(f"{source}, line 1: {lines[0][:80]!r} is not a TensorRT calibration "
                         f"cache header (expected 'TRT-<version>-<Algorithm>', e.g. "
                         f"'TRT-8601-EntropyCalibration2')")
    cache = Cache(m["version"], m["algorithm"], trailing_space=bool(m["trail"]))
    for no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")
        value = value.strip()
        if not sep or not name:
            raise CacheError(f"{source}, line {no}: {line[:80]!r} is not 'tensor_name: <8 hex digits>'")
        if not re.fullmatch(r"[0-9a-fA-F]{8}", value):
            raise CacheError(f"{source}, line {no}: tensor {name!r}: {value[:20]!r} is not 8 hex "
                             f"digits (a big-endian float32 scale)")
        if name in cache.scales:
            raise CacheError(f"{source}, line {no}: tensor {name!r} appears twice")
        cache.scales[name] = hex_to_scale(value)
    return cache


def read(path: str | Path) -> Cache:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise CacheError(f"{p}: cannot read the calibration cache: {exc.strerror}") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise CacheError(f"{p}: not a text calibration cache (byte {exc.start} is not ASCII)") from None
    return parse(text, str(p))


def dumps(cache: Cache) -> str:
    return "\n".join([cache.header] + [f"{k}: {scale_to_hex(v)}" for k, v in cache.scales.items()]) + "\n"


def write(path: str | Path, cache: Cache) -> None:
    from quantsweep.status import write_text_atomic

    write_text_atomic(Path(path), dumps(cache))


def from_ranges(amax: dict[str, float], version: str, algorithm: str = "EntropyCalibration2") -> Cache:
    """A cache from per-tensor absolute maxima (scale = amax / 127)."""
    return Cache(version, algorithm, {k: float(v) / INT8_MAX for k, v in amax.items()})


def to_scale_table(cache: Cache) -> dict[str, object]:
    """A JSON-able per-tensor scale table (the header kept)."""
    return {"version": cache.version, "algorithm": cache.algorithm, "scales": dict(cache.scales)}


def from_scale_table(table: dict[str, object]) -> Cache:
    scales = table["scales"]
    assert isinstance(scales, dict)
    return Cache(str(table["version"]), str(table["algorithm"]),
                 {str(k): float(v) for k, v in scales.items()})


def bad_scale(scale: float) -> str | None:
    """Why a scale cannot be used (None when it can)."""
    if math.isnan(scale):
        return "NaN"
    if math.isinf(scale):
        return "infinite"
    if scale == 0.0:
        return "zero"
    if scale < 0.0:
        return "negative"
    return None


def compatibility(cache: Cache, trt_version: str) -> tuple[str, str]:
    """(verdict, why) for a TensorRT version: ``used``, ``ignored`` or ``uncertain``.

    TensorRT 11 removed implicit INT8 and the calibrators: any cache is ignored. Before that,
    TensorRT skips a cache it finds incompatible (NVIDIA/TensorRT#1378) and recalibrates with
    whatever its calibrator is fed (trtexec --calib: no data), silently; it compares the
    header with its own ``TRT-<version>-<algorithm>``."""
    major = int(re.findall(r"\d+", trt_version)[0])
    own = trt_version_code(trt_version)
    if major >= 11:
        return "ignored", (f"TensorRT {trt_version} has no implicit INT8 calibration (removed in "
                           f"11): a cache is never read; quantize with explicit Q/DQ instead")
    if cache.algorithm not in ALGORITHMS:
        return "ignored", f"algorithm {cache.algorithm!r} is none of TensorRT's calibrators {list(ALGORITHMS)}"
    if cache.version == own:
        return "used", f"header TRT-{cache.version} matches TensorRT {trt_version} ({own})"
    if "X" in cache.version:
        pattern = cache.version.replace("X", r"\d")
        if re.fullmatch(pattern, own):
            return "uncertain", (f"header TRT-{cache.version} is a placeholder, not a version "
                                 f"(paddle2onnx 1.3.1 writes it); field reports say TensorRT 8.6 EA "
                                 f"took it and 10.x rejected or ignored it")
        return "ignored", (f"header TRT-{cache.version} (a {cache.version[0]}.x placeholder) does "
                           f"not match TensorRT {trt_version} ({own})")
    return "ignored", f"header TRT-{cache.version} was written by another TensorRT version than {trt_version} ({own})"
