"""The ONNX model zoo's ``bvlcalexnet-12.onnx``: Caffe's weights, converted via Caffe2.

Initialisers are read by name (``conv1_w_0``, ``conv1_b_0``, ..., ``fc8_b_0``)
and checked against bvlc_alexnet's shapes; the graph must take ``data_0``
and contain the network's operators (grouped convolutions, LRN, Gemm), so an
ONNX file of another network is refused in one line. The input is BGR like
Caffe's, so conv1's channels are flipped for RGB.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import FileProblem, first_line
from .caffe import CONV, LRN, SHAPES

INPUT = "data_0"


def _attrs(node) -> dict:
    from onnx import helper  # here, not at the top: onnx is an optional extra

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def read_onnx(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    try:
        import onnx  # here, not at the top: onnx is an optional extra
        from onnx import numpy_helper
    except ImportError:
        raise FileProblem(path, "reading ONNX files needs the onnx package (pip install 'alexnet-kit[cpu]')") from None
    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError, ValueError, OSError ... depending on the damage
        raise FileProblem(path, f"truncated or not an ONNX file ({first_line(e)})") from None
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in inits]
    if INPUT not in inputs:
        raise FileProblem(path, f"not the zoo's bvlcalexnet: no input {INPUT!r} (inputs: {', '.join(inputs) or 'none'})")
    state = {}
    for name, shape in SHAPES.items():
        for kind, suffix, want in (("weight", "w", shape), ("bias", "b", (shape[0],))):
            key = f"{name}_{suffix}_0"
            if key not in inits:
                raise FileProblem(path, f"layer {name}: initializer {key} missing: not the zoo's bvlcalexnet")
            try:
                a = numpy_helper.to_array(inits[key])
            except Exception as e:
                raise FileProblem(path, f"layer {name}: unreadable initializer {key} ({first_line(e)})") from None
            if tuple(a.shape) != want:
                raise FileProblem(path, f"layer {name}: {key} has shape {tuple(a.shape)}, bvlcalexnet has {want}")
            a = np.asarray(a, dtype=np.float32)
            if name == "conv1" and kind == "weight":
                a = a[:, ::-1]  # BGR input in the zoo, RGB here
            if not np.isfinite(a).all():
                raise FileProblem(path, f"layer {name}: non-finite values in {key}")
            state[f"{name}.{kind}"] = torch.from_numpy(np.array(a))  # a writable copy
    # The operators that make this network what it is: grouped convolutions
    # as in deploy.prototxt and LRN with Caffe's constants.
    convs = {n.input[1][: -len("_w_0")]: _attrs(n) for n in graph.node if n.op_type == "Conv" and len(n.input) > 1}
    for name, (k, s, p, g) in CONV.items():
        a = convs.get(name)
        if a is None:
            raise FileProblem(path, f"layer {name}: no Conv node uses {name}_w_0: not the zoo's bvlcalexnet")
        if int(a.get("group", 1)) != g or list(a.get("strides", [1, 1])) != [s, s]:
            raise FileProblem(path, f"layer {name}: Conv group {a.get('group', 1)}, strides {a.get('strides')}; bvlcalexnet has group {g}, stride {s}")
    lrns = [_attrs(n) for n in graph.node if n.op_type == "LRN"]
    if len(lrns) != 2:
        raise FileProblem(path, f"{len(lrns)} LRN nodes, bvlcalexnet has 2: not this network")
    for a in lrns:
        found = (int(a.get("size", 0)), float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), float(a.get("bias", 1.0)))
        if found[0] != LRN[0] or not np.allclose(found[1:], LRN[1:], rtol=1e-5, atol=0):
            raise FileProblem(path, f"LRN size/alpha/beta/bias {found}, bvlcalexnet has {LRN}")
    return state
