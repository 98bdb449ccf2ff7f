"""Config validation: every bad input fails before any job runs, naming key, value, allowed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from conftest import REPO, snakemake, tiny_config, write_config

from quantsweep.config import ConfigError, load_config, validate_config


def _err(cfg: dict) -> str:
    with pytest.raises(ConfigError) as ei:
        validate_config(copy.deepcopy(cfg), source="cfg.yaml")
    return str(ei.value)


def test_default_config_is_valid_and_defaults_filled():
    cfg = load_config(REPO / "config" / "config.yaml")
    assert cfg["evaluate"]["score_threshold"] == 0.001
    assert cfg["models"]["demo-torch"]["preprocess"]["size"] == [320, 320]
    assert cfg["exclude"][0]["reason"]


def test_unknown_key_named_with_allowed_keys():
    cfg = tiny_config()
    cfg["evaluate"] = {"score_treshold": 0.1}
    msg = _err(cfg)
    assert "evaluate" in msg and "'score_treshold'" in msg and "score_threshold" in msg


def test_wrong_type_names_key_value_and_expected():
    cfg = tiny_config()
    cfg["matrix"][0]["opsets"] = ["thirteen"]
    msg = _err(cfg)
    assert "matrix[0].opsets[0]" in msg and "'thirteen'" in msg and "integer" in msg


def test_undefined_model_and_toolset_in_matrix():
    cfg = tiny_config()
    cfg["matrix"][0]["models"] = ["nope"]
    cfg["matrix"][0]["toolsets"] = ["torch9"]
    msg = _err(cfg)
    assert "model 'nope' is not defined" in msg and "demo-torch" in msg
    assert "toolset 'torch9' is not defined" in msg


def test_bad_name_characters():
    cfg = tiny_config()
    cfg["toolsets"]["bad/name"] = cfg["toolsets"]["torch2.13"]
    msg = _err(cfg)
    assert "bad/name" in msg


def test_bad_enum_lists_allowed_values():
    cfg = tiny_config()
    cfg["matrix"][0]["quantizers"] = ["int4-magic"]
    msg = _err(cfg)
    assert "'int4-magic'" in msg and "'ort-qdq'" in msg


def test_duplicate_list_entries():
    cfg = tiny_config()
    cfg["matrix"][0]["opsets"] = [13, 13]
    assert "duplicate entries 13" in _err(cfg)


def test_duplicate_yaml_keys_are_an_error(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("toolsets:\n  a: {packages: [x]}\n  a: {packages: [y]}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: duplicate key 'a' at line 3"):
        load_config(p)


def test_malformed_yaml_names_file(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c.yaml: malformed YAML"):
        load_config(p)


def test_onnx_model_needs_path_or_from():
    cfg = tiny_config()
    cfg["models"]["m"] = {"source": "onnx", "inputs": [{"name": "x"}],
                          "decode": {"boxes": "b", "scores": "s", "labels": "l"}}
    assert "needs exactly one of 'path'" in _err(cfg)


def test_snakemake_refuses_bad_config_before_any_job(tmp_path: Path):
    cfg = tiny_config()
    cfg["matrix"][0]["backends"] = ["tensorrt-magic"]
    write_config(tmp_path, cfg)
    r = snakemake(tmp_path, "-n", check=False)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "matrix[0].backends[0]" in out and "'tensorrt-magic'" in out
    assert not (tmp_path / "results").exists()


def test_dataset_with_no_images_or_no_categories_names_the_key():
    cfg = tiny_config()
    cfg["dataset"]["synthetic"]["val"] = 0
    msg = _err(cfg)
    assert "dataset.synthetic.val" in msg and "value 0" in msg and "a number >= 1" in msg
    cfg = tiny_config()
    cfg["dataset"]["synthetic"]["categories"] = []
    msg = _err(cfg)
    assert "dataset.synthetic.categories" in msg and "minItems 1" in msg


def test_export_repair_unknown_or_for_a_source_without_paddle():
    cfg = tiny_config(models={"p": {"source": "paddle", "path": "/nowhere",
                                    "inputs": [{"name": "image", "role": "image"}],
                                    "export": {"repair": ["pir_float_scales"]}}})
    cfg["matrix"][0]["models"] = ["p"]
    msg = _err(cfg)
    assert "models.p.export.repair: unknown repair 'pir_float_scales'" in msg
    assert "['pir_interp_size']" in msg
    cfg = tiny_config()
    cfg["models"]["demo-torch"]["export"] = {"repair": ["pir_interp_size"]}
    msg = _err(cfg)
    assert "models.demo-torch.export.repair" in msg and "'paddle'" in msg
    cfg["models"]["demo-torch"]["export"] = {"repair": []}
    validate_config(copy.deepcopy(cfg))


def test_demo_precision_and_progressive_sizes_checked():
    cfg = tiny_config()
    cfg["demo"]["precision"] = "float16"
    msg = _err(cfg)
    assert "demo.precision" in msg and "bfloat16" in msg and "float32" in msg and "auto" in msg
    cfg = tiny_config()
    cfg["demo"]["input_size"] = 256
    cfg["demo"]["progressive"] = {"input_size": 288, "fraction": 0.5}
    msg = _err(cfg)
    assert "demo.progressive.input_size" in msg and "larger than demo.input_size" in msg
    cfg["demo"]["progressive"]["fraction"] = 0.0  # never used: no error
    validate_config(copy.deepcopy(cfg), source="cfg.yaml")
    cfg["demo"]["progressive"] = {"input_size": 200, "fraction": 0.5}
    msg = _err(cfg)
    assert "demo.progressive.input_size" in msg and "multipleOf: 32" in msg
    cfg["demo"]["progressive"] = {"input_size": 224, "fraction": 1.0}
    msg = _err(cfg)
    assert "demo.progressive.fraction" in msg
