"""Eager PyTorch on a safetensors checkpoint (fp32, or bf16 autocast on a CPU that has it)."""
from __future__ import annotations

import contextlib
import os

import torch

from ..checkpoint import load_model, read_meta
from ..named_layers import LAYER_NAMES
from .base import Engine
from .errors import PrecisionMismatch
from .precision import Precision


class TorchCheckpointEngine(Engine):
    feature_layers = LAYER_NAMES  # every named layer, through AlexNet.layer_features

    def __init__(self, path: str | os.PathLike, device: str = "cpu", verify: bool = True,
                 precision: Precision | str = Precision.FP32, threads: int | None = None, batch: int | None = None):
        if precision not in (Precision.FP32, Precision.BF16):
            raise PrecisionMismatch(path, f"torch runs a checkpoint in fp32 or bf16, not {str(precision)!r} "
                                          "(int8 is an exported artifact: alexnet-kit export --format onnx --int8)")
        self.device = torch.device(device)
        self.path = path
        self.model, self.meta = load_model(path, device=self.device, verify=verify)
        self.fingerprint = read_meta(path)[1]["weights_sha256"]
        self.precision = Precision(precision)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        how = "eager" if self.precision is Precision.FP32 else "eager, bf16 autocast"
        self.description = f"torch {torch.__version__} {how} on {self.device}"

    def _autocast(self):
        if self.precision is Precision.BF16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.inference_mode()
    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast():
            logits, feats = self.model.logits_and_features(self._input(x))
        return logits.float().cpu(), feats.float().cpu()

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model(self._input(x)).float().cpu()

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model.fc7_features(self._input(x)).float().cpu()

    @torch.inference_mode()
    def activations(self, x: torch.Tensor, names) -> dict[str, torch.Tensor]:
        names = self.check_layers(names)
        with self._autocast():
            out = self.model.layer_features(self._input(x), names)
        return {n: t.float().cpu() for n, t in out.items()}
