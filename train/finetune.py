"""Fine-tuning: start from a trained model (your own or published weights), learn new classes.

The most common use of a pretrained AlexNet: keep every learned layer but
the classifier, give fc8 the new class count and fresh weights, and train on
your own photos. Two knobs, as users know them from Caffe (``lr_mult``) and
from every fine-tuning tutorial ("freeze the convolutional base"):

- ``freeze``: layers that keep their pretrained weights bit for bit
  (``conv`` = conv1..conv5, ``all`` = everything but fc8, or a list such as
  ``conv1,conv2``); they get no gradient, no weight decay and no velocity.
- ``pretrained_lr_mult``: the learning-rate multiplier of the layers that
  were carried over and are not frozen (fc8, new, always learns at the
  recipe's rate). Caffe's fine-tuning example uses 0.1 in spirit (fc8 at 10x).

The child keeps its parent's architecture (but for fc8's width) and its
parent's input normalisation: pretrained filters expect the pixels they were
trained on (Caffe's mean image and 227 crops, torchvision's mean/std). The
child's checkpoint records the parent's fingerprint.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from alexnet_kit.checkpoint import load_checkpoint, weights_fingerprint
from alexnet_kit.config import configs_differ
from alexnet_kit.errors import AlexKitError, CheckpointError
from alexnet_kit.meta import ModelMeta
from alexnet_kit.model import AlexNet, AlexNetConfig
from alexnet_kit.resolve import resolve_model

from .parallel import LAYERS

CARRIED = LAYERS[:-1]  # fc8 is the classifier: replaced, never carried over
FREEZE_GROUPS = {"none": (), "conv": LAYERS[:5], "all": CARRIED}


@dataclass
class Parent:
    """A trained model to start from."""

    path: Path
    state: dict[str, torch.Tensor]
    meta: ModelMeta
    fingerprint: str


def load_parent(model: str | os.PathLike) -> Parent:
    """A checkpoint path, or a pretrained name (``caffe``, ...) that :func:`alexnet_kit.resolve.resolve_model` knows."""
    path = resolve_model(str(model))
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(path, "--init-from needs a checkpoint (.safetensors) with its weights, not an exported artifact")
    state, meta = load_checkpoint(path)
    return Parent(path, state, meta, weights_fingerprint(path))


def child_config(parent: Parent, num_classes: int, overrides: dict | None = None) -> AlexNetConfig:
    """The parent's architecture with ``num_classes`` outputs; only ``dropout`` may be changed."""
    overrides = dict(overrides or {})
    allowed = {"dropout"}
    conflicting = {k: v for k, v in overrides.items() if k not in allowed
                   and configs_differ({k: getattr(parent.meta.config, k, None)}, {k: v})}
    if conflicting:
        raise AlexKitError(f"--init-from {parent.path}: the architecture comes from the parent model; drop the model "
                           f"settings {sorted(conflicting)} (only dropout can change when fine-tuning)")
    fields = {k: v for k, v in overrides.items() if k in allowed}
    return dataclasses.replace(parent.meta.config, num_classes=num_classes, **fields)


def parent_normalisation(parent: Parent, size: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The parent's input normalisation as a (3, size, size) mean image and a per-channel std."""
    pre = parent.meta.preprocess
    mean = np.asarray(pre.mean, np.float32)
    if mean.ndim == 1:
        mean = np.broadcast_to(mean[:, None, None], (3, size, size))
    elif mean.shape[1:] != (size, size):
        raise AlexKitError(f"--init-from {parent.path}: its mean image is {mean.shape[1]}x{mean.shape[2]}, "
                           f"the training photos are packed at {size}x{size}")
    if parent.meta.config.input_size > size:
        raise AlexKitError(f"--init-from {parent.path}: its {parent.meta.config.input_size}-pixel input does not fit "
                           f"in photos packed at {size}x{size}")
    return np.ascontiguousarray(mean), tuple(float(s) for s in pre.std)


@torch.no_grad()
def transplant(model: AlexNet, parent: Parent) -> list[str]:
    """Copy every carried layer's weights from the parent into ``model``; fc8 keeps its fresh weights.

    Returns the names of the layers copied. Shapes are checked layer by layer.
    """
    params = dict(model.named_parameters())
    copied = []
    for layer in CARRIED:
        for kind in ("weight", "bias"):
            name = f"{layer}.{kind}"
            if name not in parent.state:
                raise CheckpointError(parent.path, f"layer {name} missing")
            src, dst = parent.state[name], params[name]
            if tuple(src.shape) != tuple(dst.shape):
                raise CheckpointError(parent.path, f"layer {name} has shape {tuple(src.shape)}, the model needs {tuple(dst.shape)}")
            dst.copy_(src.to(dst.dtype))
        copied.append(layer)
    # fc8 keeps the initialisation the model was built with, a function of the
    # run's seed (every init scheme gives fc8 §5's N(0, 0.01) and bias 0)
    return copied


def parse_freeze(spec: str) -> tuple[str, ...]:
    """``none`` | ``conv`` | ``all`` | a comma list of layers (fc8 cannot be frozen)."""
    spec = (spec or "none").strip().lower()
    if spec in FREEZE_GROUPS:
        return FREEZE_GROUPS[spec]
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    bad = [n for n in names if n not in CARRIED]
    if bad or not names:
        raise AlexKitError(f"--freeze: {', '.join(bad) or spec!r} is not a layer that can be frozen; use none, conv, all "
                           f"or a comma list of {', '.join(CARRIED)}")
    return tuple(n for n in LAYERS if n in names)


def param_groups(net: nn.Module, frozen: tuple[str, ...], pretrained_lr_mult: float) -> list[dict]:
    """Optimizer parameter groups: frozen layers get ``requires_grad=False`` and no group;
    carried layers learn at ``pretrained_lr_mult`` times the rate, fc8 at the full rate.

    Works on any form of the network whose parameter names contain the layer
    names (the grouped model, DDP's ``module.``, the towers' per-tower copies).
    """
    if pretrained_lr_mult < 0:
        raise AlexKitError("--pretrained-lr-mult must be at least 0")
    freeze(net, frozen)
    carried, new = [], []
    for name, p in net.named_parameters():
        layer = _layer_of(name)
        if layer in frozen:
            continue
        if layer == "fc8":
            new.append(p)
        else:
            carried.append(p)
    groups = [{"params": new, "lr_mult": 1.0}]
    if carried:
        groups.append({"params": carried, "lr_mult": float(pretrained_lr_mult)})
    return groups


def freeze(net: nn.Module, frozen: tuple[str, ...]) -> None:
    """``requires_grad=False`` on the parameters of the ``frozen`` layers (any form of the network)."""
    for name, p in net.named_parameters():
        if _layer_of(name) in frozen:
            p.requires_grad_(False)


def _layer_of(param_name: str) -> str | None:
    for part in param_name.split("."):
        for layer in LAYERS:
            if part == layer or part.startswith(layer + "_"):
                return layer
    return None
