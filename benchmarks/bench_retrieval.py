"""Retrieval quality on Caltech-101: do fc7 neighbours share the query's class? (§6.1, Fig. 4)

    python benchmarks/bench_retrieval.py --model runs/caltech10/best.safetensors

Protocol. The photos are the validation split the trainer holds out by
default (20% of each class folder, shuffled with ``random.Random(f"{seed}:{class}")``,
seed 0: the rule of ``alexnet-kit prepare``), so the network never trained
on them. They are indexed with ``alexnet-kit``'s own code path
(``SimilarityIndex.build``), and every photo is a query against all the
others (itself left out, as ``alexnet-kit similar`` does). precision@5 =
the share of the 5 nearest photos that have the query's class, averaged
over queries. Baseline: the nearest neighbours by raw pixels (the same
256x256 centre square, shrunk to 32x32, Euclidean), as in the tiny-images
line of work; also chance (the class frequencies). The classes are the
model's own when they are all Caltech-101 folders (``--classes trained``),
or all 100 (``--classes all``: most of them unseen in training).

The mirror check: for centre-crop features (not mirror-invariant by
construction), how often is a photo's mirror image nearer to it than every
other photo? It measures whether the trained network learned the
left-right symmetry its flip augmentation (§4.1) taught it.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from machine import describe  # noqa: E402  (benchmarks/machine.py)

import numpy as np


def held_out(root: Path, classes: list[str], fraction: float, seed: int) -> list[tuple[str, str]]:
    """(path, class) of the validation split, the trainer's rule (train/prepare.py plan_splits)."""
    out = []
    for c in classes:
        files = sorted(str(p) for p in (root / c).rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root / c).parts))
        rng = random.Random(f"{seed}:{c}")
        rng.shuffle(files)
        n_val = int(round(fraction * len(files))) if len(files) > 1 else 0
        out += [(f, c) for f in sorted(files[:n_val])]
    return out


def precision_at(neighbours: list[list[str]], labels: list[str], k: int = 5) -> float:
    return float(np.mean([np.mean([n == lab for n in nb[:k]]) for nb, lab in zip(neighbours, labels)]))


def pixel_neighbours(paths: list[str], k: int) -> list[list[int]]:
    from PIL import Image

    from alexnet_kit.images import load_square

    X = np.stack([np.asarray(Image.fromarray(load_square(p)).resize((32, 32), Image.Resampling.BOX), np.float32).ravel()
                  for p in paths])
    sq = (X ** 2).sum(1)
    d = sq[:, None] + sq[None, :] - 2 * X @ X.T
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1)[:, :k].tolist()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a trained checkpoint (or artifact)")
    ap.add_argument("--data", help="photo folder, one subfolder a class (default: caltech101 in $ALEXNET_KIT_SHARED_DATA or ../shared/data)")
    ap.add_argument("--classes", choices=["trained", "all"], default="trained")
    ap.add_argument("--val-fraction", type=float, help="default: the model's training recipe's, else 0.2")
    ap.add_argument("--seed", type=int, help="split seed (default: the model's training recipe's, else 0)")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--mirror-sample", type=int, default=100, help="photos for the mirror check (0: skip)")
    args = ap.parse_args()

    import torch

    from alexnet_kit.engines import load_engine
    from alexnet_kit.paths import shared_data
    from alexnet_kit.search import SimilarityIndex

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    data = Path(args.data) if args.data else shared_data("caltech101")
    folders = sorted(d.name for d in data.iterdir() if d.is_dir() and not d.name.startswith("."))
    meta = load_engine(args.model).meta
    classes = folders
    if args.classes == "trained":
        if set(meta.classes) <= set(folders):
            classes = sorted(meta.classes)
        else:
            print(f"note: the model's classes are not Caltech-101 folders; using all {len(folders)} classes")
    recipe = meta.provenance.get("recipe_values") or {}
    if args.val_fraction is None:  # the split the model's own training held out, when it says
        args.val_fraction = float(recipe.get("val_fraction", 0.2))
    if args.seed is None:
        args.seed = int(recipe.get("split_seed", 0))
    items = held_out(data, classes, args.val_fraction, args.seed)
    paths, labels = [p for p, _ in items], [c for _, c in items]
    label_of = dict(items)
    print(f"machine: {describe('faiss')}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; model {args.model} "
          f"({'trained' if meta.trained else 'UNTRAINED'}, {len(meta.classes)} classes)")
    print(f"held-out photos: {len(paths)} of {len(classes)} classes (validation split {args.val_fraction:g} per class, seed {args.seed})")
    counts = np.array([labels.count(c) for c in classes], np.float64)
    chance = float(((counts * (counts - 1)) / (len(labels) - 1)).sum() / len(labels))
    results = {"chance (class frequencies)": chance}

    t = time.perf_counter()
    nb = pixel_neighbours(paths, args.k)
    results["raw pixels 32x32, Euclidean"] = precision_at([[labels[j] for j in row] for row in nb], labels, args.k)
    print(f"raw-pixel neighbours in {time.perf_counter() - t:.0f} s")
    mirror_share = None
    with tempfile.TemporaryDirectory() as tmp:
        for crops, metric in ((1, "cosine"), (1, "euclidean"), (10, "cosine")):
            t = time.perf_counter()
            idx = SimilarityIndex.build(paths, Path(tmp) / f"{crops}-{metric}", model=args.model, crops=crops, metric=metric)
            hits = [[label_of.get(h.path) for h in idx.query(p, top=args.k)] for p in paths]
            name = f"fc7 {'centre crop' if crops == 1 else 'ten crops'}, {metric}"
            results[name] = precision_at(hits, labels, args.k)
            print(f"{name}: indexed and queried in {time.perf_counter() - t:.0f} s", flush=True)
            if crops == 1 and metric == "cosine" and args.mirror_sample:
                from PIL import Image, ImageOps

                rng = np.random.default_rng(0)
                sample = rng.choice(len(paths), min(args.mirror_sample, len(paths)), replace=False)
                first = 0
                for i in sample:
                    photo = Image.open(paths[i]).convert("RGB")  # both decoded the same way
                    mirror = idx.extractor.extract_one(ImageOps.mirror(photo))
                    own = idx.extractor.extract_one(photo)
                    others = idx.query(paths[i], top=1)
                    first += float(np.linalg.norm(own - mirror)) < others[0].distance
                mirror_share = first / len(sample)
            idx.close()
    print(f"\n| neighbours by | precision@{args.k} |")
    print("| --- | ---: |")
    for name, v in results.items():
        print(f"| {name} | {v:.3f} |")
    if mirror_share is not None:
        print(f"\nmirror image nearer than every other photo (fc7 centre crop, cosine): {mirror_share:.2f} of {args.mirror_sample} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
