"""BVLC's ``bvlc_alexnet.caffemodel``: read both of Caffe's layouts, check it is that network.

The 2014 file uses the legacy V1 layout (``NetParameter.layers``, field 2,
with an enum layer type and num/channels/height/width blobs); newer Caffe
writes V2 (``NetParameter.layer``, field 100, a string type and a
``BlobShape``). Layers are matched by name, layers without weights (data,
loss, accuracy, ReLU, ...) are ignored, and every shape and every
hyper-parameter the file records is checked against bvlc_alexnet's
deploy.prototxt, so CaffeNet or any other network is refused in one line.

Field numbers (from Caffe's published message definitions):

    NetParameter      name=1 layers=2 (V1) layer=100 (V2)
    V1LayerParameter  bottom=2 top=3 name=4 type=5 (enum) blobs=6 convolution_param=10
                      lrn_param=18 pooling_param=19 inner_product_param=17
    LayerParameter    name=1 type=2 (string) bottom=3 top=4 blobs=7 convolution_param=106
                      inner_product_param=117 lrn_param=118 pooling_param=121
    BlobProto         num=1 channels=2 height=3 width=4 data=5 (packed float) shape=7 double_data=8
    BlobShape         dim=1 (packed int64)
    ConvolutionParam  num_output=1 bias_term=2 pad=3 kernel_size=4 group=5 stride=6
    LRNParameter      local_size=1 alpha=2 beta=3 norm_region=4 k=5
    PoolingParameter  pool=1 kernel_size=2 stride=3 pad=4
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import FileProblem
from . import protobuf as pb

# V1 layer type enum -> the V2 type string
V1_TYPES = {1: "Accuracy", 4: "Convolution", 5: "Data", 6: "Dropout", 14: "InnerProduct", 15: "LRN",
            17: "Pooling", 18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss"}
V2_FIELDS = dict(name=1, type=2, bottom=3, top=4, blobs=7, conv=106, ip=117, lrn=118, pool=121)
V1_FIELDS = dict(name=4, type=5, bottom=2, top=3, blobs=6, conv=10, ip=17, lrn=18, pool=19)

# bvlc_alexnet's learned layers, as Caffe stores them: (out, in/group, kh, kw) and (out, in).
SHAPES = {
    "conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
    "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3),
    "fc6": (4096, 9216), "fc7": (4096, 4096), "fc8": (1000, 4096),
}
# deploy.prototxt: kernel, stride, pad, group (conv2/4/5 are the paper's same-GPU layers, §3.5)
CONV = {"conv1": (11, 4, 0, 1), "conv2": (5, 1, 2, 2), "conv3": (3, 1, 1, 1), "conv4": (3, 1, 1, 2), "conv5": (3, 1, 1, 2)}
# local_size, alpha, beta, k (Caffe's default k is 1; the paper says 2)
LRN = (5, 1e-4, 0.75, 1.0)
# Caffe's defaults where a field is absent from the file
LRN_DEFAULTS = {"local_size": 5, "alpha": 1.0, "beta": 0.75, "k": 1.0, "norm_region": 0}


@dataclass
class Layer:
    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)
    params: dict = field(default_factory=dict)  # conv / lrn / pool fields the file sets


def _blob(buf) -> np.ndarray:
    legacy = {}
    dims: list[int] | None = None
    data = None
    loose: list[float] = []  # an unpacked repeated float: one record per value
    for number, wire, value in pb.fields(buf):
        if number in (1, 2, 3, 4) and wire == pb.VARINT:
            legacy[number] = pb.as_signed(value)
        elif number == 5:
            if wire == pb.LENGTH:
                data = pb.packed_array(value, "<f4")
            else:
                loose.append(pb.as_float(wire, value))
        elif number == 8 and wire == pb.LENGTH:
            data = pb.packed_array(value, "<f8")
        elif number == 7 and wire == pb.LENGTH:
            dims = []
            for n2, w2, v2 in pb.fields(value):
                if n2 == 1:
                    dims.extend(pb.packed_varints(v2) if w2 == pb.LENGTH else [pb.as_signed(v2)])
    if loose:
        data = np.concatenate([data if data is not None else np.empty(0, "<f4"), np.asarray(loose, "<f4")])
    if dims is None:
        dims = [legacy.get(i, 1) for i in (1, 2, 3, 4)] if legacy else [0 if data is None else len(data)]
    if data is None:
        data = np.empty(0, "<f4")
    if len(data) != math.prod(dims):
        raise pb.WireError(f"blob of shape {tuple(dims)} holds {len(data)} values")
    return data.reshape(dims)


def _params(buf) -> dict:
    """A *Parameter sub-message as {field number: [values]} (repeated fields stay lists)."""
    out: dict[int, list] = {}
    for number, wire, value in pb.fields(buf):
        if wire == pb.VARINT:
            out.setdefault(number, []).append(pb.as_signed(value))
        elif wire in (pb.FIXED32, pb.FIXED64):
            out.setdefault(number, []).append(pb.as_float(wire, value))
        elif wire == pb.LENGTH:  # a packed repeated uint32 (pad / kernel_size / stride)
            out.setdefault(number, []).extend(pb.packed_varints(value))
    return out


def _layer(buf, f: dict) -> Layer:
    name, type_, blobs, params = "", "", [], {}
    for number, wire, value in pb.fields(buf):
        if number == f["name"] and wire == pb.LENGTH:
            name = bytes(value).decode("utf-8", "replace")
        elif number == f["type"]:
            type_ = V1_TYPES.get(value, f"V1 type {value}") if wire == pb.VARINT else bytes(value).decode("utf-8", "replace")
        elif number == f["blobs"] and wire == pb.LENGTH:
            blobs.append(_blob(value))
        elif wire == pb.LENGTH:
            for kind in ("conv", "lrn", "pool", "ip"):
                if number == f[kind]:
                    params[kind] = _params(value)
    return Layer(name, type_, blobs, params)


def read_layers(path: str | os.PathLike) -> list[Layer]:
    """Every layer of a caffemodel (V1 or V2), in file order; raises :class:`FileProblem`."""
    path = Path(path)
    # A writable buffer: the weights become tensors that share it, with no copy.
    data = bytearray(path.stat().st_size)
    with open(path, "rb") as f:
        if f.readinto(data) != len(data):
            raise FileProblem(path, "file changed while being read")
    data = memoryview(data)
    layers: list[Layer] = []
    try:
        for number, wire, value in pb.fields(data):
            if number == 2 and wire == pb.LENGTH:
                layers.append(_layer(value, V1_FIELDS))
            elif number == 100 and wire == pb.LENGTH:
                layers.append(_layer(value, V2_FIELDS))
    except pb.WireError as e:
        raise FileProblem(path, f"truncated or not a caffemodel ({e})") from None
    if not layers:
        raise FileProblem(path, "not a caffemodel (no layers found)")
    return layers


def _first(params: dict, number: int, default):
    v = params.get(number)
    return v[0] if v else default


def _check_hyper(path: Path, layers: list[Layer]) -> None:
    """Refuse a file whose recorded hyper-parameters are not bvlc_alexnet's."""
    by_name = {l.name: l for l in layers}
    order = [l.name for l in layers]
    for n in ("1", "2"):
        if f"norm{n}" in by_name and f"pool{n}" in by_name and order.index(f"pool{n}") < order.index(f"norm{n}"):
            raise FileProblem(path, f"pool{n} comes before norm{n}: this is CaffeNet (bvlc_reference_caffenet), not bvlc_alexnet")
    for name, (k, s, p, g) in CONV.items():
        conv = by_name[name].params.get("conv") if name in by_name else None
        if conv is None:
            continue  # a file that records no hyper-parameters: shapes are checked anyway
        found = (_first(conv, 4, None), _first(conv, 6, 1), _first(conv, 3, 0), _first(conv, 5, 1))
        want = (k, s, p, g)
        if found[0] is not None and found != want:
            raise FileProblem(path, f"layer {name}: kernel/stride/pad/group {found}, bvlc_alexnet has {want}: not this network")
    for name in ("norm1", "norm2"):
        layer = by_name.get(name)
        if layer is None or "lrn" not in layer.params:
            continue
        lp = layer.params["lrn"]
        size, alpha, beta, k = (_first(lp, 1, LRN_DEFAULTS["local_size"]), _first(lp, 2, LRN_DEFAULTS["alpha"]),
                                _first(lp, 3, LRN_DEFAULTS["beta"]), _first(lp, 5, LRN_DEFAULTS["k"]))
        region = _first(lp, 4, 0)
        if region != 0 or size != LRN[0] or not np.allclose((alpha, beta, k), LRN[1:], rtol=1e-5, atol=0):
            raise FileProblem(path, f"layer {name}: LRN size {size}, alpha {alpha:g}, beta {beta:g}, k {k:g}"
                              f"{' within channel' if region else ''}; bvlc_alexnet has 5, 0.0001, 0.75, 1 across channels")


def _squeeze_leading(shape: tuple[int, ...]) -> tuple[int, ...]:
    """V1 stores fc weights as 1x1xOUTxIN and biases as 1x1x1xN."""
    shape = tuple(shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def read_caffemodel(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The grouped model's state dict (RGB conv1) from bvlc_alexnet in V1 or V2 layout."""
    path = Path(path)
    layers = read_layers(path)
    by_name = {l.name: l for l in layers}
    with_weights = [l.name for l in layers if l.blobs]
    _check_hyper(path, layers)
    state: dict[str, torch.Tensor] = {}
    for name, shape in SHAPES.items():
        layer = by_name.get(name)
        if layer is None or not layer.blobs:
            found = ", ".join(with_weights[:8]) + (" ..." if len(with_weights) > 8 else "")
            raise FileProblem(path, f"layer {name} missing: not bvlc_alexnet (layers with weights: {found or 'none'})")
        if len(layer.blobs) != 2:
            raise FileProblem(path, f"layer {name}: {len(layer.blobs)} blobs, expected weights and biases")
        w, b = layer.blobs
        if _squeeze_leading(w.shape) != shape:
            raise FileProblem(path, f"layer {name}: weights of shape {tuple(w.shape)}, bvlc_alexnet has {shape}")
        if _squeeze_leading(b.shape) != (shape[0],):
            raise FileProblem(path, f"layer {name}: biases of shape {tuple(b.shape)}, bvlc_alexnet has ({shape[0]},)")
        w = np.asarray(w, dtype=np.float32).reshape(shape)
        if name == "conv1":
            w = np.ascontiguousarray(w[:, ::-1])  # Caffe's input is BGR; ours is RGB
        state[f"{name}.weight"] = torch.from_numpy(w)
        state[f"{name}.bias"] = torch.from_numpy(np.asarray(b, dtype=np.float32).reshape(shape[0]))
    for k, v in state.items():
        if not (torch.isfinite(v.amax()) and torch.isfinite(v.amin())):  # NaN propagates: all finite, two passes, no copy
            raise FileProblem(path, f"layer {k.split('.')[0]}: non-finite weights")
    return state


# -- writing: tests and benchmarks build caffemodels in both layouts ------

def _blob_bytes(a: np.ndarray, layout: str) -> bytes:
    a = np.asarray(a, dtype=np.float32)
    if layout == "v1":
        dims = (1,) * (4 - a.ndim) + a.shape  # legacy 4-d: fc 1x1xOUTxIN, bias 1x1x1xN
        head = b"".join(pb.field_varint(i + 1, d) for i, d in enumerate(dims))
    else:
        head = pb.field_bytes(7, pb.field_packed_varints(1, a.shape))
    return head + pb.field_packed_floats(5, a.reshape(-1))


def write_caffemodel(path: str | os.PathLike, weights: dict[str, tuple[np.ndarray, np.ndarray]], layout: str = "v1",
                     snapshot: bool = True) -> None:
    """Write bvlc_alexnet's layers in Caffe's wire format (``weights``: name -> (W, b), Caffe's BGR conv1).

    ``snapshot``: include the data, dropout, loss and accuracy layers and the
    layer parameters a training snapshot carries, as the 2014 file does.
    """
    f = V1_FIELDS if layout == "v1" else V2_FIELDS
    v1_enum = {v: k for k, v in V1_TYPES.items()}

    def layer(name: str, type_: str, bottom: str | None, top: str, blobs=(), params: bytes = b"", kind: str | None = None):
        out = pb.field_bytes(f["name"], name)
        out += pb.field_varint(f["type"], v1_enum[type_]) if layout == "v1" else pb.field_bytes(f["type"], type_)
        if bottom:
            out += pb.field_bytes(f["bottom"], bottom)
        out += pb.field_bytes(f["top"], top)
        for blob in blobs:
            out += pb.field_bytes(f["blobs"], _blob_bytes(blob, layout))
        if kind:
            out += pb.field_bytes(f[kind], params)
        return pb.field_bytes(2 if layout == "v1" else 100, out)

    def conv(name, bottom):
        k, s, p, g = CONV[name]
        params = pb.field_varint(1, SHAPES[name][0]) + pb.field_varint(3, p) + pb.field_varint(4, k) + pb.field_varint(5, g) + pb.field_varint(6, s)
        return layer(name, "Convolution", bottom, name, weights[name], params, "conv")

    lrn = pb.field_varint(1, LRN[0]) + pb.field_float(2, LRN[1]) + pb.field_float(3, LRN[2]) + pb.field_float(5, LRN[3])
    pool = pb.field_varint(1, 0) + pb.field_varint(2, 3) + pb.field_varint(3, 2)
    parts = [pb.field_bytes(1, "AlexNet")]
    if snapshot:
        parts.append(layer("data", "Data", None, "data"))
    parts += [conv("conv1", "data"), layer("relu1", "ReLU", "conv1", "conv1"), layer("norm1", "LRN", "conv1", "norm1", params=lrn, kind="lrn"),
              layer("pool1", "Pooling", "norm1", "pool1", params=pool, kind="pool"),
              conv("conv2", "pool1"), layer("relu2", "ReLU", "conv2", "conv2"), layer("norm2", "LRN", "conv2", "norm2", params=lrn, kind="lrn"),
              layer("pool2", "Pooling", "norm2", "pool2", params=pool, kind="pool"),
              conv("conv3", "pool2"), layer("relu3", "ReLU", "conv3", "conv3"), conv("conv4", "conv3"), layer("relu4", "ReLU", "conv4", "conv4"),
              conv("conv5", "conv4"), layer("relu5", "ReLU", "conv5", "conv5"), layer("pool5", "Pooling", "conv5", "pool5", params=pool, kind="pool")]
    bottom = "pool5"
    for name in ("fc6", "fc7", "fc8"):
        parts.append(layer(name, "InnerProduct", bottom, name, weights[name], pb.field_varint(1, SHAPES[name][0]), "ip"))
        if name != "fc8":
            parts.append(layer(f"relu{name[-1]}", "ReLU", name, name))
            if snapshot:
                parts.append(layer(f"drop{name[-1]}", "Dropout", name, name))
        bottom = name
    if snapshot:
        parts += [layer("accuracy", "Accuracy", "fc8", "accuracy"), layer("loss", "SoftmaxWithLoss", "fc8", "loss")]
    else:
        parts.append(layer("prob", "Softmax", "fc8", "prob"))
    Path(path).write_bytes(b"".join(parts))
