"""What the CUDA paths rely on, checked where a CPU can show it.

No GPU here: these tests pin down the logic and layouts the GPU path relies on
(dtype under autocast, memory layout of the towers, process-group backend,
amp fallback, deterministic set-up); scripts/gpu-check.sh runs the real thing
on a GPU.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from alexnet_kit.lrn import LocalResponseNorm
from alexnet_kit.model import AlexNet, AlexNetConfig
from alexnet_kit.towers import TowerAlexNet
from alexnet_kit.train.parallel import place, process_group_backend

from helpers import TINY_WIDTHS, lrn_by_the_formula

# Ops on CUDA autocast's fp32 list (aten/src/ATen/autocast_mode.cpp, "fp32" ops):
# any of them in the LRN would hand the next layer fp32 maps on a GPU.
CUDA_AUTOCAST_FP32 = {"pow", "rsqrt", "exp", "log", "log2", "log10", "reciprocal", "expm1", "log1p", "softplus"}


class OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, torch.dtype | None]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append((func.overloadpacket.__name__, out.dtype if isinstance(out, torch.Tensor) else None))
        return out


@pytest.mark.parametrize("convention", ["paper", "divided"])
@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_lrn_stays_in_the_step_dtype_under_autocast_and_matches_the_formula(convention, beta):
    torch.manual_seed(0)
    a = torch.relu(torch.randn(2, 16, 5, 5) * 60)
    lrn = LocalResponseNorm(16, groups=2, beta=beta, convention=convention)
    x = a.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16), OpLog() as log:
        y = lrn(x)
    assert y.dtype == torch.bfloat16
    if beta == 0.75:  # the paper's beta: no op that CUDA autocast would run in fp32
        called = {name for name, _ in log.ops}
        assert not called & CUDA_AUTOCAST_FP32, called
    assert all(dt in (torch.bfloat16, None) for _, dt in log.ops), log.ops  # no fp32 intermediate
    want = lrn_by_the_formula(x.float(), beta=beta, divide_by_n=convention == "divided", groups=2)
    torch.testing.assert_close(y.double(), want, rtol=2e-2, atol=2e-2)  # bf16 has 8 bits of mantissa
    # outside autocast the fp32 path is untouched and exact
    torch.testing.assert_close(lrn(a).double(), lrn_by_the_formula(a, beta=beta, divide_by_n=convention == "divided", groups=2),
                               rtol=1e-6, atol=1e-6)


def test_two_towers_keep_channels_last():
    cfg = AlexNetConfig(num_classes=10, **TINY_WIDTHS, dropout=0.0)
    net = place(AlexNet(cfg), "model", torch.device("cpu"), "cpu,cpu", channels_last=True)
    assert isinstance(net, TowerAlexNet)
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    plain = place(AlexNet(cfg), "none", torch.device("cpu"), channels_last=True)
    assert plain.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_process_group_has_a_cpu_backend_next_to_nccl():
    # the epoch totals are small tensors; with an NCCL-only group a CPU
    # tensor fails ("No backend type associated with device type cpu")
    assert process_group_backend("cuda") == "cpu:gloo,cuda:nccl"
    assert process_group_backend("cpu") == "gloo"


def test_bf16_check_asks_for_native_bf16_not_emulation(monkeypatch):
    # torch 2.x's is_bf16_supported() counts emulation by default: True on V100/T4,
    # so asking it plainly would never pick the fp16 + GradScaler fallback there
    from alexnet_kit.train.trainer import cuda_bf16_native, resolve_amp

    def emulating_gpu(including_emulation=True):  # a pre-Ampere GPU as torch 2.x answers for it
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", emulating_gpu)
    assert cuda_bf16_native() is False
    assert resolve_amp("auto", "cuda", cuda_bf16_native) == (torch.float16, True)

    def old_torch():  # no flag: it never counted emulation
        return True

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", old_torch)
    assert cuda_bf16_native() is True
