from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import snakemake, tiny_config, write_config
from helpers_onnx import one_image_coco

from quantsweep.config import DEFAULT_CATEGORIES
from quantsweep.dataset import DatasetError, generate_synthetic, validate_coco
from quantsweep.toolsets import PipSettings, env_hash, uv_install_args


def test_unresolvable_pin_becomes_rows_not_a_crash(tmp_path: Path):
    cfg = tiny_config()
    cfg["toolsets"]["broken"] = {"packages": ["onnxruntime==0.0.1-does-not-exist"]}
    cfg["models"] = {}
    cfg["models"]["m"] = {"source": "onnx", "path": str(tmp_path / "m.onnx"),
                          "inputs": [{"name": "x"}],
                          "decode": {"boxes": "b", "scores": "s", "labels": "l"}}
    (tmp_path / "m.onnx").write_bytes(b"")
    cfg["matrix"] = [{"models": ["m"], "toolsets": ["broken"]}]
    write_config(tmp_path, cfg)
    snakemake(tmp_path)
    row = pd.read_csv(tmp_path / "results" / "summary.csv").iloc[0]
    assert row["status"] == "failed" and row["stage"] == "toolset"
    assert row["reason_class"] in ("unresolvable_pin", "install_failed")
    assert "onnxruntime" in row["reason"]


def test_env_hash_changes_with_pins_and_pip_settings():
    spec = {"packages": ["onnxruntime==1.20.1"]}
    pip = PipSettings(find_links=["/opt/wheels"])
    h = env_hash(spec, pip, "3.11.7")
    assert h == env_hash({"packages": ["onnxruntime==1.20.1"]}, pip, "3.11.7")
    assert h != env_hash({"packages": ["onnxruntime==1.20.0"]}, pip, "3.11.7")
    assert h != env_hash(spec, PipSettings(), "3.11.7")
    assert h != env_hash(spec, pip, "3.12.1")
    args = uv_install_args({"packages": [], "index_url": "https://example.invalid/simple"},
                           PipSettings(extra_index_urls=["file:///x"], find_links=["/w"]))
    assert args[args.index("--index-url") + 1] == "https://example.invalid/simple"
    assert "--find-links" in args and "/w" in args and "file:///x" in args
    assert "unsafe-best-match" in args  # pip's behaviour across indexes
    # no bytecode at install: an env's processes compile what they import, once (quantsweep.interpreter)
    assert "--compile-bytecode" not in args


def test_synthetic_dataset_is_deterministic_and_checks_out(tmp_path: Path):
    syn = {"seed": 3, "train": 6, "calib": 3, "val": 5, "min_size": 320, "max_size": 640,
           "max_objects": 6, "empty_fraction": 0.2, "categories": DEFAULT_CATEGORIES}
    a = generate_synthetic(syn, "a", tmp_path / "a")
    b = generate_synthetic(syn, "b", tmp_path / "b")
    for split in ("train", "calib", "val"):
        ja = json.loads(Path(a["splits"][split]["annotations"]).read_text())
        jb = json.loads(Path(b["splits"][split]["annotations"]).read_text())
        assert ja["annotations"] == jb["annotations"]
        validate_coco(a["splits"][split]["annotations"], a["splits"][split]["images"], tol=0)
        for im in ja["images"]:
            assert 320 <= im["width"] <= 640 and 320 <= im["height"] <= 640
    ids = {s: {im["id"] for im in json.loads(Path(a["splits"][s]["annotations"]).read_text())["images"]}
           for s in ("calib", "val")}
    assert not ids["calib"] & ids["val"]
    cats = json.loads(Path(a["splits"]["val"]["annotations"]).read_text())["categories"]
    assert [c["id"] for c in cats] == [1, 3, 7, 12, 90]


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: d["images"][0].update(file_name="missing.jpg"), "image file .*missing.jpg does not exist"),
    (lambda d: d["annotations"][0].update(bbox=[150, 20, 100, 50]), r"bbox \[150, 20, 100, 50\] is outside image 5"),
    (lambda d: d["annotations"][0].update(category_id=2), "unknown category_id 2"),
])
def test_bad_annotations_name_file_and_entry(tmp_path: Path, mutate, expected):
    ann = one_image_coco(tmp_path, [50, 20, 100, 50], 7)
    d = json.loads(ann.read_text())
    mutate(d)
    ann.write_text(json.dumps(d))
    with pytest.raises(DatasetError, match=f"{ann}: .*{expected}"):
        validate_coco(ann, tmp_path / "images")


def test_pip_settings_follow_pip_precedence(tmp_path: Path):
    """Files and PIP_* variables are read as pip reads them; a variable beats a file."""
    import subprocess
    import sys

    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links = /from/file\nextra-index-url = file:///a file:///b\n"
                    "index-url = https://index.invalid/simple\n")
    code = ("from quantsweep.toolsets import read_pip_settings; s = read_pip_settings(); "
            "print(s.find_links, s.extra_index_urls, s.index_url)")
    env = {"PATH": os.environ["PATH"], "PIP_CONFIG_FILE": str(conf), "PIP_FIND_LINKS": "/from/env",
           "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.strip()
    assert out == "['/from/env'] ['file:///a', 'file:///b'] https://index.invalid/simple"
