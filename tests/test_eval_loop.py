"""The evaluation loop on real exports (the session's tiny INT8 sweep): several runners in one
pass give each the detections it gives alone, and a decode error still fails the row. The
preprocessing's table lookup gives the float arithmetic's values bit for bit, and preprocessing
straight from the file gives what preprocessing the decoded array gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantsweep.backends.onnxruntime import runner
from quantsweep.config import load_config
from quantsweep.evaluate.loop import evaluate_runner, evaluate_runners
from quantsweep.evaluate.preprocess import load_image, normalize, preprocess, preprocess_file
from quantsweep.job import ToolFailure

CELL = "results/demo-torch/torch2.13/opset13"


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("RGB", "PNG"), ("L", "PNG"), ("RGBA", "PNG"),
                                      ("P", "PNG"), ("CMYK", "JPEG")])
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_preprocess_file_equals_preprocessing_the_decoded_image(tmp_path: Path, mode, fmt, resize) -> None:
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / f"im.{fmt.lower()}"
    Image.fromarray(rgb).convert(mode).save(path, fmt)
    spec = {"resize": resize, "size": [32, 48], "pad_value": 114, "channel_order": "BGR",
            "scale": 1 / 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    want, want_meta = preprocess(load_image(path), spec)
    got, got_meta = preprocess_file(path, spec)
    assert got_meta == want_meta
    np.testing.assert_array_equal(got, want)

_pos = st.floats(0.0625, 300.0, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), h=st.integers(1, 40), w=st.integers(1, 40),
       order=st.sampled_from(["RGB", "BGR"]), scale=st.sampled_from([1.0, 1 / 255.0, 0.5]),
       mean=st.lists(st.floats(-200.0, 200.0, allow_nan=False, width=32), min_size=3, max_size=3),
       std=st.lists(_pos, min_size=3, max_size=3))
def test_normalize_equals_the_float_arithmetic(seed, h, w, order, scale, mean, std) -> None:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    spec = {"channel_order": order, "scale": scale, "mean": mean, "std": std}
    x = img.astype(np.float32)  # what a deploy script does, step by step
    if order == "BGR":
        x = x[..., ::-1]
    x = (x * np.float32(scale) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    want = np.ascontiguousarray(x.transpose(2, 0, 1))
    got = normalize(img, spec)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (3, h, w)
    np.testing.assert_array_equal(got, want)


def _setup(root: Path) -> tuple[dict, dict, dict]:
    cfg = load_config(root / "config.yaml")
    spec = {"name": "demo-torch", **cfg["models"]["demo-torch"]}
    man = json.loads((root / "resources/datasets/tiny/manifest.json").read_text())
    return cfg, spec, man


@pytest.mark.slow
def test_runners_in_one_pass_give_what_each_gives_alone(int8_sweep: Path) -> None:
    cfg, spec, man = _setup(int8_sweep)
    q = json.loads((int8_sweep / CELL / "ort-qdq/quantize/status.json").read_text())
    fp32 = runner(int8_sweep / CELL / "export/model.onnx", {"threads": 1})
    int8 = runner(int8_sweep / q["artifacts"]["model"], {"threads": 1})  # relative to the workflow
    both = evaluate_runners({"fp32": fp32, "int8": int8}, spec, man, cfg["evaluate"])
    for key, r in (("fp32", fp32), ("int8", int8)):
        alone, stats = evaluate_runner(r, spec, man, cfg["evaluate"])
        assert both[key][0] == alone and len(alone) > 0
        assert both[key][1]["images"] == stats["images"] == 6
    assert both["fp32"][0] != both["int8"][0]  # two graphs, two sets of detections


@pytest.mark.slow
def test_a_decode_error_in_the_decode_thread_fails_the_row(int8_sweep: Path) -> None:
    cfg, spec, man = _setup(int8_sweep)
    spec = {**spec, "decode": {**spec["decode"], "boxes": "no_such_output"}}
    r = runner(int8_sweep / CELL / "export/model.onnx", {"threads": 1})
    with pytest.raises(ToolFailure) as exc:
        evaluate_runner(r, spec, man, cfg["evaluate"])
    assert exc.value.reason_class == "decode_error" and "no_such_output" in str(exc.value)
