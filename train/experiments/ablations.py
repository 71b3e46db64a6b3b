"""The paper's architectural and training choices, each taken away in turn,
on a Caltech-101 class subset with a narrow AlexNet (same topology, fewer
channels; CPU-sized).

    variant      what changes                            paper's claim (ImageNet, 1000 classes)
    full         the paper's network and training        -
    no_lrn       §3.3 local response normalisation off   LRN lowers error 1.4 / 1.2 points (top-1 / top-5)
    no_overlap   §3.4 pooling s = z = 2 instead of 3/2   overlap lowers error 0.4 / 0.3 points
    no_dropout   §4.2 dropout 0 instead of 0.5           dropout curbs overfitting, ~2x iterations to converge
    no_pca       §4.1 no PCA colour noise                colour noise lowers top-1 error by over 1 point
    centre crop  §4.1 one centre crop at test time       (ten-crop averaging is the paper's test protocol)

Every variant trains from the same seeds, data order and budget (epochs,
learning-rate schedule); the errors are on our held-out split of the shared
Caltech-101 copy, with centre-crop and ten-crop evaluation. The spread is the
standard deviation across seeds.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alexnet_kit.model import AlexNet, AlexNetConfig
from alexnet_kit.metrics import average_crops
from alexnet_kit.preprocess import Preprocess

from .caltech import caltech_split, rgb_statistics
from .common import mean_std, pick_device, savefig, seed_everything, write_results

NAME = "ablations"
VARIANTS = ("full", "no_lrn", "no_overlap", "no_dropout", "no_pca")
PAPER = {
    "no_lrn": {"top1": 1.4, "top5": 1.2, "claim": "LRN reduces top-1/top-5 error by 1.4/1.2 points (§3.3)"},
    "no_overlap": {"top1": 0.4, "top5": 0.3, "claim": "overlapping pooling reduces top-1/top-5 error by 0.4/0.3 points (§3.4)"},
    "no_pca": {"top1": 1.0, "top5": None, "claim": "PCA colour noise reduces top-1 error by over 1 point (§4.1)"},
    "no_dropout": {"top1": None, "top5": None, "claim": "without dropout the network overfits substantially; dropout roughly doubles the iterations to converge (§4.2)"},
    "centre_crop": {"top1": None, "top5": None, "claim": "test-time ten-crop averaging (§4.1); the paper gives no single-crop number for its network"},
}


@dataclass
class AblationSize:
    classes: int
    per_class: int | None  # cap per class (None: all)
    photo: int  # stored photo side (the paper: 256)
    crop: int  # network input (the paper: 224)
    channels: tuple
    fc: int
    epochs: int
    seeds: int
    batch: int = 64
    lr: float = 0.01
    weight_decay: float = 5e-4  # §5


SIZES = {
    "tiny": AblationSize(classes=3, per_class=12, photo=72, crop=64, channels=(8, 16, 16, 16, 16), fc=32, epochs=2, seeds=2, batch=16),
    # ~20-30 min on 2 shared CPU cores (one process per seed): half-resolution photos, a sixth of the channels
    "default": AblationSize(classes=10, per_class=None, photo=128, crop=112, channels=(16, 32, 48, 48, 32), fc=256, epochs=12, seeds=2),
    # the paper's resolution and a wider net (a GPU)
    "full": AblationSize(classes=20, per_class=None, photo=256, crop=224, channels=(48, 128, 192, 192, 128), fc=2048, epochs=40, seeds=3),
}


def variant_config(base: AlexNetConfig, variant: str) -> AlexNetConfig:
    if variant == "no_lrn":
        return dataclasses.replace(base, lrn=False)
    if variant == "no_overlap":
        return dataclasses.replace(base, overlapping_pool=False)
    if variant == "no_dropout":
        return dataclasses.replace(base, dropout=0.0)
    return base


class Augment:
    """§4.1: random crops, horizontal reflections and PCA colour noise, then centring (§2)."""

    def __init__(self, mean_chw, std, eigvals, eigvecs, crop: int, pca: bool):
        self.crop, self.pca = crop, pca
        self.mean = torch.from_numpy(mean_chw)
        self.std = torch.from_numpy(std)[:, None, None]
        # PCA offset P (alpha * lambda) with lambda on the 0..1 pixel scale, returned in
        # 0..255 units: the same reading of the formula as alexnet_kit.train.augment.
        self.pl = torch.from_numpy(eigvecs * (eigvals / 255.0)[None, :])

    def __call__(self, photos: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        n, s = len(photos), photos.shape[1]
        c = self.crop
        x = torch.from_numpy(photos).permute(0, 3, 1, 2).float() - self.mean
        tops = torch.randint(0, s - c + 1, (n,), generator=gen)
        lefts = torch.randint(0, s - c + 1, (n,), generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5
        alphas = torch.randn(n, 3, generator=gen) * 0.1  # §4.1: alpha_i ~ N(0, 0.1), drawn always so data order matches
        out = torch.empty(n, 3, c, c)
        for i in range(n):
            p = x[i, :, tops[i]:tops[i] + c, lefts[i]:lefts[i] + c]
            out[i] = p.flip(2) if flips[i] else p
        if self.pca:
            out += (alphas @ self.pl.T)[:, :, None, None]
        return out / self.std


@torch.no_grad()
def evaluate(model: AlexNet, photos: np.ndarray, labels: np.ndarray, prep: Preprocess, crops: int, device, batch: int = 50) -> dict:
    model.eval()
    wrong1 = wrong5 = 0
    y = torch.from_numpy(labels)
    k = min(5, model.config.num_classes)
    for i in range(0, len(photos), batch):
        x = prep.crops(photos[i:i + batch], crops).to(device)
        probs = average_crops(model(x), crops).cpu()
        top = probs.topk(k, 1).indices
        yb = y[i:i + batch]
        wrong1 += int((top[:, 0] != yb).sum())
        wrong5 += int((~(top == yb[:, None]).any(1)).sum())
    model.train()
    return {"top1": 100.0 * wrong1 / len(photos), "top5": 100.0 * wrong5 / len(photos)}


def train_variant(variant: str, seed: int, split, stats, cfg: AblationSize, device, log=print, progress: bool = True) -> tuple[dict, AlexNet]:
    mean, std, eigvals, eigvecs = stats
    base = AlexNetConfig(num_classes=len(split.classes), conv_channels=cfg.channels, fc_features=cfg.fc,
                         input_size=cfg.crop, init="kaiming")
    config = variant_config(base, variant)
    seed_everything(seed)
    model = AlexNet(config).to(device)  # the same seed gives every variant the same data order and draws
    aug = Augment(mean, std, eigvals, eigvecs, cfg.crop, pca=variant != "no_pca")
    # §5 update rule (lr inside the velocity), weight decay 0.0005, momentum 0.9
    vel = [torch.zeros_like(p) for p in model.parameters()]
    prep = Preprocess(resize=cfg.photo, crop=cfg.crop, mean=mean, std=tuple(float(s) for s in std))
    gen = torch.Generator().manual_seed(seed)
    history = []
    n = len(split.train)
    t0 = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(range(1, cfg.epochs + 1), desc=f"{variant} seed {seed}", unit="epoch", leave=False, disable=not progress)
    for epoch in bar:
        # the same schedule for everyone instead of §5's plateau rule: /10 for the last quarter
        lr = cfg.lr if epoch <= math.ceil(cfg.epochs * 0.75) else cfg.lr / 10
        order = torch.randperm(n, generator=gen).numpy()
        wrong = loss_sum = 0.0
        for i in range(0, n, cfg.batch):
            idx = np.sort(order[i:i + cfg.batch])
            x = aug(split.train[idx], gen).to(device)
            y = torch.from_numpy(split.train_labels[idx]).to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            model.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for p, v in zip(model.parameters(), vel):
                    v.mul_(0.9).add_(p, alpha=-cfg.weight_decay * lr).add_(p.grad, alpha=-lr)
                    p.add_(v)
            wrong += float((logits.argmax(1) != y).sum())
            loss_sum += float(loss.detach()) * len(idx)
        val = evaluate(model, split.val, split.val_labels, prep, 1, device)
        history.append({"epoch": epoch, "lr": lr, "train_loss": loss_sum / n, "train_top1": 100.0 * wrong / n,
                        "val_top1": val["top1"], "val_top5": val["top5"]})
        bar.set_postfix(train=f"{history[-1]['train_top1']:.1f}%", val=f"{val['top1']:.1f}%")
        if not math.isfinite(loss_sum):
            log(f"  {variant} seed {seed}: diverged at epoch {epoch}")
            break
    centre = evaluate(model, split.val, split.val_labels, prep, 1, device)
    ten = evaluate(model, split.val, split.val_labels, prep, 10, device)
    secs = time.perf_counter() - t0
    log(f"  {variant:10s} seed {seed}: val top-1 {ten['top1']:.1f}% ten-crop, {centre['top1']:.1f}% centre; "
        f"train {history[-1]['train_top1']:.1f}% ({secs:.0f}s)")
    return {"variant": variant, "seed": seed, "config": config.to_dict(), "history": history,
            "centre": centre, "ten_crop": ten, "seconds": secs}, model


def summarise(runs: list[dict]) -> dict:
    """Mean and spread per variant, and the gain of the full method over each variant (error points)."""
    rows = {}
    for v in VARIANTS:
        rs = [r for r in runs if r["variant"] == v]
        if not rs:
            continue
        row = {"seeds": [r["seed"] for r in rs]}
        for proto in ("ten_crop", "centre"):
            for k in ("top1", "top5"):
                row[f"{proto}_{k}"] = mean_std([r[proto][k] for r in rs])
        row["train_top1_final"] = mean_std([r["history"][-1]["train_top1"] for r in rs])
        row["overfit_gap"] = mean_std([r["ten_crop"]["top1"] - r["history"][-1]["train_top1"] for r in rs])
        rows[v] = row
    gains = {}
    full = {r["seed"]: r for r in runs if r["variant"] == "full"}
    for v in VARIANTS[1:]:
        pairs = [(full[r["seed"]], r) for r in runs if r["variant"] == v and r["seed"] in full]
        if pairs:
            gains[v] = {k: mean_std([o["ten_crop"][k] - f["ten_crop"][k] for f, o in pairs]) for k in ("top1", "top5")}
    if full:
        gains["centre_crop"] = {k: mean_std([f["centre"][k] - f["ten_crop"][k] for f in full.values()]) for k in ("top1", "top5")}
    return {"variants": rows, "gain_of_paper_choice": gains}


def seed_study(seed: int, variants: list[str], split, stats, cfg: AblationSize, device: str, model_dir: Path | None,
               threads: int | None = None, log=print) -> list[dict]:
    """Every variant from one seed; the full network of seed 0 is saved for Figures 3 and 4."""
    if threads:
        torch.set_num_threads(threads)
    done = {}
    progress = Path(model_dir) / f"{NAME}.partial.seed{seed}.json" if model_dir is not None else None
    if progress is not None and progress.exists():
        # resume: runs of an interrupted invocation with the same settings are kept
        try:
            saved = json.loads(progress.read_text())
            if saved.get("config") == json.loads(json.dumps(dataclasses.asdict(cfg))) and saved.get("classes") == split.classes:
                done = {r["variant"]: r for r in saved["runs"]}
        except (OSError, ValueError, KeyError):
            done = {}
    model_path = Path(model_dir) / "caltech_full_seed0.safetensors" if model_dir is not None else None
    runs = []
    for v in variants:
        if v in done and not (v == "full" and seed == 0 and model_path is not None and not model_path.exists()):
            log(f"  {v:10s} seed {seed}: kept from an interrupted run ({progress.name})")
            runs.append(done[v])
            continue
        r, model = train_variant(v, seed, split, stats, cfg, torch.device(device), log)
        runs.append(r)
        if v == "full" and seed == 0 and model_path is not None:
            save_small_model(model, split, stats, cfg, model_path)
        if progress is not None:
            write_results(progress.parent, progress.stem, {"config": dataclasses.asdict(cfg), "classes": split.classes,
                                                           "runs": list({**done, **{x["variant"]: x for x in runs}}.values())})
    return runs


def run(out: str | Path = "experiments/results", size: str = "default", seeds: int | None = None, epochs: int | None = None,
        variants: list[str] | None = None, device: str = "auto", jobs: int = 2, log=print) -> dict:
    cfg = dataclasses.replace(SIZES[size])
    if seeds:
        cfg.seeds = seeds
    if epochs:
        cfg.epochs = epochs
    variants = list(variants or VARIANTS)
    dev = pick_device(device)
    out = Path(out)
    t_start = time.perf_counter()
    split = caltech_split(cfg.classes, cfg.photo, per_class=cfg.per_class)
    stats = rgb_statistics(split.train)
    log(f"Ablations: {len(split.classes)} Caltech-101 classes, {len(split.train)} train / {len(split.val)} held-out photos "
        f"({split.skipped} skipped), {cfg.seeds} seeds x {cfg.epochs} epochs, {len(variants)} variants, device {dev}")
    runs = []
    jobs = min(jobs, cfg.seeds) if dev.type == "cpu" else 1
    if jobs > 1:
        # one process per seed, one thread each (less synchronisation waste on a shared CPU)
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = [pool.submit(seed_study, seed, variants, split, stats, cfg, str(dev), out, 1)
                    for seed in range(cfg.seeds)]
            for f in as_completed(futs):
                runs += f.result()
    else:
        for seed in range(cfg.seeds):
            runs += seed_study(seed, variants, split, stats, cfg, str(dev), out, None, log)
    runs.sort(key=lambda r: (r["seed"], variants.index(r["variant"])))
    results = {
        "size": size, "config": dataclasses.asdict(cfg), "classes": split.classes,
        "split": {"train": len(split.train), "val": len(split.val), "val_fraction": 0.2, "seed": 0, "skipped": split.skipped},
        "paper": PAPER, **summarise(runs), "runs": runs, "seconds": time.perf_counter() - t_start,
    }
    plot(results, out / f"{NAME}.png")
    write_results(out, NAME, results)
    for seed in range(cfg.seeds):
        (out / f"{NAME}.partial.seed{seed}.json").unlink(missing_ok=True)
    log(f"wrote {out / (NAME + '.json')} and {out / (NAME + '.png')} in {results['seconds']:.0f}s")
    return results


def save_small_model(model: AlexNet, split, stats, cfg: AblationSize, path: Path) -> Path:
    from alexnet_kit.checkpoint import save_checkpoint
    from alexnet_kit.meta import ModelMeta

    mean, std, _, _ = stats
    meta = ModelMeta(model.config, list(split.classes), None,
                     Preprocess(resize=cfg.photo, crop=cfg.crop, mean=mean, std=tuple(float(s) for s in std)),
                     trained=True, provenance={"experiment": NAME, "data": "caltech101 subset", "epochs": cfg.epochs,
                                               "train_files": split.train_files})
    save_checkpoint(path, model.cpu(), meta)
    return path


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["variants"]
    names = list(rows)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = dict(zip(VARIANTS, ("k", "tab:blue", "tab:orange", "tab:green", "tab:red")))
    for r in results["runs"]:
        h = r["history"]
        ep = [e["epoch"] for e in h]
        first = r["seed"] == min(x["seed"] for x in results["runs"] if x["variant"] == r["variant"])
        ax1.plot(ep, [e["val_top1"] for e in h], color=colours[r["variant"]], lw=1.3, label=r["variant"] if first else None)
        ax1.plot(ep, [e["train_top1"] for e in h], color=colours[r["variant"]], lw=0.8, ls=":", alpha=0.7)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("top-1 error % (solid: held-out centre crop; dotted: training)")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    x = np.arange(len(names))
    ten = [rows[n]["ten_crop_top1"] for n in names]
    cen = [rows[n]["centre_top1"] for n in names]
    ax2.bar(x - 0.2, [m for m, _ in ten], 0.4, yerr=[s for _, s in ten], capsize=3, label="ten-crop", color="tab:blue")
    ax2.bar(x + 0.2, [m for m, _ in cen], 0.4, yerr=[s for _, s in cen], capsize=3, label="centre crop", color="tab:gray")
    ax2.set_xticks(x, names, rotation=20, fontsize=8)
    ax2.set_ylabel("held-out top-1 error % (mean ± sd over seeds)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3, axis="y")
    n_seeds = len(rows[names[0]]["seeds"]) if names else 0
    fig.suptitle(f"Ablations: narrow AlexNet, {len(results['classes'])} Caltech-101 classes, {n_seeds} seed(s), "
                 f"{results['config']['epochs']} epochs each", fontsize=10)
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)
    return path
