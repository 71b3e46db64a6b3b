"""Figure 4: test photos, the network's top-5 guesses, and the training photos
whose last-hidden-layer (fc7, 4096-d in the paper) activations are nearest.

§6.1: "If two images produce feature activation vectors with a small
Euclidean separation, we can say that the higher levels of the neural network
consider them to be similar." Predictions average the softmax over ten crops
(§4.1); features come from the centre crop.

Queries are held-out photos, one per class; the gallery is the model's own
training photos when its checkpoint says what they were (see
:func:`photo_sets`), else the training side of our Caltech-101 split.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from alexnet_kit.checkpoint import load_model, weights_fingerprint

from ..evaluate import ensemble_probs
from .caltech import caltech_split
from .common import ROOT, load_photos, savefig, write_results
from .models import find_model

NAME = "fig4_neighbours"


@torch.no_grad()
def fc7_and_top5(net, prep, photos: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fc7 of the centre crop, top-5 class indices, their probabilities over ten crops)."""
    feats, idx, prob = [], [], []
    k = min(5, net.config.num_classes)
    for i in range(0, len(photos), batch):
        chunk = photos[i:i + batch]
        feats.append(net.fc7_features(prep.crops(chunk, 1)).numpy())
        p = ensemble_probs([(net, prep)], chunk, 10, "cpu")
        top = p.topk(k, 1)
        idx.append(top.indices.numpy())
        prob.append(top.values.numpy())
    return np.concatenate(feats), np.concatenate(idx), np.concatenate(prob)


@torch.no_grad()
def gallery_features(net, prep, photos: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([net.fc7_features(prep.crops(photos[i:i + batch], 1)).numpy() for i in range(0, len(photos), batch)])


def nearest(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and Euclidean distances of the k nearest gallery vectors (§6.1)."""
    d2 = (queries ** 2).sum(1)[:, None] - 2 * queries @ gallery.T + (gallery ** 2).sum(1)[None, :]
    d = np.sqrt(np.maximum(d2, 0))
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


def photo_sets(meta, size: str) -> tuple[list[str], list[str], str]:
    """(gallery = training photos, queries = held-out photos, where they came from) for a model.

    The model's own split when its checkpoint says what it was (our ablation
    model lists its training photos; ``alexnet-kit train`` records its packed
    data set, whose plan.json lists both splits); else our Caltech-101 split.
    """
    prov = meta.provenance or {}
    split = None
    if prov.get("train_files"):
        classes = [c for c in meta.classes]
        split = caltech_split(len(classes), meta.preprocess.resize, per_class=12 if size == "tiny" else None,
                              mode=meta.preprocess.resize_mode)
        if sorted(split.classes) == sorted(classes):
            train = list(prov["train_files"])
            held = [f for f in split.val_files if f not in set(train)]
            return train, held, "the model's own training photos (listed in its checkpoint); queries from the held-out side"
    ds = Path(str(prov.get("dataset", "")))
    plan = (ds if ds.is_absolute() or (ds / "plan.json").is_file() else ROOT / ds) / "plan.json"
    if prov.get("dataset") and plan.is_file():
        try:
            d = json.loads(plan.read_text())
            return (list(d["splits"]["train"]["files"]), list(d["splits"]["val"]["files"]),
                    f"the model's own training split ({plan}); queries from its validation side")
        except (OSError, ValueError, KeyError):
            pass
    split = caltech_split(10 if size != "tiny" else 3, meta.preprocess.resize, per_class=12 if size == "tiny" else None,
                          mode=meta.preprocess.resize_mode)
    return split.train_files, split.val_files, "the training side of our Caltech-101 split (seed 0, 20% held out)"


def run(out: str | Path = "experiments/results", model: str | Path | None = None, size: str = "default",
        queries: int = 5, neighbours: int = 6, gallery_limit: int | None = None, log=print) -> dict:
    path = find_model(model)
    net, meta = load_model(path)
    torch.manual_seed(0)
    prep, res = meta.preprocess, meta.preprocess.resize
    gallery_files, query_files, gallery_source = photo_sets(meta, size)
    if gallery_limit and len(gallery_files) > gallery_limit:
        pick = np.sort(np.random.default_rng(0).choice(len(gallery_files), gallery_limit, replace=False))
        gallery_files = [gallery_files[i] for i in pick]
    chosen = one_per_class(query_files, queries)
    gal, ok = load_photos([Path(f) for f in gallery_files], res, what="gallery", mode=prep.resize_mode)
    gal, gal_files = gal[ok], [f for f, k in zip(gallery_files, ok) if k]
    qs, ok = load_photos([Path(f) for f in chosen], res, what="queries", mode=prep.resize_mode)
    qs, q_files = qs[ok], [f for f, k in zip(chosen, ok) if k]
    q_feat, top_idx, top_p = fc7_and_top5(net, prep, qs)
    nn_idx, nn_d = nearest(q_feat, gallery_features(net, prep, gal), min(neighbours, len(gal)))
    classes = list(meta.classes)
    entries = [{"query": q_files[r], "truth": Path(q_files[r]).parent.name,
                "top5": [{"class": classes[i], "p": float(p)} for i, p in zip(top_idx[r], top_p[r])],
                "neighbours": [{"file": gal_files[g], "class": Path(gal_files[g]).parent.name, "distance": float(d)}
                               for g, d in zip(nn_idx[r], nn_d[r])]}
               for r in range(len(qs))]
    out = Path(out)
    plot(entries, qs, gal, nn_idx, f"Figure 4: {path.name}; neighbours by Euclidean fc7 distance among {len(gal)} training photos",
         out / f"{NAME}.png")
    same = [np.mean([n["class"] == e["truth"] for n in e["neighbours"]]) for e in entries]
    results = {"model": str(path), "fingerprint": weights_fingerprint(path), "trained": meta.trained, "gallery": {"source": gallery_source, "photos": len(gal)},
               "feature_dim": int(q_feat.shape[1]), "queries": entries,
               "top1_correct": int(sum(e["top5"][0]["class"] == e["truth"] for e in entries)),
               "neighbour_same_class_fraction": float(np.mean(same)),
               "paper": {"claim": "fc7 neighbours are semantically similar even when far apart in pixel space (Figure 4, §6.1)"}}
    write_results(out, NAME, results)
    log(f"Figure 4: {len(entries)} queries, {results['neighbour_same_class_fraction']:.0%} of neighbours share the query's class "
        f"-> {out / (NAME + '.png')}")
    return results


def one_per_class(files: list[str], queries: int) -> list[str]:
    """One photo from each of the first ``queries`` classes (by folder name; deterministic)."""
    chosen, seen = [], set()
    for f in sorted(files, key=lambda f: (Path(f).parent.name, Path(f).name)):
        if Path(f).parent.name not in seen:
            seen.add(Path(f).parent.name)
            chosen.append(f)
        if len(chosen) == queries:
            break
    return chosen


def plot(entries: list[dict], queries: np.ndarray, gallery: np.ndarray, nn_idx: np.ndarray, title: str, path: Path) -> Path:
    """A row per query: the photo, its top-5 bars (the true class green), its nearest training photos."""
    import matplotlib  # here, not at the top: matplotlib is an optional extra (alexnet-kit[train]), slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(entries), 2 + nn_idx.shape[1]
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 1.2, 1.7 * rows), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.5] + [1] * nn_idx.shape[1]})
    for r, e in enumerate(entries):
        axes[r, 0].imshow(queries[r])
        axes[r, 0].set_title(f"test: {e['truth']}", fontsize=7)
        ax = axes[r, 1]
        names = [t["class"] for t in e["top5"]]
        ax.barh(range(len(names))[::-1], [t["p"] for t in e["top5"]],
                color=["tab:green" if n == e["truth"] else "tab:gray" for n in names])
        for j, t in enumerate(e["top5"]):
            ax.text(0.02, len(names) - 1 - j, f"{t['class'][:18]} {t['p']:.2f}", va="center", fontsize=6)
        ax.set_xlim(0, 1)
        ax.set_yticks([])
        ax.set_xticks([])
        for c, n in enumerate(e["neighbours"]):
            axes[r, 2 + c].imshow(gallery[nn_idx[r, c]])
            axes[r, 2 + c].set_title(f"{n['class'][:12]} d={n['distance']:.1f}", fontsize=6)
        for a in axes[r, [0] + list(range(2, cols))]:
            a.set_axis_off()
    axes[0, 1].set_title("top-5 (ten crops)", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)
    return path
