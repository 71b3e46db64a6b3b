"""Eager PyTorch on a safetensors checkpoint."""
from __future__ import annotations

import os

import torch

from ..checkpoint import load_model, read_meta
from .base import Engine


class CheckpointEngine(Engine):
    def __init__(self, path: str | os.PathLike, device: str = "cpu", verify: bool = True):
        self.device = torch.device(device)
        self.model, self.meta = load_model(path, device=self.device, verify=verify)
        self.fingerprint = read_meta(path)[1]["weights_sha256"]
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.description = f"torch {torch.__version__} eager on {self.device}"

    @torch.inference_mode()
    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        logits, feats = self.model.logits_and_features(x)
        return logits.float().cpu(), feats.float().cpu()

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return self.model(x).float().cpu()

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return self.model.fc7_features(x).float().cpu()
