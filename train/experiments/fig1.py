"""Figure 1: a four-layer convolutional network with ReLUs reaches 25% training
error on CIFAR-10 about six times faster than the same network with tanh (§3.1).

The paper: "The learning rates for each network were chosen independently to
make training as fast as possible. No regularization of any kind was
employed." So, for each activation: a learning-rate sweep on seed 0 (the
rates train side by side, an epoch each in turn; the first to 25% wins),
extended past its edge while the winner sits there, then the other seeds at
the chosen rate. The result is the number of epochs to reach 25% training
error, per seed, and the ReLU/tanh ratio. Both activations get the same
initial draw and the same data order per seed.

The network is cuda-convnet's CIFAR-10 example net, in :mod:`.convnet18` (its
source and layers are cited there); its training here has "no regularization
of any kind" (Figure 1): no weight decay, no translations or flips. Training
error is the running error over each epoch's minibatches, which is what
cuda-convnet printed and what Figure 1 plots.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from alexnet_kit.errors import AlexKitError
from alexnet_kit.fsutil import atomic_path
from alexnet_kit.metrics import ErrorCounter

from ..parallel import pick_device
from ..trainer import train_step
from .common import (check_stop, class_folders, finished, load_photos, mean_std, photo_files, savefig, seed_everything,
                     shared_data, submit, worker_pool, write_results)
from .convnet18 import INITS, FourLayerNet, paper_optimizer

NAME = "fig1_relu_tanh"
TARGET = 0.25  # Figure 1's dashed line
PAPER_SPEEDUP = 6.0
ACTIVATIONS = ("relu", "tanh")


@dataclass
class Fig1Size:
    per_class: int  # training photos per class (the shared copy has 1000)
    seeds: int
    max_epochs: int
    lrs: dict = field(default_factory=dict)  # activation -> starting grid of learning rates (epsW)
    width: tuple = (32, 32, 64)
    batch: int = 128  # cuda-convnet's default minibatch
    init: str = "default"  # "default": cuda-convnet's initW, the same for both; "he": each activation's own gain
    max_rates: int = 8  # the sweep grows past its edge up to this many rates
    # the sweep's race ends at the first rate to reach 25% or after this many epochs (None: max_epochs), the
    # rates then ranked by their training error; the winner alone goes on to max_epochs
    sweep_epochs: int | None = None
    test_per_class: int = 200


SIZES = {
    # seconds: the tests
    "tiny": Fig1Size(per_class=10, seeds=2, max_epochs=3, lrs={"relu": [0.001, 0.002], "tanh": [0.001, 0.002]},
                     width=(8, 8, 16), batch=50, max_rates=4, test_per_class=10),
    # 2 shared CPU cores, about an hour: every shared training photo, the paper's widths; rates a factor 2
    # apart from cuda-convnet's eps 0.001, compared after 10 epochs; the cap bounds tanh (a lower bound then)
    "default": Fig1Size(per_class=1000, seeds=3, max_epochs=60,
                        lrs={"relu": [0.001, 0.002, 0.004], "tanh": [0.001, 0.002, 0.004]}, max_rates=6, sweep_epochs=10),
    # a GPU: a wider starting grid, more seeds, a cap that lets tanh get there
    "full": Fig1Size(per_class=1000, seeds=5, max_epochs=200,
                     lrs={"relu": [0.001, 0.002, 0.004, 0.008, 0.016, 0.032], "tanh": [0.001, 0.002, 0.004, 0.008, 0.016, 0.032]},
                     max_rates=10),
}


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


def to_input(photos: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    # §2 and cuda-convnet's CIFARDataProvider: the training set's per-pixel mean subtracted, 0-255 scale kept
    return (photos.permute(0, 3, 1, 2).float() - mean).contiguous()


class Run:
    """One network at one learning rate and seed, trained an epoch at a time."""

    def __init__(self, x, y, activation: str, lr: float, seed: int, size: Fig1Size, device=torch.device("cpu"),
                 max_epochs: int | None = None):
        seed_everything(seed)
        self.x, self.y, self.size, self.device = x, y, size, device
        self.activation, self.lr, self.seed = activation, lr, seed
        self.max_epochs = max_epochs or size.max_epochs
        # channels_last: oneDNN runs these convolutions in its blocked layout (a step took 0.23 s against
        # 0.37 s in NCHW here, one thread, batch 128; see the Figure 1 section of docs/experiments.md)
        self.net = FourLayerNet(activation, size.width, init=size.init).to(device, memory_format=torch.channels_last)
        self.opt = paper_optimizer(self.net, lr)
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
        count = ErrorCounter(k=1)
        finite = torch.ones((), dtype=torch.bool, device=self.device)  # on the device: no host sync per step
        for i in range(0, len(x), b):
            check_stop()  # a stop ends the run here; its stage is trained again by the next invocation
            idx = perm[i:i + b]
            xb = x[idx].to(self.device).contiguous(memory_format=torch.channels_last)
            yb = y[idx].to(self.device)
            loss, logits = train_step(self.net, self.opt, xb, yb)
            count.add(logits, yb)
            finite &= torch.isfinite(loss)
        err = count.errors()[0]
        self.errors.append(err)
        self.diverged = not bool(finite)
        if err <= TARGET and self.reached is None and not self.diverged:
            self.reached = len(self.errors)
        self.seconds += time.perf_counter() - t0
        return err

    @property
    def done(self) -> bool:
        return self.reached is not None or self.diverged or len(self.errors) >= self.max_epochs

    def result(self) -> dict:
        return {"activation": self.activation, "lr": self.lr, "seed": self.seed, "epochs_to_target": self.reached,
                "train_error": list(self.errors), "diverged": self.diverged, "seconds": self.seconds}


def race(runs: list[Run], log=print, progress: bool = True) -> list[Run]:
    """Train ``runs`` side by side, an epoch each in turn, until one reaches 25% (or all stop).

    For the learning-rate sweep: once one rate has reached the target after
    E epochs no other can be faster, so the sweep costs (rates x E) epochs,
    not the sum of every rate's full run.
    """
    alive = list(runs)
    bar = tqdm(total=max(r.max_epochs for r in runs),
               desc=f"{runs[0].activation} seed {runs[0].seed} lr {'/'.join(f'{r.lr:g}' for r in runs)}",
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
        log(f"  {r.activation:4s} lr={r.lr:<8g} seed={r.seed}: {_outcome(r.result())}"
            f" (train error {r.errors[-1]:.3f}, {r.seconds:.0f}s)")
    return runs


def _outcome(r: dict) -> str:
    if r["epochs_to_target"]:
        return f"{r['epochs_to_target']} epochs"
    return "diverged" if r["diverged"] else f"not reached in {len(r['train_error'])}"


def _speed_key(r: dict) -> tuple:
    # diverged last; then sooner to 25%; then (same epochs) the lower last error; then the lower mean error (earlier progress)
    e = r["train_error"]
    return (bool(r.get("diverged")), r["epochs_to_target"] or math.inf, e[-1], sum(e) / len(e))


def best_of(results: list[dict]) -> dict:
    """The fastest run; of exact ties, the smallest rate (so the answer does not depend on the order)."""
    return min(sorted(results, key=lambda r: r["lr"]), key=_speed_key)


def next_rate(results: list[dict], max_rates: int) -> float | None:
    """The rate to add when the sweep's winner sits at its edge, or None when it is inside (or the cap is hit).

    The new rate continues the grid's ratio past that edge, so the winner
    must beat a neighbour on both sides before it is called the best.
    """
    rates = sorted(r["lr"] for r in results)
    if len(rates) < 2:
        raise ValueError("a sweep needs at least two rates")
    if len(rates) >= max_rates:
        return None
    lr = best_of(results)["lr"]
    if lr == rates[0]:
        return rates[0] * rates[0] / rates[1]
    if lr == rates[-1]:
        return rates[-1] * rates[-1] / rates[-2]
    return None


def sweep(x, y, act: str, lrs: list[float], cfg: Fig1Size, dev, log=print) -> tuple[Run, list[dict], list[float]]:
    """Seed 0 at every rate, side by side; then one more rate past the edge while the winner is at it.

    With ``cfg.sweep_epochs``, the rates are compared after that many epochs
    when none has reached 25% by then, and the winner alone trains on to
    ``cfg.max_epochs``. Returns (the winning run, every rate's result when the
    sweep ended, the rates added past the starting grid)."""
    runs = race([Run(x, y, act, lr, 0, cfg, dev, max_epochs=cfg.sweep_epochs) for lr in sorted(lrs)], log)
    added = []
    while (lr := next_rate([r.result() for r in runs], cfg.max_rates)) is not None:
        best = best_of([r.result() for r in runs])
        # the newcomer only has to be trained as long as the winner took: it wins only by reaching 25% sooner
        # (or at the same epoch with a lower error); unreached, all are compared after the same number of epochs
        cap = best["epochs_to_target"] or len(best["train_error"])
        log(f"  {act}: best rate {best['lr']:g} is at the edge of {sorted(r.lr for r in runs)}; adding {lr:g}")
        runs += race([Run(x, y, act, lr, 0, cfg, dev, max_epochs=cap)], log)
        added.append(lr)
    results = [r.result() for r in runs]
    best = best_of(results)
    winner = next(r for r in runs if r.lr == best["lr"])
    if not winner.reached and not winner.diverged and len(winner.errors) < cfg.max_epochs:
        log(f"  {act}: rate {winner.lr:g} chosen after {len(winner.errors)} epochs; it goes on alone to {cfg.max_epochs}")
        winner.max_epochs = cfg.max_epochs
        race([winner], log)
    return winner, sorted(results, key=lambda r: r["lr"]), added


@torch.no_grad()
def test_error(net: nn.Module, x: torch.Tensor, y: torch.Tensor, device) -> float:
    net.eval()
    count = ErrorCounter(k=1)
    for i in range(0, len(x), 500):
        count.add(net(x[i:i + 500].to(device).contiguous(memory_format=torch.channels_last)), y[i:i + 500])
    net.train()
    return count.errors()[0]


def activation_study(act: str, x, y, xt, yt, cfg: Fig1Size, device: str, threads: int | None = None, log=print,
                     partial: Path | None = None) -> dict:
    """The learning-rate sweep (seed 0), then the other seeds at the chosen rate, in this process.

    With ``partial``, finished stages (the sweep, each seed) are kept there and
    skipped when the same study is started again. A sweep that ended at
    ``sweep_epochs`` does not depend on the epoch cap, so it is kept when the
    cap changes; a seed's run is kept only if it means the same under the new
    cap (reached 25% within it, or stopped exactly at it), otherwise it is
    trained again from its seed (the same init and data order, so the same
    curve as far as the old run went)."""
    state = sweep_stage(act, x, y, xt, yt, cfg, device, threads, log, partial)
    for s in seeds_to_train(state, cfg):
        _put_run(state, seed_run(act, x, y, xt, yt, cfg, device, threads, state["lr"], s, log), partial)
    return summarise(state, cfg, act)


def sweep_stage(act: str, x, y, xt, yt, cfg: Fig1Size, device: str, threads: int | None = None, log=print,
                partial: Path | None = None) -> dict:
    """The sweep's state (rates, chosen rate, seed 0's run), read from ``partial`` when it holds this study's."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    state = _read_partial(partial, _study_key(act, x, cfg))
    if "sweep" not in state:
        best, results, added = sweep(x, y, act, cfg.lrs[act], cfg, dev, log)
        r = best.result()
        r["test_error"] = test_error(best.net, xt, yt, dev)
        state.update(sweep=results, added=added, lr=best.lr, runs=[r])
        _write_partial(partial, state)
    else:
        log(f"  {act}: sweep and {len(state['runs'])} seed(s) read from {partial}")
    return state


def seeds_to_train(state: dict, cfg: Fig1Size) -> list[int]:
    runs = state["runs"]
    return [s for s in range(cfg.seeds) if not (s < len(runs) and _same_under_cap(runs[s], cfg.max_epochs))]


def seed_run(act: str, x, y, xt, yt, cfg: Fig1Size, device: str, threads: int | None, lr: float, seed: int,
             log=print) -> dict:
    """One seed at the chosen rate, from scratch (seed 0 reproduces the sweep winner's curve)."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    run_ = race([Run(x, y, act, lr, seed, cfg, dev)], log)[0]
    r = run_.result()
    r["test_error"] = test_error(run_.net, xt, yt, dev)
    return r


def _put_run(state: dict, r: dict, partial: Path | None) -> None:
    runs, s = state["runs"], r["seed"]
    if s < len(runs):
        runs[s] = r
    elif s == len(runs):
        runs.append(r)
    else:
        raise ValueError(f"seed {s} before seed {len(runs)}")
    _write_partial(partial, state)


def summarise(state: dict, cfg: Fig1Size, act: str) -> dict:
    runs = state["runs"][:cfg.seeds]
    eps = [r["epochs_to_target"] for r in runs]
    m, s = mean_std([e for e in eps if e])
    rates = [r["lr"] for r in state["sweep"]]
    return {"lr": state["lr"], "sweep": state["sweep"], "sweep_start": sorted(cfg.lrs[act]), "sweep_added": state["added"],
            "lr_inside_sweep": min(rates) < state["lr"] < max(rates), "runs": runs, "epochs_to_target": eps,
            "epochs_mean": m, "epochs_std": s, "all_reached": all(eps)}


def _same_under_cap(r: dict, cap: int) -> bool:
    if r["epochs_to_target"]:
        return r["epochs_to_target"] <= cap
    if r["diverged"]:
        return len(r["train_error"]) <= cap
    return len(r["train_error"]) == cap


def _study_key(act: str, x: torch.Tensor, cfg: Fig1Size) -> str:
    c = dataclasses.asdict(cfg)
    c["seeds"] = None  # more seeds later may reuse the finished ones
    if cfg.sweep_epochs and cfg.sweep_epochs < cfg.max_epochs:
        c["max_epochs"] = None  # the sweep ends before the cap: another cap reuses it (the seeds are checked one by one)
    return hashlib.sha256(json.dumps([act, len(x), c], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_partial(path: Path | None, key: str) -> dict:
    if path is None or not path.exists():
        return {"key": key}
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"key": key}
    return d if d.get("key") == key else {"key": key}


def _write_partial(path: Path | None, state: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(state) + "\n")


def run(out: str | Path = "experiments/results", size: str = "default", seeds: int | None = None, max_epochs: int | None = None,
        device: str = "auto", jobs: int = 2, lrs: list[float] | None = None, init: str = "default", log=print) -> dict:
    """Writes ``fig1_relu_tanh.json``/``.png`` (``fig1_relu_tanh_init-he.*`` with ``init="he"``).

    An interrupted run resumes from ``fig1_relu_tanh.partial.<activation>.json`` (a stop, see
    :func:`.common.stop_on_signal`, raises :class:`.common.Stopped` with the finished stages kept there)."""
    cfg = _config(size, seeds, max_epochs, lrs, init)
    name = NAME if init == "default" else f"{NAME}_init-{init}"
    dev = pick_device(device)
    out = Path(out)
    t_start = time.perf_counter()
    x, y, xt, yt = _cifar_inputs(cfg)
    log(f"Figure 1: {len(x)} CIFAR-10 training photos, widths {cfg.width}, {cfg.seeds} seeds, up to {cfg.max_epochs} epochs, "
        f"device {dev}")
    partial = {act: out / f"{name}.partial.{act}.json" for act in ACTIVATIONS}
    jobs = min(jobs, 2) if dev.type == "cpu" else 1
    if jobs > 1:
        per_act = _studies_in_workers(x, y, xt, yt, cfg, dev, partial)
    else:
        per_act = {act: activation_study(act, x, y, xt, yt, cfg, str(dev), None, log, partial[act]) for act in ACTIVATIONS}
    results = _results(per_act, cfg, size, len(x), len(xt), time.perf_counter() - t_start)
    plot(results, out / f"{name}.png")
    write_results(out, name, results)
    for p in partial.values():
        p.unlink(missing_ok=True)
    log(f"ReLU {per_act['relu']['epochs_to_target']} vs tanh {per_act['tanh']['epochs_to_target']} epochs to 25%: "
        f"speedup {results['speedup_mean']:.1f} ± {results['speedup_std']:.1f} (paper ~{PAPER_SPEEDUP:g}); "
        f"{out / (name + '.json')}")
    return results


def _config(size: str, seeds: int | None, max_epochs: int | None, lrs: list[float] | None, init: str) -> Fig1Size:
    """The size's settings with the command's overrides (checked: one line each)."""
    if init not in INITS:
        raise AlexKitError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if lrs is not None and len(set(lrs)) < 2:
        raise AlexKitError(f"--lrs needs at least two different rates to sweep, got {lrs}")
    cfg = dataclasses.replace(SIZES[size])
    if seeds:
        cfg.seeds = seeds
    if max_epochs:
        cfg.max_epochs = max_epochs
    if lrs:
        cfg.lrs = {"relu": sorted(set(lrs)), "tanh": sorted(set(lrs))}
    cfg.init = init
    return cfg


def _cifar_inputs(cfg: Fig1Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, x_test, y_test): the networks' inputs, both less the training set's per-pixel mean."""
    photos, labels, _ = load_cifar("train", cfg.per_class)
    test_photos, test_labels, _ = load_cifar("test", cfg.test_per_class)
    mean = photos.permute(0, 3, 1, 2).float().mean(0)
    return to_input(photos, mean), labels, to_input(test_photos, mean), test_labels


def _studies_in_workers(x, y, xt, yt, cfg: Fig1Size, dev: torch.device, partial: dict[str, Path]) -> dict[str, dict]:
    """Both activations' studies in two worker processes, one thread each: on a shared CPU two
    single-threaded processes lose less time to thread synchronisation than one two-threaded one.
    First each activation's sweep, then every (activation, seed) still to train, so that one
    activation's seeds share the two cores."""
    with worker_pool(2) as pool:
        futs = {submit(pool, sweep_stage, act, x, y, xt, yt, cfg, str(dev), 1, print, partial[act]): act
                for act in ACTIVATIONS}
        # a sweep that finished is in its partial file even when the other one was stopped
        states = {futs[f]: state for f, state in finished(futs)}
        todo = {submit(pool, seed_run, act, x, y, xt, yt, cfg, str(dev), 1, states[act]["lr"], s, print): (act, s)
                for act in ACTIVATIONS for s in seeds_to_train(states[act], cfg)}
        waiting = {}
        for f, r in finished(todo):
            waiting[todo[f]] = r
            # kept in the partial file as soon as the seeds before it are there
            for act, s in sorted(waiting):
                if s <= len(states[act]["runs"]):
                    _put_run(states[act], waiting.pop((act, s)), partial[act])
    return {act: summarise(states[act], cfg, act) for act in ACTIVATIONS}


def _results(per_act: dict[str, dict], cfg: Fig1Size, size: str, train_photos: int, test_photos: int, seconds: float) -> dict:
    """The results file's contents: both studies and the ReLU/tanh speed-up per seed."""
    r_eps = [e if e else float("nan") for e in per_act["relu"]["epochs_to_target"]]
    t_eps = [e if e else cfg.max_epochs for e in per_act["tanh"]["epochs_to_target"]]  # a lower bound when not reached
    ratios = [t / r for t, r in zip(t_eps, r_eps)]
    rm, rs = mean_std(ratios)
    return {
        "paper": {"claim": "ReLU reaches 25% training error about 6x faster than tanh (Figure 1)", "speedup": PAPER_SPEEDUP},
        "net": "cuda-convnet layers-18pct.cfg: conv5x5 32 + max-pool + rnorm, conv5x5 32 + avg-pool + rnorm, "
               "conv5x5 64 + avg-pool, fc10; no weight decay",
        "size": size, "config": dataclasses.asdict(cfg), "target_train_error": TARGET,
        "train_photos": train_photos, "test_photos": test_photos, "relu": per_act["relu"], "tanh": per_act["tanh"],
        "speedup_per_seed": ratios, "speedup_mean": rm, "speedup_std": rs,
        "speedup_is_lower_bound": not per_act["tanh"]["all_reached"],
        "seconds": seconds,
        "epoch_seconds": {act: _epoch_seconds(per_act[act]) for act in ACTIVATIONS},
    }


def _epoch_seconds(study: dict) -> float:
    runs = study["sweep"] + study["runs"][1:]
    return sum(r["seconds"] for r in runs) / max(1, sum(len(r["train_error"]) for r in runs))


def plot(results: dict, path: Path) -> Path:
    import matplotlib  # here, not at the top: matplotlib is an optional extra (alexnet-kit[train]), slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for act, style, colour in (("relu", "-", "tab:blue"), ("tanh", "--", "tab:red")):
        d = results[act]
        for i, r in enumerate(d["runs"]):
            e = r["train_error"]
            ax.plot(range(1, len(e) + 1), e, style, color=colour, alpha=0.8, lw=1.4,
                    label=f"{act} (lr {d['lr']:g}): " + (f"{d['epochs_mean']:.1f} ± {d['epochs_std']:.1f} epochs"
                                                        if any(d["epochs_to_target"]) else "25% not reached") if i == 0 else None)
        sw = d["sweep"]
        ax2.plot([r["lr"] for r in sw], [r["train_error"][-1] for r in sw], style + "o", color=colour, label=act)
        for r in sw:
            note = f"{r['epochs_to_target']}" if r["epochs_to_target"] else ("x" if r["diverged"] else "")
            ax2.annotate(note, (r["lr"], r["train_error"][-1]), textcoords="offset points", xytext=(0, 5), fontsize=7,
                         ha="center", color=colour)
    ax.axhline(TARGET, color="k", lw=0.8, ls=":")
    ax.set_xlabel("epochs")
    ax.set_ylabel("training error rate")
    ax.set_ylim(0, 0.95)
    ax.set_title(f"Figure 1 (CIFAR-10, {results['train_photos']} photos, widths {tuple(results['config']['width'])}): "
                 + (f"ReLU {results['speedup_mean']:.2f}x as fast{' (lower bound)' if results['speedup_is_lower_bound'] else ''}"
                    if results["speedup_mean"] == results["speedup_mean"] else "ReLU did not reach 25%") + "; paper ~6x", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax2.set_xscale("log")
    rates = sorted({r["lr"] for act in ACTIVATIONS for r in results[act]["sweep"]})
    ax2.set_xticks(rates, [f"{v:g}" for v in rates], fontsize=7)
    ax2.minorticks_off()
    ax2.set_xlabel("learning rate (epsW)")
    ax2.set_ylabel("training error when the sweep stopped")
    ax2.set_title("the sweep, seed 0 (labels: epochs to 25%; x: diverged)", fontsize=9)
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)
    return path
