"""The training loop: setup, epochs of steps, evaluation, checkpoints, the final model.

Life cycle (as torchtune's recipes): :meth:`Trainer.setup` (runtime, data,
model, optimizer, resume), :meth:`Trainer.train` (epochs; returns "done" or
"max_steps", raises :class:`~alexnet_kit.interrupt.Interrupted` when a
signal stopped it), :meth:`Trainer.save_model` (``model.safetensors`` with
:class:`~alexnet_kit.meta.ModelMeta`: classify uses it directly).

Stopping (:mod:`alexnet_kit.interrupt`): SIGTERM or SIGINT, to the process
or its whole group, finishes the step in progress (or the epoch end in
progress, validation included), saves the training state, waits until it
is on disk and raises ``Interrupted``: one line, exit status 128 + the
signal. Under DDP the ranks first agree on the step (see
:meth:`Trainer._agreed_stop`). A fresh run never replaces an earlier one
in its folder unless told to (:mod:`.runfolder`).

Exact resume: the data stream is a function of (seed, epoch, batch) (see
:mod:`.loader`), dropout is re-seeded from (seed, rank, step) before every
step, and the training state is saved between steps, so a run killed at any
moment and resumed from its last checkpoint computes the same steps as an
uninterrupted one (bitwise on CPU with ``--deterministic true``).

The host stays out of the step: loss and error counts accumulate on the
device (:class:`Meter`) and are read every :data:`SYNC_EVERY` steps, labels
and the augmentation draw travel as pinned tensors, and checkpoints are
written from a background thread (:class:`~.training_state.BackgroundWriter`).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from alexnet_kit import __version__
from alexnet_kit.checkpoint import save_checkpoint
from alexnet_kit.config import configs_differ
from alexnet_kit.errors import AlexKitError
from alexnet_kit.interrupt import Interrupted, StopOnSignal, signal_name, starting_workers
from alexnet_kit.meta import ModelMeta
from alexnet_kit.metrics import topk_wrong
from alexnet_kit.preprocess import Preprocess

from . import training_state as ckpt
from . import finetune, runfolder
from .augment import Finisher
from .loader import EpochBatches, make_loader
from .monitor import MetricsLog, StallDetector
from .optim import PaperSGD, PlateauSchedule
from .packed import PackedDataset
from .parallel import (DistInfo, build_grouped, grouped_state, grouped_velocity, init_distributed, input_device,
                       load_grouped_state, load_grouped_velocity, pick_device, place, unwrap)
from .recipe import Recipe

#: steps between host reads of the loss (progress bar, stall detector, divergence check)
#: and, under DDP, between the collectives in which the ranks agree to stop
SYNC_EVERY = 16
#: what rank 0 prints on the first signal (StopOnSignal adds "again to abort at once")
STOP_NOTICE = "finishing the current step, then saving a training state"


def train_step(net, optimizer, x, y, amp_dtype=None, scaler=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch; returns (loss, logits), both detached, still on the device."""
    optimizer.zero_grad(set_to_none=True)
    dev = input_device(net)
    with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = net(x)
    loss = F.cross_entropy(logits.float(), y.to(logits.device, non_blocking=True))
    if scaler is not None:  # fp16 on GPUs without bf16: scale the loss so small gradients do not flush to 0
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach(), logits.detach()


def step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63 - 1)


def resolve_amp(setting: str, device_type: str, bf16_supported: Callable[[], bool]) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a GradScaler is needed) for ``--amp``.

    ``auto``: bf16 on a GPU that has it; fp16 with loss scaling on one that
    does not (pre-Ampere: V100, T4, GTX), since bf16 there is emulated or
    missing; fp32 on the CPU. ``bf16_supported`` is injected so the choice is
    testable without the GPU (the trainer passes :func:`cuda_bf16_native`).
    """
    if setting == "off":
        return None, False
    if setting == "fp16":
        return torch.float16, device_type == "cuda"
    if setting == "bf16":
        if device_type == "cuda" and not bf16_supported():
            raise AlexKitError("--amp bf16: this GPU has no bfloat16; use --amp fp16 (or auto)")
        return torch.bfloat16, False
    if device_type != "cuda":
        return None, False
    return (torch.bfloat16, False) if bf16_supported() else (torch.float16, True)


def cuda_bf16_native() -> bool:
    """Whether the current GPU runs bf16 in hardware (Ampere and later).

    torch 2.x's ``is_bf16_supported()`` counts emulation by default and answers True on
    V100/T4, where bf16 is emulated and slow, so the fp16 + GradScaler fallback would
    never be chosen; ask for the native answer."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before the flag existed: it did not count emulation
        return bool(torch.cuda.is_bf16_supported())


def deterministic_setup() -> None:
    """Deterministic kernels; cuBLAS needs a fixed workspace, read when its first handle is made."""
    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            raise AlexKitError("--deterministic true on CUDA: set CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment "
                               "(CUDA was already started, too late to set it here)")
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except Exception:
        return None


def build_optimizer(net: torch.nn.Module, recipe: Recipe) -> PaperSGD:
    """§5 update rule over every parameter of the running form; when fine-tuning, frozen layers
    are left out and carried-over layers learn at ``pretrained_lr_mult`` times the rate."""
    params = net.parameters()
    if recipe.init_from:
        params = finetune.param_groups(net, finetune.parse_freeze(recipe.freeze), recipe.pretrained_lr_mult)
    return PaperSGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


class HostCopy:
    """A device tensor's values copied to the host without waiting; :meth:`get` waits only if
    the copy is still running (read a window later, it is long done). CPU tensors: themselves."""

    def __init__(self, t: torch.Tensor):
        if t.device.type == "cuda":
            # the copy is queued on t's device's stream, so the event must be recorded there
            # too (a tower on cuda:1 while cuda:0 is current would otherwise be read too early)
            with torch.cuda.device(t.device):
                self.host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                self.host.copy_(t, non_blocking=True)
                self.done = torch.cuda.Event()
                self.done.record()
        else:
            self.host, self.done = t, None

    def get(self) -> torch.Tensor:
        if self.done is not None:
            self.done.synchronize()
        return self.host


@dataclass
class Meter:
    """One epoch's training totals. The sums live on the device, so a step never waits for the host."""

    loss_sum: torch.Tensor  # float64: the same sum a host float would give
    wrong1: torch.Tensor  # int64
    wrong5: torch.Tensor  # int64
    n: int = 0  # photos seen by this rank
    seconds: float = 0.0
    images: int = 0  # photos of the global batches

    @classmethod
    def zeros(cls, device: torch.device) -> "Meter":
        return cls(torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), dtype=torch.int64, device=device),
                   torch.zeros((), dtype=torch.int64, device=device))

    def add(self, loss: torch.Tensor, wrong1: torch.Tensor, wrong5: torch.Tensor, n: int) -> None:
        self.loss_sum += loss.double() * n
        self.wrong1 += wrong1
        self.wrong5 += wrong5
        self.n += n

    def to_dict(self) -> dict:
        """Host numbers (one sync), as checkpoints store them."""
        return {"loss_sum": float(self.loss_sum), "n": self.n, "wrong1": int(self.wrong1), "wrong5": int(self.wrong5),
                "seconds": self.seconds, "images": self.images}

    @classmethod
    def from_dict(cls, d: dict, device: torch.device) -> "Meter":
        m = cls.zeros(device)
        m.loss_sum += float(d["loss_sum"])
        m.wrong1 += int(d["wrong1"])
        m.wrong5 += int(d["wrong5"])
        m.n, m.seconds, m.images = int(d["n"]), float(d["seconds"]), int(d["images"])
        return m


class Trainer:
    """``overwrite``: replace an earlier run in ``recipe.out`` (else a fresh run there is refused).
    ``stop``: the caller's active :class:`StopOnSignal` (the CLI's also covers packing and set-up);
    None: :meth:`train` installs one while it runs."""

    def __init__(self, recipe: Recipe, data: PackedDataset, resume: str | None = None, progress: bool = True,
                 overwrite: bool = False, stop: StopOnSignal | None = None):
        self.r, self.data, self.resume_from, self.progress = recipe, data, resume, progress
        self.overwrite, self.stop = overwrite, stop
        self.out = Path(recipe.out)
        self.ckpt_dir = self.out / "checkpoints"
        self._pending: list[tuple[int, torch.Tensor]] = []  # (step, loss) of this window, on the device
        self._inflight: list[tuple[list[int], HostCopy]] = []  # earlier windows on their way to the host
        self._vote: HostCopy | None = None  # DDP: the last all-reduced stop vote, on its way to the host
        self._epoch_vote = 0  # the signal every rank agreed to stop for at the last epoch end (0: none)
        self._last_loss = float("nan")
        self.collective = False  # a process group (--parallel data): set in setup
        self.writer = ckpt.BackgroundWriter()

    # -- setup -------------------------------------------------------------
    def setup(self) -> None:
        # every rank, before the process group starts and before anything is written: all refuse or none
        runfolder.refuse_earlier_run(self.out, self.resume_from, self.overwrite)
        self._setup_runtime()
        self._setup_data()
        self._setup_parent()
        model = build_grouped(self.config, self.r.seed)
        if self.parent is not None:
            finetune.transplant(model, self.parent)
            # before DDP wraps it: DDP only hooks parameters that need a gradient (build_optimizer
            # freezes the running form again: the towers build fresh parameters from this model)
            finetune.freeze(model, self.frozen)
        self.net = place(model, self.r.parallel, self.device, self.r.model_devices, self.dist,
                         channels_last=self.channels_last)
        self._setup_finishers()  # after placing: the GPU finisher runs on the net's input device
        self.optimizer = build_optimizer(self.net, self.r)
        if self.overwrite and not self.resume_from and self.dist.main:
            # as late as possible (a set-up error above keeps the old run), before the first new file
            # (the TensorBoard folder of _setup_progress); the other ranks checked before the group started
            old = runfolder.earlier_run(self.out)
            if runfolder.remove_run(self.out):
                print(f"--overwrite: removed the earlier run in {self.out} ({runfolder.describe(old) or 'logs only'}); "
                      f"packed data and other files stay", file=sys.stderr)
        self._setup_progress()
        if self.resume_from:
            self._resume(self.resume_from)

    def _setup_runtime(self) -> None:
        r = self.r
        if r.threads > 0:
            torch.set_num_threads(r.threads)
        if r.deterministic:
            deterministic_setup()  # before anything starts CUDA
        self.dist = DistInfo()
        # the collectives run whenever there is a process group, one process included: a
        # one-GPU torchrun (the GPU check's ddp stage) exercises the same NCCL reductions
        self.collective = r.parallel == "data"
        if self.collective:
            kind = "cuda" if (r.device.startswith("cuda") or (r.device == "auto" and torch.cuda.is_available())) else "cpu"
            self.dist = init_distributed(kind)
        self.device = pick_device(r.device, self.dist)
        on_cuda = self.device.type == "cuda"
        if on_cuda and not r.deterministic:
            torch.backends.cudnn.benchmark = True
        self.amp, use_scaler = resolve_amp(r.amp, self.device.type, cuda_bf16_native if on_cuda else (lambda: False))
        self.scaler = torch.amp.GradScaler(self.device.type) if use_scaler else None
        # channels_last: cuDNN's fast layout, and on the CPU oneDNN's (measured ~15% faster
        # per step for the quickstart network, docs/benchmarks.md)
        self.channels_last = r.channels_last in ("on", "auto")

    def _setup_data(self) -> None:
        r = self.r
        self.train_split = self.data.split("train")
        self.val_split = self.data.split("val")
        if len(self.train_split) < r.batch_size:
            raise AlexKitError(f"{self.data.root}: {len(self.train_split)} training photos, fewer than one batch of {r.batch_size} (use --batch-size)")
        if r.batch_size % self.dist.world:
            raise AlexKitError(f"batch size {r.batch_size} does not split over {self.dist.world} processes")

    def _setup_parent(self) -> None:
        """The architecture and input normalisation: the recipe's, or when fine-tuning the parent's
        (pretrained filters expect the pixels they were trained on)."""
        r = self.r
        self.parent = finetune.load_parent(r.init_from) if r.init_from else None
        self.frozen = finetune.parse_freeze(r.freeze) if self.parent is not None else ()
        if self.parent is None:
            self.config = r.model_config(self.data.num_classes)
            self.std = self._input_std()
            self.mean = self.data.mean
            return
        # the recipe's [model] table describes a network trained from scratch: only its dropout applies
        self.config = finetune.child_config(self.parent, self.data.num_classes, {k: v for k, v in r.model.items() if k == "dropout"})
        self.mean, std = finetune.parent_normalisation(self.parent, self.data.size)
        self.std = None if all(s == 1.0 for s in std) else std
        if self.dist.main:
            print(f"fine-tuning {self.parent.path} (fingerprint {self.parent.fingerprint[:16]}): conv1-fc7 carried over, "
                  f"fc8 new with {self.data.num_classes} classes, frozen: {', '.join(self.frozen) or 'none'}",
                  file=sys.stderr)

    def _input_std(self):
        if not self.r.input_std:
            return None
        cov = np.load(self.data.root / "pca.npz")["cov"]
        return tuple(float(v) for v in np.sqrt(np.diag(cov)))

    def _setup_finishers(self) -> None:
        # CPU: workers finish the batch; CUDA: workers only gather whole uint8 photos, the GPU
        # crops, flips, centres and colours them in one batched pass
        on_cuda = self.device.type == "cuda"
        args = (self.mean, self.data.eigvals, self.data.eigvecs, self.config.input_size)
        self.gpu_finisher = Finisher(*args, input_device(self.net), self.std) if on_cuda else None
        self.cpu_finisher = None if on_cuda else Finisher(*args, "cpu", self.std)

    def _setup_progress(self) -> None:
        r = self.r
        self.schedule = PlateauSchedule(r.lr, r.lr_factor, r.lr_patience, r.lr_max_drops, r.lr_threshold)
        self.stall = StallDetector(self.config.num_classes, r.stall_window)
        self.step_fn = train_step
        self.forward = torch.compile(self.net) if r.compile else self.net
        self.epoch, self.batch, self.global_step = 0, 0, 0
        self.history: list[dict] = []
        self.best_val = float("inf")
        self.meter = Meter.zeros(input_device(self.net))  # where the losses and logits are
        self.log = MetricsLog(self.out, enabled=self.dist.main)
        self._last_save = time.monotonic()

    def _resume(self, which: str) -> None:
        path = ckpt.latest_state(self.ckpt_dir) if which == "latest" else Path(which)
        if path is None:
            raise AlexKitError(f"--resume: no checkpoint in {self.ckpt_dir} (nothing to resume; drop --resume to start)")
        st = ckpt.load_state(path)
        if configs_differ(st["config"], self.config.to_dict()):
            raise AlexKitError(f"{path}: trained a different architecture than this recipe asks for")
        load_grouped_state(self.net, st["model"])
        load_grouped_velocity(self.net, self.optimizer, st["velocity"])
        self.schedule.load_state_dict(st["schedule"])
        self.optimizer.set_lr(self.schedule.lr)
        self.stall.load_state_dict(st["stall"])
        self.epoch, self.batch, self.global_step = int(st["epoch"]), int(st["batch"]), int(st["global_step"])
        self.history, self.best_val = list(st["history"]), float(st["best_val"])
        self.meter = Meter.from_dict(st["acc"], input_device(self.net))
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        ckpt.set_rng_state(st["rng"])
        if self.dist.main:
            print(f"resumed from {path}: epoch {self.epoch + 1}, batch {self.batch}, step {self.global_step}", file=sys.stderr)

    def state(self) -> dict:
        """The training state, snapshotted to host memory (safe to write while training goes on)."""
        self._drain(keep=0)
        return {
            "model": grouped_state(self.net), "velocity": grouped_velocity(self.net, self.optimizer),
            "schedule": self.schedule.state_dict(), "stall": self.stall.state_dict(),
            "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step,
            "history": self.history, "best_val": self.best_val, "acc": self.meter.to_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": ckpt.rng_state(), "recipe": self.r.to_dict(), "config": self.config.to_dict(),
            "classes": self.data.classes,
        }

    def save_state(self, wait: bool = False) -> None:
        """Snapshot now, write in the background (``wait``: before returning)."""
        self._last_save = time.monotonic()
        if not self.dist.main:
            return
        self.writer.submit(ckpt.save_state, self.ckpt_dir, self.state(), self.r.keep_last)
        if wait:
            self.writer.wait()

    def _checkpoint_due(self) -> bool:
        r = self.r
        if r.checkpoint_every and self.global_step % r.checkpoint_every == 0:
            return True
        # §5's 2,000-step interval is ~17 s at the target speed: time-based saving keeps the
        # GPUs busy whatever the speed. Only rank 0 writes, so only its clock matters.
        return bool(r.checkpoint_minutes) and self.dist.main and time.monotonic() - self._last_save >= 60 * r.checkpoint_minutes

    # -- the loop ----------------------------------------------------------
    def _requested(self) -> int:
        """The signal this process was asked to stop by (0: none)."""
        return (self.stop.signum or 0) if self.stop is not None else 0

    def _agreed_stop(self) -> int:
        """The signal every rank stops for now (0: go on). One process stops for its own signal.
        Under DDP a rank that stopped alone would leave the others blocked in the next
        all-reduce, so the ranks vote every SYNC_EVERY steps (every rank at the same steps; the
        epoch-end reduce votes too): the MAX of their signal numbers, 0 where none came. A window's
        vote is read at the next (its copy to the host long done: no stall), and every rank reads
        the same vote at the same step, so all stop at the same step, for the same signal."""
        if not self.collective:
            return self._requested()
        if self.global_step % SYNC_EVERY:
            return 0
        import torch.distributed as dist

        agreed = int(self._vote.get()[0]) if self._vote is not None else 0
        # on the device (NCCL has no CPU), made by a fill kernel: torch.tensor(list, device=cuda)
        # would be a blocking copy from pageable host memory every SYNC_EVERY steps
        t = torch.full((1,), float(self._requested()), device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, async_op=True).wait()  # NCCL: the stream waits, not the host
        self._vote = HostCopy(t)
        return agreed

    def _drain(self, keep: int) -> None:
        """Start the pending losses on their way to the host, then handle every window but the
        newest ``keep`` (1 in the loop: that copy overlaps the next steps; 0 before a state is
        saved and at epoch ends: every loss so far, read now)."""
        if self._pending:
            self._inflight.append(([s for s, _ in self._pending], HostCopy(torch.stack([l.float() for _, l in self._pending]))))
            self._pending.clear()
        while len(self._inflight) > keep:
            self._handle(*self._inflight.pop(0))

    def _handle(self, steps: list[int], losses: "HostCopy") -> None:
        """Progress, stall detector, divergence check and log for some steps' losses."""
        values = losses.get().tolist()
        for step, lv in zip(steps, values):
            if not math.isfinite(lv):
                raise AlexKitError(f"training diverged: loss {lv} at step {step} (lower --lr)")
            warning = self.stall.update(lv)
            if warning and self.dist.main:
                from tqdm import tqdm

                tqdm.write(f"WARNING {warning}", file=sys.stderr)
            if step % 10 == 0:
                self.log.step_scalar("step_loss", lv, step)
        self._last_loss = values[-1]

    def _step(self, x, y, d) -> None:
        x, y = self._finish(x, y, d)
        torch.manual_seed(step_seed(self.r.seed, self.dist.rank, self.global_step))  # dropout, resumable
        loss, logits = self.step_fn(self.forward, self.optimizer, x, y, self.amp, scaler=self.scaler)
        w1, w5 = topk_wrong(logits, y)
        self.meter.add(loss, w1, w5, len(y))
        self._pending.append((self.global_step + 1, loss))
        self.batch += 1
        self.global_step += 1

    def train(self) -> str:
        """The epochs: "done" or "max_steps"; on a signal, the state saved, :class:`Interrupted`."""
        if self.stop is not None:  # the caller's, active
            return self._train()
        with StopOnSignal(STOP_NOTICE if self.dist.main else None) as self.stop:
            try:
                return self._train()
            finally:
                self.stop = None

    def _train(self) -> str:
        from tqdm import tqdm

        r = self.r
        local_batch = r.batch_size // self.dist.world
        try:
            while self.epoch < r.epochs:
                ds = EpochBatches(self.train_split, batch=r.batch_size, seed=r.seed, epoch=self.epoch, crop=self.config.input_size,
                                  train=True, finisher=self.cpu_finisher, pca_std=r.pca_std, part=(self.dist.rank, self.dist.world))
                loader = make_loader(ds, self.batch, r.workers, pin=self.device.type == "cuda")
                self.optimizer.set_lr(self.schedule.lr)
                self.net.train()
                bar = tqdm(total=len(ds) * r.batch_size, initial=self.batch * r.batch_size, unit="img", unit_scale=False,
                           desc=f"epoch {self.epoch + 1}/{r.epochs}", disable=not (self.progress and self.dist.main),
                           dynamic_ncols=True, leave=False, file=sys.stderr)
                t_last = time.perf_counter()
                for x, y, d in self._to_device(loader):
                    self._step(x, y, d)
                    now = time.perf_counter()
                    self.meter.seconds += now - t_last
                    self.meter.images += r.batch_size
                    t_last = now
                    bar.update(r.batch_size)
                    if self.global_step % SYNC_EVERY == 0:
                        self._drain(keep=1)
                        bar.set_postfix(loss=f"{self._last_loss:.3f}", lr=f"{self.schedule.lr:.2g}", refresh=False)
                    last = self.batch == len(ds)  # the epoch end saves and votes
                    stop = 0 if last else self._agreed_stop()
                    limit = r.max_steps and self.global_step >= r.max_steps
                    if not last and (stop or limit or self._checkpoint_due()):
                        self.save_state(wait=bool(stop or limit))
                    if limit and not last:
                        bar.close()
                        return "max_steps"  # finished as asked: a signal now changes nothing
                    if stop:
                        bar.close()
                        self._interrupted(stop)
                bar.close()
                del loader
                self._drain(keep=0)
                self._end_epoch(local_batch)  # writes the epoch's state (in the background)
                if r.max_steps and self.global_step >= r.max_steps:
                    return "max_steps"
                if self._epoch_vote and self.epoch < r.epochs:
                    self._interrupted(self._epoch_vote)
            return "done"
        finally:
            self.writer.wait()

    def _interrupted(self, signum: int) -> None:
        """The state is saved (or being written): wait until it is on disk, then end with one line."""
        self.writer.wait()
        name = signal_name(signum)
        if self.dist.main:
            raise Interrupted(signum, f"stopped by {name} after step {self.global_step}: saved "
                              f"{ckpt.latest_state(self.ckpt_dir)}; run the same command with --resume to continue")
        raise Interrupted(signum, f"rank {self.dist.rank} stopped by {name} after step {self.global_step}, "
                          f"with every rank (rank 0 saved the training state)")

    def _to_device(self, loader):
        """On CUDA, each batch's host-to-device copy (25 MB of uint8 photos at batch 128) is issued
        one batch ahead on a side stream, so it overlaps the current step's kernels instead of
        queueing in front of them. Elsewhere the batches pass through (_finish moves them)."""
        dev = input_device(self.net)
        with starting_workers():  # the loader's worker processes start here
            it = iter(loader)
        if dev.type != "cuda":
            yield from it
            return
        side = torch.cuda.Stream(dev)

        def issue(batch):
            with torch.cuda.stream(side):
                return tuple(t.to(dev, non_blocking=True) for t in batch)

        nxt = next(it, None)
        nxt = issue(nxt) if nxt is not None else None
        while nxt is not None:
            cur = nxt
            main = torch.cuda.current_stream(dev)
            main.wait_stream(side)
            for t in cur:
                t.record_stream(main)  # made on the side stream, used on the main one
            batch = next(it, None)
            nxt = issue(batch) if batch is not None else None
            yield cur

    def _finish(self, x, y, d):
        """The batch on the input device: labels once, non_blocking (pinned by the loader)."""
        dev = input_device(self.net)
        y = y.to(dev, non_blocking=True)
        if self.gpu_finisher is not None:
            return self.gpu_finisher(x, d, self.channels_last), y
        x = x.to(dev, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _end_epoch(self, local_batch: int) -> None:
        val = self.evaluate() if len(self.val_split) else None
        # every rank, always, after validation: it also carries the stop vote, so a signal that
        # came during validation stops the run here, with this epoch's state
        a = self._reduce(self.meter)
        row = {
            "epoch": self.epoch + 1, "step": self.global_step, "lr": self.schedule.lr,
            "train_loss": a["loss_sum"] / max(1, a["n"]), "train_top1_err": a["wrong1"] / max(1, a["n"]),
            "train_top5_err": a["wrong5"] / max(1, a["n"]),
            "images_per_s": a["images"] / max(1e-9, a["seconds"] / self.dist.world) if a["seconds"] else None,
            "seconds": round(a["seconds"] / self.dist.world, 2),
        }
        if val:
            row.update(val_loss=val[0], val_top1_err=val[1], val_top5_err=val[2])
        self.history.append(row)
        self.epoch += 1
        self.batch = 0
        self.meter = Meter.zeros(input_device(self.net))
        self._vote = None  # the epoch-end reduce carried every rank's signal; a vote still in flight is stale
        err = val[1] if val else row["train_top1_err"]
        improved = err < self.best_val
        if improved:
            self.best_val = err
        if self.schedule.step(err) and self.dist.main:
            print(f"validation error stopped improving: lr -> {self.schedule.lr:.3g} (drop {self.schedule.drops} of {self.r.lr_max_drops})", file=sys.stderr)
        self._last_save = time.monotonic()
        if self.dist.main:
            self.log.rewrite(self.history)
            state = self.state()
            meta = self.model_meta()
            self.writer.submit(self._write_epoch, state, meta, improved)
            v = f"  val loss {val[0]:.3f} top-1 err {100 * val[1]:.1f}% top-5 err {100 * val[2]:.1f}%" if val else ""
            print(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.3f} top-1 err {100 * row['train_top1_err']:.1f}%{v}"
                  f"  lr {row['lr']:.3g}  {row['images_per_s'] or 0:.0f} img/s", file=sys.stderr)

    def _write_epoch(self, state: dict, meta: ModelMeta, improved: bool) -> None:
        """Background thread: the state, last.safetensors, and on a new best hard links, not copies."""
        path = ckpt.save_state(self.ckpt_dir, state, self.r.keep_last)
        last = self.out / "last.safetensors"
        save_checkpoint(last, state["model"], meta)
        if improved:
            ckpt.link_best(self.ckpt_dir, path)
            ckpt.link_or_copy(last, self.out / "model.safetensors")

    def _reduce(self, m: Meter) -> dict:
        if not self.collective:
            self._epoch_vote = self._requested()
            return m.to_dict()
        import torch.distributed as dist

        # on the training device (an NCCL group has no CPU backend); float64 holds
        # the counts exactly. The last entry is the stop vote (the MAX of the ranks' signals).
        dev = m.loss_sum.device  # host numbers joined by fill kernels, not blocking copies
        t = torch.stack([m.loss_sum, m.wrong1.double(), m.wrong5.double()]
                        + [torch.full((), float(v), dtype=torch.float64, device=dev) for v in (m.n, m.seconds, self._requested())])
        t = t.to(self.device)  # the process group's device (the same one under DDP)
        dist.all_reduce(t[:5])
        dist.all_reduce(t[5:], op=dist.ReduceOp.MAX)
        loss_sum, w1, w5, n, seconds, stop = t.tolist()
        self._epoch_vote = int(stop)
        # every rank counts the global batch already
        return {"loss_sum": loss_sum, "n": n, "wrong1": w1, "wrong5": w5, "seconds": seconds, "images": float(m.images)}

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, float]:
        """Centre-crop validation through the loader (workers, pinned), each rank a share of the
        batches, the sums all-reduced: every rank gets the error that drives the lr drops."""
        r = self.r
        bs = r.eval_batch_size or 2 * r.batch_size  # no gradients: twice the batch fits
        ds = EpochBatches(self.val_split, batch=bs, seed=r.seed, epoch=0, crop=self.config.input_size, train=False,
                          finisher=self.cpu_finisher)
        loader = make_loader(ds, workers=min(r.workers, len(ds)), pin=self.device.type == "cuda",
                             batches=range(self.dist.rank, len(ds), self.dist.world))
        self.net.eval()
        base = unwrap(self.net)
        dev = input_device(self.net)
        sums = torch.zeros(4, dtype=torch.float64, device=dev)  # loss, photos, top-1 and top-5 misses
        for x, y, d in self._to_device(loader):
            x, y = self._finish(x, y, d)
            with torch.autocast(dev.type, dtype=self.amp, enabled=self.amp is not None):
                logits = base(x)
            logits = logits.float()
            w1, w5 = topk_wrong(logits, y)
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                 torch.full((), float(len(y)), dtype=torch.float64, device=dev), w1.double(), w5.double()])
        del loader
        self.net.train()
        if self.collective:
            import torch.distributed as dist

            sums = sums.to(self.device)
            dist.all_reduce(sums)
        loss_sum, n, w1, w5 = sums.tolist()
        return loss_sum / max(1, n), w1 / max(1, n), w5 / max(1, n)

    # -- the product -------------------------------------------------------
    def model_meta(self) -> ModelMeta:
        last = self.history[-1] if self.history else {}
        return ModelMeta(
            self.config, list(self.data.classes), None,
            Preprocess(resize=self.data.size, crop=self.config.input_size, mean=self.mean, std=self.std or (1.0, 1.0, 1.0)),
            trained=True,
            provenance={
                "created_by": f"alexnet-kit {__version__} train", "recipe": self.r.name, "recipe_values": self.r.to_dict(),
                "dataset": str(self.data.root), "dataset_source": self.data.info.get("source"),
                "train_photos": len(self.train_split), "val_photos": len(self.val_split),
                "epochs": self.epoch, "steps": self.global_step,
                "val_top1_err": last.get("val_top1_err"), "val_top5_err": last.get("val_top5_err"),
                "best_val_top1_err": self.best_val if math.isfinite(self.best_val) else None,
                "git_commit": git_commit(), "parallel": self.r.parallel, "world_size": self.dist.world,
                **({"fine_tuned_from": {"path": str(self.parent.path), "fingerprint": self.parent.fingerprint,
                                        "source": self.parent.meta.provenance.get("source"), "frozen": list(self.frozen),
                                        "pretrained_lr_mult": self.r.pretrained_lr_mult}} if self.parent is not None else {}),
            },
        )

    def save_model(self, path: Path) -> str:
        return save_checkpoint(path, grouped_state(self.net), self.model_meta())

    def cleanup(self) -> None:
        self.writer.close()
        self.log.close()
        if self.collective:
            import torch.distributed as dist

            if dist.is_initialized():
                # gloo's worker threads take the GIL to free a collective's tensors once it has ended,
                # and the process group's destructor (here, or when the DDP model goes) holds the GIL
                # while it joins them: a rank that stopped right after a collective could hang at exit
                # (one stop in six did). Sleeping gives them the GIL; no collective follows.
                time.sleep(0.1)
                dist.destroy_process_group()

