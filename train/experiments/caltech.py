"""A fixed held-out split of the shared Caltech-101 copy, decoded once.

../shared/data/caltech101 holds only Caltech's training split (its test split
is kept elsewhere on purpose: we never tune to it), so we split off our own
validation set: ``val_fraction`` of each class, chosen with a fixed seed.
The default class subset is the N largest classes (ties by name), the fast
CPU subset the data README suggests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import class_folders, load_photos, photo_files, shared_data


@dataclass
class CaltechSplit:
    classes: list[str]
    train: np.ndarray  # uint8 (N, S, S, 3)
    train_labels: np.ndarray  # int64 (N,)
    val: np.ndarray
    val_labels: np.ndarray
    train_files: list[str]
    val_files: list[str]
    skipped: int

    def train_split(self) -> "ArraySplit":
        """The training photos as the training library's loader reads a packed split."""
        return ArraySplit(self.train, self.train_labels)


class ArraySplit:
    """Photos held in memory, read by :class:`alexnet_kit.train.loader.EpochBatches` as it reads a
    packed :class:`~alexnet_kit.train.packed.Split` (``images``, ``rows``, ``labels``, ``take``),
    so the experiments draw their batches and augmentation through the same code as ``alexnet-kit train``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, np.asarray(labels, np.int64)
        self.rows = np.arange(len(self.labels), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, i: np.ndarray) -> np.ndarray:
        return self.images[self.rows[np.asarray(i)]]


def caltech_split(classes: int = 10, size: int = 256, val_fraction: float = 0.2, seed: int = 0,
                  per_class: int | None = None, mode: str = "crop") -> CaltechSplit:
    folders = class_folders(shared_data("caltech101"))
    folders = sorted(folders, key=lambda f: (-len(photo_files(f)), f.name))[:classes]
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for label, f in enumerate(folders):
        files = photo_files(f)
        files = [files[i] for i in rng.permutation(len(files))]
        if per_class:
            files = files[:per_class]
        n_val = max(1, round(len(files) * val_fraction))
        va += [(p, label) for p in files[:n_val]]
        tr += [(p, label) for p in files[n_val:]]
    photos, ok = load_photos([p for p, _ in tr + va], size, what="caltech101", mode=mode)
    labels = np.array([l for _, l in tr + va], np.int64)
    n = len(tr)
    keep_tr, keep_va = ok[:n], ok[n:]
    return CaltechSplit(
        classes=[f.name for f in folders],
        train=photos[:n][keep_tr], train_labels=labels[:n][keep_tr],
        val=photos[n:][keep_va], val_labels=labels[n:][keep_va],
        train_files=[str(p) for (p, _), k in zip(tr, keep_tr) if k],
        val_files=[str(p) for (p, _), k in zip(va, keep_va) if k],
        skipped=int((~ok).sum()),
    )


def rgb_statistics(photos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean image (3, S, S), per-channel std, and the RGB PCA (eigenvalues desc., eigenvector columns), 0..255 scale."""
    mean = photos.mean(0, dtype=np.float64).transpose(2, 0, 1).astype(np.float32)
    px = photos.reshape(-1, 3).astype(np.float64)
    if len(px) > 2_000_000:
        px = px[np.random.default_rng(0).choice(len(px), 2_000_000, replace=False)]
    cov = np.cov(px, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    std = np.sqrt(np.diag(cov)).astype(np.float32)
    return mean, std, vals[order].astype(np.float32), vecs[:, order].astype(np.float32)
