"""Failures a tool version is known for, as data: the stage it breaks (or ``outside``: before
the sweep, in the user's own export), what the tool says (a regex on its message), why, and
the fix proven on the real wheels (the test named). A stage failure whose message matches an
entry of its stage gets the entry's code as its row class (the stage supervisor,
``stage.run_stage``); the doctor cites the
entry with the status file and tool versions as evidence; ``quantsweep doctor --explain FILE``
matches any tool output against every entry."""

from __future__ import annotations

import re
from typing import Any

KNOWN_FAILURES: list[dict[str, str]] = [
    {"code": "legacy_save_under_pir", "stage": "framework",
     "pattern": r"must be Value, but got Variable",
     "why": "Paddle 3.x converts the dygraph model to static with PIR ops even when the old "
            "program format is asked for (FLAGS_enable_pir_api=0): paddle.jit.save of the legacy "
            "format (.pdmodel) fails inside the first op it converts",
     "fix": "save the model in Paddle 3.x's PIR format (models.<name>.paddle_format: pir, "
            "inference.json), which paddle2onnx 2.x converts, or keep the legacy format in a "
            "Paddle 2.6 toolset (tests/test_paddle3.py)"},
    {"code": "pir_double_scale", "stage": "export",
     "pattern": r"elementwise MUST be ir::FloatAttribute",
     "why": "Paddle 3.x keeps the scale of nearest/bilinear interpolation ops as doubles (also "
            "when it translates a legacy .pdmodel to PIR); paddle2onnx 2.1 reads that scale as "
            "floats and stops at the first such op",
     "fix": "models.<name>.export.repair: [pir_interp_size]: the interpolation ops get their "
            "static output size (out_h/out_w) through Paddle's own API, which paddle2onnx reads "
            "instead of the scale; Paddle's result is unchanged and the export parity checks it "
            "against the unrepaired model (tests/test_paddledet.py -k paddle3)"},
    {"code": "nms_not_pir", "stage": "outside",
     "pattern": r"operator multiclass_nms3 should be one of",
     "why": "PaddleDetection 2.6's export of a head with its NMS under Paddle 3.x: the legacy "
            "multiclass_nms3 layer accepts only old-IR Variables, and Paddle 3.x's to_static "
            "hands it PIR Values, so the export never writes a model",
     "fix": "export the head without its NMS (PP-YOLOE: PPYOLOEHead: {exclude_nms: true}) and "
            "decode with models.<name>.decode: {preset: paddledetection-nonms}: the evaluation "
            "does MultiClassNMS's class-aware NMS on the boxes and per-class scores "
            "(tests/test_paddledet.py -k paddle3); or export in a Paddle 2.6 toolset, whose "
            ".pdmodel with the NMS a Paddle 3.x toolset converts with the pir_interp_size repair"},
]


def shows(entry: dict[str, str], text: str) -> bool:
    """Whether the text (a status message, a log) has the entry's words."""
    return re.search(entry["pattern"], text) is not None


def match(message: str, stage: str | None = None) -> dict[str, str] | None:
    """The known failure of ``stage`` (any stage when None) whose pattern the message has."""
    for k in KNOWN_FAILURES:
        if (stage is None or k["stage"] == stage) and shows(k, message):
            return k
    return None


def reason_class(stage: str, current: str, message: str) -> str:
    """A failure's row class: the known failure's code when its message matches one of the
    stage's entries, else the class the stage gave it."""
    k = match(message, stage)
    return k["code"] if k else current


def explain(text: str) -> list[dict[str, Any]]:
    """Every known failure whose pattern the text (a log, a traceback) has."""
    return [dict(k) for k in KNOWN_FAILURES if shows(k, text)]
