"""LRN (§3.3): our banded 1x1-convolution form against PyTorch's LocalResponseNorm.

Both compute the same function (the "divided" convention, alpha/n, which is
what torch.nn.LocalResponseNorm computes), per tower: the baseline runs
PyTorch's module on each tower's maps and concatenates. Measured at the two
places the network normalises (after conv1: 96 maps of 55x55; after conv2:
256 maps of 27x27) and in the whole network's forward pass (ten crops, eager,
inference mode). Rounds are interleaved; medians are printed with the ratio.

    .venv/bin/python benchmarks/bench_lrn.py [--batch 10] [--rounds 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from machine import describe  # noqa: E402  (benchmarks/machine.py)

from alexnet_kit.lrn import LocalResponseNorm
from alexnet_kit.model import AlexNet, AlexNetConfig


class TorchLRNPerTower(nn.Module):
    """The baseline: torch.nn.LocalResponseNorm on each tower's maps."""

    def __init__(self, towers: int):
        super().__init__()
        self.towers = towers
        self.lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)

    def forward(self, x):
        return torch.cat([self.lrn(part) for part in x.chunk(self.towers, 1)], 1)


def timed(fn, x, repeats: int) -> float:
    with torch.inference_mode():
        fn(x)  # warm-up
        t = time.perf_counter()
        for _ in range(repeats):
            fn(x)
        return (time.perf_counter() - t) / repeats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=10, help="crops per forward pass (default 10: one photo, ten crops)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    print(f"machine: {describe()}")
    torch.manual_seed(0)

    cases = {}
    for name, (c, n) in {"after conv1 (96x55x55)": (96, 55), "after conv2 (256x27x27)": (256, 27)}.items():
        x = torch.relu(torch.randn(args.batch, c, n, n) * 50)
        ours, base = LocalResponseNorm(c, groups=2, convention="divided"), TorchLRNPerTower(2)
        torch.testing.assert_close(ours(x), base(x), rtol=1e-5, atol=1e-6)  # same function
        cases[name] = (ours, base, x, 20)

    model = AlexNet(AlexNetConfig(lrn_convention="divided")).eval()
    baseline_model = AlexNet(AlexNetConfig(lrn_convention="divided")).eval()
    baseline_model.load_state_dict(model.state_dict())
    baseline_model.norm1, baseline_model.norm2 = TorchLRNPerTower(2), TorchLRNPerTower(2)
    x = torch.randn(args.batch, 3, 224, 224) * 50
    with torch.inference_mode():
        torch.testing.assert_close(model(x), baseline_model(x), rtol=1e-4, atol=1e-5)
    cases["whole network forward"] = (model, baseline_model, x, 3)

    times = {name: ([], []) for name in cases}
    for _ in range(args.rounds):
        for name, (ours, base, x, repeats) in cases.items():
            times[name][0].append(timed(ours, x, repeats))
            times[name][1].append(timed(base, x, repeats))

    print(f"\nbatch {args.batch}, medians of {args.rounds} interleaved rounds")
    print("| where | ours (banded 1x1 conv) ms | torch LocalResponseNorm per tower ms | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for name, (ours_t, base_t) in times.items():
        o, b = statistics.median(ours_t) * 1e3, statistics.median(base_t) * 1e3
        print(f"| {name} | {o:.2f} | {b:.2f} | {b / o:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
