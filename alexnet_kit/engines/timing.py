"""How fast an engine runs: crops per second at a batch size (the content of the crops does not matter)."""
from __future__ import annotations

import statistics
import time

import torch

from .base import Engine


def speed(engine: Engine, x: torch.Tensor, batch: int, runs: int = 3) -> float:
    """crops/s at ``batch`` crops a call: the median of ``runs`` calls (after a warm-up elsewhere)."""
    xb = x.repeat((batch + len(x) - 1) // len(x), 1, 1, 1)[:batch].contiguous()
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        engine.logits_and_features(xb)
        rates.append(batch / (time.perf_counter() - t))
    return statistics.median(rates)


def retime(engine: Engine, m: dict, batch: int, runs: int = 3) -> dict:
    """``m`` with the speed of ``engine`` at ``batch`` crops a call added (random pixels: speed does not
    depend on the content; the gate's numbers, which do, are kept)."""
    size = engine.meta.preprocess.crop
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    engine.logits_and_features(x.repeat(batch, 1, 1, 1))  # warm-up: the first call at a new shape compiles
    cps = round(speed(engine, x, batch, runs), 2)
    return {**m, "batch": batch, "crops_per_s": cps, "speeds": {**m.get("speeds", {}), str(batch): cps}}
