"""Figure 1: a four-layer convolutional network with ReLUs reaches 25% training
error on CIFAR-10 about six times faster than the same network with tanh (§3.1).

The paper: "The learning rates for each network were chosen independently to
make training as fast as possible. No regularization of any kind was
employed." So, for each activation: a small learning-rate sweep on seed 0
(the rates train side by side, an epoch each in turn; the first to 25% wins),
then the other seeds at the chosen rate; the result is the number of
epochs to reach 25% training error, per seed, and the ReLU/tanh ratio.

Training error is the running error over each epoch's minibatches, which is
what cuda-convnet (the paper's code) printed and what Figure 1 plots.

The network is cuda-convnet's CIFAR-10 example shape (conv 32, conv 32,
conv 64, each 5x5 + 3/2 max-pool, then a 10-way linear layer): four layers
with weights. Same init (PyTorch's default), same data order per seed, no
augmentation, no weight decay, no dropout.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .common import class_folders, load_photos, mean_std, photo_files, savefig, seed_everything, shared_data, write_results

NAME = "fig1_relu_tanh"
TARGET = 0.25  # Figure 1's dashed line
PAPER_SPEEDUP = 6.0


@dataclass
class Fig1Size:
    per_class: int  # training photos per class (the shared copy has 1000)
    seeds: int
    max_epochs: int
    lrs: dict = field(default_factory=dict)  # activation -> learning rates to sweep
    width: tuple = (32, 32, 64)
    batch: int = 128
    init: str = "default"  # "default": PyTorch's, the same for both; "he": each activation's own gain


SIZES = {
    # seconds: the tests
    "tiny": Fig1Size(per_class=10, seeds=2, max_epochs=3, lrs={"relu": [0.01, 0.05], "tanh": [0.05]}, width=(8, 8, 16), batch=50),
    # ~20-30 min on 2 shared CPU cores: 3,000 of the shared training photos, half the width.
    # The likeliest winner is swept first so that the others stop early.
    "default": Fig1Size(per_class=300, seeds=3, max_epochs=60, lrs={"relu": [0.005, 0.01, 0.02, 0.05], "tanh": [0.005, 0.01, 0.02, 0.05]}, width=(16, 16, 32)),
    # the paper's widths, every shared training photo, a wider sweep and more seeds (a GPU)
    "full": Fig1Size(per_class=1000, seeds=5, max_epochs=150, lrs={"relu": [0.002, 0.005, 0.01, 0.02, 0.05, 0.1], "tanh": [0.002, 0.005, 0.01, 0.02, 0.05, 0.1]}),
}


class FourLayerNet(nn.Module):
    """conv5x5-32, pool, conv5x5-32, pool, conv5x5-64, pool, linear-10 (four weight layers)."""

    def __init__(self, activation: str = "relu", width=(32, 32, 64), classes: int = 10, init: str = "default"):
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        a, b, c = width
        self.features = nn.Sequential(
            nn.Conv2d(3, a, 5, padding=2), act(), nn.MaxPool2d(3, 2, padding=1),  # 32 -> 16
            nn.Conv2d(a, b, 5, padding=2), act(), nn.MaxPool2d(3, 2, padding=1),  # 16 -> 8
            nn.Conv2d(b, c, 5, padding=2), act(), nn.MaxPool2d(3, 2, padding=1),  # 8 -> 4
        )
        self.classifier = nn.Linear(c * 4 * 4, classes)
        if init == "he":
            # not in the paper: a variance-preserving start for each activation
            # (He et al. 2015; gain sqrt(2) for ReLU, 5/3 for tanh), so neither is
            # handicapped by signals that shrink layer by layer
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity=activation if m is not self.classifier else "linear")
                    nn.init.zeros_(m.bias)
        elif init != "default":
            raise ValueError(f"init must be default or he, got {init!r}")

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def load_cifar(split: str, per_class: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 (N, 32, 32, 3) photos and int64 labels of ``cifar10/<split>``, cached."""
    root = shared_data("cifar10", split)
    classes = class_folders(root)
    files, labels = [], []
    for i, c in enumerate(classes):
        fs = photo_files(c)[:per_class]
        files += fs
        labels += [i] * len(fs)
    photos, ok = load_photos(files, 32, what=f"cifar10-{split}")
    return torch.from_numpy(photos[ok]), torch.tensor(labels)[torch.from_numpy(ok)], [c.name for c in classes]


def to_input(photos: torch.Tensor, mean: torch.Tensor, scale: float) -> torch.Tensor:
    # §2 style: subtract the training set's per-pixel mean; one global scale keeps the
    # same learning rates meaningful for both activations.
    return ((photos.permute(0, 3, 1, 2).float() - mean) / scale).contiguous()


class Run:
    """One network at one learning rate and seed, trained an epoch at a time."""

    def __init__(self, x, y, activation: str, lr: float, seed: int, size: Fig1Size, device=torch.device("cpu")):
        seed_everything(seed)
        self.x, self.y, self.size, self.device = x, y, size, device
        self.activation, self.lr, self.seed = activation, lr, seed
        self.net = FourLayerNet(activation, size.width, init=size.init).to(device)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=0.9)  # no weight decay: "no regularization"
        self.order = torch.Generator().manual_seed(seed)  # the same data order for both activations
        self.errors: list[float] = []
        self.reached: int | None = None
        self.diverged = False
        self.seconds = 0.0

    def epoch(self) -> float:
        """One pass over the training set; returns the running training error (what Figure 1 plots)."""
        t0 = time.perf_counter()
        x, y, b = self.x, self.y, self.size.batch
        perm = torch.randperm(len(x), generator=self.order)
        wrong = 0
        for i in range(0, len(x), b):
            idx = perm[i:i + b]
            xb, yb = x[idx].to(self.device), y[idx].to(self.device)
            logits = self.net(xb)
            loss = F.cross_entropy(logits, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            wrong += int((logits.argmax(1) != yb).sum())
        err = wrong / len(x)
        self.errors.append(err)
        self.diverged = not math.isfinite(float(loss.detach()))
        if err <= TARGET and self.reached is None:
            self.reached = len(self.errors)
        self.seconds += time.perf_counter() - t0
        return err

    @property
    def done(self) -> bool:
        return self.reached is not None or self.diverged or len(self.errors) >= self.size.max_epochs

    def result(self) -> dict:
        return {"activation": self.activation, "lr": self.lr, "seed": self.seed, "epochs_to_target": self.reached,
                "train_error": self.errors, "diverged": self.diverged, "seconds": self.seconds}


def race(runs: list[Run], log=print, progress: bool = True) -> list[Run]:
    """Train ``runs`` side by side, an epoch each in turn, until one reaches 25% (or all stop).

    For the learning-rate sweep: once one rate has reached the target after
    E epochs no other can be faster, so the sweep costs (rates x E) epochs,
    not the sum of every rate's full run.
    """
    from tqdm import tqdm

    alive = list(runs)
    bar = tqdm(total=runs[0].size.max_epochs, desc=f"{runs[0].activation} seed {runs[0].seed} lr {'/'.join(f'{r.lr:g}' for r in runs)}",
               unit="epoch", leave=False, disable=not progress)
    while alive:
        for r in alive:
            r.epoch()
        bar.update(1)
        bar.set_postfix_str(" ".join(f"{r.lr:g}:{r.errors[-1]:.3f}" for r in alive))
        if any(r.reached for r in alive):
            break
        alive = [r for r in alive if not r.done]
    bar.close()
    for r in runs:
        log(f"  {r.activation:4s} lr={r.lr:<6g} seed={r.seed}: "
            f"{'%d epochs' % r.reached if r.reached else ('diverged' if r.diverged else 'not reached in %d' % len(r.errors))}"
            f" (train error {r.errors[-1]:.3f}, {r.seconds:.0f}s)")
    return runs


@torch.no_grad()
def test_error(net: nn.Module, x: torch.Tensor, y: torch.Tensor, device) -> float:
    net.eval()
    wrong = sum(int((net(x[i:i + 500].to(device)).argmax(1) != y[i:i + 500].to(device)).sum()) for i in range(0, len(x), 500))
    net.train()
    return wrong / len(x)


def activation_study(act: str, x, y, xt, yt, cfg: Fig1Size, device: str, threads: int | None = None, log=print) -> dict:
    """The learning-rate sweep (seed 0), then the other seeds at the chosen rate."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    sweep = race([Run(x, y, act, lr, 0, cfg, dev) for lr in cfg.lrs[act]], log)
    best = sweep[0]
    for r in sweep[1:]:
        if _better(r.result(), best.result()):
            best = r
    chosen = best.lr
    runs = [best] + [race([Run(x, y, act, chosen, s, cfg, dev)], log)[0] for s in range(1, cfg.seeds)]
    nets = [r.net for r in runs]
    sweep = [r.result() for r in sweep]
    runs = [r.result() for r in runs]
    for r, net in zip(runs, nets):
        r["test_error"] = test_error(net, xt, yt, dev)
    eps = [r["epochs_to_target"] for r in runs]
    m, s = mean_std([e for e in eps if e])
    return {"lr": chosen, "sweep": sweep, "runs": runs, "epochs_to_target": eps,
            "epochs_mean": m, "epochs_std": s, "all_reached": all(eps)}


def run(out: str | Path = "experiments/results", size: str = "default", seeds: int | None = None, max_epochs: int | None = None,
        device: str = "auto", jobs: int = 2, lrs: list[float] | None = None, init: str = "default", log=print) -> dict:
    """Writes ``fig1_relu_tanh.json``/``.png`` (``fig1_relu_tanh_init-he.*`` with ``init="he"``)."""
    from .common import pick_device

    import dataclasses

    cfg = dataclasses.replace(SIZES[size])
    if seeds:
        cfg.seeds = seeds
    if max_epochs:
        cfg.max_epochs = max_epochs
    if lrs:
        cfg.lrs = {"relu": list(lrs), "tanh": list(lrs)}
    cfg.init = init
    name = NAME if init == "default" else f"{NAME}_init-{init}"
    dev = pick_device(device)
    out = Path(out)
    t_start = time.perf_counter()
    photos, labels, classes = load_cifar("train", cfg.per_class)
    test_photos, test_labels, _ = load_cifar("test", 200 if size != "tiny" else 10)
    mean = photos.permute(0, 3, 1, 2).float().mean(0)
    scale = float(photos.float().std())
    x, y = to_input(photos, mean, scale), labels
    xt = to_input(test_photos, mean, scale)
    log(f"Figure 1: {len(x)} CIFAR-10 training photos, {cfg.seeds} seeds, up to {cfg.max_epochs} epochs, device {dev}")

    jobs = min(jobs, 2) if dev.type == "cpu" else 1
    if jobs > 1:
        # one process per activation, one thread each: on a shared CPU two single-threaded
        # processes lose less time to thread synchronisation than one two-threaded one
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
            futs = {act: pool.submit(activation_study, act, x, y, xt, test_labels, cfg, str(dev), 1) for act in ("relu", "tanh")}
            per_act = {act: f.result() for act, f in futs.items()}
    else:
        per_act = {act: activation_study(act, x, y, xt, test_labels, cfg, str(dev), None, log) for act in ("relu", "tanh")}
    r_eps = [e if e else float("nan") for e in per_act["relu"]["epochs_to_target"]]
    t_eps = [e if e else cfg.max_epochs for e in per_act["tanh"]["epochs_to_target"]]  # a lower bound when not reached
    ratios = [t / r for t, r in zip(t_eps, r_eps)]
    rm, rs = mean_std(ratios)
    results = {
        "paper": {"claim": "ReLU reaches 25% training error about 6x faster than tanh (Figure 1)", "speedup": PAPER_SPEEDUP},
        "size": size, "config": {k: v for k, v in cfg.__dict__.items()}, "target_train_error": TARGET,
        "train_photos": len(x), "relu": per_act["relu"], "tanh": per_act["tanh"],
        "speedup_per_seed": ratios, "speedup_mean": rm, "speedup_std": rs,
        "speedup_is_lower_bound": not per_act["tanh"]["all_reached"],
        "seconds": time.perf_counter() - t_start,
    }
    plot(results, out / f"{name}.png")
    write_results(out, name, results)
    log(f"ReLU {per_act['relu']['epochs_to_target']} vs tanh {per_act['tanh']['epochs_to_target']} epochs to 25%: "
        f"speedup {rm:.1f} ± {rs:.1f} (paper ~{PAPER_SPEEDUP:g}); {out / (name + '.json')}")
    return results


def _better(a: dict, b: dict) -> bool:
    ea, eb = a["epochs_to_target"], b["epochs_to_target"]
    if ea and eb:
        return ea < eb or (ea == eb and a["train_error"][-1] < b["train_error"][-1])
    if ea or eb:
        return bool(ea)
    return a["train_error"][-1] < b["train_error"][-1]


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for act, style, colour in (("relu", "-", "tab:blue"), ("tanh", "--", "tab:red")):
        d = results[act]
        for i, r in enumerate(d["runs"]):
            e = r["train_error"]
            ax.plot(range(1, len(e) + 1), e, style, color=colour, alpha=0.8, lw=1.4,
                    label=f"{act} (lr {d['lr']:g}): {d['epochs_mean']:.1f} ± {d['epochs_std']:.1f} epochs" if i == 0 else None)
    ax.axhline(TARGET, color="k", lw=0.8, ls=":")
    ax.set_xlabel("epochs")
    ax.set_ylabel("training error rate")
    ax.set_ylim(0, 0.9)
    ax.set_title(f"Figure 1 (CIFAR-10, {results['train_photos']} photos, {results['config'].get('init', 'default')} init): "
                 f"ReLU {results['speedup_mean']:.2f}x as fast"
                 f"{' (lower bound)' if results['speedup_is_lower_bound'] else ''}; paper ~6x", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)
    return path
