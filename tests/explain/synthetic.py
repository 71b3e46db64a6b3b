"""A tiny model that has really learned one thing: whether a red disc lies on a plain grey background."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from helpers import TINY_WIDTHS

DISC = 30  # radius in pixels of the 256 square


def scene(rng: np.random.Generator, disc_at: tuple[int, int] | None) -> np.ndarray:
    """uint8 (256, 256, 3): a grey background with faint noise, and a red disc centred at ``disc_at`` (y, x)."""
    img = np.full((256, 256, 3), rng.integers(90, 170), np.float32) + rng.normal(0, 4, (256, 256, 3))
    if disc_at is not None:
        yy, xx = np.mgrid[:256, :256]
        inside = (yy - disc_at[0]) ** 2 + (xx - disc_at[1]) ** 2 <= DISC ** 2
        img[inside] = (200, 40, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def train_disc_model(path: Path, photos: int = 64, seed: int = 0) -> Path:
    """The tiny topology with random (Kaiming) convolutions and fc6/fc7, and fc8 trained on their fc7
    features to tell disc (class 1) from no disc (class 0), saved as a checkpoint: a real classifier,
    in a second (one forward pass, then a linear layer fitted on the cached features)."""
    from alexnet_kit.checkpoint import save_checkpoint
    from alexnet_kit.meta import ModelMeta
    from alexnet_kit.model import AlexNet, AlexNetConfig

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = AlexNetConfig(num_classes=2, init="kaiming", **TINY_WIDTHS)
    model = AlexNet(cfg).eval()
    meta = ModelMeta(cfg, ["plain", "disc"], None, trained=True, provenance={"test": "red disc on grey"})
    labels = np.arange(photos) % 2
    batch = np.stack([scene(rng, tuple(rng.integers(60, 196, 2)) if c else None) for c in labels])
    with torch.no_grad():
        feats = model.fc7_features(meta.preprocess.crops(batch, 1))
    scale = feats.norm(dim=1).mean()
    feats = feats / scale  # a well-scaled problem for the optimiser; fc8 takes the scale back below
    fc8 = torch.nn.Linear(feats.shape[1], 2)
    opt = torch.optim.Adam(fc8.parameters(), lr=0.05)
    y = torch.as_tensor(labels)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(fc8(feats), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        model.fc8.weight.copy_(fc8.weight / scale)
        model.fc8.bias.copy_(fc8.bias)
    save_checkpoint(path, model, meta)
    return path
