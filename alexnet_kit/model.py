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

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from .lrn import LocalResponseNorm

INIT_SCHEMES = ("paper", "caffe", "kaiming")
ACTIVATIONS = ("relu", "tanh")
LRN_SCOPES = ("tower", "all")


@dataclass(frozen=True)
class AlexNetConfig:
    num_classes: int = 1000
    conv_channels: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256)
    fc_features: int = 4096
    towers: int = 2  # §3.2: the two-GPU split; 1 = the single-tower variant
    input_size: int = 224  # §2: 224x224 crops of 256x256 images
    activation: str = "relu"  # §3.1 ReLU; "tanh" for the Figure 1 comparison
    lrn: bool = True  # §3.3
    lrn_convention: str = "paper"  # see alexnet_kit.lrn: "paper" or "divided" (alpha/n)
    lrn_size: int = 5
    lrn_alpha: float = 1e-4
    lrn_beta: float = 0.75
    lrn_k: float = 2.0
    overlapping_pool: bool = True  # §3.4: z=3, s=2; False gives s=z=2
    # The three fields below exist for imported weights; their defaults are the paper's.
    conv1_padding: int = 2  # 224 -> 55x55 maps (§3.5); Caffe's 227 crops need none
    lrn_scope: str = "tower"  # "tower": each GPU's own maps (§3.3); "all": across every map (Caffe)
    ceil_pool: bool = False  # pooling output rounds up (Caffe); the ONNX zoo's 224 input needs it for 6x6
    dropout: float = 0.5  # §4.2
    init: str = "paper"  # §5; "caffe": bias 0.1 and std 0.005 in fc6/fc7; "kaiming"

    def __post_init__(self):
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
        if len(self.conv_channels) != 5:
            raise ValueError("conv_channels needs five values")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}")
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {INIT_SCHEMES}")
        if self.lrn_scope not in LRN_SCOPES:
            raise ValueError(f"lrn_scope must be one of {LRN_SCOPES}")
        if self.conv1_padding < 0:
            raise ValueError("conv1_padding must be >= 0")
        for c in self.conv_channels:
            if c % self.towers:
                raise ValueError(f"{c} channels do not split into {self.towers} towers")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AlexNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown architecture fields: {sorted(unknown)}")
        return cls(**d)

    @property
    def pool(self) -> tuple[int, int]:
        """(kernel z, stride s) of the max-pooling layers, §3.4."""
        return (3, 2) if self.overlapping_pool else (2, 2)

    @property
    def lrn_groups(self) -> int:
        """Groups of maps LRN normalises within: the towers, or 1 (every map, as Caffe does)."""
        return self.towers if self.lrn_scope == "tower" else 1

    def pooled(self, n: int) -> int:
        """Output size of a max-pooling layer on n x n maps."""
        z, s = self.pool
        if self.ceil_pool:
            return -(-(n - z) // s) + 1  # no padding, so every window starts inside the map
        return (n - z) // s + 1

    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        """(channels, height, width) after each stage, computed like the layers."""
        c1, c2, c3, c4, c5 = self.conv_channels
        n = (self.input_size + 2 * self.conv1_padding - 11) // 4 + 1  # conv1 11x11/4
        shapes = {"conv1": (c1, n, n)}
        n = self.pooled(n)
        shapes["pool1"] = (c1, n, n)
        shapes["conv2"] = (c2, n, n)
        n = self.pooled(n)
        shapes["pool2"] = (c2, n, n)
        shapes["conv3"] = (c3, n, n)
        shapes["conv4"] = (c4, n, n)
        shapes["conv5"] = (c5, n, n)
        n = self.pooled(n)
        shapes["pool5"] = (c5, n, n)
        return shapes

    @property
    def flat_features(self) -> int:
        return math.prod(self.feature_shapes()["pool5"])


class AlexNet(nn.Module):
    """The paper's network; ``forward`` returns logits (softmax is the loss's job)."""

    def __init__(self, config: AlexNetConfig | None = None):
        super().__init__()
        cfg = self.config = config or AlexNetConfig()
        c1, c2, c3, c4, c5 = cfg.conv_channels
        g = cfg.towers
        act = (lambda: nn.ReLU(inplace=True)) if cfg.activation == "relu" else nn.Tanh
        norm = (
            (lambda c: LocalResponseNorm(c, cfg.lrn_groups, cfg.lrn_size, cfg.lrn_alpha, cfg.lrn_beta, cfg.lrn_k, cfg.lrn_convention))
            if cfg.lrn
            else (lambda c: nn.Identity())
        )
        z, s = cfg.pool
        pool = lambda: nn.MaxPool2d(z, s, ceil_mode=cfg.ceil_pool)  # noqa: E731
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
