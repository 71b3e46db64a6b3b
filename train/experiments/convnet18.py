"""cuda-convnet's CIFAR-10 example net ("18% error in 20 minutes"), the network of Figure 1 (§3.1).

cuda-convnet is the paper's code; with three convolutional layers and one
fully connected one, this is "a four-layer convolutional neural network". Read from
``example-layers/layers-18pct.cfg`` and ``layer-params-18pct.cfg`` of
cuda-convnet 1 (github.com/dnouri/cuda-convnet, a mirror of
code.google.com/p/cuda-convnet), with the formulas from its ``layer.py`` and
``src/cudaconv2/conv_util.cu`` / ``include/cudaconv2/conv_util.cuh``:

    conv1 5x5 32, pad 2, initW 0.0001 -> max-pool 3/2 -> neuron -> rnorm 3x3
    conv2 5x5 32, pad 2, initW 0.01 -> neuron -> avg-pool 3/2 -> rnorm 3x3
    conv3 5x5 64, pad 2, initW 0.01 -> neuron -> avg-pool 3/2
    fc10, initW 0.01 -> softmax
    every layer: epsW = eps, epsB = 2 eps, momentum 0.9; biases start at 0

(layer 1 applies its neuron after the pool; both activations are monotone,
so this equals pooling after it). The 18pct file also sets weight decay
(wc) and the training used translations and flips; Figure 1 used "no
regularization of any kind", so neither is here (nor in
:func:`paper_optimizer`). The input is cuda-convnet's: pixel values
(0-255) minus the training set's per-pixel mean (§2), not rescaled, which is
the scale its initW values were chosen for.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..optim import PaperSGD

INITS = ("default", "he")
#: cuda-convnet 18pct: the initW (std of the Gaussian) of conv1, conv2, conv3, fc10
CONVNET_INIT_STD = (1e-4, 1e-2, 1e-2, 1e-2)
#: cuda-convnet 18pct: rnorm1/rnorm2 size, scale, pow
RNORM = dict(size=3, scale=5e-5, pow=0.75)


class SpatialResponseNorm(nn.Module):
    """cuda-convnet's ``rnorm``: each map normalised by its own size x size neighbourhood.

        b = a / (1 + scale / size^2 * sum_{size x size window} a^2) ^ pow

    ``layer.py`` divides the configured scale by size^2 (by size for the
    across-maps ``cmrnorm`` of alexnet_kit.lrn, a different function); the
    kernel adds 1 and clips the window at the border, i.e. a zero-padded sum.
    """

    def __init__(self, size: int = 3, scale: float = 5e-5, pow: float = 0.75):
        super().__init__()
        if size % 2 != 1:
            raise ValueError(f"size must be odd, got {size}")
        self.size, self.scale, self.pow = size, scale, pow

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        # count_include_pad: the mean over size^2 with zeros outside = sum / size^2
        mean_sq = F.avg_pool2d(a * a, self.size, stride=1, padding=self.size // 2, count_include_pad=True)
        return a * (1 + self.scale * mean_sq).pow(-self.pow)


class FourLayerNet(nn.Module):
    """cuda-convnet's 18pct CIFAR-10 net with a chosen activation (module docstring)."""

    def __init__(self, activation: str = "relu", width=(32, 32, 64), classes: int = 10, init: str = "default"):
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be relu or tanh, got {activation!r}")
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        a, b, c = width
        # cuda-convnet's pools: outputsX = ceil((size - 3) / 2) + 1, windows clipped at the border and an
        # average over the pixels inside, which is ceil_mode with no padding: 32 -> 16 -> 8 -> 4
        self.features = nn.Sequential(
            nn.Conv2d(3, a, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), act(), SpatialResponseNorm(**RNORM),
            nn.Conv2d(a, b, 5, padding=2), act(), nn.AvgPool2d(3, 2, ceil_mode=True), SpatialResponseNorm(**RNORM),
            nn.Conv2d(b, c, 5, padding=2), act(), nn.AvgPool2d(3, 2, ceil_mode=True),
        )
        self.classifier = nn.Linear(c * 4 * 4, classes)
        layers = [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        if init == "default":
            for m, std in zip(layers, CONVNET_INIT_STD):
                nn.init.normal_(m.weight, 0.0, std)
                nn.init.zeros_(m.bias)
        elif init == "he":
            # not in the paper: a variance-preserving start for each activation
            # (He et al. 2015; gain sqrt(2) for ReLU, 5/3 for tanh)
            for m in layers:
                nn.init.kaiming_normal_(m.weight, nonlinearity=activation if m is not self.classifier else "linear")
                nn.init.zeros_(m.bias)
        else:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def paper_optimizer(net: nn.Module, lr: float):
    """§5's update with cuda-convnet's per-layer rates: epsB = 2 epsW, momentum 0.9, no weight decay."""
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
    # "No regularization of any kind was employed" (§3.1): weight_decay 0
    return PaperSGD([{"params": weights}, {"params": biases, "lr_mult": 2.0}], lr=lr, momentum=0.9, weight_decay=0.0)
