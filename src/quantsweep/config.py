"""Load and validate the sweep configuration.

The schema (``workflow/schemas/config.schema.yaml``) is the single description of the keys.
This module adds what JSON Schema cannot say: duplicate YAML keys, matrix entries that name
undefined models/toolsets, duplicate list entries, and messages that name the key, the
value and what is allowed.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration problem, with the file and the key it concerns."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise ConfigError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                f"(first defined at line {seen[key] + 1}); names must be unique"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping  # type: ignore[arg-type]
)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file, rejecting duplicate keys; errors name the file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: malformed YAML: {exc}") from None


@functools.cache
def _parsed_schema() -> dict[str, Any]:
    schema = read_yaml(SCHEMA_PATH)
    assert isinstance(schema, dict)
    return schema


def load_schema() -> dict[str, Any]:
    """The config schema, parsed once per process (a parse costs ~0.15 s of pure-Python YAML,
    and every model's export options look it up); each caller gets its own copy."""
    return copy.deepcopy(_parsed_schema())


def _key_path(parts: Iterator[Any] | list[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _allowed(error: Any) -> str:
    v, s = error.validator, error.schema
    if v == "enum":
        return "one of " + ", ".join(repr(x) for x in s["enum"])
    if v == "type":
        return f"a value of type {s['type']}"
    if v == "pattern":
        return f"a string matching {s['pattern']} (letters, digits, '.', '_', '-')"
    if v == "additionalProperties":
        allowed = sorted(s.get("properties", {}))
        return "only the keys " + ", ".join(allowed) if allowed else "no other keys"
    if v == "required":
        return "the keys " + ", ".join(s["required"])
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v]
        return f"a number {op} {s[v]}"
    if v in ("minItems", "maxItems", "minProperties", "minLength"):
        return f"{v} {s[v]}"
    if v == "anyOf":
        return "one of the allowed forms: " + "; ".join(
            sub.get("$ref", "").rsplit("/", 1)[-1] or str(sub.get("type") or sub.get("enum"))
            for sub in s["anyOf"]
        )
    return f"{v}: {s.get(v)!r}"


def _validator(schema: dict[str, Any]) -> Any:
    import jsonschema

    base = jsonschema.validators.validator_for(schema)

    def set_defaults(validator: Any, properties: Any, instance: Any, sch: Any) -> Any:
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, sch)

    cls = jsonschema.validators.extend(base, {"properties": set_defaults})
    return cls(schema)


def validate_config(cfg: Any, source: str = "config") -> dict[str, Any]:
    """Validate ``cfg`` in place (defaults filled) and return it; raise ConfigError."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping, got {type(cfg).__name__}")
    _apply_presets(cfg)
    schema = load_schema()
    validator = _validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        lines = []
        for err in errors[:10]:
            key = _key_path(list(err.path))
            if err.validator == "additionalProperties":
                extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
                if "propertyNames" in err.schema or not err.schema.get("properties"):
                    lines.append(f"{key}: {err.message}")
                    continue
                pats = [p for p in err.schema.get("patternProperties", {}) if p == "^_"]
                extra = [e for e in extra if not (pats and e.startswith("_"))]
                allowed = ", ".join(sorted(err.schema.get("properties", {})))
                lines.append(f"{key}: unknown key(s) {', '.join(map(repr, extra))}; "
                             f"allowed keys: {allowed}")
            elif err.validator == "required":
                lines.append(f"{key}: {err.message}")
            elif err.validator == "propertyNames":
                lines.append(f"{key}: name {err.instance!r} is not allowed: {err.message}")
            else:
                lines.append(f"{key}: value {err.instance!r} is not allowed; expected {_allowed(err)}")
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(lines) + more)
    _cross_check(cfg, source)
    return cfg


def _cross_check(cfg: dict[str, Any], source: str) -> None:
    problems: list[str] = []
    models, toolsets = cfg["models"], cfg["toolsets"]
    for i, block in enumerate(cfg["matrix"]):
        for key, defined, what in (("models", models, "model"), ("toolsets", toolsets, "toolset")):
            for name in block[key]:
                if name not in defined:
                    problems.append(
                        f"matrix[{i}].{key}: {what} {name!r} is not defined; defined {what}s: "
                        + ", ".join(sorted(defined))
                    )
        for key, values in block.items():
            if not isinstance(values, list):
                continue
            dup = sorted({str(v) for v in values if values.count(v) > 1})
            if dup:
                problems.append(f"matrix[{i}].{key}: duplicate entries {', '.join(dup)}")
    lat = cfg.get("latency", {})
    if lat.get("max_rounds", 15) < lat.get("rounds", 7):
        problems.append(f"latency.max_rounds: {lat['max_rounds']} is below latency.rounds "
                        f"({lat['rounds']}), the rounds always taken")
    for i, rule in enumerate(cfg.get("exclude", [])):
        for axis, defined in (("model", models), ("toolset", toolsets)):
            vals = rule["match"].get(axis)
            for name in [vals] if isinstance(vals, str) else (vals or []):
                if name not in defined:
                    problems.append(f"exclude[{i}].match.{axis}: {name!r} is not defined")
    for name, model in models.items():
        if model["source"] == "onnx" and ("path" in model) == ("from" in model):
            problems.append(f"models.{name}: source 'onnx' needs exactly one of 'path' (a file) "
                            "or 'from' (another cell's export)")
        if "from" in model:
            src = model["from"]
            # a Paddle model from a Paddle framework stage; an ONNX graph from any exporting source
            allowed = ("paddle", "demo-paddle") if model["source"] == "paddle" else \
                ("paddle", "demo-paddle", "demo-torch", "torch", "ultralytics")
            if src["model"] not in models or models[src["model"]]["source"] not in allowed:
                problems.append(f"models.{name}.from.model: {src['model']!r} is not a defined "
                                f"model with a source in {list(allowed)}")
            elif src["model"] == name:
                problems.append(f"models.{name}.from.model: a model cannot come from itself")
            if src["toolset"] not in toolsets:
                problems.append(f"models.{name}.from.toolset: {src['toolset']!r} is not defined")
        if model["source"] == "paddle" and ("path" in model) == ("from" in model):
            problems.append(f"models.{name}: source 'paddle' needs exactly one of 'path' (the "
                            "directory of inference.json or inference.pdmodel + inference.pdiparams) "
                            "or 'from' (the Paddle model of another cell)")
        if model["source"] in ("onnx", "paddle") and not model.get("inputs"):
            problems.append(f"models.{name}.inputs: required when source is "
                            f"{model['source']!r} (the contract)")
        if model["source"] not in ("onnx", "paddle") and "from" in model:
            problems.append(f"models.{name}.from: only for sources 'onnx' and 'paddle'")
        problems += _export_option_problems(name, model)
        problems += decode_problems(name, model["decode"])
        problems += _source_problems(name, model)
        if model["source"] in ("onnx", "paddle") and "path" in model and not Path(model["path"]).exists():
            problems.append(f"models.{name}.path: {model['path']!r} does not exist (relative paths "
                            f"are read from {Path.cwd()})")
        names = [t["name"] for t in model.get("inputs", [])]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"models.{name}.inputs: duplicate input names {', '.join(dup)}")
        pre = model["preprocess"]
        if any(s <= 0 for s in pre["std"]):
            problems.append(f"models.{name}.preprocess.std: must be positive")
    ds = cfg["dataset"]
    if ds["source"] == "coco":
        for key in ("annotations", "images"):
            if not ds.get(key):
                problems.append(f"dataset.{key}: required when dataset.source is 'coco'")
    else:
        syn = ds["synthetic"]
        if not syn.get("categories"):
            syn.setdefault("categories", DEFAULT_CATEGORIES)
        if syn["min_size"] > syn["max_size"]:
            problems.append(
                f"dataset.synthetic.min_size: {syn['min_size']} is larger than max_size {syn['max_size']}"
            )
        ids = [c["id"] for c in syn["categories"]]
        if len(set(ids)) != len(ids):
            problems.append("dataset.synthetic.categories: duplicate category ids")
    demo_models = [n for n, m in models.items() if m["source"].startswith("demo-")]
    if demo_models:
        demo = cfg["demo"]
        if not demo.get("toolset"):
            problems.append(f"demo.toolset: required because models {demo_models} use the demo")
        elif demo["toolset"] not in toolsets:
            problems.append(f"demo.toolset: toolset {demo['toolset']!r} is not defined")
        prog = demo.get("progressive") or {}
        if prog.get("fraction", 0) > 0 and prog.get("input_size", 0) > demo["input_size"]:
            problems.append(f"demo.progressive.input_size: {prog['input_size']} is larger than "
                            f"demo.input_size {demo['input_size']} (it is the smaller size the "
                            "first steps train at)")
    if problems:
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(problems))


def _apply_presets(cfg: dict[str, Any]) -> None:
    """Fill each model's decode block from its preset (the user's keys win) before the schema
    adds defaults, so a preset's values are not masked by them."""
    from quantsweep.evaluate.presets import apply_preset

    models = cfg.get("models")
    if isinstance(models, dict):
        for model in models.values():
            if not isinstance(model, dict):
                continue
            if model.get("source") == "ultralytics":  # its contract and outputs are Ultralytics'
                model.setdefault("inputs", [{"name": "images", "dtype": "float32", "role": "image"}])
                dec = model.setdefault("decode", {})
                if isinstance(dec, dict) and "preset" not in dec and "layout" not in dec:
                    rtdetr = "rtdetr" in str(model.get("path", "")).lower()
                    dec["preset"] = "ultralytics-rtdetr" if rtdetr else "ultralytics-yolo"
            if isinstance(model.get("decode"), dict):
                model["decode"] = apply_preset(model["decode"])


def _source_problems(name: str, model: dict[str, Any]) -> list[str]:
    """The keys each framework source needs, and the files they name."""
    out = []
    src = model["source"]
    key = f"models.{name}"
    for k in ("factory", "kwargs", "weights", "weights_key", "python_path", "qat"):
        if src != "torch" and model.get(k) not in (None, {}, []):
            out.append(f"{key}.{k}: only for source 'torch', not {src!r}")
    if src == "torch":
        if not model.get("factory"):
            out.append(f"{key}.factory: required for source 'torch' ('package.module:function')")
        if not model.get("inputs"):
            out.append(f"{key}.inputs: required for source 'torch' (the contract)")
        for i, folder in enumerate(model.get("python_path", [])):
            if not Path(folder).is_dir():
                out.append(f"{key}.python_path[{i}]: {folder!r} is not a folder")
        if model.get("weights") and not Path(model["weights"]).is_file():
            out.append(f"{key}.weights: {model['weights']!r} does not exist")
        if "path" in model:
            out.append(f"{key}.path: not for source 'torch' (factory + weights)")
    if src == "ultralytics":
        p = model.get("path")
        if not p:
            out.append(f"{key}.path: required for source 'ultralytics' (a .pt checkpoint or a model .yaml)")
        elif Path(p).suffix.lower() not in (".pt", ".yaml", ".yml"):
            out.append(f"{key}.path: {p!r} is not a .pt checkpoint or a model .yaml")
        elif Path(p).suffix.lower() == ".pt" and not Path(p).is_file():
            out.append(f"{key}.path: {p!r} does not exist")
    elif model.get("train"):
        out.append(f"{key}.train: only for source 'ultralytics', not {src!r}")
    return out


def decode_problems(name: str, dec: dict[str, Any]) -> list[str]:
    """What the schema cannot say about a decode block: the outputs each layout needs, an
    output named twice, the columns of ``rows``."""
    from quantsweep.evaluate.decode import OUTPUT_KEYS, ROW_BOX_COLUMNS, row_box_format

    out = []
    key = f"models.{name}.decode"
    need, optional = OUTPUT_KEYS[dec["layout"]]
    for k in need:
        if dec.get(k) is None:
            out.append(f"{key}.{k}: required for layout {dec['layout']!r}")
    refs = [(k, dec[k]) for k in need + optional if dec.get(k) is not None]
    seen: dict[Any, str] = {}
    for k, ref in refs:
        if ref in seen:
            out.append(f"{key}.{k}: output {ref!r} is already decode.{seen[ref]}; each role needs "
                       f"its own output")
        seen.setdefault(ref, k)
    if dec["layout"] == "rows" and dec.get("columns"):
        cols = dec["columns"]
        dup = sorted({c for c in cols if cols.count(c) > 1 and c != "skip"})
        if dup:
            out.append(f"{key}.columns: {dup} named more than once")
        for must in ("score", "class"):
            if must not in cols:
                out.append(f"{key}.columns: {cols} has no {must!r} column")
        if row_box_format(cols) is None:
            out.append(f"{key}.columns: {cols} has no complete box; one of "
                       + ", ".join("[" + ", ".join(v) + "]" for v in ROW_BOX_COLUMNS.values()))
    elif dec["layout"] == "rows":
        out.append(f"{key}.columns: required for layout 'rows'")
    if dec["label_map"] == "names" and dec["layout"] == "paddle_bbox" and not dec.get("names"):
        out.append(f"{key}.names: label_map 'names' on a Paddle model needs decode.names")
    return out


# export options and the model sources whose exporter has them
_EXPORT_OPTION_SOURCES = {
    "method": ("paddle", "demo-paddle"), "enable_optimize": ("paddle", "demo-paddle"),
    "optimize_tool": ("paddle", "demo-paddle"), "deploy_backend": ("paddle", "demo-paddle"),
    "save_calibration_file": ("paddle", "demo-paddle"), "repair": ("paddle", "demo-paddle"),
    "exporter": ("demo-torch", "torch"), "dynamic_batch": ("demo-torch", "torch"),
    "dynamic": ("ultralytics",), "simplify": ("ultralytics",),
}


def _export_option_problems(name: str, model: dict[str, Any]) -> list[str]:
    """An option that differs from its default for a source whose exporter does not have it
    is a config error: it would be silently ignored."""
    from quantsweep.export.repairs import REPAIRS

    props = load_schema()["definitions"]["export_options"]["properties"]
    out = [f"models.{name}.export.repair: unknown repair {r!r}; the known repairs are "
           f"{sorted(REPAIRS)}" for r in model.get("export", {}).get("repair", []) if r not in REPAIRS]
    for key, value in model.get("export", {}).items():
        sources = _EXPORT_OPTION_SOURCES.get(key)
        if sources and model["source"] not in sources and value != props[key].get("default"):
            out.append(f"models.{name}.export.{key}: {value!r} applies to sources "
                       f"{list(sources)}, not {model['source']!r}")
    return out


DEFAULT_CATEGORIES = [
    {"id": 1, "name": "disc"},
    {"id": 3, "name": "square"},
    {"id": 7, "name": "triangle"},
    {"id": 12, "name": "cross"},
    {"id": 90, "name": "ring"},
]


def merge_files(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Several config files read one over the other, as ``snakemake --configfile A --configfile
    B`` merges them (Snakemake's own ``update_config``: mappings merge key by key, anything
    else, lists included, is replaced)."""
    from snakemake.utils import update_config

    cfg: dict[str, Any] = {}
    for p in paths:
        layer = read_yaml(p)
        if layer is None:
            continue
        if not isinstance(layer, dict):
            raise ConfigError(f"{p}: a config file must be a mapping, not {type(layer).__name__}")
        update_config(cfg, layer)
    return cfg


def load_config(path: str | Path | Sequence[str | Path],
                overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read, validate and complete a config file, or several read one over the other."""
    files = [path] if isinstance(path, (str, Path)) else list(path)
    cfg = merge_files(files)
    if overrides:
        cfg = {**cfg, **overrides}
    return validate_config(cfg, source=" + ".join(map(str, files)))
