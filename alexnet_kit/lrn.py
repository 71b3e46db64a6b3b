"""Local response normalisation (paper §3.3), computed per tower.

    b[i] = a[i] / (k + alpha * sum_{j = max(0, i-n/2)}^{min(N-1, i+n/2)} a[j]^2) ^ beta

with k=2, n=5, alpha=1e-4, beta=0.75, after the ReLU of conv1 and conv2.

Two conventions exist for alpha, and they differ by a factor of n=5:

* ``"paper"``: alpha multiplies the *sum*, exactly as the formula in §3.3 is
  printed.
* ``"divided"``: alpha/n multiplies the sum (alpha times the *mean*), as in
  Krizhevsky's cuda-convnet code, Caffe, ``torch.nn.LocalResponseNorm`` and
  the ONNX ``LRN`` operator. Use it to load weights trained by those tools.

In the two-GPU network each GPU normalises over its own maps only (48 of the
96 after conv1, 128 of the 256 after conv2); ``groups`` reproduces that: the
window never crosses a tower boundary.

Implementation: the windowed sum of squares is a 1x1 convolution of a^2 with
a fixed banded channel matrix (block-diagonal across towers, so a grouped 1x1
convolution). It is exact, and measured faster than PyTorch's
pad/avg-pool/pow chain both in eager torch and once exported to ONNX (see
DESIGN.md and docs/benchmarks.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import LRN_CONVENTIONS as CONVENTIONS


def band_matrix(channels_per_group: int, size: int) -> torch.Tensor:
    """0/1 matrix M[i, j] = 1 where channel j is in channel i's window."""
    # Explicitly on the CPU, so a model built on the meta device (fast
    # checkpoint loading) still gets a real band.
    idx = torch.arange(channels_per_group, device="cpu")
    return ((idx[:, None] - idx[None, :]).abs() <= size // 2).to(torch.float32)


class LocalResponseNorm(nn.Module):
    #: Take d^-0.75 with square roots instead of ``pow``. onnxruntime's Pow
    #: is slow (it was 12% of an fp32 forward and 25% of an int8 one), so the
    #: ONNX export switches this on; eager torch's vectorised pow is faster
    #: than the four passes of the sqrt form, so it stays off by default.
    sqrt_power: bool = False

    def __init__(
        self,
        channels: int,
        groups: int = 1,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 2.0,
        convention: str = "paper",
    ):
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"LRN convention must be one of {CONVENTIONS}, got {convention!r}")
        if channels % groups:
            raise ValueError(f"{channels} channels do not split into {groups} towers")
        self.channels, self.groups, self.size = channels, groups, size
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)
        self.convention = convention
        scale = self.alpha if convention == "paper" else self.alpha / size
        band = band_matrix(channels // groups, size) * scale
        weight = band.repeat(groups, 1)[:, :, None, None]  # (C, C/groups, 1, 1)
        # Not persistent: derived from the hyper-parameters, never trained,
        # so it stays out of checkpoints and the parameter count.
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16:
            # fp16 tops out at 65504: x * x overflows for |x| > 255, which conv1/conv2
            # ReLU maps reach (inf, then NaN through the band's zeros). bf16 has fp32's
            # range and keeps the in-dtype branch below; fp16 takes fp32 for this op.
            with torch.autocast(x.device.type, enabled=False):
                return self(x.float()).to(torch.float16)
        d = F.conv2d(x * x, self.weight.to(x.dtype), groups=self.groups) + self.k
        # Under autocast `pow` (and rsqrt, exp, log) is on CUDA's fp32 list: it would
        # return fp32 and promote the largest activations of the network (conv1/conv2
        # maps) to twice the bytes. sqrt, mul and div keep the step's dtype.
        bf16_autocast = x.dtype == torch.bfloat16 and torch.is_autocast_enabled(x.device.type)
        if self.beta == 0.75 and (self.sqrt_power or bf16_autocast):
            # d^-3/4 = 1 / (sqrt(d) * sqrt(sqrt(d))): two correctly rounded
            # square roots instead of a general power (exp and log per
            # element); the same values to a few ulp.
            s = d.sqrt()
            return x / (s * s.sqrt())
        if bf16_autocast:  # any other beta takes pow with autocast off for one op
            with torch.autocast(x.device.type, enabled=False):
                return x * d.pow(-self.beta)
        return x * d.pow(-self.beta)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, towers={self.groups}, size={self.size}, alpha={self.alpha}, "
            f"beta={self.beta}, k={self.k}, convention={self.convention!r}"
        )
