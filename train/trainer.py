"""The training loop: setup, epochs of steps, evaluation, checkpoints, the final model.

Life cycle (as torchtune's recipes): :meth:`Trainer.setup` (data, model,
optimizer, resume), :meth:`Trainer.train` (epochs; returns "done" or
"interrupted"), :meth:`Trainer.save_model` (``model.safetensors`` with
:class:`~alexnet_kit.meta.ModelMeta`: classify uses it directly).

Exact resume: the data stream is a function of (seed, epoch, batch) (see
:mod:`.loader`), dropout is re-seeded from (seed, rank, step) before every
step, and the training state is saved between steps, so a run killed at any
moment and resumed from its last checkpoint computes the same steps as an
uninterrupted one (bitwise on CPU with ``--deterministic true``).
"""
from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alexnet_kit import __version__
from alexnet_kit.checkpoint import save_checkpoint
from alexnet_kit.errors import AlexKitError
from alexnet_kit.meta import ModelMeta
from alexnet_kit.preprocess import Preprocess

from . import checkpointing as ckpt
from .augment import Finisher
from .loader import EpochBatches, make_loader
from .monitor import MetricsLog, StallDetector
from .optim import PaperSGD, PlateauSchedule
from .packed import PackedDataset
from .parallel import (DistInfo, build_grouped, grouped_state, grouped_velocity, init_distributed, input_device,
                       load_grouped_state, load_grouped_velocity, pick_device, place, unwrap)
from .recipe import Recipe


def train_step(net, optimizer, x, y, amp_dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch; returns (loss, logits), both detached."""
    optimizer.zero_grad(set_to_none=True)
    dev = input_device(net)
    with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = net(x)
    loss = F.cross_entropy(logits.float(), y.to(logits.device))
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


def topk_wrong(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(top-1 misses, top-5 misses) of a batch (top-k with k = min(5, classes))."""
    y = y.to(logits.device)
    k = min(5, logits.shape[1])
    top = logits.topk(k, 1).indices
    hit1 = top[:, 0] == y
    hitk = (top == y[:, None]).any(1)
    return int((~hit1).sum()), int((~hitk).sum())


def step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63 - 1)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except Exception:
        return None


class Trainer:
    def __init__(self, recipe: Recipe, data: PackedDataset, resume: str | None = None, progress: bool = True):
        self.r, self.data, self.resume_from, self.progress = recipe, data, resume, progress
        self.out = Path(recipe.out)
        self.ckpt_dir = self.out / "checkpoints"
        self._stop = False

    # -- setup -------------------------------------------------------------
    def setup(self) -> None:
        r = self.r
        if r.threads > 0:
            torch.set_num_threads(r.threads)
        self.dist = DistInfo()
        if r.parallel == "data":
            kind = "cuda" if (r.device.startswith("cuda") or (r.device == "auto" and torch.cuda.is_available())) else "cpu"
            self.dist = init_distributed(kind)
        self.device = pick_device(r.device, self.dist)
        if r.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        on_cuda = self.device.type == "cuda"
        self.amp = torch.bfloat16 if (r.amp == "bf16" or (r.amp == "auto" and on_cuda)) else None
        # channels_last: cuDNN's fast layout, and on the CPU oneDNN's (measured ~15% faster
        # per step for the quickstart network, docs/benchmarks.md)
        self.channels_last = r.channels_last in ("on", "auto")
        self.train_split = self.data.split("train")
        self.val_split = self.data.split("val")
        if len(self.train_split) < r.batch_size:
            raise AlexKitError(f"{self.data.root}: {len(self.train_split)} training photos, fewer than one batch of {r.batch_size} (use --batch-size)")
        if r.batch_size % self.dist.world:
            raise AlexKitError(f"batch size {r.batch_size} does not split over {self.dist.world} processes")
        self.config = r.model_config(self.data.num_classes)
        crop = self.config.input_size
        cov = np.load(self.data.root / "pca.npz")["cov"]
        self.std = tuple(float(v) for v in np.sqrt(np.diag(cov))) if r.input_std else None
        # CPU: workers finish the batch; CUDA: workers only gather uint8 patches, the GPU finishes
        self.gpu_finisher = Finisher(self.data.mean, self.data.eigvals, self.data.eigvecs, crop, self.device, self.std) if on_cuda else None
        self.cpu_finisher = None if on_cuda else Finisher(self.data.mean, self.data.eigvals, self.data.eigvecs, crop, "cpu", self.std)
        model = build_grouped(self.config, r.seed)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.net = place(model, r.parallel, self.device, r.model_devices, self.dist)
        self.optimizer = PaperSGD(self.net.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
        self.schedule = PlateauSchedule(r.lr, r.lr_factor, r.lr_patience, r.lr_max_drops, r.lr_threshold)
        self.stall = StallDetector(self.config.num_classes, r.stall_window)
        self.step_fn = train_step
        self.forward = torch.compile(self.net) if r.compile else self.net
        self.epoch, self.batch, self.global_step = 0, 0, 0
        self.history: list[dict] = []
        self.best_val = float("inf")
        self.acc = self._new_acc()
        self.log = MetricsLog(self.out, enabled=self.dist.main)
        if self.resume_from:
            self._resume(self.resume_from)
        elif self.dist.main and ckpt.list_states(self.ckpt_dir):
            # a fresh run in a used folder: the old states would outrank ours in keep-last-K
            old = ckpt.list_states(self.ckpt_dir) + [p for p in [self.ckpt_dir / "best.pt"] if p.exists()]
            for p in old:
                p.unlink()
            print(f"starting afresh in {self.out}: removed {len(old)} training state(s) of an earlier run (--resume continues one instead)", file=sys.stderr)

    def _new_acc(self) -> dict:
        return {"loss_sum": 0.0, "n": 0, "wrong1": 0, "wrong5": 0, "seconds": 0.0, "images": 0}

    def _resume(self, which: str) -> None:
        path = ckpt.latest_state(self.ckpt_dir) if which == "latest" else Path(which)
        if path is None:
            raise AlexKitError(f"--resume: no checkpoint in {self.ckpt_dir} (nothing to resume; drop --resume to start)")
        st = ckpt.load_state(path)
        if _configs_differ(st["config"], self.config.to_dict()):
            raise AlexKitError(f"{path}: trained a different architecture than this recipe asks for")
        load_grouped_state(self.net, st["model"])
        load_grouped_velocity(self.net, self.optimizer, st["velocity"])
        self.schedule.load_state_dict(st["schedule"])
        self.optimizer.set_lr(self.schedule.lr)
        self.stall.load_state_dict(st["stall"])
        self.epoch, self.batch, self.global_step = int(st["epoch"]), int(st["batch"]), int(st["global_step"])
        self.history, self.best_val, self.acc = list(st["history"]), float(st["best_val"]), dict(st["acc"])
        ckpt.set_rng_state(st["rng"])
        if self.dist.main:
            print(f"resumed from {path}: epoch {self.epoch + 1}, batch {self.batch}, step {self.global_step}", file=sys.stderr)

    def state(self) -> dict:
        return {
            "model": grouped_state(self.net), "velocity": grouped_velocity(self.net, self.optimizer),
            "schedule": self.schedule.state_dict(), "stall": self.stall.state_dict(),
            "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step,
            "history": self.history, "best_val": self.best_val, "acc": dict(self.acc),
            "rng": ckpt.rng_state(), "recipe": self.r.to_dict(), "config": self.config.to_dict(),
            "classes": self.data.classes,
        }

    def save_state(self) -> Path | None:
        if not self.dist.main:
            return None
        return ckpt.save_state(self.ckpt_dir, self.state(), self.r.keep_last)

    # -- the loop ----------------------------------------------------------
    def _on_sigint(self, signum, frame):
        if self._stop:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop = True
        if self.dist.main:
            print("\ninterrupt: finishing this step, saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def train(self) -> str:
        from tqdm import tqdm

        r = self.r
        old = signal.signal(signal.SIGINT, self._on_sigint) if _main_thread() else None
        local_batch = r.batch_size // self.dist.world
        try:
            while self.epoch < r.epochs:
                ds = EpochBatches(self.train_split, r.batch_size, r.seed, self.epoch, self.config.input_size, True,
                                  self.cpu_finisher, r.pca_std, (self.dist.rank, self.dist.world))
                loader = make_loader(ds, self.batch, r.workers, pin=self.device.type == "cuda")
                self.optimizer.set_lr(self.schedule.lr)
                self.net.train()
                bar = tqdm(total=len(ds) * r.batch_size, initial=self.batch * r.batch_size, unit="img", unit_scale=False,
                           desc=f"epoch {self.epoch + 1}/{r.epochs}", disable=not (self.progress and self.dist.main),
                           dynamic_ncols=True, leave=False, file=sys.stderr)
                t_last = time.perf_counter()
                for x, y, d in loader:
                    x = self._finish(x, d)
                    torch.manual_seed(step_seed(r.seed, self.dist.rank, self.global_step))  # dropout, resumable
                    loss, logits = self.step_fn(self.forward, self.optimizer, x, y, self.amp)
                    w1, w5 = topk_wrong(logits, y)
                    lv = float(loss)
                    if not math.isfinite(lv):
                        raise AlexKitError(f"training diverged: loss {lv} at step {self.global_step} (lower --lr)")
                    a = self.acc
                    a["loss_sum"] += lv * len(y)
                    a["n"] += len(y)
                    a["wrong1"] += w1
                    a["wrong5"] += w5
                    now = time.perf_counter()
                    a["seconds"] += now - t_last
                    a["images"] += r.batch_size
                    t_last = now
                    self.batch += 1
                    self.global_step += 1
                    bar.update(r.batch_size)
                    bar.set_postfix(loss=f"{lv:.3f}", lr=f"{self.schedule.lr:.2g}", refresh=False)
                    warning = self.stall.update(lv)
                    if warning and self.dist.main:
                        tqdm.write(f"WARNING {warning}", file=sys.stderr)
                    if self.global_step % 10 == 0:
                        self.log.step_scalar("step_loss", lv, self.global_step)
                    last = self.batch == len(ds)
                    limit = r.max_steps and self.global_step >= r.max_steps
                    if not last and (self._stop or limit or (r.checkpoint_every and self.global_step % r.checkpoint_every == 0)):
                        self.save_state()
                    if self._stop:
                        bar.close()
                        return self._interrupted()
                    if limit and not last:
                        bar.close()
                        return "max_steps"
                bar.close()
                del loader
                self._end_epoch(local_batch)
                if self._stop:
                    return self._interrupted()
                if r.max_steps and self.global_step >= r.max_steps:
                    return "max_steps"
            return "done"
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    def _interrupted(self) -> str:
        if self.dist.main:
            print(f"saved {ckpt.latest_state(self.ckpt_dir)}; continue with the same command and --resume", file=sys.stderr)
        return "interrupted"

    def _finish(self, x, d):
        if self.gpu_finisher is not None:
            x = self.gpu_finisher(x, d, self.channels_last)
        else:
            x = x.to(input_device(self.net))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _end_epoch(self, local_batch: int) -> None:
        a = self._reduce(self.acc)
        row = {
            "epoch": self.epoch + 1, "step": self.global_step, "lr": self.schedule.lr,
            "train_loss": a["loss_sum"] / max(1, a["n"]), "train_top1_err": a["wrong1"] / max(1, a["n"]),
            "train_top5_err": a["wrong5"] / max(1, a["n"]),
            "images_per_s": a["images"] / max(1e-9, a["seconds"] / self.dist.world) if a["seconds"] else None,
            "seconds": round(a["seconds"] / self.dist.world, 2),
        }
        val = self.evaluate() if len(self.val_split) else None
        if val:
            row.update(val_loss=val[0], val_top1_err=val[1], val_top5_err=val[2])
        self.history.append(row)
        self.epoch += 1
        self.batch = 0
        self.acc = self._new_acc()
        err = val[1] if val else row["train_top1_err"]
        improved = err < self.best_val
        if improved:
            self.best_val = err
        if self.schedule.step(err) and self.dist.main:
            print(f"validation error stopped improving: lr -> {self.schedule.lr:.3g} (drop {self.schedule.drops} of {self.r.lr_max_drops})", file=sys.stderr)
        if self.dist.main:
            self.log.rewrite(self.history)
            state = self.state()
            ckpt.save_state(self.ckpt_dir, state, self.r.keep_last)
            self.save_model(self.out / "last.safetensors")
            if improved:
                ckpt.save_best(self.ckpt_dir, state)
                self.save_model(self.out / "model.safetensors")
            v = f"  val loss {val[0]:.3f} top-1 err {100 * val[1]:.1f}% top-5 err {100 * val[2]:.1f}%" if val else ""
            print(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.3f} top-1 err {100 * row['train_top1_err']:.1f}%{v}"
                  f"  lr {row['lr']:.3g}  {row['images_per_s'] or 0:.0f} img/s", file=sys.stderr)

    def _reduce(self, acc: dict) -> dict:
        if self.dist.world == 1:
            return acc
        import torch.distributed as dist

        keys = ["loss_sum", "n", "wrong1", "wrong5", "seconds", "images"]
        t = torch.tensor([float(acc[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        out = dict(zip(keys, t.tolist()))
        out["images"] = acc["images"] * 1.0  # every rank counts the global batch already
        return out

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, float]:
        """Centre-crop validation: (loss, top-1 error, top-5 error)."""
        r = self.r
        bs = r.eval_batch_size or r.batch_size
        ds = EpochBatches(self.val_split, bs, r.seed, 0, self.config.input_size, False, self.cpu_finisher)
        self.net.eval()
        base = unwrap(self.net)
        loss_sum, n, w1, w5 = 0.0, 0, 0, 0
        for b in range(self.dist.rank, len(ds), self.dist.world):
            x, y, d = ds[b]
            x = self._finish(x, d)
            with torch.autocast(input_device(self.net).type, dtype=self.amp, enabled=self.amp is not None):
                logits = base(x)
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, y.to(logits.device), reduction="sum"))
            a, b5 = topk_wrong(logits, y)
            w1, w5, n = w1 + a, w5 + b5, n + len(y)
        self.net.train()
        if self.dist.world > 1:
            import torch.distributed as dist

            t = torch.tensor([loss_sum, n, w1, w5], dtype=torch.float64)
            dist.all_reduce(t)
            loss_sum, n, w1, w5 = t.tolist()
        return loss_sum / max(1, n), w1 / max(1, n), w5 / max(1, n)

    # -- the product -------------------------------------------------------
    def save_model(self, path: Path) -> str:
        last = self.history[-1] if self.history else {}
        meta = ModelMeta(
            self.config, list(self.data.classes), None,
            Preprocess(resize=self.data.size, crop=self.config.input_size, mean=self.data.mean, std=self.std or (1.0, 1.0, 1.0)),
            trained=True,
            provenance={
                "created_by": f"alexnet-kit {__version__} train", "recipe": self.r.name, "recipe_values": self.r.to_dict(),
                "dataset": str(self.data.root), "dataset_source": self.data.info.get("source"),
                "train_photos": len(self.train_split), "val_photos": len(self.val_split),
                "epochs": self.epoch, "steps": self.global_step,
                "val_top1_err": last.get("val_top1_err"), "val_top5_err": last.get("val_top5_err"),
                "best_val_top1_err": self.best_val if math.isfinite(self.best_val) else None,
                "git_commit": git_commit(), "parallel": self.r.parallel, "world_size": self.dist.world,
            },
        )
        return save_checkpoint(path, grouped_state(self.net), meta)

    def cleanup(self) -> None:
        self.log.close()
        if self.dist.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _configs_differ(a: dict, b: dict) -> bool:
    """True when two config dicts describe different networks (lists vs tuples aside)."""
    norm = lambda d: {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()}  # noqa: E731
    return norm(a) != norm(b)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
