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
:class:`~.parallel.StopVote`). A fresh run never replaces an earlier one
in its folder unless told to (:mod:`.runfolder`).

Exact resume: the data stream is a function of (seed, epoch, batch) (see
:mod:`.loader`), dropout is re-seeded from (seed, rank, step) before every
step, and the training state is saved between steps, so a run killed at any
moment and resumed from its last checkpoint computes the same steps as an
uninterrupted one (bitwise on CPU with ``--deterministic true``).

The host stays out of the step: loss and error counts accumulate on the
device (:class:`~.monitor.Meter`), each step's loss is read every
:data:`SYNC_EVERY` steps (:class:`~.monitor.LossWindow`), labels and the
augmentation draw travel as pinned tensors, a batch's copy to the GPU is
issued a batch ahead (:func:`~.loader.prefetch`), and checkpoints are written
from a background thread (:class:`~.training_state.BackgroundWriter`).
"""
from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from alexnet_kit import __version__
from alexnet_kit.checkpoint import save_checkpoint
from alexnet_kit.config import configs_differ
from alexnet_kit.errors import AlexKitError
from alexnet_kit.interrupt import Interrupted, StopOnSignal, signal_name
from alexnet_kit.meta import ModelMeta
from alexnet_kit.metrics import ErrorCounter
from alexnet_kit.preprocess import Preprocess

from . import finetune, runfolder, training_state
from .augment import Finisher
from .loader import EpochBatches, make_loader, prefetch
from .monitor import LossWindow, Meter, MetricsLog, StallDetector, epoch_line, epoch_row
from .optim import PaperSGD
from .packed import PackedDataset
from .parallel import (DistInfo, StopVote, build_grouped, end_distributed, grouped_state, grouped_velocity,
                       init_distributed, input_device, load_grouped_state, load_grouped_velocity, pick_device, place,
                       sum_over_ranks, unwrap)
from .precision import bf16_native_check, cuda_bf16_native, deterministic_setup, resolve_amp
from .recipe import Recipe
from .schedule import Budget, Schedule, format_duration, parse_duration, resolve_kind

# resolve_amp, cuda_bf16_native and deterministic_setup lived here: scripts and tests import them from here
__all__ = ["SYNC_EVERY", "Trainer", "build_optimizer", "cuda_bf16_native", "deterministic_setup", "resolve_amp", "step_seed",
           "train_step"]

#: steps between host reads of the loss (progress bar, stall detector, divergence check)
#: and, under DDP, between the collectives in which the ranks agree to stop
SYNC_EVERY = 16
#: what rank 0 prints on the first signal (StopOnSignal adds "again to abort at once")


def train_step(net, optimizer, x, y, amp_dtype=None, scaler=None, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch; returns (loss, logits), both detached, still on the device.
    ``label_smoothing`` (not in the paper): the loss's target puts that much weight uniformly on every class."""
    optimizer.zero_grad(set_to_none=True)
    dev = input_device(net)
    with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = net(x)
    loss = F.cross_entropy(logits.float(), y.to(logits.device, non_blocking=True), label_smoothing=label_smoothing)
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


class Trainer:
    """``overwrite``: replace an earlier run in ``recipe.out`` (else a fresh run there is refused).
    ``stop``: the caller's active :class:`StopOnSignal` (the CLI's also covers packing and set-up);
    None: :meth:`train` installs one while it runs. ``started``: when a ``--budget`` began (a
    ``time.monotonic()`` reading; the CLI passes its process's start), default now."""

    def __init__(self, recipe: Recipe, data: PackedDataset, resume: str | None = None, progress: bool = True,
                 overwrite: bool = False, stop: StopOnSignal | None = None, started: float | None = None):
        self.r, self.data, self.resume_from, self.progress = recipe, data, resume, progress
        self.overwrite, self.started = overwrite, time.monotonic() if started is None else started
        self.stop = stop  # the one stop flag: its signum, the signal this process was asked to stop by
        self.out = Path(recipe.out)
        self.ckpt_dir = self.out / "checkpoints"
        self.writer = training_state.BackgroundWriter()

    # -- setup -------------------------------------------------------------
    def setup(self) -> None:
        # every rank, before the process group starts and before anything is written: all refuse or none
        runfolder.refuse_earlier_run(self.out, self.resume_from, self.overwrite)
        self._setup_runtime()
        self._setup_data()
        self._setup_parent()
        self._setup_model()
        self._setup_optimizer()
        self._replace_earlier_run()
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
        if r.parallel == "data":
            kind = "cuda" if (r.device.startswith("cuda") or (r.device == "auto" and torch.cuda.is_available())) else "cpu"
            self.dist = init_distributed(kind)
        self.device = pick_device(r.device, self.dist)
        on_cuda = self.device.type == "cuda"
        if on_cuda and not r.deterministic:
            torch.backends.cudnn.benchmark = True
        self.amp, use_scaler = resolve_amp(r.amp, self.device.type, bf16_native_check(self.device.type), r.force_amp)
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

    def _setup_model(self) -> None:
        """The network in its running form, and who finishes the batches: on the CPU the loader's
        workers; on CUDA the workers only gather whole uint8 photos, and the GPU crops, flips,
        centres and colours them in one batched pass (on the net's input device)."""
        model = build_grouped(self.config, self.r.seed)
        if self.parent is not None:
            finetune.transplant(model, self.parent)
            # before DDP wraps it: DDP only hooks parameters that need a gradient (build_optimizer
            # freezes the running form again: the towers build fresh parameters from this model)
            finetune.freeze(model, self.frozen)
        self.net = place(model, self.r.parallel, self.device, self.r.model_devices, self.dist,
                         channels_last=self.channels_last)
        self.forward = torch.compile(self.net) if self.r.compile else self.net
        on_cuda = self.device.type == "cuda"
        args = (self.mean, self.data.eigvals, self.data.eigvecs, self.config.input_size)
        self.gpu_finisher = Finisher(*args, input_device(self.net), self.std) if on_cuda else None
        self.cpu_finisher = None if on_cuda else Finisher(*args, "cpu", self.std)

    def _setup_optimizer(self) -> None:
        r = self.r
        self.optimizer = build_optimizer(self.net, r)
        self.schedule = Schedule(resolve_kind(r.schedule, bool(r.budget)), r.lr, r.warmup, r.lr_factor, r.lr_patience,
                                 r.lr_max_drops, r.lr_threshold)
        # the end's write: weights and velocities in the state, the weights again in the model
        state_bytes = 12 * sum(p.numel() for p in self.net.parameters())
        self.budget = Budget(parse_duration(r.budget), started=self.started, val_photos=len(self.val_split),
                             state_bytes=state_bytes) if r.budget else None
        self._progress = 0.0  # the budget's progress the ranks agreed on (its lr; 1: training ends)

    def _replace_earlier_run(self) -> None:
        """``--overwrite``: as late as possible (a set-up error above keeps the old run), before the
        first new file (the TensorBoard folder of _setup_progress); the other ranks checked before
        the group started."""
        if not (self.overwrite and not self.resume_from and self.dist.main):
            return
        old = runfolder.earlier_run(self.out)
        if runfolder.remove_run(self.out):
            print(f"--overwrite: removed the earlier run in {self.out} ({runfolder.describe(old) or 'logs only'}); "
                  f"packed data and other files stay", file=sys.stderr)

    def _setup_progress(self) -> None:
        """Where the run is and what it has measured: a fresh run's start (:meth:`_resume` reloads it)."""
        self.epoch, self.batch, self.global_step = 0, 0, 0
        self.history: list[dict] = []
        self.best_val = float("inf")
        self.meter = Meter.zeros(input_device(self.net))  # where the losses and logits are
        self.log = MetricsLog(self.out, enabled=self.dist.main)
        self.losses = LossWindow(StallDetector(self.config.num_classes, self.r.stall_window), self.log, warn=self.dist.main)
        self.vote = StopVote(self.dist, self.device, SYNC_EVERY)
        self._last_save = time.monotonic()

    def _resume(self, which: str) -> None:
        path = training_state.latest_state(self.ckpt_dir) if which == "latest" else Path(which)
        if path is None:
            raise AlexKitError(f"--resume: no checkpoint in {self.ckpt_dir} (nothing to resume; drop --resume to start)")
        st = training_state.load_state(path)
        if configs_differ(st["config"], self.config.to_dict()):
            raise AlexKitError(f"{path}: trained a different architecture than this recipe asks for")
        load_grouped_state(self.net, st["model"])
        load_grouped_velocity(self.net, self.optimizer, st["velocity"])
        self.schedule.load_state_dict(st["schedule"])
        if self.budget is not None and st.get("budget"):
            self.budget.load_state_dict(st["budget"])  # what the run spent so far: the rest is this run's
            self._progress = float(st["budget"].get("progress", 0.0))  # every rank's lr from the same number
        elif st.get("budget") and self.dist.main:
            print(f"{path} was trained to a {st['budget']['seconds']:g} s budget; without --budget, --epochs ends it", file=sys.stderr)
        self.optimizer.set_lr(self.schedule.lr)
        self.losses.stall.load_state_dict(st["stall"])
        self.epoch, self.batch, self.global_step = int(st["epoch"]), int(st["batch"]), int(st["global_step"])
        self.history, self.best_val = list(st["history"]), float(st["best_val"])
        self.meter = Meter.from_dict(st["acc"], input_device(self.net))
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        training_state.set_rng_state(st["rng"])
        if self.dist.main:
            print(f"resumed from {path}: epoch {self.epoch + 1}, batch {self.batch}, step {self.global_step}", file=sys.stderr)

    # -- the loop ----------------------------------------------------------
    def train(self) -> str:
        """The epochs: "done" or "max_steps"; on a signal, the state saved, :class:`Interrupted`."""
        if self.stop is not None:  # the caller's, active
            return self._train()
        with StopOnSignal(runfolder.STOP_NOTICE if self.dist.main else None) as self.stop:
            try:
                return self._train()
            finally:
                self.stop = None

    def _train(self) -> str:
        try:
            if self.budget is not None and self.budget.spent_for(1):
                return "budget"  # resumed with nothing left
            while self.budget is not None or self.epoch < self.r.epochs:  # a budget ends the run, not --epochs
                outcome = self._train_epoch()
                if outcome:
                    return outcome
            return "done"
        finally:
            self.writer.wait()

    def _train_epoch(self) -> str | None:
        """The rest of this epoch, then its end: "max_steps" when the step limit came, else None."""
        r = self.r
        batches = EpochBatches(self.train_split, batch=r.batch_size, seed=r.seed, epoch=self.epoch, crop=self.config.input_size,
                               train=True, finisher=self.cpu_finisher, pca_std=r.pca_std, part=(self.dist.rank, self.dist.world),
                               scale=r.crop_scale if r.crop == "rrc" else None)  # §4.1's patches, or random-resized crops
        loader = make_loader(batches, self.batch, r.workers, pin=self.device.type == "cuda")
        self.steps_per_epoch = len(batches)
        self.optimizer.set_lr(self.schedule.lr)
        self.net.train()
        with self._progress_bar(len(batches)) as bar:
            clock = time.perf_counter()
            for x, y, d in prefetch(loader, input_device(self.net)):
                self._step(x, y, d)
                clock = self._count(bar, clock)
                # the last batch's save and vote are the epoch end's
                limit = self._between_steps() if self.batch < len(batches) else None
                if limit == "max_steps":
                    return limit  # finished as asked: a signal now changes nothing
                if limit:
                    break  # the budget: this (partial) epoch's end is the run's last evaluation and model
        del loader
        stop = self._end_epoch()  # writes the epoch's state (in the background)
        if self._step_limit_reached():
            return "max_steps"
        if self.budget is not None and self._progress >= 1.0:
            return "budget"
        if stop and (self.budget is not None or self.epoch < r.epochs):
            self._interrupted(stop)
        return None

    def _step(self, x, y, d) -> None:
        x, y = self._finish(x, y, d)
        torch.manual_seed(step_seed(self.r.seed, self.dist.rank, self.global_step))  # dropout, resumable
        if self.schedule.timed:  # cosine/linear: over the budget's time, else over the planned steps
            plan = self.r.epochs * self.steps_per_epoch
            self.optimizer.set_lr(self.schedule.at(self._progress if self.budget else (self.global_step + 1) / plan))
        loss, logits = train_step(self.forward, self.optimizer, x, y, self.amp, scaler=self.scaler,
                                  label_smoothing=self.r.label_smoothing)
        self.meter.add(loss, logits, y)
        self.batch += 1
        self.global_step += 1
        self.losses.add(self.global_step, loss)

    def _count(self, bar, clock: float) -> float:
        """The step's time and photos, the progress bar, and every SYNC_EVERY steps the losses read."""
        now = time.perf_counter()
        self.meter.seconds += now - clock
        self.meter.images += self.r.batch_size
        if self.budget is not None:
            self.budget.note_step(now - clock, self.r.batch_size)
        bar.update(self.r.batch_size)
        if self.global_step % SYNC_EVERY == 0:
            self.losses.drain(keep=1)
        if self.global_step % SYNC_EVERY == 0 or self.budget is not None:
            left = {"left": format_duration(self.budget.left())} if self.budget is not None else {}
            bar.set_postfix(loss=f"{self.losses.last:.3f}", lr=f"{self.schedule.lr:.2g}", **left, refresh=False)
        return now

    def _between_steps(self) -> str | None:
        """Mid-epoch: the ranks' stop vote, the step limit, the budget and the time to save.
        "max_steps" when the step limit is reached (the state saved), "budget" when training must
        stop for the end to fit in the budget; raises :class:`Interrupted` when the ranks agreed to
        stop (the state saved)."""
        stop, clock = self.vote.at_step(self.global_step, self._requested(), self._clock_vote())
        if clock:  # None between DDP votes; () without a budget
            self._progress = clock[0]
        limit = "max_steps" if self._step_limit_reached() else ("budget" if self._progress >= 1.0 else None)
        if limit == "budget":
            return limit  # the epoch's end evaluates and saves: a signal now changes nothing
        if stop or limit or self._checkpoint_due():
            self.save_state(wait=bool(stop or limit))
        if stop and not limit:
            self._interrupted(stop)
        return limit

    def _clock_vote(self, epoch_end: bool = False) -> tuple[float, ...]:
        """What this rank's budget says: its progress, 1 when training must stop now. Under DDP
        the ranks take the largest (rank 0's clock, in practice), read a window late, so each looks
        two windows ahead."""
        return self.budget.vote(2 * SYNC_EVERY if self.dist.collective else 1, epoch_end) if self.budget is not None else ()

    def _progress_bar(self, batches: int) -> tqdm:
        r = self.r
        return tqdm(total=batches * r.batch_size, initial=self.batch * r.batch_size, unit="img", unit_scale=False,
                    desc=f"epoch {self.epoch + 1}" + (f"/{r.epochs}" if self.budget is None else f", budget {r.budget}"),
                    disable=not (self.progress and self.dist.main), dynamic_ncols=True, leave=False, file=sys.stderr)

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

    def _requested(self) -> int:
        """The signal this process was asked to stop by (0: none)."""
        return (self.stop.signum or 0) if self.stop is not None else 0

    def _step_limit_reached(self) -> bool:
        return bool(self.r.max_steps) and self.global_step >= self.r.max_steps

    def _checkpoint_due(self) -> bool:
        r = self.r
        if r.checkpoint_every and self.global_step % r.checkpoint_every == 0:
            return True
        # §5's 2,000-step interval is ~17 s at the target speed: time-based saving keeps the
        # GPUs busy whatever the speed. Only rank 0 writes, so only its clock matters.
        return bool(r.checkpoint_minutes) and self.dist.main and time.monotonic() - self._last_save >= 60 * r.checkpoint_minutes

    def _interrupted(self, signum: int) -> None:
        """The state is saved (or being written): wait until it is on disk, then end with one line."""
        self.writer.wait()
        name = signal_name(signum)
        if self.dist.main:
            raise Interrupted(signum, f"stopped by {name} after step {self.global_step}: saved "
                              f"{training_state.latest_state(self.ckpt_dir)}; run the same command with --resume to continue")
        raise Interrupted(signum, f"rank {self.dist.rank} stopped by {name} after step {self.global_step}, "
                          f"with every rank (rank 0 saved the training state)")

    # -- the epoch's end ---------------------------------------------------
    def _end_epoch(self) -> int:
        """Validation, the totals, the schedule, the files and the line; returns the signal every
        rank agreed to stop for (0: none)."""
        t0 = time.monotonic()
        self.losses.drain(keep=0)
        # under a budget, cosine/linear need no evaluation just before the final one (one process: the ranks
        # would have to agree first)
        late = self.budget is not None and self.schedule.timed and not self.dist.collective and self.budget.late()
        val = self.evaluate() if len(self.val_split) and not late else None
        # every rank, always, after validation: it also carries the stop vote, so a signal that
        # came during validation stops the run here, with this epoch's state (and the budget's)
        totals, stop, clock = self.vote.at_epoch_end(self.meter, self._requested(), self._clock_vote(epoch_end=not late))
        self._progress = clock[0] if clock else self._progress
        row = epoch_row(self.epoch + 1, self.global_step, self.schedule.lr, totals, self.dist.world, val)
        if self.budget is not None:
            row["elapsed"] = round(self.budget.elapsed(), 2)
        self.history.append(row)
        self.epoch, self.batch = self.epoch + 1, 0
        self.meter = Meter.zeros(input_device(self.net))
        improved = self._schedule_step(val[1] if val else None if late else row["train_top1_err"])
        self._last_save = time.monotonic()
        if self.dist.main:
            self.log.rewrite(self.history)
            self.writer.submit(self._write_epoch, self.state(), self.model_meta(), improved)
            print(epoch_line(row), file=sys.stderr)
        if self.budget is not None and not late:  # evaluation, logs and the snapshot: what the end costs, besides the write
            self.budget.note_eval(time.monotonic() - t0)
        return stop

    def _schedule_step(self, err: float | None) -> bool:
        """The plateau schedule sees the epoch's error (None: not evaluated); True when it is the best so far."""
        if err is None:
            return False
        improved = err < self.best_val
        if improved:
            self.best_val = err
        if self.schedule.epoch_end(err) and self.dist.main:
            print(f"validation error stopped improving: lr -> {self.schedule.lr:.3g} (drop {self.schedule.drops} of {self.r.lr_max_drops})", file=sys.stderr)
        return improved

    def _write_epoch(self, state: dict, meta: ModelMeta, improved: bool) -> None:
        """Background thread: the state, last.safetensors, and on a new best hard links, not copies."""
        t0 = time.monotonic()
        path = training_state.save_state(self.ckpt_dir, state, self.r.keep_last)
        last = self.out / "last.safetensors"
        save_checkpoint(last, state["model"], meta)
        if improved:
            training_state.link_best(self.ckpt_dir, path)
            training_state.link_or_copy(last, self.out / "model.safetensors")
        if self.budget is not None:
            self.budget.note_write(time.monotonic() - t0)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, float]:
        """Centre-crop validation through the loader (workers, pinned), each rank a share of the
        batches, the sums all-reduced: every rank gets the error that drives the lr drops."""
        r = self.r
        bs = r.eval_batch_size or 2 * r.batch_size  # no gradients: twice the batch fits
        batches = EpochBatches(self.val_split, batch=bs, seed=r.seed, epoch=0, crop=self.config.input_size, train=False,
                               finisher=self.cpu_finisher)
        loader = make_loader(batches, workers=min(r.workers, len(batches)), pin=self.device.type == "cuda",
                             batches=range(self.dist.rank, len(batches), self.dist.world))
        self.net.eval()
        base, dev = unwrap(self.net), input_device(self.net)
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        errors = ErrorCounter(k=5)
        for x, y, d in prefetch(loader, dev):
            x, y = self._finish(x, y, d)
            with torch.autocast(dev.type, dtype=self.amp, enabled=self.amp is not None):
                logits = base(x)
            logits = logits.float()
            errors.add(logits, y)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        del loader
        self.net.train()
        loss_sum, n, w1, w5 = sum_over_ranks(self.dist, self.device, [loss_sum, errors.n, errors.wrong1, errors.wrongk])
        return loss_sum / max(1, n), w1 / max(1, n), w5 / max(1, n)

    # -- the training state and the product -------------------------------
    def state(self) -> dict:
        """The training state, snapshotted to host memory (safe to write while training goes on)."""
        self.losses.drain(keep=0)
        return {
            "model": grouped_state(self.net), "velocity": grouped_velocity(self.net, self.optimizer),
            "schedule": self.schedule.state_dict(), "stall": self.losses.stall.state_dict(),
            "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step,
            "history": self.history, "best_val": self.best_val, "acc": self.meter.to_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "budget": {**self.budget.state_dict(), "progress": self._progress} if self.budget is not None else {},
            "rng": training_state.rng_state(), "recipe": self.r.to_dict(), "config": self.config.to_dict(),
            "classes": self.data.classes,
        }

    def save_state(self, wait: bool = False) -> None:
        """Snapshot now, write in the background (``wait``: before returning)."""
        self._last_save = time.monotonic()
        if not self.dist.main:
            return
        self.writer.submit(training_state.save_state, self.ckpt_dir, self.state(), self.r.keep_last)
        if wait:
            self.writer.wait()

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
                "epochs": self.epoch, "steps": self.global_step, "schedule": self.schedule.kind,
                "amp": str(self.amp).replace("torch.", "") if self.amp is not None else "fp32",
                **({"budget": self.r.budget, "budget_used_s": round(self.budget.elapsed(), 1)} if self.budget is not None else {}),
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
        end_distributed(self.dist)
