"""The learning-rate schedule and the wall-clock budget (``alexnet-kit train --budget 20m``).

Schedules (the recipe's ``schedule``):

* ``plateau``: §5 as printed: lr / 10 when the validation error stops
  improving, at most three times (:class:`~.optim.PlateauSchedule`).
* ``cosine``: a short linear warm-up, then half a cosine down to 0.
* ``linear``: the same warm-up, then a straight line down to 0.
* ``auto``: plateau without a budget; with one, :data:`BUDGET_DEFAULT`, the
  schedule that measured best under a budget (docs/training.md).

With a budget, cosine and linear are functions of wall-clock time: the
warm-up starts at the first step and the decay ends at the *training
deadline*, the moment training must stop so that the final evaluation and the
final model still fit in the budget (:class:`Budget`). Without one they are
functions of the step (``epochs`` x steps per epoch), so a run resumes exactly.
§5's plateau drops depart from neither: with a budget they happen as they do
without one, and only the stop comes from the clock.
"""
from __future__ import annotations

import math
import os
import re
import time
from typing import Callable

# No torch at import time: the recipe (and `alexnet-kit --help`) reads KINDS and parse_duration.
from alexnet_kit.errors import AlexKitError

KINDS = ("auto", "plateau", "cosine", "linear")
#: what ``schedule = "auto"`` runs under a budget: linear measured better than cosine at 5 minutes
#: on 2 CPU cores (docs/training.md, "Training to a wall-clock budget")
BUDGET_DEFAULT = "linear"

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> float:
    """``"20m"``, ``"90s"``, ``"2h"``, ``"1h30m"``, ``"1.5h"`` or plain seconds (``"300"``) -> seconds."""
    t = str(text).strip().lower().replace(" ", "")
    try:
        seconds = float(t)
    except ValueError:
        m = _DURATION.match(t)
        if not t or m is None or not any(m.groups()):
            raise AlexKitError(f"--budget: not a duration: {text!r} (e.g. 90s, 20m, 2h, 1h30m)") from None
        seconds = sum(float(v) * _UNITS[u] for v, u in zip(m.groups(), "hms") if v)
    if not seconds > 0:
        raise AlexKitError(f"--budget must be positive, not {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"`` (never negative)."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def resolve_kind(kind: str, budget: bool) -> str:
    """The schedule a recipe's ``schedule`` runs: ``auto`` is plateau without a budget."""
    if kind == "auto":
        return BUDGET_DEFAULT if budget else "plateau"
    return kind


def lr_factor(kind: str, progress: float, warmup: float) -> float:
    """The multiplier of the base lr at ``progress`` (0 at the first step, 1 at the deadline):
    linear from 0 over the first ``warmup`` of the way, then cosine or linear down to 0."""
    p = min(1.0, max(0.0, progress))
    if warmup > 0 and p < warmup:
        return p / warmup
    rest = (p - warmup) / (1.0 - warmup) if warmup < 1 else 1.0
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * rest))
    if kind == "linear":
        return 1.0 - rest
    raise ValueError(f"no time schedule {kind!r}")


class Schedule:
    """The lr a run uses: §5's plateau drops at epoch ends, or cosine/linear over ``progress``.

    The state keeps the plateau's keys, so training states written before
    there were other schedules load as they are."""

    def __init__(self, kind: str, lr: float, warmup: float = 0.03, factor: float = 0.1, patience: int = 2,
                 max_drops: int = 3, threshold: float = 1e-3):
        from .optim import PlateauSchedule  # here, not at the top: optim loads torch

        self.kind, self.base, self.warmup = kind, lr, warmup
        self.plateau = PlateauSchedule(lr, factor, patience, max_drops, threshold)
        self.progress = 0.0

    @property
    def timed(self) -> bool:
        return self.kind != "plateau"

    @property
    def lr(self) -> float:
        if self.timed:
            return self.base * lr_factor(self.kind, self.progress, self.warmup)
        return self.plateau.lr

    @property
    def drops(self) -> int:
        return self.plateau.drops

    def at(self, progress: float) -> float:
        """The lr at ``progress`` (timed schedules; the plateau's lr does not move with it)."""
        self.progress = min(1.0, max(0.0, progress))
        return self.lr

    def epoch_end(self, val_error: float) -> bool:
        """An epoch's validation error; True when the plateau rule just dropped lr."""
        return self.plateau.step(val_error) if not self.timed else False

    def state_dict(self) -> dict:
        return {**self.plateau.state_dict(), "kind": self.kind, "progress": self.progress}

    def load_state_dict(self, d: dict) -> None:
        self.plateau.load_state_dict(d)
        self.progress = float(d.get("progress", 0.0))


def process_age() -> float:
    """Seconds since this process started (Linux: /proc; elsewhere 0: the budget then counts
    from the first call), so a budget covers the interpreter's start and torch's import too."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class Budget:
    """A run's wall-clock budget: what is spent, and when training must stop.

    ``elapsed`` counts from ``started`` (the command's start; a monotonic clock reading) plus what
    earlier runs of the same training spent (``spent``, from the training state: ``--resume``
    continues with what remains). Evaluation and checkpoint writing are inside it. Training stops
    at the *training deadline*: the budget less :meth:`reserve`, the measured cost of the final
    evaluation and of writing the final state and model, plus a margin of two steps and 1% of the
    budget. Until they are measured, the epoch end is estimated at 1 s plus 0.4 of the training
    time per validation photo and the write from the state's size at 50 MB/s.
    """

    def __init__(self, seconds: float, spent: float = 0.0, started: float | None = None,
                 clock: Callable[[], float] = time.monotonic, val_photos: int = 0, state_bytes: int = 0):
        self.seconds, self.spent, self.clock = float(seconds), float(spent), clock
        self.started = clock() if started is None else started
        self.val_photos = val_photos
        self.train_start: float | None = None  # elapsed at the first step: where the lr schedule starts
        self.step_time = 0.0  # seconds per step (moving average)
        self.step_photos = 1
        self.eval_time: float | None = None  # an epoch end's evaluation and logs, measured (rises at once, falls by halves)
        self.write_time: float | None = None  # an epoch end's state + model write, measured (likewise)
        self.write_guess = 1.0 + state_bytes / 50e6

    def elapsed(self) -> float:
        return self.spent + self.clock() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def note_step(self, seconds: float, photos: int) -> None:
        if self.train_start is None:
            self.train_start = max(0.0, self.elapsed() - seconds)
        self.step_photos = photos
        self.step_time = seconds if not self.step_time else 0.8 * self.step_time + 0.2 * seconds

    @staticmethod
    def _rise_fast(old: float | None, new: float) -> float:
        """A cost estimate that follows a rise at once and a fall by halves (the end must fit)."""
        return new if old is None else max(new, 0.5 * (old + new))

    def note_eval(self, seconds: float) -> None:
        self.eval_time = self._rise_fast(self.eval_time, seconds)

    def note_write(self, seconds: float) -> None:
        self.write_time = self._rise_fast(self.write_time, seconds)

    def end_cost(self) -> float:
        """An epoch end without its write: evaluation, logs, the snapshot (measured, else estimated:
        1 s for the logs and the loader's start, and 0.4 of the training time per validation photo:
        a forward pass is about a third of a step, measured 0.34 on 2 CPU cores)."""
        if self.eval_time is not None:
            return self.eval_time
        return 1.0 + 0.4 * self.val_photos * self.step_time / max(1, self.step_photos)

    def reserve(self) -> float:
        """Seconds kept for the end: the final evaluation, the final write, and a margin."""
        wr = self.write_time if self.write_time is not None else self.write_guess
        return 1.2 * (self.end_cost() + wr) + 2 * self.step_time + 0.01 * self.seconds

    def deadline(self) -> float:
        """The elapsed time at which training stops (the lr schedule ends here)."""
        return self.seconds - self.reserve()

    def progress(self) -> float:
        """0 at the first step, 1 at the training deadline."""
        start = self.train_start if self.train_start is not None else self.elapsed()
        span = self.deadline() - start
        return 1.0 if span <= 0 else min(1.0, max(0.0, (self.elapsed() - start) / span))

    def spent_for(self, steps: int = 1, extra: float = 0.0) -> bool:
        """True when ``steps`` more steps (and ``extra`` seconds) would run past the training deadline."""
        return self.elapsed() + steps * self.step_time + extra >= self.deadline()

    def vote(self, ahead: int, epoch_end: bool = False) -> tuple[float]:
        """(progress,), or (1.0,) when ``ahead`` more steps would pass the training deadline; at an
        epoch end also the rest of the end and the next epoch's first step."""
        extra = self.end_cost() + self.step_time if epoch_end else 0.0
        return (1.0 if self.spent_for(ahead, extra) else self.progress(),)

    def late(self) -> bool:
        """An epoch end too near the deadline to be worth an evaluation: the final evaluation comes
        within twice an evaluation's time, and there is time for more steps before it."""
        left = self.deadline() - self.elapsed()
        return 2 * self.step_time < left < 2 * self.end_cost()

    def state_dict(self) -> dict:
        return {"seconds": self.seconds, "elapsed": self.elapsed(), "train_start": self.train_start,
                "eval_time": self.eval_time, "write_time": self.write_time, "step_time": self.step_time}

    def load_state_dict(self, d: dict) -> None:
        """What an earlier run of this training spent; measured costs carry over."""
        self.spent = float(d.get("elapsed", 0.0))
        self.train_start = d.get("train_start")
        self.eval_time, self.write_time = d.get("eval_time"), d.get("write_time")
        self.step_time = float(d.get("step_time") or 0.0)
