"""Augmented training images/s per core: packed memmap vs per-file decode + PIL transforms.

    .venv/bin/python benchmarks/bench_data_pipeline.py                       # the shipped quickstart photos
    .venv/bin/python benchmarks/bench_data_pipeline.py --src ../shared/data/imagenet-samples --limit 300

Three pipelines produce the same thing, a batch of §4.1-augmented float
input (random 224 crop, flip, mean image subtracted, PCA colour noise), on
ONE core (torch and Pillow limited to one thread), so the figure is per core:

* ours, packed: rows of the prepared uint8 memmap -> alexnet_kit.train.loader
* alternative, JPEG shards: the same 256x256 photos stored as JPEG q90 bytes
  (what a shard format holds), decoded with Pillow, then the same augmentation
* baseline, per file: open each original photo, decode, resize the short side
  to 256 and centre-crop (PIL), random crop + flip (PIL), to float, subtract
  the mean, add PCA noise (numpy): the plain torchvision-style loop

Prints the machine, the median of --repeats runs of each and the ratios.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from machine import describe  # noqa: E402  (benchmarks/machine.py)

ROOT = Path(__file__).resolve().parents[1]




def class_tree(src: Path, tmp: Path, limit: int) -> Path:
    """A class-folder view of ``src`` (symlinks), at most ``limit`` photos."""
    subdirs = [d for d in sorted(src.iterdir()) if d.is_dir()]
    files = [p for d in subdirs for p in sorted(d.iterdir()) if p.is_file()] if subdirs else [p for p in sorted(src.iterdir()) if p.is_file()]
    rng = np.random.default_rng(0)
    files = [files[i] for i in sorted(rng.choice(len(files), min(limit, len(files)), replace=False))]
    out = tmp / "photos"
    for p in files:
        d = out / (p.parent.name if subdirs else "all")
        d.mkdir(parents=True, exist_ok=True)
        (d / p.name).symlink_to(p.resolve())
    return out


def bench_packed(ds, batch: int) -> float:
    from alexnet_kit.train.augment import Finisher
    from alexnet_kit.train.loader import EpochBatches

    sp = ds.split("train")
    fin = Finisher(ds.mean, ds.eigvals, ds.eigvecs, 224)
    EpochBatches(sp, batch=batch, seed=0, epoch=999, crop=224, train=True, finisher=fin)[0]  # warm: page cache, mean views
    t = time.perf_counter()
    n, epoch = 0, 0
    while n < 1024:  # enough batches for a stable figure; each epoch its own order and noise
        eb = EpochBatches(sp, batch=batch, seed=0, epoch=epoch, crop=224, train=True, finisher=fin)
        for b in range(len(eb)):
            x, y, _ = eb[b]
            n += len(y)
        epoch += 1
    return n / (time.perf_counter() - t)


def augment_numpy(img256: np.ndarray, mean_hwc: np.ndarray, pl: np.ndarray, rng) -> np.ndarray:
    t, l = rng.integers(0, 33, 2)
    patch = img256[t:t + 224, l:l + 224]
    m = mean_hwc[t:t + 224, l:l + 224]
    if rng.random() < 0.5:
        patch, m = patch[:, ::-1], m[:, ::-1]
    x = patch.astype(np.float32) - m + pl @ (rng.standard_normal(3).astype(np.float32) * 0.1)
    return x.transpose(2, 0, 1)


def bench_jpeg_shards(blobs: list[bytes], mean_hwc, pl, batch: int) -> float:
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    out = []
    for i, blob in enumerate(blobs):
        img = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
        out.append(augment_numpy(img, mean_hwc, pl, rng))
        if len(out) == batch:
            torch.from_numpy(np.stack(out))
            out = []
    return len(blobs) / (time.perf_counter() - t)


def bench_per_file(files: list[Path], mean_hwc, pl, batch: int) -> float:
    """The plain loop: decode the original, Resize(256) + CenterCrop(256), RandomCrop(224), flip, normalise."""
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    out = []
    for p in files:
        img = Image.open(p).convert("RGB")
        w, h = img.size
        s = 256 / min(w, h)
        img = img.resize((max(256, round(w * s)), max(256, round(h * s))), Image.Resampling.BILINEAR)
        w, h = img.size
        img = img.crop(((w - 256) // 2, (h - 256) // 2, (w - 256) // 2 + 256, (h - 256) // 2 + 256))
        t0, l0 = rng.integers(0, 33, 2)
        img = img.crop((l0, t0, l0 + 224, t0 + 224))
        flip = rng.random() < 0.5
        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        m = mean_hwc[t0:t0 + 224, l0:l0 + 224]
        x = np.asarray(img, dtype=np.float32) - (m[:, ::-1] if flip else m) + pl @ (rng.standard_normal(3).astype(np.float32) * 0.1)
        out.append(x.transpose(2, 0, 1))
        if len(out) == batch:
            torch.from_numpy(np.stack(out))
            out = []
    return len(files) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(ROOT / "examples" / "quickstart-data"), help="photo folder (class folders or flat)")
    ap.add_argument("--limit", type=int, default=400, help="photos to use")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from alexnet_kit.train.packed import PackedDataset
    from alexnet_kit.train.prepare import prepare

    print(f"machine: {describe('PIL')}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tree = class_tree(Path(args.src), tmp, args.limit)
        prepare(tree, tmp / "packed", val_fraction=0.0, workers=os.cpu_count(), progress=False)
        ds = PackedDataset(tmp / "packed")
        sp = ds.split("train")
        files = [Path(f) for f in sp.files]
        mean_hwc = np.ascontiguousarray(ds.mean.transpose(1, 2, 0))
        pl = ds.eigvecs * (ds.eigvals / 255.0)[None, :]
        blobs = []
        for i in range(len(sp)):
            b = io.BytesIO()
            Image.fromarray(sp.take([i])[0]).save(b, "JPEG", quality=90)
            blobs.append(b.getvalue())
        raw_mb = sum(os.path.getsize(f) for f in files) / 1e6
        print(f"data: {len(files)} photos from {args.src} ({raw_mb:.1f} MB as files; packed {len(files) * 196608 / 1e6:.1f} MB; "
              f"as 256x256 JPEG q90 {sum(map(len, blobs)) / 1e6:.1f} MB); batch {args.batch}; one thread")
        batch = min(args.batch, len(files))
        results = {"packed": [], "jpeg": [], "file": []}
        for r in range(args.repeats):  # interleaved, so load changes hit all three alike
            results["packed"].append(bench_packed(ds, batch))
            results["jpeg"].append(bench_jpeg_shards(blobs, mean_hwc, pl, batch))
            results["file"].append(bench_per_file(files, mean_hwc, pl, batch))
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"ours, packed memmap      : {med['packed']:8.0f} images/s per core  (runs: {', '.join(f'{v:.0f}' for v in results['packed'])})")
        print(f"alternative, JPEG shards : {med['jpeg']:8.0f} images/s per core  (runs: {', '.join(f'{v:.0f}' for v in results['jpeg'])})")
        print(f"baseline, per-file PIL   : {med['file']:8.0f} images/s per core  (runs: {', '.join(f'{v:.0f}' for v in results['file'])})")
        print(f"packed / per-file = {med['packed'] / med['file']:.1f}x   packed / JPEG shards = {med['packed'] / med['jpeg']:.1f}x   (target >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
