"""Q/DQ graph helpers, on ``onnx`` protos only: which tensors are constants, which layers of a
Q/DQ graph are quantized, and the same graph with chosen layers put back in float.

Used by the calibration-cache tools (``calib/``), the quantize stage's runtime-scale check and
the sensitivity analysis (``analyze``). A *layer* is a node with at least one input produced by
a ``DequantizeLinear``: a compute node (Conv, ConvTranspose, MatMul, Gemm), and any other node a
quantizer put Q/DQ in front of (Add, Resize, MaxPool, Equal...: ModelOpt quantizes those too)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def constants(graph: Any) -> set[str]:
    """Names of the tensors whose value is fixed in the graph: initializers, ``Constant``
    outputs, and what ``Identity``/``Cast`` make of them."""
    out = {i.name for i in graph.initializer}
    out |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for n in graph.node:  # nodes are topologically sorted: one pass follows chains
        if n.op_type in ("Identity", "Cast") and n.input and all(i in out for i in n.input):
            out.update(n.output)
    return out


def name_nodes(graph: Any, prefix: str = "quantsweep_node_") -> int:
    """Give every unnamed node a name (quantizers and recipes refer to nodes by name)."""
    named = 0
    for i, n in enumerate(graph.node):
        if not n.name:
            n.name = f"{prefix}{i}"
            named += 1
    return named


@dataclass
class Layer:
    """A quantized compute node: its name, op, and which of its inputs come through Q/DQ."""

    name: str
    op: str
    quantized_inputs: dict[int, str] = field(default_factory=dict)  # input index -> DQ node
    activations: list[str] = field(default_factory=list)  # float tensors quantized on its inputs
    weights: list[str] = field(default_factory=list)  # constant inputs quantized
    outputs: list[str] = field(default_factory=list)  # its outputs that go through Q/DQ

    def record(self) -> dict[str, Any]:
        return {"layer": self.name, "op": self.op, "activations": self.activations,
                "weights": self.weights, "outputs": self.outputs}


def _pairs_by_tensor(graph: Any) -> dict[str, list[tuple[Any, Any]]]:
    """tensor -> the (QuantizeLinear, DequantizeLinear) pairs that quantize it (a quantizer may
    quantize a layer's output as well as its inputs); one pass over the graph."""
    dqs: dict[str, list[Any]] = {}
    for n in graph.node:
        if n.op_type == "DequantizeLinear" and n.input:
            dqs.setdefault(n.input[0], []).append(n)
    out: dict[str, list[tuple[Any, Any]]] = {}
    for q in graph.node:
        if q.op_type == "QuantizeLinear" and q.input:
            out.setdefault(q.input[0], []).extend((q, dq) for dq in dqs.get(q.output[0], []))
    return out


def quantized_layers(model: Any, fp32: Any | None = None) -> list[Layer]:
    """The nodes of ``model`` fed by a ``DequantizeLinear`` (Q/DQ nodes aside), in graph order.
    With the FP32 graph, a weight is named as there (a quantizer may store it as
    ``w_quantized``)."""
    g = model.graph
    consts = constants(g)
    producer = {o: n for n in g.node for o in n.output}
    fp_nodes = {n.name: n for n in fp32.graph.node} if fp32 is not None else {}
    pairs = _pairs_by_tensor(g)
    out = []
    for n in g.node:
        if n.op_type in QDQ_OPS:
            continue
        layer = Layer(n.name, n.op_type)
        for idx, x in enumerate(n.input):
            dq = producer.get(x)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            layer.quantized_inputs[idx] = dq.name
            q = producer.get(dq.input[0])
            src = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]
            if src not in consts:
                layer.activations.append(src)
                continue
            ref = fp_nodes.get(n.name)
            if ref is not None and ref.op_type == n.op_type and idx < len(ref.input):
                src = ref.input[idx]
            layer.weights.append(src)
        layer.outputs = [o for o in n.output if pairs.get(o)]
        if layer.quantized_inputs:
            out.append(layer)
    return out


def shared_groups(layers: list[Layer]) -> list[list[Layer]]:
    """Layers grouped by the quantized activations they share: one Q/DQ pair read by several
    nodes (a heatmap read by both a MaxPool and the Equal that compares with it) is removed for
    all of them or for none, else the readers see two versions of one tensor."""
    parent = list(range(len(layers)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, layer in enumerate(layers):
        for t in layer.activations:
            if t in first:
                parent[root(i)] = root(first[t])
            else:
                first[t] = i
    groups: dict[int, list[Layer]] = {}
    for i, layer in enumerate(layers):
        groups.setdefault(root(i), []).append(layer)
    return list(groups.values())


def _dequantized(dq: Any, values: dict[str, np.ndarray]) -> np.ndarray:
    """The float value of a ``DequantizeLinear`` of constants: (x - zero_point) * scale."""
    x = values[dq.input[0]].astype(np.float32)
    scale = values[dq.input[1]].astype(np.float32)
    zp = values[dq.input[2]].astype(np.float32) if len(dq.input) > 2 and dq.input[2] else \
        np.zeros_like(scale)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1:  # per channel along ``axis``
        shape = [1] * x.ndim
        shape[axis] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((x - zp) * scale).astype(np.float32)


def float_layers(model: Any, names: Iterable[str], fp32: Any | None = None) -> Any:
    """A copy of the Q/DQ ``model`` in which the named layers run in float: each of their inputs
    that came through Q/DQ takes the float tensor instead (an activation: the tensor before its
    ``QuantizeLinear``; a weight: the FP32 graph's own weight when ``fp32`` has the same node,
    else the dequantized constant). Q/DQ nodes nothing reads any more are removed. Raises
    KeyError naming the layers the graph does not have."""
    from onnx import numpy_helper

    want = set(names)
    m = copy.deepcopy(model)
    g = m.graph
    nodes = {n.name: n for n in g.node}
    producer = {o: n for n in g.node for o in n.output}
    fed = {n.name for n in g.node if n.op_type not in QDQ_OPS
           and any(getattr(producer.get(x), "op_type", "") == "DequantizeLinear" for x in n.input)}
    missing = sorted(want - fed)  # the names quantized_layers would give, without the rest
    if missing:
        raise KeyError(missing)
    pairs = _pairs_by_tensor(g)
    consts = constants(g)
    inits = {i.name: i for i in g.initializer}
    fp_nodes = {n.name: n for n in fp32.graph.node} if fp32 is not None else {}
    fp_inits = {i.name: i for i in fp32.graph.initializer} if fp32 is not None else {}
    values: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray:
        if name not in values:
            if name in inits:
                values[name] = numpy_helper.to_array(inits[name])
            else:  # a Constant node
                c = producer[name]
                values[name] = numpy_helper.to_array(next(a.t for a in c.attribute if a.name == "value"))
        return values[name]

    from onnx import helper

    def floored(q: Any) -> bool:
        """Whether the pair clamps at zero: its zero point is the type's minimum (uint8 0,
        int8 -128). A quantizer that fuses Conv -> Relu drops the Relu and lets the Q clamp:
        the float tensor then needs the Relu back."""
        zp = value(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
        lowest = np.iinfo(zp.dtype).min if np.issubdtype(zp.dtype, np.integer) else None
        return lowest is not None and zp.size == 1 and int(zp.ravel()[0]) == lowest

    def float_of(q: Any) -> str:
        """The float tensor a Q/DQ pair stood for: the Q's input, through a Relu when the pair
        clamped at zero (a no-op on a tensor that is non-negative anyway)."""
        src = q.input[0]
        if not floored(q):
            return src
        out = f"{src}__relu"
        if out not in producer:
            relu = helper.make_node("Relu", [src], [out], name=f"{q.name}__relu")
            g.node.insert(list(g.node).index(q), relu)
            producer[out] = relu
        return out

    for name in sorted(want):
        n = nodes[name]
        for idx, x in enumerate(list(n.input)):
            dq = producer.get(x)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[idx] = float_of(q)  # the float tensor the pair quantized
                continue
            ref = fp_nodes.get(name)
            ref_in = ref.input[idx] if ref is not None and idx < len(ref.input) else None
            new = f"{x}__float"
            if ref is not None and ref_in in fp_inits and ref.op_type == n.op_type:
                arr = numpy_helper.to_array(fp_inits[ref_in])
            elif dq.input[0] in consts:
                for k in dq.input:
                    if k:
                        value(k)
                arr = _dequantized(dq, values)
            else:
                continue
            if new not in inits:
                t = numpy_helper.from_array(arr.astype(np.float32), new)
                g.initializer.append(t)
                inits[new] = t
            n.input[idx] = new
        for o in list(n.output):  # its outputs' Q/DQ: readers take the float output
            for q, dq in pairs.get(o, []):
                d, f = dq.output[0], float_of(q)
                if d in {x.name for x in g.output}:  # keep the graph output's name
                    dq.op_type, dq.domain = "Identity", ""
                    del dq.input[1:]
                    del dq.attribute[:]
                    dq.input[0] = f
                    continue
                for reader in g.node:
                    for k, x in enumerate(reader.input):
                        if x == d:
                            reader.input[k] = f
    prune(m)
    return m


def prune(model: Any) -> int:
    """Remove Q/DQ (and Constant) nodes whose outputs nothing reads, and initializers nothing
    reads; returns how many nodes went."""
    g = model.graph
    removed = 0
    while True:
        used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if n.op_type in (*QDQ_OPS, "Constant")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
        removed += len(dead)
    used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
    gone = {i.name for i in g.initializer if i.name not in used}
    for i in [i for i in g.initializer if i.name in gone]:
        g.initializer.remove(i)
    for i in [i for i in g.input if i.name in gone]:  # IR < 4 lists initializers as inputs
        g.input.remove(i)
    return removed
