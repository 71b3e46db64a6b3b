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

The runs go through the pieces ``alexnet-kit train`` uses: the loader's
:class:`EpochBatches` (data order and augmentation draws from (seed, epoch,
batch)), the :class:`Finisher` (§4.1), :class:`PaperSGD` (§5),
:func:`train_step`, and ``alexnet_kit.metrics`` for every error. What is the
experiment's own: the variants, a fixed learning-rate schedule, and every
photo in every epoch (the trainer drops the last short batch).
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
from tqdm import tqdm

from alexnet_kit.checkpoint import save_checkpoint
from alexnet_kit.meta import ModelMeta
from alexnet_kit.metrics import ErrorCounter
from alexnet_kit.model import AlexNet, AlexNetConfig
from alexnet_kit.preprocess import Preprocess

from ..augment import Finisher
from ..evaluate import ensemble_probs
from ..loader import EpochBatches, make_loader
from ..optim import PaperSGD
from ..parallel import build_grouped, pick_device
from ..trainer import train_step
from .caltech import caltech_split, rgb_statistics
from .common import check_stop, finished, mean_std, savefig, seed_everything, submit, worker_pool, write_results

NAME = "ablations"
VARIANTS = ("full", "no_lrn", "no_overlap", "no_dropout", "no_pca")
PAPER = {
    "no_lrn": {"top1": 1.4, "top5": 1.2, "claim": "LRN reduces top-1/top-5 error by 1.4/1.2 points (§3.3)"},
    "no_overlap": {"top1": 0.4, "top5": 0.3, "claim": "overlapping pooling reduces top-1/top-5 error by 0.4/0.3 points (§3.4)"},
    "no_pca": {"top1": 1.0, "top5": None, "claim": "PCA colour noise reduces top-1 error by over 1 point (§4.1)"},
    "no_dropout": {"top1": None, "top5": None, "claim": "without dropout the network overfits substantially; dropout roughly doubles the iterations to converge (§4.2)"},
    "centre_crop": {"top1": None, "top5": None, "claim": "test-time ten-crop averaging (§4.1); the paper gives no single-crop number for its network"},
}
#: the data stream of the runs (bumped when it changes, so an interrupted run of an older stream is not resumed):
#: 2 = the training library's (epoch_order, augment.draw seeded by (seed, epoch, batch), Finisher)
STREAM = 2


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


def pca_std(variant: str) -> float:
    """§4.1 alpha_i ~ N(0, 0.1); no_pca scales the draws to 0 (they are still drawn, so the crops match)."""
    return 0.0 if variant == "no_pca" else 0.1


def lr_at(cfg: AblationSize, epoch: int) -> float:
    """The same schedule for every variant instead of §5's plateau rule (which would give each its
    own drops): lr for the first three quarters of the epochs, lr / 10 for the last quarter."""
    return cfg.lr if epoch <= math.ceil(cfg.epochs * 0.75) else cfg.lr / 10


def preprocess(cfg: AblationSize, stats) -> Preprocess:
    mean, std, _, _ = stats
    return Preprocess(resize=cfg.photo, crop=cfg.crop, mean=mean, std=tuple(float(s) for s in std))


def finisher(cfg: AblationSize, stats) -> Finisher:
    """§4.1 crops, flips and PCA noise, centred by the mean image (§2) and divided by the channel std,
    exactly as ``alexnet-kit train`` finishes a batch on the CPU."""
    mean, std, eigvals, eigvecs = stats
    return Finisher(mean, eigvals, eigvecs, cfg.crop, "cpu", tuple(float(s) for s in std))


@torch.no_grad()
def evaluate(model: AlexNet, photos: np.ndarray, labels: np.ndarray, prep: Preprocess, crops: int, device, batch: int = 50) -> dict:
    """Held-out top-1/top-5 error in %, softmax averaged over 1 or 10 crops (§4.1)."""
    model.eval()
    counter = ErrorCounter()
    for i in range(0, len(photos), batch):
        counter.add(ensemble_probs([(model, prep)], photos[i:i + batch], crops, device), torch.from_numpy(labels[i:i + batch]))
    model.train()
    top1, top5 = counter.errors()
    return {"top1": 100.0 * top1, "top5": 100.0 * top5}


def train_variant(variant: str, seed: int, split, stats, cfg: AblationSize, device, log=print, progress: bool = True) -> tuple[dict, AlexNet]:
    base = AlexNetConfig(num_classes=len(split.classes), conv_channels=cfg.channels, fc_features=cfg.fc,
                         input_size=cfg.crop, init="kaiming")
    config = variant_config(base, variant)
    seed_everything(seed)  # dropout's stream; the weights, data order and draws are functions of the seed
    model = build_grouped(config, seed).to(device)
    optimizer = PaperSGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)  # §5
    fin, prep = finisher(cfg, stats), preprocess(cfg, stats)
    train = split.train_split()
    history = []
    n = len(train)
    t0 = time.perf_counter()
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"{variant} seed {seed}", unit="epoch", leave=False, disable=not progress)
    for epoch in bar:
        optimizer.set_lr(lr_at(cfg, epoch))
        # every photo once per epoch (drop_last off, unlike `alexnet-kit train`): the last batch is short
        batches = EpochBatches(train, batch=cfg.batch, seed=seed, epoch=epoch, crop=cfg.crop, train=True,
                               finisher=fin, pca_std=pca_std(variant), drop_last=False)
        seen = ErrorCounter(k=1)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # on the device: no host sync per step
        for x, y, _ in make_loader(batches):
            check_stop()  # a stop ends this run here; the next invocation trains it again
            loss, logits = train_step(model, optimizer, x.to(device), y)
            seen.add(logits, y)
            loss_sum += loss.double() * len(y)
        loss_sum = float(loss_sum)
        val = evaluate(model, split.val, split.val_labels, prep, 1, device)
        history.append({"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_sum / n,
                        "train_top1": 100.0 * seen.errors()[0], "val_top1": val["top1"], "val_top5": val["top5"]})
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
            if (saved.get("config") == json.loads(json.dumps(dataclasses.asdict(cfg))) and saved.get("classes") == split.classes
                    and saved.get("stream") == STREAM):
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
                                                           "stream": STREAM, "runs": list({**done, **{x["variant"]: x for x in runs}}.values())})
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
        with worker_pool(jobs) as pool:
            futs = [submit(pool, seed_study, seed, variants, split, stats, cfg, str(dev), out, 1)
                    for seed in range(cfg.seeds)]
            for _, seed_runs in finished(futs):  # each seed's finished variants are in its partial file
                runs += seed_runs
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
    meta = ModelMeta(model.config, list(split.classes), None, preprocess(cfg, stats),
                     trained=True, provenance={"experiment": NAME, "data": "caltech101 subset", "epochs": cfg.epochs,
                                               "train_files": split.train_files})
    save_checkpoint(path, model.cpu(), meta)
    return path


def plot(results: dict, path: Path) -> Path:
    import matplotlib  # here, not at the top: matplotlib is an optional extra (alexnet-kit[train]), slow to import

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
