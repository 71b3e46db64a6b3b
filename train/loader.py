"""Batches of a packed split, identical whoever computes them and whenever.

Epoch ``e`` visits the photos in the order ``permutation(seed, e)``; batch
``b`` draws its augmentation from a generator seeded with (seed, e, b). So
the stream depends only on (seed, epoch, batch index): a resumed run, a run
with another number of worker processes and every DDP rank (each takes its
slice of the global batch) see exactly the same images and the same noise.

:func:`prefetch` hands the batches over on the training device, each one's copy
issued a batch ahead on CUDA.
"""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from alexnet_kit.interrupt import ignore_in_worker, starting_workers

from .augment import Finisher, draw, pack_draw
from .packed import Split


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


class EpochBatches(Dataset):
    """Item ``b`` = batch ``b`` of one epoch: (input, labels, draw).

    ``part=(rank, world)`` keeps every world-th photo of each global batch
    (DDP). With a ``finisher``: the finished float input, computed on the
    CPU (:meth:`Finisher.from_photos`, what a worker process runs).
    ``finisher`` None (the GPU path): the whole uint8 photos and the draw
    packed in one tensor (:func:`pack_draw`); the device crops,
    flips, centres and colours them in one batched pass, so a worker only
    gathers rows and the host makes no per-image strided copies.
    """

    def __init__(self, split: Split, *, batch: int, seed: int, epoch: int, crop: int, train: bool,
                 finisher: Finisher | None = None, pca_std: float = 0.1, part: tuple[int, int] = (0, 1),
                 drop_last: bool | None = None, scale: float | None = None):
        self.split, self.batch, self.seed, self.epoch, self.crop = split, batch, seed, epoch, crop
        self.train, self.finisher, self.pca_std, self.part = train, finisher, pca_std, part
        self.scale = scale  # random-resized crops of this much to all of the area (None: §4.1's patches)
        n = len(split)
        self.order = epoch_order(n, seed, epoch) if train else np.arange(n)
        drop_last = train if drop_last is None else drop_last
        self.batches = n // batch if drop_last else -(-n // batch)

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, b: int):
        idx = self.order[b * self.batch:(b + 1) * self.batch]
        size = self.split.images.shape[1]
        rng = np.random.default_rng([self.seed, self.epoch, b]) if self.train else None
        d = draw(len(idx), size, self.crop, rng, self.pca_std, self.scale)
        rank, world = self.part
        if world > 1:
            keep = slice(rank, None, world)
            idx, d = idx[keep], d.take(keep)
        # sorted rows read the memmap sequentially; the draw stays with its photo
        order = np.argsort(idx, kind="stable")
        idx, d = idx[order], d.take(order)
        labels = torch.from_numpy(self.split.labels[idx])
        if self.finisher is not None:
            rows = self.split.rows[idx]
            photos = [self.split.images[r] for r in rows]  # memmap views: no copy until the crop
            return self.finisher.from_photos(photos, d), labels, pack_draw(d)
        return torch.from_numpy(self.split.take(idx)), labels, pack_draw(d)


def _worker_init(_worker_id: int) -> None:
    # SIGINT and SIGTERM to the process group are the main process's to handle: it finishes the
    # step, saves and shuts the workers down. A worker killed by the group's SIGTERM would
    # instead end the run in "DataLoader worker ... is killed by signal" and lose the step.
    ignore_in_worker()
    torch.set_num_threads(1)


def worker_context():
    """fork where the platform has it: workers share the parent's memmap and arrays instead
    of unpickling them (spawn and forkserver, Python 3.14's Linux default, pickle the dataset)."""
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None


def make_loader(ds: EpochBatches, start: int = 0, workers: int = 0, pin: bool = False, batches: range | None = None) -> DataLoader:
    """Batches ``start``, ``start+1``, ... in order (resume mid-epoch at ``start``), or the given ``batches``."""
    return DataLoader(
        ds, batch_size=None, sampler=batches if batches is not None else range(start, len(ds)), num_workers=workers,
        pin_memory=pin, worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None, collate_fn=_as_is,
        multiprocessing_context=worker_context() if workers else None,
    )


def _as_is(x):
    return x


def prefetch(loader: DataLoader, device: torch.device):
    """``loader``'s batches. On CUDA, each batch's host-to-device copy (25 MB of uint8 photos at
    batch 128) is issued one batch ahead on a side stream, so it overlaps the current step's
    kernels instead of queueing in front of them. Elsewhere the batches pass through as they are."""
    with starting_workers():  # the loader's worker processes start here
        it = iter(loader)
    if device.type != "cuda":
        yield from it
        return
    side = torch.cuda.Stream(device)

    def issue(batch):
        with torch.cuda.stream(side):
            return tuple(t.to(device, non_blocking=True) for t in batch)

    nxt = next(it, None)
    nxt = issue(nxt) if nxt is not None else None
    while nxt is not None:
        cur = nxt
        main = torch.cuda.current_stream(device)
        main.wait_stream(side)
        for t in cur:
            t.record_stream(main)  # made on the side stream, used on the main one
        batch = next(it, None)
        nxt = issue(batch) if batch is not None else None
        yield cur
