"""The calibration-cache library and `quantsweep cache inspect`: round trips (hypothesis),
malformed files, and the findings on a real exported graph."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_onnx import const_detector
from hypothesis import given
from hypothesis import strategies as st

from quantsweep import calib
from quantsweep.calib.inspect import inspect_cache

names = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\r\n"),
                min_size=1, max_size=40).filter(lambda s: s.strip() == s and not s.endswith(":"))
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(st.dictionaries(names, finite, max_size=30), st.sampled_from(["8601", "100300", "8XXX"]),
       st.sampled_from(calib.ALGORITHMS), st.booleans())
def test_cache_text_round_trip(scales, version, algorithm, trailing):
    c = calib.Cache(version, algorithm, scales, trailing_space=trailing)
    back = calib.parse(calib.dumps(c))
    assert back == c
    assert calib.from_scale_table(calib.to_scale_table(c)) == calib.Cache(version, algorithm, scales)


@given(st.dictionaries(names, st.floats(min_value=2.0**-20, max_value=2.0**14, width=32), max_size=20))
def test_ranges_to_cache_to_ranges(amax):
    c = calib.from_ranges(amax, "8601")
    for k, v in calib.parse(calib.dumps(c)).amax().items():
        assert math.isclose(v, amax[k], rel_tol=1e-6)


def test_scale_encoding_is_big_endian_float32():
    assert calib.scale_to_hex(1.0) == "3f800000"
    assert calib.hex_to_scale("3c010a14") == struct.unpack(">f", bytes.fromhex("3c010a14"))[0]
    assert calib.trt_version_code("8.6.1") == "8601"
    assert calib.trt_version_code("10.13.3.9") == "101303"


@pytest.mark.parametrize("text, where, what", [
    ("", "empty file", ""),
    ("TRT-8601\nx: 3f800000\n", "line 1", "not a TensorRT calibration cache header"),
    ("trt-8601-EntropyCalibration2\n", "line 1", "not a TensorRT calibration cache header"),
    ("TRT-8601-EntropyCalibration2\nx: 3f8000\n", "line 2", "is not 8 hex digits"),
    ("TRT-8601-EntropyCalibration2\nx: 3f80000g\n", "line 2", "is not 8 hex digits"),
    ("TRT-8601-EntropyCalibration2\nx 3f800000\n", "line 2", "is not 'tensor_name: <8 hex digits>'"),
    ("TRT-8601-EntropyCalibration2\nx: 3f800000\ny: 3f80", "line 3", "is not 8 hex digits"),
    ("TRT-8601-EntropyCalibration2\nx: 3f800000\nx: 3f800000\n", "line 3", "appears twice"),
])
def test_malformed_cache_names_file_and_line(tmp_path: Path, text, where, what):
    p = tmp_path / "bad.cache"
    p.write_text(text)
    with pytest.raises(calib.CacheError) as e:
        calib.read(p)
    assert str(e.value).startswith(str(p)) and where in str(e.value) and what in str(e.value)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_cache_error(data):
    try:
        calib.parse(data.decode("latin-1"))
    except calib.CacheError:
        pass


def test_compatibility_per_tensorrt_version():
    c = calib.Cache("8601", "EntropyCalibration2", {"x": 0.1})
    assert calib.compatibility(c, "8.6.1")[0] == "used"
    assert calib.compatibility(c, "10.13.3")[0] == "ignored"
    verdict, why = calib.compatibility(c, "11.4.0")
    assert verdict == "ignored" and "removed in 11" in why
    p2o = calib.Cache("8XXX", "EntropyCalibration2", {"x": 0.1}, trailing_space=True)
    assert calib.compatibility(p2o, "8.6.1")[0] == "uncertain"
    assert calib.compatibility(p2o, "10.13.3")[0] == "ignored"
    assert calib.compatibility(calib.Cache("8601", "Foo", {}), "8.6.1")[0] == "ignored"


def test_inspect_against_a_graph(tmp_path: Path):
    model = const_detector(tmp_path / "m.onnx", [0, 0, 1, 1], 0)
    c = calib.Cache("8XXX", "EntropyCalibration2",
                    {"x": 0.02, "m": 0.0, "nope": 0.1, "z": float("nan"), "b": 0.01, "s": -1.0,
                     "boxes": 50.0, "scores": 0.01})
    rep = inspect_cache(c, model)
    codes = {(f["code"], f.get("tensor")) for f in rep["findings"]}
    assert ("bad_scale", "m") in codes and ("bad_scale", "z") in codes and ("bad_scale", "s") in codes
    assert ("unknown_tensor", "nope") in codes  # an unused entry: a warning
    assert ("constant_tensor", "b") in codes
    assert ("outlier_scale", "boxes") in codes
    assert rep["errors"] == 3
    # a cache none of whose names is in the graph is for another graph: an error
    other = inspect_cache(calib.Cache("8601", "EntropyCalibration2", {"a": 0.1, "b2": 0.2}), model)
    assert [f["code"] for f in other["findings"] if f["severity"] == "error"] == ["no_tensor_matches"]
    assert [x["verdict"] for x in rep["compatibility"]] == ["uncertain", "ignored", "ignored"]


def test_cache_inspect_cli_exit_codes(tmp_path: Path):
    good = tmp_path / "good.cache"
    calib.write(good, calib.Cache("8601", "EntropyCalibration2", {"x": 0.02}))
    bad = tmp_path / "bad.cache"
    bad.write_text("TRT-8601-EntropyCalibration2\nx: 00000000\n")
    broken = tmp_path / "broken.cache"
    broken.write_text("not a cache\n")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "quantsweep.cli", "cache", "inspect", *args],
                              capture_output=True, text=True)

    r = run(str(good), "--trt-version", "8.6.1")
    assert r.returncode == 0 and "8.6.1: used" in r.stdout
    r = run(str(bad))
    assert r.returncode == 1 and "tensor 'x' has a zero scale" in r.stdout
    r = run(str(broken))
    assert r.returncode == 2 and f"{broken}, line 1" in r.stdout


def test_runtime_scales_are_flagged():
    """Field report 002: a QDQ graph whose scale is computed from the tensor at run time."""
    import onnx
    from onnx import TensorProto, helper

    from quantsweep.quantize import runtime_scale_findings

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
             helper.make_tensor("zp", TensorProto.INT8, [], [0]),
             helper.make_tensor("k", TensorProto.FLOAT, [], [127.0])]
    static = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q_static"),
              helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq_static")]
    g = helper.make_graph(static, "static", [x], [y], inits)
    assert runtime_scale_findings(helper.make_model(g)) == []
    # amax = max|x| at run time, scale = amax / 127 (a QAT export with dynamic amax)
    dynamic = [helper.make_node("Abs", ["x"], ["ax"], name="abs"),
               helper.make_node("ReduceMax", ["ax"], ["amax"], keepdims=0, name="amax"),
               helper.make_node("Div", ["amax", "k"], ["sd"], name="scale"),
               helper.make_node("QuantizeLinear", ["x", "sd", "zp"], ["q"], name="q_dyn"),
               helper.make_node("DequantizeLinear", ["q", "sd", "zp"], ["y"], name="dq_dyn")]
    g = helper.make_graph(dynamic, "dynamic", [x], [y], inits)
    found = runtime_scale_findings(helper.make_model(g))
    assert [f["node"] for f in found] == ["q_dyn", "dq_dyn"]
    assert "scale 'sd' is computed at run time (by Div 'scale')" in found[0]["message"]
    dql = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["qd", "sc", "z"],
                                              name="dql"),
                             helper.make_node("DequantizeLinear", ["qd", "sc", "z"], ["y"], name="dq")],
                            "dql", [x], [y])
    found = runtime_scale_findings(helper.make_model(dql))
    assert [f["node"] for f in found] == ["dql", "dq"]
    assert onnx.checker.check_model(helper.make_model(g)) is None
