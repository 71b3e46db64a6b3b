"""What a run tells you: per-epoch CSV and JSONL, TensorBoard, a PNG of the curves,
and a warning when the loss is stuck at ln(classes); the training loss and errors
counted on the device and read on the host a window late (:class:`Meter`,
:class:`LossWindow`), so a step never waits for the host.

The stall: with the paper's initialisation (§5, biases 1) the network
sometimes never leaves the loss of a uniform guess, ln(1000) = 6.91 on
ImageNet (Caffe's reference model switched to biases 0.1 for this reason).
:class:`StallDetector` watches the training loss and says so, with what to try.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from alexnet_kit.errors import AlexKitError
from alexnet_kit.metrics import ErrorCounter

from .parallel import HostCopy

COLUMNS = ["epoch", "step", "lr", "train_loss", "train_top1_err", "train_top5_err",
           "val_loss", "val_top1_err", "val_top5_err", "images_per_s", "seconds"]


class MetricsLog:
    def __init__(self, out: Path, enabled: bool = True, tensorboard: bool = True):
        self.out, self.enabled = out, enabled
        self.csv_path, self.jsonl_path, self.png_path = out / "metrics.csv", out / "metrics.jsonl", out / "curves.png"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # here, not at the top: tensorboard is an optional extra (alexnet-kit[train]), slow to import

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except Exception:  # tensorboard is an extra (pip install alexnet-kit[train])
                self.tb = None

    def rewrite(self, history: list[dict]) -> None:
        """Write the whole history (a resumed run replaces what a killed run left)."""
        if not self.enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
            w.writeheader()
            for row in history:
                w.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
        with open(self.jsonl_path, "w") as f:
            for row in history:
                f.write(json.dumps(row) + "\n")
        if history and self.tb is not None:
            row = history[-1]
            for k in COLUMNS[2:]:
                if isinstance(row.get(k), (int, float)) and row.get(k) is not None:
                    self.tb.add_scalar(k, row[k], row["epoch"])
            self.tb.flush()
        plot_curves(history, self.png_path)

    def step_scalar(self, name: str, value: float, step: int) -> None:
        if self.tb is not None:
            self.tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)


def plot_curves(history: list[dict], path: Path, title: str | None = None) -> bool:
    """Loss and top-1 error per epoch, train and validation; False when matplotlib is absent."""
    if not history:
        return False
    try:
        import matplotlib  # here, not at the top: matplotlib is an optional extra (alexnet-kit[train]), slow to import

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return False
    ep = [r["epoch"] for r in history]
    val = [r for r in history if r.get("val_loss") is not None]  # a budget's late epoch ends skip validation
    vep = [r["epoch"] for r in val]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ep, [r["train_loss"] for r in history], "o-", ms=3, label="train")
    if val:
        a.plot(vep, [r["val_loss"] for r in val], "s-", ms=3, label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("cross-entropy loss"), a.legend(), a.grid(alpha=0.3)
    b.plot(ep, [100 * r["train_top1_err"] for r in history], "o-", ms=3, label="train top-1")
    if val:
        b.plot(vep, [100 * r["val_top1_err"] for r in val], "s-", ms=3, label="validation top-1")
        b.plot(vep, [100 * r["val_top5_err"] for r in val], "^--", ms=3, label="validation top-5")
    b.set_xlabel("epoch"), b.set_ylabel("error (%)"), b.set_ylim(0, 100), b.legend(), b.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


class StallDetector:
    """Warn when the mean loss of the last ``window`` steps stays within ``tolerance`` of ln(classes)."""

    def __init__(self, classes: int, window: int = 50, tolerance: float = 0.03):
        self.chance = math.log(max(2, classes))
        self.window, self.tolerance = window, tolerance
        self.recent: list[float] = []
        self.steps = 0
        self.warned = False

    def update(self, loss: float) -> str | None:
        """Record one step's loss; returns the warning once, when the stall is seen."""
        self.steps += 1
        self.recent.append(loss)
        if len(self.recent) > self.window:
            self.recent.pop(0)
        if self.warned or self.steps < self.window:
            return None
        mean = sum(self.recent) / len(self.recent)
        if abs(mean - self.chance) <= self.tolerance * self.chance:
            self.warned = True
            return (f"stall: training loss {mean:.3f} has stayed at ln({round(math.exp(self.chance))}) = {self.chance:.3f} "
                    f"(a uniform guess) for {self.steps} steps. This is the known failure of the paper's "
                    f"initialisation (§5, biases 1); try --model.init caffe or --model.init kaiming, or a lower --lr.")
        return None

    def state_dict(self) -> dict:
        return {"recent": list(self.recent), "steps": self.steps, "warned": self.warned}

    def load_state_dict(self, d: dict) -> None:
        self.recent, self.steps, self.warned = list(d["recent"]), int(d["steps"]), bool(d["warned"])


@dataclass
class Meter:
    """One epoch's training totals. The sums live on the device, so a step never waits for the host."""

    loss_sum: torch.Tensor  # float64: the same sum a host float would give
    errors: ErrorCounter  # top-1 and top-5 misses, and the photos this rank has seen
    seconds: float = 0.0
    images: int = 0  # photos of the global batches

    @classmethod
    def zeros(cls, device: torch.device) -> "Meter":
        return cls(torch.zeros((), dtype=torch.float64, device=device), ErrorCounter(k=5))

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """A step's mean loss and its batch's logits and labels (on the logits' device)."""
        self.errors.add(logits, y)
        self.loss_sum += loss.double() * len(y)

    def to_dict(self) -> dict:
        """Host numbers (one sync each), as training states store them."""
        return {"loss_sum": float(self.loss_sum), "n": self.errors.n, "wrong1": int(self.errors.wrong1),
                "wrong5": int(self.errors.wrongk), "seconds": self.seconds, "images": self.images}

    @classmethod
    def from_dict(cls, d: dict, device: torch.device) -> "Meter":
        m = cls.zeros(device)
        m.loss_sum += float(d["loss_sum"])
        m.errors.n, m.errors.wrong1, m.errors.wrongk = int(d["n"]), int(d["wrong1"]), int(d["wrong5"])
        m.seconds, m.images = float(d["seconds"]), int(d["images"])
        return m


class LossWindow:
    """Each step's loss, read on the host a window late, so no step waits for it.

    :meth:`add` keeps the loss on the device; :meth:`drain` starts the window's copy to the
    host and reads the earlier windows' (long arrived). Reading a loss checks it is finite
    (training diverged: one line naming the step), feeds the :class:`StallDetector`
    (``warn``: print its warning) and logs every 10th step.
    """

    def __init__(self, stall: "StallDetector", log: MetricsLog, warn: bool):
        self.stall, self.log, self.warn = stall, log, warn
        self.last = float("nan")  # the newest loss read
        self._pending: list[tuple[int, torch.Tensor]] = []  # (step, loss) of this window, on the device
        self._inflight: list[tuple[list[int], HostCopy]] = []  # earlier windows on their way to the host

    def add(self, step: int, loss: torch.Tensor) -> None:
        self._pending.append((step, loss))

    def drain(self, keep: int) -> None:
        """Start the pending losses on their way to the host, then read every window but the
        newest ``keep`` (1 in the loop: that copy overlaps the next steps; 0 before a state is
        saved and at epoch ends: every loss so far, read now)."""
        if self._pending:
            self._inflight.append(([s for s, _ in self._pending], HostCopy(torch.stack([l.float() for _, l in self._pending]))))
            self._pending.clear()
        while len(self._inflight) > keep:
            self._read(*self._inflight.pop(0))

    def _read(self, steps: list[int], losses: HostCopy) -> None:
        values = losses.get().tolist()
        for step, lv in zip(steps, values):
            if not math.isfinite(lv):
                raise AlexKitError(f"training diverged: loss {lv} at step {step} (lower --lr)")
            warning = self.stall.update(lv)
            if warning and self.warn:
                tqdm.write(f"WARNING {warning}", file=sys.stderr)
            if step % 10 == 0:
                self.log.step_scalar("step_loss", lv, step)
        self.last = values[-1]


def epoch_row(epoch: int, step: int, lr: float, totals: dict, world: int, val: tuple[float, float, float] | None) -> dict:
    """The history's row for an epoch: the training totals over every rank, validation if any."""
    n = max(1, totals["n"])
    seconds = totals["seconds"] / world  # every rank ran the whole epoch: the wall time, not the sum
    row = {
        "epoch": epoch, "step": step, "lr": lr,
        "train_loss": totals["loss_sum"] / n, "train_top1_err": totals["wrong1"] / n, "train_top5_err": totals["wrong5"] / n,
        "images_per_s": totals["images"] / max(1e-9, seconds) if totals["seconds"] else None,
        "seconds": round(seconds, 2),
    }
    if val:
        row.update(val_loss=val[0], val_top1_err=val[1], val_top5_err=val[2])
    return row


def epoch_line(row: dict) -> str:
    """The line rank 0 prints at an epoch's end."""
    v = (f"  val loss {row['val_loss']:.3f} top-1 err {100 * row['val_top1_err']:.1f}% top-5 err {100 * row['val_top5_err']:.1f}%"
         if "val_loss" in row else "")
    return (f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.3f} top-1 err {100 * row['train_top1_err']:.1f}%{v}"
            f"  lr {row['lr']:.3g}  {row['images_per_s'] or 0:.0f} img/s")
