"""§4.1 / §6: top-1 and top-5 error with 1 or 10 crops, and ensembles.

Several checkpoints are combined as the paper combines its CNNs (§6,
"averaging the predictions of five similar CNNs"): the average of their
softmax outputs, each over its own crops. Data is a prepared folder (its
validation split; rows are already the 256x256 photos) or a folder of class
subfolders (decoded with :func:`alexnet_kit.images.load_square`, unreadable
photos skipped and counted). Photos are matched to model classes by name
or by WordNet id (ImageNet's usual n01440764/ folders).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from alexnet_kit.batching import iter_batches
from alexnet_kit.checkpoint import load_model
from alexnet_kit.errors import AlexKitError, FileProblem
from alexnet_kit.images import find_images
from alexnet_kit.metrics import ErrorCounter, average_crops

from .packed import PackedDataset, is_prepared


@dataclass
class EvalResult:
    photos: int
    top1_err: float
    top5_err: float
    crops: int
    models: list[str]
    skipped: list[str] = field(default_factory=list)
    per_class_top1_err: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"photos": self.photos, "top1_err": self.top1_err, "top5_err": self.top5_err, "crops": self.crops,
                "models": self.models, "skipped": len(self.skipped), "per_class_top1_err": self.per_class_top1_err}


def _photo_batches(data: Path, split: str, batch: int, resize: int, mode: str = "crop"):
    """(class names, total, iterator of (uint8 photos, class-name labels), skipped list)."""
    if is_prepared(data):
        ds = PackedDataset(data)
        if ds.size != resize:
            raise FileProblem(data, f"photos packed at {ds.size}x{ds.size}, the model wants {resize}x{resize}")
        sp = ds.split(split)
        if not len(sp):
            raise FileProblem(data, f"the {split} split is empty")
        names = np.asarray(ds.classes, dtype=object)

        def gen():
            for i in range(0, len(sp), batch):
                pos = np.arange(i, min(i + batch, len(sp)))
                yield sp.take(pos), list(names[sp.labels[pos]])

        return ds.classes, len(sp), gen(), []
    if not data.is_dir():
        raise FileProblem(data, "not a folder")
    classes = sorted(d.name for d in data.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise FileProblem(data, "no class subfolders (expected <class>/<photo> files)")
    files = [(p, c) for c in classes for p in find_images([data / c])]
    label_of = {str(p): c for p, c in files}
    skipped: list[str] = []

    def gen():
        for entries, photos in iter_batches([str(p) for p, _ in files], batch, resize, mode=mode):
            ok = [e for e in entries if e.photo is not None]
            skipped.extend(str(e.error) for e in entries if e.photo is None)
            if ok:
                yield photos, [label_of[e.name] for e in ok]

    return classes, len(files), gen(), skipped


@torch.no_grad()
def ensemble_probs(models, photos, crops: int, device) -> torch.Tensor:
    """(N, C) probabilities of uint8 photos (N, S, S, 3): each model's softmax averaged over its
    ``crops`` (§4.1), then over the models (§6). ``models``: (network, its Preprocess) pairs."""
    probs = None
    for model, prep in models:
        p = average_crops(model(prep.crops(photos, crops).to(device)), crops)
        probs = p if probs is None else probs + p
    return probs / len(models)


@torch.no_grad()
def evaluate(checkpoints: list[str], data: str | Path, crops: int = 10, batch: int = 16, device: str = "cpu",
             split: str = "val", progress: bool = True) -> EvalResult:
    if crops not in (1, 10):
        raise AlexKitError(f"--crops must be 1 or 10, not {crops}")
    models = [load_model(c, device) for c in checkpoints]
    first = models[0][1]
    for path, (_, meta) in zip(checkpoints[1:], models[1:]):
        if list(meta.classes) != list(first.classes):
            raise FileProblem(path, f"has other classes than {checkpoints[0]}: an ensemble averages the same classes")
    index = {c: i for i, c in enumerate(first.classes)}
    # ImageNet's val set is usually laid out in WordNet-id folders (n01440764/...)
    index.update({w: i for i, w in enumerate(first.wnids or [])})
    data_classes, total_photos, batches, skipped = _photo_batches(Path(data), split, batch, first.preprocess.resize,
                                                                  first.preprocess.resize_mode)
    unknown = sorted(set(data_classes) - set(index))
    if unknown:
        raise FileProblem(data, f"class(es) the model does not know: {', '.join(unknown[:5])}")
    total = ErrorCounter()
    per_class: dict[str, list[int]] = {}  # class -> [top-1 misses, photos]
    bar = tqdm(total=total_photos, unit="photo", desc=f"evaluate ({crops} crop{'s' if crops > 1 else ''})", disable=not progress)
    pairs = [(model, meta.preprocess) for model, meta in models]
    for photos, names in batches:
        probs = ensemble_probs(pairs, photos, crops, device)
        y = torch.tensor([index[c] for c in names], device=probs.device)
        for c, miss in zip(names, total.add(probs, y).tolist()):
            counts = per_class.setdefault(c, [0, 0])
            counts[0] += miss
            counts[1] += 1
        bar.update(len(photos))
    bar.close()
    if not total.n:
        raise FileProblem(data, "no readable photos to evaluate")
    top1, top5 = total.errors()
    return EvalResult(total.n, top1, top5, crops, [str(c) for c in checkpoints], skipped,
                      {c: round(wrong / n, 4) for c, (wrong, n) in sorted(per_class.items())})
