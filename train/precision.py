"""``--amp``: the training step's precision, on a GPU and on a CPU; deterministic set-up.

``auto``: on CUDA bf16 where the GPU has it in hardware, else fp16 with loss
scaling (pre-Ampere: V100, T4); on a CPU bf16 autocast where the CPU has
native bf16 (AMX or AVX-512 BF16, :func:`alexnet_kit.engines.cpu.native_bf16`),
fp32 elsewhere. Asking for bf16 where it would be emulated (slow) is refused
in one line unless forced (``--force-amp``). The paper trained in fp32 (§5
names no precision; GPUs of 2012 had nothing else): autocast keeps the weights,
the velocities and the update in fp32 and runs the convolutions and the fully
connected layers in bf16.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from alexnet_kit.engines import cpu as cpu_engine
from alexnet_kit.errors import AlexKitError


def resolve_amp(setting: str, device_type: str, bf16_supported: Callable[[], bool],
                force: bool = False) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a GradScaler is needed) for ``--amp``.

    ``bf16_supported``: whether this device runs bf16 in hardware (injected so the choice is
    testable anywhere: the trainer passes :func:`bf16_native_check`). ``force``: bf16 even where
    it is emulated."""
    if setting == "off":
        return None, False
    if setting == "fp16":
        return torch.float16, device_type == "cuda"
    if setting == "bf16":
        if not force and not bf16_supported():
            if device_type == "cuda":
                raise AlexKitError("--amp bf16: this GPU has no bfloat16; use --amp fp16 (or auto)")
            raise AlexKitError("--amp bf16: this CPU has no native bfloat16 (no AMX or AVX-512 BF16: it would be emulated "
                               "and slow); use --amp auto or off, or add --force-amp to run it anyway")
        return torch.bfloat16, False
    if device_type == "cuda":
        return (torch.bfloat16, False) if bf16_supported() else (torch.float16, True)
    return (torch.bfloat16, False) if bf16_supported() else (None, False)


def cuda_bf16_native() -> bool:
    """Whether the current GPU runs bf16 in hardware (Ampere and later).

    torch 2.x's ``is_bf16_supported()`` counts emulation by default and answers True on
    V100/T4, where bf16 is emulated and slow, so the fp16 + GradScaler fallback would
    never be chosen; ask for the native answer."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before the flag existed: it did not count emulation
        return bool(torch.cuda.is_bf16_supported())


def bf16_native_check(device_type: str) -> Callable[[], bool]:
    """The hardware-bf16 question for a device: the GPU's, or this CPU's (looked up when asked)."""
    if device_type == "cuda":
        return cuda_bf16_native
    return lambda: cpu_engine.native_bf16()


def deterministic_setup() -> None:
    """Deterministic kernels; cuBLAS needs a fixed workspace, read when its first handle is made."""
    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            raise AlexKitError("--deterministic true on CUDA: set CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment "
                               "(CUDA was already started, too late to set it here)")
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
