"""The sensitivity analysis: Q/DQ graph surgery on graphs ONNX Runtime's own quantizer wrote (a
layer put back in float really runs in float), the greedy recipe, the recipe in each
quantizer's terms (ONNX Runtime's nodes_to_exclude and ModelOpt's patterns, each applied by the
real tool), and the bad inputs: a graph without Q/DQ, a recipe naming nodes the graph lacks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ENVS, MODELOPT_TOOLSET, env_run
from onnx import TensorProto, helper, numpy_helper

from quantsweep import analyze, qdq_graph
from quantsweep.job import Job, Skip, ToolFailure
from quantsweep.quantize import run as quantize_run
from quantsweep.quantize.modelopt_ptq import exclude_patterns
from quantsweep.toolsets import EnvResult, ensure_env

CONVS = ["conv1", "conv2", "conv3"]


def conv_net(path: Path) -> Path:
    """x [1,3,16,16] -> conv1 -> relu -> conv2 -> relu -> conv3 -> y; seeded weights."""
    rng = np.random.default_rng(0)
    w = {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)), "w2": rng.normal(0, 0.2, (8, 8, 3, 3)),
         "w3": rng.normal(0, 0.3, (4, 8, 1, 1)), "b1": rng.normal(0, 0.1, 8),
         "b2": rng.normal(0, 0.1, 8), "b3": rng.normal(0, 0.1, 4)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["y"], name="conv3")]
    g = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def ort_quantize(src: Path, dst: Path, exclude: list[str] | None = None,
                 op_types: tuple[str, ...] = ("Conv",)) -> Path:
    from onnxruntime import quantization as oq

    data = [{"x": np.random.default_rng(i).random((1, 3, 16, 16), np.float32)} for i in range(4)]

    class Reader(oq.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(data)

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.it, None)

    oq.quantize_static(str(src), str(dst), Reader(), quant_format=oq.QuantFormat.QDQ,
                       per_channel=True, activation_type=oq.QuantType.QUInt8,
                       weight_type=oq.QuantType.QInt8, nodes_to_exclude=exclude or [],
                       op_types_to_quantize=list(op_types))
    return dst


def run(model: onnx.ModelProto, outputs: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for name in outputs:
        if name not in {o.name for o in m.graph.output}:
            m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(outputs, s.run(outputs, {"x": x}), strict=True))


def convs(model: onnx.ModelProto) -> list[str]:
    """The quantized Conv layers of a Q/DQ graph."""
    return [x.name for x in qdq_graph.quantized_layers(model) if x.op == "Conv"]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("qdq")
    fp32 = conv_net(d / "fp32.onnx")
    return fp32, ort_quantize(fp32, d / "int8.onnx")


def test_quantized_layers_of_an_ort_qdq_graph(graphs):
    fp32, int8 = graphs
    layers = qdq_graph.quantized_layers(onnx.load(str(int8)), onnx.load(str(fp32)))
    # ORT also quantizes each Conv's output: the Relus after them read through Q/DQ
    assert [x.name for x in layers] == ["conv1", "relu1", "conv2", "relu2", "conv3"]
    layers = [x for x in layers if x.op == "Conv"]
    assert layers[0].activations == ["x"] and layers[0].weights == ["w1", "b1"]
    assert layers[1].activations == ["r1"] and layers[1].weights == ["w2", "b2"]
    # without the FP32 graph: the names the quantizer gave the stored INT8 weights
    assert qdq_graph.quantized_layers(onnx.load(str(int8)))[0].weights[0] == "w1_quantized"
    assert qdq_graph.quantized_layers(onnx.load(str(fp32))) == []


def test_a_layer_put_back_in_float_runs_in_float(graphs):
    fp32_path, int8_path = graphs
    fp32, int8 = onnx.load(str(fp32_path)), onnx.load(str(int8_path))
    x = np.random.default_rng(7).random((1, 3, 16, 16), np.float32)
    ref = run(fp32, ["c1", "c2", "y"], x)
    q = run(int8, ["c1", "y"], x)
    assert np.abs(q["c1"] - ref["c1"]).max() > 1e-3  # quantized, conv1's output is not FP32's
    one = qdq_graph.float_layers(int8, ["conv1"], fp32)
    got = run(one, ["c1", "y"], x)
    np.testing.assert_allclose(got["c1"], ref["c1"], rtol=1e-5, atol=1e-5)
    # the other layers stay quantized
    assert convs(one) == ["conv2", "conv3"]
    assert np.abs(got["y"] - ref["y"]).max() > 1e-4
    # every layer in float: the FP32 graph's outputs, and no Q/DQ left behind
    every = qdq_graph.float_layers(int8, CONVS, fp32)
    np.testing.assert_allclose(run(every, ["y"], x)["y"], ref["y"], rtol=1e-5, atol=1e-5)
    assert not {n.op_type for n in every.graph.node} & set(qdq_graph.QDQ_OPS)
    # without the FP32 graph the weights are the dequantized INT8 ones: close, not equal
    deq = run(qdq_graph.float_layers(int8, ["conv1"]), ["c1"], x)["c1"]
    assert 0 < np.abs(deq - ref["c1"]).max() < 0.05
    with pytest.raises(KeyError) as err:
        qdq_graph.float_layers(int8, ["conv1", "nope"], fp32)
    assert err.value.args[0] == ["nope"]


def test_a_relu_the_quantizer_fused_comes_back_with_the_float_layer(graphs, tmp_path: Path):
    """ORT's quantizer (op_types Conv, Relu, as the default sweep) drops each Relu after a Conv
    and lets the uint8 Q clamp at zero: the float layer must clamp too."""
    fp32_path, _ = graphs
    fused = ort_quantize(fp32_path, tmp_path / "fused.onnx", op_types=("Conv", "Relu"))
    int8, fp32 = onnx.load(str(fused)), onnx.load(str(fp32_path))
    assert "Relu" not in {n.op_type for n in int8.graph.node}
    x = np.random.default_rng(3).random((1, 3, 16, 16), np.float32)
    ref = run(fp32, ["y"], x)["y"]
    every = qdq_graph.float_layers(int8, CONVS, fp32)
    # the two fused Relus back, and one on the input x, whose pair clamps at zero too (x is in
    # [0, 1): a Relu that changes nothing)
    assert [n.op_type for n in every.graph.node].count("Relu") == 3
    np.testing.assert_allclose(run(every, ["y"], x)["y"], ref, rtol=1e-5, atol=1e-5)
    # one layer in float is closer to FP32 than none (it was far worse without the Relu)
    q = np.abs(run(int8, ["y"], x)["y"] - ref).max()
    one = np.abs(run(qdq_graph.float_layers(int8, ["conv2"], fp32), ["y"], x)["y"] - ref).max()
    assert one < q


def test_constants_follow_identity_and_cast():
    nodes = [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.ones(2, np.float32))),
             helper.make_node("Identity", ["k"], ["k2"]), helper.make_node("Cast", ["k2"], ["k3"], to=1),
             helper.make_node("Add", ["x", "k3"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    assert qdq_graph.constants(g) == {"k", "k2", "k3"}


def test_greedy_recipe_keeps_what_helps_and_stops_at_the_target_or_the_limit():
    table = {("a",): 0.47, ("a", "b"): 0.46, ("a", "c"): 0.497}
    calls = []

    def ap_of(layers):
        calls.append(tuple(layers))
        return table[tuple(layers)]

    kept, ap, steps = analyze.greedy_recipe(["a", "b", "c", "d"], ap_of, 0.5, 0.45, 0.005, 8)
    assert kept == ["a", "c"] and ap == 0.497
    assert [s["kept"] for s in steps] == [True, False, True]
    assert calls == [("a",), ("a", "b"), ("a", "c")]  # "d" not tried: the target was met
    # unreachable within max_float_layers: the best it found, target not met
    kept, ap, _ = analyze.greedy_recipe(["a", "b", "c"], ap_of, 0.5, 0.45, 0.005, 1)
    assert kept == ["a"] and ap == 0.47 and 0.5 - ap > 0.005


def test_recipe_tries_only_the_scored_candidates_that_win_ap_back():
    """The top_k scored by AP, those that recover AP alone in float, the most first: a layer
    that loses AP alone in float, or was never scored, costs no evaluation."""
    scored = [{"layer": "conv1", "ap_recovered": 0.002}, {"layer": "conv2", "ap_recovered": -0.003},
              {"layer": "conv3", "ap_recovered": 0.018}, {"layer": "conv4", "ap_recovered": 0.0}]
    assert analyze.recipe_candidates(scored) == ["conv3", "conv1"]
    assert analyze.recipe_candidates([]) == []


def test_recipe_in_onnxruntime_terms_is_applied_by_quantize_static(graphs, tmp_path: Path):
    fp32, _ = graphs
    terms = analyze.recipe_terms([{"layer": "conv2", "op": "Conv", "activations": ["r1"],
                                   "weights": ["w2", "b2"]}])
    out = ort_quantize(fp32, tmp_path / "recipe.onnx",
                       terms["onnxruntime.quantize_static"]["nodes_to_exclude"])
    assert convs(onnx.load(str(out))) == ["conv1", "conv3"]
    assert terms["paddleslim"] == {"skip_tensor_list": ["w2", "b2"]}
    assert terms["trtexec"] == "--precisionConstraints=obey --layerPrecisions=conv2:fp16"
    assert terms["tensorrt_api"] == {"layer_precisions": {"conv2": "fp16"}}


def test_modelopt_patterns_name_exactly_the_recipe_layers():
    names = ["/det/head/Conv", "/det/head/Conv_1", "/det/head.0/Conv"]
    pats = exclude_patterns(["/det/head/Conv", "/det/head.0/Conv"])
    # ModelOpt matches each pattern with re.match over the node names
    hit = [n for n in names if any(re.match(p, n) for p in pats)]
    assert hit == ["/det/head/Conv", "/det/head.0/Conv"]
    # a bare name would also have excluded /det/head/Conv_1
    assert re.match("/det/head/Conv", "/det/head/Conv_1")


@pytest.fixture(scope="module")
def modelopt_env() -> EnvResult:
    env = ensure_env("modelopt0.47", MODELOPT_TOOLSET, ENVS)
    assert env.status == "ok", env.message[-2000:]
    return env


def test_recipe_in_modelopt_terms_is_applied_by_modelopt(graphs, modelopt_env, tmp_path: Path):
    fp32, _ = graphs
    pats = analyze.recipe_terms([{"layer": "conv1", "op": "Conv", "activations": [],
                                  "weights": []}])["modelopt.onnx.quantization"]["nodes_to_exclude"]
    out = tmp_path / "mo.onnx"
    code = ("import sys, json, numpy as np\n"
            "from modelopt.onnx.quantization import quantize\n"
            "data = {'x': np.random.default_rng(0).random((4, 3, 16, 16), np.float32)}\n"
            "quantize(sys.argv[1], quantize_mode='int8', calibration_data=data, calibration_eps=['cpu'],"
            " output_path=sys.argv[2], nodes_to_exclude=json.loads(sys.argv[3]),"
            " high_precision_dtype='fp32', log_level='WARNING')\n")
    plain = tmp_path / "mo-plain.onnx"
    for dst, exclude in ((plain, []), (out, pats)):
        env_run(modelopt_env, "-c", code, str(fp32), str(dst), json.dumps(exclude), check=True, cwd=tmp_path)
    # ModelOpt follows its own rules for which layers it quantizes (here conv1 only: measured
    # with 0.47.0); the recipe takes conv1 out
    before = convs(onnx.load(str(plain)))
    assert "conv1" in before
    assert convs(onnx.load(str(out))) == \
        [n for n in before if n != "conv1"]


def test_a_graph_without_qdq_is_skipped_with_the_reason(graphs, tmp_path: Path):
    fp32, _ = graphs
    job = Job("analyze", "m/t/opset13/trt-calibrator", tmp_path, {"quantizer": "trt-calibrator"},
              {"quantize": {"artifacts": {"model": str(fp32), "float_model": str(fp32)}}})
    with pytest.raises(Skip) as err:
        analyze.run(job)
    assert err.value.reason_class == "no_qdq" and str(fp32) in err.value.message
    assert "no node is fed by a DequantizeLinear" in err.value.message


def test_a_recipe_naming_nodes_the_graph_lacks_fails_the_recipe_cell(graphs, tmp_path: Path):
    fp32, _ = graphs
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"float_layers": ["conv2", "/other/toolset/Conv_7"],
                                  "target_met": True}))
    job = Job("quantize", "m/t/opset13/ort-qdq-recipe", tmp_path, {"quantizer": "ort-qdq-recipe"},
              {"export": {"artifacts": {"model": str(fp32)}},
               "analyze": {"artifacts": {"recipe": str(recipe)}}})
    with pytest.raises(ToolFailure) as err:
        quantize_run(job)
    assert err.value.reason_class == "recipe_mismatch"
    assert "['/other/toolset/Conv_7']" in err.value.message and str(recipe) in err.value.message


def test_layers_reading_one_quantized_tensor_are_one_unit():
    L = qdq_graph.Layer
    layers = [L("maxpool", "MaxPool", activations=["hm"]), L("conv", "Conv", activations=["x"]),
              L("equal", "Equal", activations=["hm", "pooled"]), L("mul", "Mul", activations=["pooled"])]
    groups = [[x.name for x in g] for g in qdq_graph.shared_groups(layers)]
    assert groups == [["maxpool", "equal", "mul"], ["conv"]]


def test_recipe_rows_link_to_their_parent_in_the_summary_and_the_ledger():
    import pandas as pd

    from quantsweep.report.ledger import steps
    from quantsweep.report.summary import add_recipe_links

    base = {"model": "m", "toolset": "t", "opset": 13, "precision": "int8", "backend": "onnxruntime",
            "status": "ok", "mode": "measured", "framework_AP": None}
    rows = [{**base, "cell": "m/t/opset13/none/fp32/onnxruntime", "quantizer": "none", "precision": "fp32",
             "AP": 0.488, "speedup_vs_fp32": 1.0},
            {**base, "cell": "m/t/opset13/ort-qdq/int8/onnxruntime", "quantizer": "ort-qdq", "AP": 0.467,
             "speedup_vs_fp32": 2.13, "latency_ms": 5.0},
            {**base, "cell": "m/t/opset13/ort-qdq-recipe/int8/onnxruntime", "quantizer": "ort-qdq-recipe",
             "AP": 0.4878, "speedup_vs_fp32": 1.95, "latency_ms": 10.0,  # timed under other load
             "recipe_of": "m/t/opset13/ort-qdq/int8/onnxruntime", "recipe_float_layers": "a; b"}]
    add_recipe_links(rows)
    r = rows[2]
    assert r["AP_delta_vs_parent"] == pytest.approx(0.0208)
    assert r["speed_vs_parent"] == pytest.approx(1.95 / 2.13, abs=1e-3)  # from the paired speedups
    step = next(s for s in steps(pd.DataFrame(rows)) if s["step"] == "INT8 ort-qdq -> INT8 + recipe on onnxruntime")
    assert step["recovered_share"] == pytest.approx(0.0208 / 0.021, abs=1e-3)
    assert step["int8_speedup_vs_fp32"] == 2.13 and step["speedup_vs_fp32"] == 1.95


def test_analysis_sessions_do_not_spin_after_a_run(tmp_path: Path):
    """The analysis runs a dozen sessions in turn on the same cores: a session whose threads
    spin-wait after its run takes the cores from the next one (it made the AP pass 3x slower
    on 2 cores), so the analysis' sessions are made with spinning off, the others keep it."""
    from quantsweep.analyze import _Graphs
    from quantsweep.backends import onnxruntime as ortb

    model = onnx.load(str(conv_net(tmp_path / "net.onnx")))
    entry = "session.intra_op.allow_spinning"
    quiet = _Graphs(2).runner(model).session.get_session_options()
    assert quiet.get_session_config_entry(entry) == "0"
    default = ortb.runner(model.SerializeToString(), {"threads": 2}).session.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        default.get_session_config_entry(entry)  # ONNX Runtime's default: spinning on
