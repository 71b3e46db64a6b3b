"""Synthetic workloads for measuring the trainer: an ImageNet-shaped packed set, a timed run.

Used by ``scripts/gpu-check.sh`` and ``benchmarks/bench_train_step.py``:
speed depends on the shapes (photos of 256x256, 1000 classes, the packed
memmap), not on what the pixels show, so random photos measure it honestly
without a 140 GB download. Nothing here learns anything useful.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .packed import OK, PackedDataset
from .prepare import write_metadata
from .trainer import Trainer


def write_synthetic_packed(dst: str | Path, classes: int = 1000, per_class: int = 20, val_per_class: int = 1,
                           size: int = 256, seed: int = 0, distinct: int = 512) -> Path:
    """A complete packed folder of random photos (``distinct`` different ones, repeated).

    Repeating a few hundred random photos writes gigabytes at memcpy speed;
    every row is still its own 196 KB on disk, read like a real set.
    """
    dst = Path(dst)
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (min(distinct, classes * per_class), size, size, 3), dtype=np.uint8)
    names = [f"n{i:08d}" for i in range(classes)]
    counts = {}
    for split, k in (("train", per_class), ("val", val_per_class)):
        d = dst / split
        d.mkdir(parents=True, exist_ok=True)
        n = classes * k
        counts[split] = n
        labels = np.repeat(np.arange(classes, dtype=np.int64), k)
        with open(d / "images.u8", "wb") as f:
            for i in range(0, n, len(pool)):
                f.write(pool[: min(len(pool), n - i)].tobytes())
        np.save(d / "labels.npy", labels)
        np.save(d / "status.npy", np.full(n, OK, np.uint8))
        (d / "files.txt").write_text("".join(f"synthetic/{names[c]}/{i}.jpg\n" for i, c in enumerate(labels)))
    mean = pool.mean(0, dtype=np.float64)  # every train row is a pool row, near-uniformly repeated
    px = pool.reshape(-1, 3).astype(np.float64)
    cov = np.cov(px, rowvar=False, bias=True)
    write_metadata(dst, mean, cov, names, {"source": "synthetic", "packed": counts, "skipped": {"train": 0, "val": 0}},
                   size=size, layout="synthetic", val_fraction=None, seed=seed)
    return dst


def time_steps(step, x, y, steps: int, warmup: int, device) -> float:
    """Images/s of ``step(x, y)``: ``warmup`` calls, then ``steps`` timed ones between device syncs."""
    def sync():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step(x, y)
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    sync()
    return steps * len(y) / (time.perf_counter() - t)


def timed_run(recipe, data, warmup: int = 10) -> dict:
    """Run the trainer itself (``recipe.max_steps`` steps) and time its steady state.

    Returns images/s over the steps after ``warmup`` (the first ones pay for
    cuDNN autotuning, torch.compile, worker start-up), measured from a
    device sync at step ``warmup`` to a device sync after the last step.
    """
    marks: list[float] = []

    class Timed(Trainer):
        def _step(self, x, y, d):
            super()._step(x, y, d)
            if self.global_step == warmup or self.global_step == recipe.max_steps:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                marks.append(time.perf_counter())

    t0 = time.perf_counter()
    t = Timed(recipe, PackedDataset(data), progress=False)
    t.setup()
    try:
        outcome = t.train()
    finally:
        t.cleanup()
    total = time.perf_counter() - t0
    steps = recipe.max_steps - warmup
    ips = steps * recipe.batch_size / (marks[1] - marks[0]) if len(marks) == 2 and steps > 0 else None
    return {"outcome": outcome, "steps": t.global_step, "timed_steps": steps, "batch": recipe.batch_size,
            "images_per_s": ips, "seconds_total": round(total, 2), "device": str(t.device),
            "amp": str(t.amp).replace("torch.", "") if t.amp else "off", "channels_last": t.channels_last,
            "compile": bool(recipe.compile), "workers": recipe.workers}
