"""torchvision's ``alexnet-owt-7be5be79.pth``: a state dict, loaded without unpickling code.

The 2014 "one weird trick" variant (Krizhevsky 2014), not the 2012 network:
64-192-384-256-256 kernels, one tower, no LRN. ``torch.load(weights_only=True)``
refuses anything but tensors and plain containers, so a file from anywhere
cannot run code here.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import FileProblem, first_line

# torchvision key prefix -> our layer name, with the shapes IMAGENET1K_V1 has
LAYERS = {
    "features.0": ("conv1", (64, 3, 11, 11)), "features.3": ("conv2", (192, 64, 5, 5)),
    "features.6": ("conv3", (384, 192, 3, 3)), "features.8": ("conv4", (256, 384, 3, 3)),
    "features.10": ("conv5", (256, 256, 3, 3)), "classifier.1": ("fc6", (4096, 9216)),
    "classifier.4": ("fc7", (4096, 4096)), "classifier.6": ("fc8", (1000, 4096)),
}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Our grouped model's state dict from torchvision's AlexNet state dict."""
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        raise FileProblem(path, f"truncated, or not a PyTorch state dict that loads without running code ({first_line(e)})") from None
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]  # a training checkpoint wrapping the weights
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise FileProblem(path, "not a state dict (a mapping of names to tensors)")
    raw = {k.removeprefix("module."): v for k, v in raw.items()}
    expected = {f"{p}.{kind}" for p in LAYERS for kind in ("weight", "bias")}
    missing = [f"{p}.{kind}" for p in LAYERS for kind in ("weight", "bias") if f"{p}.{kind}" not in raw]
    if missing:
        sample = ", ".join(sorted(raw)[:6]) + (" ..." if len(raw) > 6 else "")
        raise FileProblem(path, f"layer {missing[0]} missing: not torchvision's alexnet (keys: {sample or 'none'})")
    extra = sorted(set(raw) - expected)
    if extra:
        raise FileProblem(path, f"unexpected key {extra[0]}: not torchvision's alexnet")
    state = {}
    for prefix, (name, shape) in LAYERS.items():
        w, b = raw[f"{prefix}.weight"], raw[f"{prefix}.bias"]
        if tuple(w.shape) != shape:
            raise FileProblem(path, f"layer {prefix} ({name}): weights of shape {tuple(w.shape)}, torchvision's alexnet has {shape}")
        if tuple(b.shape) != (shape[0],):
            raise FileProblem(path, f"layer {prefix} ({name}): biases of shape {tuple(b.shape)}, expected ({shape[0]},)")
        for t in (w, b):
            if not t.is_floating_point() or not (torch.isfinite(t.amax()) and torch.isfinite(t.amin())):
                raise FileProblem(path, f"layer {prefix} ({name}): non-float or non-finite weights")
        state[f"{name}.weight"] = w.detach().to(torch.float32).contiguous()
        state[f"{name}.bias"] = b.detach().to(torch.float32).contiguous()
    return state
