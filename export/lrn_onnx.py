"""Graph surgery on the exported LRN (§3.3), for measuring alternatives.

The exporter emits our LRN (:mod:`alexnet_kit.lrn`) as

    Mul(a, a) -> Conv 1x1 (banded, grouped) -> Add(k) -> Pow(-beta) -> Mul(a, .)

Two rewrites of that chain, both exact up to float rounding:

* ``native``: ONNX's own ``LRN`` operator, one per tower (Split / LRN /
  Concat). ONNX divides alpha by ``size``, so the paper's convention needs
  ``alpha * size``.
* ``rsqrt``: ``d ** -0.75`` as ``rsqrt(d) * sqrt(rsqrt(d))``: two square roots
  instead of a general power (exp and log per element).

Measured in benchmarks/bench_lrn_onnx.py; see docs/export.md for which won.
"""
from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

from alexnet_kit.model import AlexNetConfig


def _lrn_chains(graph: onnx.GraphProto):
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for pow_ in [n for n in graph.node if n.op_type == "Pow"]:
        add = producers.get(pow_.input[0])
        conv = producers.get(add.input[0]) if add is not None and add.op_type == "Add" else None
        square = producers.get(conv.input[0]) if conv is not None and conv.op_type == "Conv" else None
        outs = consumers.get(pow_.output[0], [])
        if square is None or square.op_type != "Mul" or square.input[0] != square.input[1] or len(outs) != 1 or outs[0].op_type != "Mul":
            continue
        yield square, conv, add, pow_, outs[0]


def _constant(graph: onnx.GraphProto, name: str) -> float:
    for init in graph.initializer:
        if init.name == name:
            return float(numpy_helper.to_array(init).reshape(-1)[0])
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return float(numpy_helper.to_array(n.attribute[0].t).reshape(-1)[0])
    raise KeyError(name)


def rewrite(proto: onnx.ModelProto, config: AlexNetConfig, how: str) -> int:
    """Rewrite every LRN chain in place; returns how many were rewritten."""
    graph = proto.graph
    count = 0
    for square, conv, add, pow_, mul in list(_lrn_chains(graph)):
        a, out = square.input[0], mul.output[0]
        groups = next((helper.get_attribute_value(x) for x in conv.attribute if x.name == "group"), 1)
        at = list(graph.node).index(square)
        for n in (square, conv, add, pow_, mul):
            graph.node.remove(n)
        tag = f"lrn{count}"
        if how == "native":
            alpha = config.lrn_alpha * (config.lrn_size if config.lrn_convention == "paper" else 1.0)
            lrn = dict(alpha=alpha, beta=config.lrn_beta, bias=config.lrn_k, size=config.lrn_size)
            if groups == 1:
                new = [helper.make_node("LRN", [a], [out], name=tag, **lrn)]
            else:
                parts = [f"{tag}_in{g}" for g in range(groups)]
                normed = [f"{tag}_out{g}" for g in range(groups)]
                new = [helper.make_node("Split", [a], parts, name=f"{tag}_split", axis=1, num_outputs=groups)]
                new += [helper.make_node("LRN", [p], [q], name=f"{tag}_{g}", **lrn) for g, (p, q) in enumerate(zip(parts, normed))]
                new.append(helper.make_node("Concat", normed, [out], name=f"{tag}_concat", axis=1))
        elif how == "rsqrt":
            if abs(_constant(graph, pow_.input[1]) + 0.75) > 1e-12:
                raise ValueError("the rsqrt rewrite needs beta = 0.75")
            new = [square, conv, add,
                   helper.make_node("Sqrt", [add.output[0]], [f"{tag}_s"], name=f"{tag}_sqrt"),
                   helper.make_node("Reciprocal", [f"{tag}_s"], [f"{tag}_r"], name=f"{tag}_rsqrt"),
                   helper.make_node("Sqrt", [f"{tag}_r"], [f"{tag}_q"], name=f"{tag}_qrt"),
                   helper.make_node("Mul", [a, f"{tag}_r"], [f"{tag}_ar"], name=f"{tag}_mul1"),
                   helper.make_node("Mul", [f"{tag}_ar", f"{tag}_q"], [out], name=f"{tag}_mul2")]
        else:
            raise ValueError(how)
        for i, n in enumerate(new):
            graph.node.insert(at + i, n)
        count += 1
    return count
