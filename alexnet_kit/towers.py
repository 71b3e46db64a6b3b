"""The two-tower form (§3.2): the same weights placed on two devices.

Each tower holds half of every layer's kernels, as each GTX 580 did. The
towers exchange activations only where the paper's GPUs communicate: the
input of conv3, fc6, fc7 and fc8. conv1, conv2, conv4 and conv5 (and LRN,
which normalises over a tower's own maps) stay on their own device.

Caffe's reference model (``lrn_scope="all"``) normalises across every map,
so at the tower boundary LRN needs the other tower's neighbouring maps: each
tower receives a halo of ``lrn_size // 2`` maps from each neighbour (a small
exchange the paper's network does not have) and normalises its own maps
with them, which is exactly the single-device function.

``TowerAlexNet.from_grouped(model, devices)`` splits a grouped
:class:`~alexnet_kit.model.AlexNet`; ``grouped_state_dict()`` joins the
weights back, so checkpoints have one format whatever trained them. In eval
mode both compute the same function.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .config import AlexNetConfig
from .model import AlexNet, init_weights, layer_factories

def split_sizes(total: int, parts: int) -> list[int]:
    """Sizes of ``parts`` nearly equal slices of ``total`` (first ones larger)."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


class Tower(nn.Module):
    """One device's share of every layer."""

    def __init__(self, cfg: AlexNetConfig, classes: int):
        super().__init__()
        t = cfg.towers
        c1, c2, c3, c4, c5 = (c // t for c in cfg.conv_channels)
        f = cfg.fc_features // t
        # Across-map LRN normalises the tower's maps plus a halo from each neighbour.
        halo = 2 * (cfg.lrn_size // 2) if cfg.lrn_scope == "all" else 0
        act, norm, pool = layer_factories(cfg, 1, halo)
        self.conv1 = nn.Conv2d(3, c1, 11, stride=4, padding=cfg.conv1_padding)
        self.act1, self.norm1, self.pool1 = act(), norm(c1), pool()
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.act2, self.norm2, self.pool2 = act(), norm(c2), pool()
        self.conv3 = nn.Conv2d(c2 * t, c3, 3, padding=1)
        self.act3 = act()
        self.conv4 = nn.Conv2d(c3, c4, 3, padding=1)
        self.act4 = act()
        self.conv5 = nn.Conv2d(c4, c5, 3, padding=1)
        self.act5, self.pool5 = act(), pool()
        self.fc6 = nn.Linear(cfg.flat_features, f)
        self.act6, self.drop6 = act(), nn.Dropout(cfg.dropout)
        self.fc7 = nn.Linear(f * t, f)
        self.act7, self.drop7 = act(), nn.Dropout(cfg.dropout)
        self.fc8 = nn.Linear(f * t, classes)


class TowerAlexNet(nn.Module):
    """The paper's network split over ``len(devices)`` devices, one tower each."""

    def __init__(self, config: AlexNetConfig, devices: Sequence[str | torch.device]):
        super().__init__()
        if len(devices) != config.towers:
            raise ValueError(f"{config.towers} towers need {config.towers} devices, got {len(devices)}")
        if config.fc_features % config.towers:
            raise ValueError(f"fc_features={config.fc_features} does not split into {config.towers} towers")
        self.config = config
        self.devices = [torch.device(d) for d in devices]
        self.class_splits = split_sizes(config.num_classes, config.towers)
        self.towers = nn.ModuleList(
            Tower(config, n).to(d) for n, d in zip(self.class_splits, self.devices)
        )

    @classmethod
    def from_grouped(cls, model: AlexNet, devices: Sequence[str | torch.device]) -> "TowerAlexNet":
        split = cls(model.config, devices)
        split.load_grouped_state_dict(model.state_dict())
        split.train(model.training)
        return split

    @classmethod
    def initialised(cls, config: AlexNetConfig, devices: Sequence[str | torch.device]) -> "TowerAlexNet":
        """A freshly initialised split network (the paper's init, §5)."""
        grouped = AlexNet(config)
        init_weights(grouped, config.init)
        return cls.from_grouped(grouped, devices)

    # -- weights: grouped <-> towers -------------------------------------
    def _row_slices(self, layer: str) -> list[slice]:
        cfg = self.config
        if layer == "fc8":
            sizes = self.class_splits
        elif layer in ("fc6", "fc7"):
            sizes = split_sizes(cfg.fc_features, cfg.towers)
        else:
            sizes = split_sizes(cfg.conv_channels[int(layer[-1]) - 1], cfg.towers)
        bounds = [0]
        for n in sizes:
            bounds.append(bounds[-1] + n)
        return [slice(a, b) for a, b in zip(bounds, bounds[1:])]

    @torch.no_grad()
    def load_grouped_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Take each tower's rows (output units) of every layer.

        A grouped conv's weight rows for group t already see only tower t's
        input maps, and a cross-tower layer's rows see all of them: in both
        cases tower t's share is simply its slice of output rows.
        """
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
            for tower, rows in zip(self.towers, self._row_slices(name)):
                layer = getattr(tower, name)
                layer.weight.copy_(state[f"{name}.weight"][rows])
                layer.bias.copy_(state[f"{name}.bias"][rows])

    @torch.no_grad()
    def grouped_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights as the grouped single-device model names them (on CPU)."""
        out = {}
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
            layers = [getattr(t, name) for t in self.towers]
            out[f"{name}.weight"] = torch.cat([l.weight.detach().cpu() for l in layers])
            out[f"{name}.bias"] = torch.cat([l.bias.detach().cpu() for l in layers])
        return out

    def to_grouped(self) -> AlexNet:
        model = AlexNet(self.config)
        model.load_state_dict(self.grouped_state_dict())
        return model.train(self.training)

    # -- forward -----------------------------------------------------------
    def _exchange(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every tower receives every tower's activations (the GPUs' link)."""
        return [torch.cat([p.to(d, non_blocking=True) for p in parts], 1) for d in self.devices]

    def _norm(self, layer: str, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """LRN of each tower's maps: within the tower (§3.3), or across all maps (Caffe)."""
        norms = [getattr(t, layer) for t in self.towers]
        if not self.config.lrn or self.config.lrn_scope == "tower":
            return [n(v) for n, v in zip(norms, parts)]
        h = self.config.lrn_size // 2
        out = []
        for i, (n, v, d) in enumerate(zip(norms, parts, self.devices)):
            # Zeros where there is no neighbour: the same zero padding a
            # single-device LRN applies at the first and last map.
            left = parts[i - 1][:, -h:].to(d, non_blocking=True) if i > 0 else v.new_zeros(v.shape[0], h, *v.shape[2:])
            right = parts[i + 1][:, :h].to(d, non_blocking=True) if i + 1 < len(parts) else v.new_zeros(v.shape[0], h, *v.shape[2:])
            out.append(n(torch.cat([left, v, right], 1))[:, h : h + v.shape[1]])
        return out

    def fc7_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """fc7 activations, still split: one (N, 4096/towers) tensor per device."""
        h = [x.to(d, non_blocking=True) for d in self.devices]
        h = self._norm("norm1", [t.act1(t.conv1(v)) for t, v in zip(self.towers, h)])
        h = [t.pool1(v) for t, v in zip(self.towers, h)]
        h = self._norm("norm2", [t.act2(t.conv2(v)) for t, v in zip(self.towers, h)])
        h = [t.pool2(v) for t, v in zip(self.towers, h)]
        h = self._exchange(h)  # conv3 sees both towers' maps
        h = [t.act3(t.conv3(v)) for t, v in zip(self.towers, h)]
        h = [t.act4(t.conv4(v)) for t, v in zip(self.towers, h)]
        h = [t.pool5(t.act5(t.conv5(v))) for t, v in zip(self.towers, h)]
        h = [torch.flatten(v, 1) for v in self._exchange(h)]  # fc6 sees both
        h = [t.drop6(t.act6(t.fc6(v))) for t, v in zip(self.towers, h)]
        h = self._exchange(h)  # fc7 sees both
        return [t.act7(t.fc7(v)) for t, v in zip(self.towers, h)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, gathered on the first device."""
        h = self._exchange([t.drop7(v) for t, v in zip(self.towers, self.fc7_features(x))])  # fc8 sees both
        logits = [t.fc8(v) for t, v in zip(self.towers, h)]
        return torch.cat([l.to(self.devices[0]) for l in logits], 1)
