"""The network of Krizhevsky, Sutskever & Hinton (2012), §3 and Figure 2.

The default :class:`AlexNetConfig` is the paper's network exactly:
60,965,224 parameters, five convolutional and three fully-connected layers,
with the grouped connectivity of the two-GPU split expressed as ``groups=2``
convolutions on one device (:mod:`alexnet_kit.towers` places the same
weights on two devices).

    layer  kernels          connectivity (§3.5)      output
    conv1  96  11x11x3 /4   image                    55x55x96   -> ReLU, LRN, max-pool 3/2
    conv2  256 5x5x48       same GPU (groups=2)      27x27x256  -> ReLU, LRN, max-pool 3/2
    conv3  384 3x3x256      both GPUs                13x13x384  -> ReLU
    conv4  384 3x3x192      same GPU (groups=2)      13x13x384  -> ReLU
    conv5  256 3x3x192      same GPU (groups=2)      13x13x256  -> ReLU, max-pool 3/2 -> 6x6x256
    fc6    4096             both GPUs                -> ReLU, dropout 0.5
    fc7    4096             both GPUs                -> ReLU, dropout 0.5 (fc7 = the features)
    fc8    1000             both GPUs                -> softmax

Other configurations (fewer classes, narrower layers, the ablations of §3.3,
§3.4, §4.2 and Figure 1) are the same code with other config values, and so
are the published weights' architectures (:mod:`alexnet_kit.pretrained`):
Caffe's 227 input without conv1 padding, its LRN across all maps and its
rounding-up pooling; torchvision's single tower without LRN.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

# The architecture's settings live in a torch-free module (the CLI reads its
# fields without importing torch); they are importable from here as well.
from .config import INIT_SCHEMES, AlexNetConfig
from .lrn import LocalResponseNorm
from .named_layers import parse_layers


def layer_factories(cfg: AlexNetConfig, norm_groups: int, halo: int = 0):
    """Makers of the activation (§3.1), response normalisation (§3.3) and max-pooling (§3.4) layers.

    ``norm(c)`` normalises c maps in ``norm_groups`` groups; a tower of the
    split network adds ``halo`` maps borrowed from its neighbours.
    """
    act = (lambda: nn.ReLU(inplace=True)) if cfg.activation == "relu" else nn.Tanh
    if cfg.lrn:
        def norm(c: int) -> nn.Module:
            return LocalResponseNorm(c + halo, norm_groups, cfg.lrn_size, cfg.lrn_alpha, cfg.lrn_beta, cfg.lrn_k, cfg.lrn_convention)
    else:
        def norm(c: int) -> nn.Module:
            return nn.Identity()
    z, s = cfg.pool
    return act, norm, lambda: nn.MaxPool2d(z, s, ceil_mode=cfg.ceil_pool)


class AlexNet(nn.Module):
    """The paper's network; ``forward`` returns logits (softmax is the loss's job)."""

    def __init__(self, config: AlexNetConfig | None = None):
        super().__init__()
        cfg = self.config = config or AlexNetConfig()
        c1, c2, c3, c4, c5 = cfg.conv_channels
        g = cfg.towers
        act, norm, pool = layer_factories(cfg, cfg.lrn_groups)
        # §3.5: conv2, conv4, conv5 see only the maps on their own GPU (groups);
        # conv3 and the fully-connected layers see both GPUs.
        self.conv1 = nn.Conv2d(3, c1, 11, stride=4, padding=cfg.conv1_padding)
        self.act1, self.norm1, self.pool1 = act(), norm(c1), pool()
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2, groups=g)
        self.act2, self.norm2, self.pool2 = act(), norm(c2), pool()
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.act3 = act()
        self.conv4 = nn.Conv2d(c3, c4, 3, padding=1, groups=g)
        self.act4 = act()
        self.conv5 = nn.Conv2d(c4, c5, 3, padding=1, groups=g)
        self.act5, self.pool5 = act(), pool()
        f = cfg.fc_features
        self.fc6 = nn.Linear(cfg.flat_features, f)
        self.act6, self.drop6 = act(), nn.Dropout(cfg.dropout)
        self.fc7 = nn.Linear(f, f)
        self.act7, self.drop7 = act(), nn.Dropout(cfg.dropout)
        self.fc8 = nn.Linear(f, cfg.num_classes)
        init_weights(self, cfg.init)

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """The image through conv1..pool5, flattened: (N, 9216) for the paper."""
        x = self.pool1(self.norm1(self.act1(self.conv1(x))))
        x = self.pool2(self.norm2(self.act2(self.conv2(x))))
        x = self.act3(self.conv3(x))
        x = self.act4(self.conv4(x))
        x = self.pool5(self.act5(self.conv5(x)))
        return torch.flatten(x, 1)

    def fc7_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 4096-d activations of the last hidden layer, after ReLU (§6.1)."""
        x = self.drop6(self.act6(self.fc6(self.conv_features(x))))
        return self.act7(self.fc7(x))

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and fc7 features from one pass (classify and search together)."""
        h = self.fc7_features(x)
        return self.fc8(self.drop7(h)), h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.drop7(self.fc7_features(x)))

    def stages(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        """The forward pass as named steps, in order: each takes the previous step's output
        (names and meanings: :mod:`alexnet_kit.named_layers`)."""
        return [
            ("conv1_pre", self.conv1), ("conv1", self.act1), ("norm1", self.norm1), ("pool1", self.pool1),
            ("conv2_pre", self.conv2), ("conv2", self.act2), ("norm2", self.norm2), ("pool2", self.pool2),
            ("conv3_pre", self.conv3), ("conv3", self.act3),
            ("conv4_pre", self.conv4), ("conv4", self.act4),
            ("conv5_pre", self.conv5), ("conv5", self.act5), ("pool5", self.pool5),
            ("fc6_pre", lambda t: self.fc6(torch.flatten(t, 1))), ("fc6", self.act6),
            ("fc7_pre", lambda t: self.fc7(self.drop6(t))), ("fc7", self.act7),
            ("fc8", lambda t: self.fc8(self.drop7(t))),
        ]

    def layer_features(self, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """The activations of the named layers for the batch ``x``, keyed by name, in one pass that
        stops after the last one asked for: (N, C, H, W) for maps, (N, D) for vectors.

            >>> model.layer_features(x, ["conv3", "fc7"])["conv3"].shape
            torch.Size([N, 384, 13, 13])
        """
        want = set(parse_layers(list(names)))
        out: dict[str, torch.Tensor] = {}
        for name, step in self.stages():
            x = step(x)
            if name in want:
                # the ReLUs work in place: a pre-activation kept must be a copy
                out[name] = x.clone() if name.endswith("_pre") else x
                if len(out) == len(want):
                    break
        return {n: out[n] for n in names}

    def layers(self) -> dict[str, nn.Module]:
        """The eight learned layers by name."""
        return {n: getattr(self, n) for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")}


# §5: biases 1 in conv2, conv4, conv5 and the fully-connected hidden layers,
# "accelerates the early stages of learning by providing the ReLUs with
# positive inputs"; 0 elsewhere.
_BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")


@torch.no_grad()
def init_weights(model: AlexNet, scheme: str = "paper") -> None:
    """Initialise every learned layer.

    ``paper`` (§5): weights N(0, 0.01), biases 1 in conv2/4/5, fc6, fc7, 0 elsewhere.
    With it, training sometimes never leaves loss ln(classes); Caffe's
    reference model therefore used ``caffe``: biases 0.1 instead of 1 and
    std 0.005 in fc6/fc7. ``kaiming`` (He et al. 2015, not in the paper)
    trains narrow variants reliably from scratch on small data.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {INIT_SCHEMES}")
    for name, layer in model.layers().items():
        if scheme == "kaiming":
            nonlinearity = "relu" if model.config.activation == "relu" else "tanh"
            if name == "fc8":
                nn.init.normal_(layer.weight, 0.0, 0.01)
            else:
                nn.init.kaiming_normal_(layer.weight, nonlinearity=nonlinearity)
            nn.init.zeros_(layer.bias)
            continue
        std = 0.005 if scheme == "caffe" and name in ("fc6", "fc7") else 0.01
        nn.init.normal_(layer.weight, 0.0, std)
        one = 1.0 if scheme == "paper" else 0.1
        nn.init.constant_(layer.bias, one if name in _BIAS_ONE else 0.0)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def neuron_counts(config: AlexNetConfig) -> dict[str, int]:
    """Neurons per layer (§3.5): 290,400-186,624-64,896-64,896-43,264-4096-4096-1000.

    The paper prints 253,440 for the first layer, a known inconsistency with
    its own 55x55x96 maps; 290,400 is what the layer computes here (and in
    Caffe and torchvision). The other seven counts match the paper.
    """
    shapes = config.feature_shapes()
    out = {name: math.prod(shapes[name]) for name in ("conv1", "conv2", "conv3", "conv4", "conv5")}
    out.update(fc6=config.fc_features, fc7=config.fc_features, fc8=config.num_classes)
    return out
