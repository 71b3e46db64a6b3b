"""Weight files in the three published formats, with random values, for the import tests.

Nothing here is downloaded: the files are written from the formats' field
numbers and key names. Random weights are scaled so that activations keep
their size through the network (so Caffe's LRN, whose k is 1, really
normalises) and the last layer is scaled so the probabilities are peaked
but not 0/1 (else top-5 comparisons are noise).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from helpers import photo_paths


@torch.no_grad()
def random_state(config, inputs: torch.Tensor, seed: int = 0, logit_std: float = 3.0) -> dict[str, torch.Tensor]:
    """He-scaled random weights for ``config``, fc8 scaled so logits on ``inputs`` have std ``logit_std``."""
    from alexnet_kit.model import AlexNet

    g = torch.Generator().manual_seed(seed)
    model = AlexNet(config).eval()
    for name, layer in model.layers().items():
        fan_in = math.prod(layer.weight.shape[1:])
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.1)
    logits = model(inputs)
    scale = logit_std / float(logits.std())
    model.fc8.weight.mul_(scale)
    model.fc8.bias.mul_(scale)
    return {k: v.clone() for k, v in model.state_dict().items()}


class SourceCase(NamedTuple):
    pre: object  # the source's Preprocess
    photos: np.ndarray  # the photos, loaded square at the source's size
    x: torch.Tensor  # their single centre crops, as the source's network sees them
    state: dict[str, torch.Tensor]  # random_state for the source's network, scaled on x[:scale_on]


def source_case(name: str, paths: list[Path] | None = None, scale_on: int | None = 6) -> SourceCase:
    """A published source (registry name) with random weights: its preprocessing of ``paths``
    (default photo_paths()) and a random state whose logits are scaled on the first ``scale_on`` crops (None: all)."""
    from alexnet_kit.pretrained import registry

    src = registry.SOURCES[name]
    pre = src.preprocess()
    photos = np.stack([pre.load(p) for p in (photo_paths() if paths is None else paths)])
    x = pre.crops(photos, 1)
    return SourceCase(pre, photos, x, random_state(src.config, x[:scale_on]))


def top5(p: np.ndarray) -> np.ndarray:
    """Each row's five best classes, ties in index order."""
    return np.argsort(-p, axis=1, kind="stable")[:, :5]


def refused_in_one_line(capsys, source: str, folder: Path, cases: dict[str, str]) -> dict[str, str]:
    """`alexnet-kit pretrained SOURCE --file F` (in-process, the console script's main) for each file F
    in ``folder`` named in ``cases``: exit 2, one line naming F and holding cases[F], no traceback,
    nothing written. Returns each run's stdout."""
    from alexnet_kit.cli import main

    stdout = {}
    for name, words in cases.items():
        out = folder / f"{name}.safetensors"
        capsys.readouterr()
        code = main(["pretrained", source, "--file", str(folder / name), "--out", str(out), "--no-digest-check"])
        stdout[name], err = capsys.readouterr()
        assert code == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert name in lines[0] and words in lines[0], lines[0]
        assert not out.exists() and not list(folder.glob(f"{name}.safetensors*"))
    return stdout


def caffe_weights(state: dict[str, torch.Tensor]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Our state dict in Caffe's layout: conv1 sees BGR."""
    out = {}
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        w = state[f"{name}.weight"].numpy()
        if name == "conv1":
            w = w[:, ::-1]
        out[name] = (np.ascontiguousarray(w), state[f"{name}.bias"].numpy())
    return out


def deploy_prototxt(input_size: int = 227) -> str:
    """bvlc_alexnet's deploy.prototxt (as published, V2 syntax), for OpenCV's reader."""
    def conv(n, bottom, out, k, stride=1, pad=0, group=1):
        extra = (f" pad: {pad}" if pad else "") + (f" group: {group}" if group > 1 else "") + (f" stride: {stride}" if stride > 1 else "")
        return (f'layer {{ name: "conv{n}" type: "Convolution" bottom: "{bottom}" top: "conv{n}" '
                f'convolution_param {{ num_output: {out} kernel_size: {k}{extra} }} }}\n'
                f'layer {{ name: "relu{n}" type: "ReLU" bottom: "conv{n}" top: "conv{n}" }}\n')

    def lrn(n):
        return (f'layer {{ name: "norm{n}" type: "LRN" bottom: "conv{n}" top: "norm{n}" '
                'lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }\n')

    def pool(name, bottom):
        return f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}\n'

    def fc(name, bottom, out, relu=True):
        s = f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" inner_product_param {{ num_output: {out} }} }}\n'
        if relu:
            s += f'layer {{ name: "relu{name[-1]}" type: "ReLU" bottom: "{name}" top: "{name}" }}\n'
            s += f'layer {{ name: "drop{name[-1]}" type: "Dropout" bottom: "{name}" top: "{name}" dropout_param {{ dropout_ratio: 0.5 }} }}\n'
        return s

    return (f'name: "AlexNet"\nlayer {{ name: "data" type: "Input" top: "data" input_param {{ shape: {{ dim: 1 dim: 3 dim: {input_size} dim: {input_size} }} }} }}\n'
            + conv(1, "data", 96, 11, stride=4) + lrn(1) + pool("pool1", "norm1")
            + conv(2, "pool1", 256, 5, pad=2, group=2) + lrn(2) + pool("pool2", "norm2")
            + conv(3, "pool2", 384, 3, pad=1) + conv(4, "conv3", 384, 3, pad=1, group=2)
            + conv(5, "conv4", 256, 3, pad=1, group=2) + pool("pool5", "conv5")
            + fc("fc6", "pool5", 4096) + fc("fc7", "fc6", 4096) + fc("fc8", "fc7", 1000, relu=False)
            + 'layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }\n')


def torchvision_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our single-tower state dict under torchvision's AlexNet keys."""
    keys = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8", "conv5": "features.10",
            "fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6"}
    return {f"{keys[k.split('.')[0]]}.{k.split('.')[1]}": v.clone() for k, v in state.items()}


class TorchvisionAlexNet(torch.nn.Module):
    """torchvision.models.alexnet's topology, rebuilt in plain torch (torchvision cannot be imported here)."""

    def __init__(self):
        from torch import nn

        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 1000),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def zoo_onnx(state: dict[str, torch.Tensor], path: Path, input_size: int = 224, opset: int = 12) -> None:
    """An ONNX graph with the zoo's bvlcalexnet names and structure (BGR input data_0, output prob_1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = caffe_weights(state)
    inits, nodes = [], []
    for name, (W, b) in w.items():
        inits.append(numpy_helper.from_array(np.asarray(W, np.float32), f"{name}_w_0"))
        inits.append(numpy_helper.from_array(np.asarray(b, np.float32), f"{name}_b_0"))

    def conv(n, x, k, stride=1, pad=0, group=1):
        nodes.append(helper.make_node("Conv", [x, f"conv{n}_w_0", f"conv{n}_b_0"], [f"conv{n}_1"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[pad] * 4, group=group))
        nodes.append(helper.make_node("Relu", [f"conv{n}_1"], [f"conv{n}_2"]))
        return f"conv{n}_2"

    def lrn(n, x):
        nodes.append(helper.make_node("LRN", [x], [f"norm{n}_1"], size=5, alpha=1e-4, beta=0.75, bias=1.0))
        return f"norm{n}_1"

    def pool(name, x):
        # Caffe rounds pooling up; the converted graph pads the far edge instead
        nodes.append(helper.make_node("MaxPool", [x], [f"{name}_1"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]))
        return f"{name}_1"

    x = pool("pool1", lrn(1, conv(1, "data_0", 11, stride=4)))
    x = pool("pool2", lrn(2, conv(2, x, 5, pad=2, group=2)))
    x = conv(5, conv(4, conv(3, x, 3, pad=1), 3, pad=1, group=2), 3, pad=1, group=2)
    x = pool("pool5", x)
    inits.append(numpy_helper.from_array(np.array([1, 9216], np.int64), "OC2_DUMMY_1"))
    nodes.append(helper.make_node("Reshape", [x, "OC2_DUMMY_1"], ["OC2_DUMMY_0"]))
    x = "OC2_DUMMY_0"
    for name in ("fc6", "fc7", "fc8"):
        nodes.append(helper.make_node("Gemm", [x, f"{name}_w_0", f"{name}_b_0"], [f"{name}_1"], transB=1))
        x = f"{name}_1"
        if name != "fc8":
            nodes.append(helper.make_node("Relu", [x], [f"{name}_2"]))
            nodes.append(helper.make_node("Dropout", [f"{name}_2"], [f"{name}_3", f"_{name}_mask"]))
            x = f"{name}_3"
    nodes.append(helper.make_node("Softmax", [x], ["prob_1"], axis=1))
    graph = helper.make_graph(nodes, "bvlcalexnet", [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, input_size, input_size])],
                              [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx-caffe2")
    model.ir_version = 7
    onnx.save_model(model, str(path))
