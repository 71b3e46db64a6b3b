"""§5: the paper's update rule and its learning-rate schedule.

    v <- 0.9 v - 0.0005 * lr * w - lr * grad
    w <- w + v

The learning rate sits *inside* the velocity. ``torch.optim.SGD`` keeps it
outside (v <- m v + grad + wd w; w <- w - lr v), which is the same only while
lr is constant: after each of the paper's /10 drops the old velocity would
keep pushing with 10x the step. :class:`PaperSGD` implements the rule as
printed. :class:`PlateauSchedule` divides lr by 10 when the validation error
stops improving, at most three times (§5: "reduced three times prior to
termination").
"""
from __future__ import annotations

import torch


class PaperSGD(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"bad hyper-parameters lr={lr} momentum={momentum} weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # lr_mult: a group's share of the rate (fine-tuning: pretrained layers learn slower)
            lr, m, wd = group["lr"] * group.get("lr_mult", 1.0), group["momentum"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            vel = []
            for p in params:
                st = self.state[p]
                if "velocity" not in st:
                    st["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                vel.append(st["velocity"])
            grads = [p.grad for p in params]
            # grouped by device and dtype internally; two towers on two devices work as is
            torch._foreach_mul_(vel, m)
            if wd:
                torch._foreach_add_(vel, params, alpha=-wd * lr)
            torch._foreach_add_(vel, grads, alpha=-lr)
            torch._foreach_add_(params, vel)
        return loss

    def set_lr(self, lr: float) -> None:
        for g in self.param_groups:
            g["lr"] = lr


class PlateauSchedule:
    """lr / ``factor`` after ``patience`` epochs without a validation-error gain of ``threshold``."""

    def __init__(self, lr: float, factor: float = 0.1, patience: int = 2, max_drops: int = 3, threshold: float = 1e-3):
        self.lr, self.factor, self.patience, self.max_drops, self.threshold = lr, factor, patience, max_drops, threshold
        self.best = float("inf")
        self.bad_epochs = 0
        self.drops = 0

    def step(self, val_error: float) -> bool:
        """Record an epoch's validation error; True when lr was just reduced."""
        if val_error < self.best - self.threshold:
            self.best, self.bad_epochs = val_error, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience and self.drops < self.max_drops:
            self.lr *= self.factor
            self.drops += 1
            self.bad_epochs = 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"lr": self.lr, "best": self.best, "bad_epochs": self.bad_epochs, "drops": self.drops}

    def load_state_dict(self, d: dict) -> None:
        self.lr, self.best, self.bad_epochs, self.drops = float(d["lr"]), float(d["best"]), int(d["bad_epochs"]), int(d["drops"])
